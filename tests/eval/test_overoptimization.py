"""Over-optimization watch on hand-made gold/proxy/disagreement sequences."""

from __future__ import annotations

import pytest

from rlhfkit.eval.overoptimization import WatchConfig, check_overoptimization


def test_healthy_run_is_ok_and_best_is_last() -> None:
    d = check_overoptimization(gold=[0.1, 0.2, 0.3, 0.35], proxy=[0.0, 1.0, 2.0, 2.5])
    assert d.status == "ok" and d.signals == ()
    assert d.best_round == 3
    assert d.reason == "no sign of over-optimization"


def test_divergence_streak_stops_and_rolls_back_to_best_gold() -> None:
    gold = [0.10, 0.30, 0.40, 0.36, 0.33]
    proxy = [0.0, 1.0, 2.0, 3.0, 4.0]
    d = check_overoptimization(gold=gold, proxy=proxy, rounds=[0, 1, 2, 3, 4],
                               config=WatchConfig(patience=2, gold_drop=1.0))
    assert d.status == "stop"
    assert "2 consecutive" in d.reason and "roll back to round 2" in d.reason
    assert d.best_round == 2


def test_short_divergence_only_warns() -> None:
    d = check_overoptimization(gold=[0.1, 0.4, 0.38], proxy=[0.0, 1.0, 1.5],
                               config=WatchConfig(patience=3, gold_drop=0.5))
    assert d.status == "warn"
    assert "last 1 evaluation" in d.reason
    assert d.best_round == 1


def test_streak_is_broken_by_a_gold_gain() -> None:
    # proxy up / gold down at 1->2 and 3->4, but 2->3 gold rose: streak is 1, not 2.
    d = check_overoptimization(gold=[0.5, 0.45, 0.47, 0.46], proxy=[0, 1, 2, 3],
                               config=WatchConfig(patience=2, gold_drop=1.0))
    assert d.status == "warn"


def test_gold_drop_from_best_triggers_even_without_proxy() -> None:
    d = check_overoptimization(gold=[0.2, 0.6, 0.55, 0.41], rounds=[1, 2, 3, 4],
                               config=WatchConfig(gold_drop=0.15))
    assert d.status == "stop"
    assert "0.19 below its best 0.6 (round 2" in d.reason
    assert d.best_round == 2
    ok = check_overoptimization(gold=[0.2, 0.6, 0.55, 0.41], config=WatchConfig(gold_drop=0.25))
    assert ok.status == "ok"


def test_on_trigger_warn_downgrades_stop() -> None:
    d = check_overoptimization(gold=[0.6, 0.1], config=WatchConfig(gold_drop=0.1, on_trigger="warn"))
    assert d.status == "warn" and "roll back" not in d.reason
    assert d.best_round == 0


def test_disagreement_growth_without_gold() -> None:
    proxy = [0.0, 1.0, 2.0, 3.0, 4.0]
    disagreement = [0.10, 0.12, 0.18, 0.25, 0.40]
    d = check_overoptimization(proxy=proxy, disagreement=disagreement)
    assert d.status == "stop"
    assert "4x" in d.reason
    # rounds 3 and 4 exceed 2 x 0.10, so the best proxy within the bound is round 2.
    assert d.best_round == 2
    calm = check_overoptimization(proxy=proxy, disagreement=[0.1, 0.1, 0.12, 0.15, 0.19])
    assert calm.status == "ok" and calm.best_round == 4


def test_zero_initial_disagreement_uses_floor() -> None:
    d = check_overoptimization(disagreement=[0.0, 0.0, 0.5])
    assert d.status == "stop" and d.best_round == 1


def test_missing_values_are_skipped() -> None:
    nan = float("nan")
    d = check_overoptimization(gold=[0.1, None, 0.5, nan, 0.45], proxy=[0, 1, 2, 3, 4],
                               config=WatchConfig(patience=2, gold_drop=1.0))
    assert d.status == "warn"  # only the 2 -> 4 comparison diverges
    assert d.best_round == 2
    assert d.to_dict()["signals"] == list(d.signals)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="proxy has 2 values"):
        check_overoptimization(gold=[0.1, 0.2, 0.3], proxy=[1.0, 2.0])
    with pytest.raises(ValueError, match="at least one"):
        check_overoptimization()
    with pytest.raises(ValueError, match="patience"):
        WatchConfig(patience=0)
    with pytest.raises(ValueError, match="disagreement_factor"):
        WatchConfig(disagreement_factor=1.0)


def test_gold_drop_with_standard_errors_needs_significance() -> None:
    # drop 0.184; se 0.05 each -> se of the difference 0.0707, 2 se = 0.141 < 0.184: fires
    d = check_overoptimization(gold=[0.0, 0.232, 0.048], gold_se=[0.05, 0.05, 0.05],
                               config=WatchConfig(gold_drop=0.1, drop_z=2.0))
    assert d.status == "stop" and d.best_round == 1
    assert "tolerance 0.1414" in d.reason
    # the same drop with se 0.08 each: 2 * 0.1131 = 0.226 > 0.184, within noise
    calm = check_overoptimization(gold=[0.0, 0.232, 0.048], gold_se=[0.08, 0.08, 0.08],
                                  config=WatchConfig(gold_drop=0.1, drop_z=2.0))
    assert calm.status == "ok" and calm.best_round == 1


def test_gold_drop_floor_applies_when_standard_errors_are_tiny_or_missing() -> None:
    d = check_overoptimization(gold=[0.3, 0.25], gold_se=[0.001, None], config=WatchConfig(gold_drop=0.1))
    assert d.status == "ok"
    d = check_overoptimization(gold=[0.3, 0.15], gold_se=[0.001, 0.001], config=WatchConfig(gold_drop=0.1))
    assert d.status == "stop" and "tolerance 0.1)" in d.reason


def test_gold_se_length_is_checked() -> None:
    with pytest.raises(ValueError, match="gold_se"):
        check_overoptimization(gold=[0.1, 0.2], gold_se=[0.01])
