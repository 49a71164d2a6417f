"""Collapse signals of the over-optimization watch and the metrics they read (issue 17)."""

from __future__ import annotations

import pytest

from rlhfkit.eval.collapse import CollapseSeries
from rlhfkit.eval.metrics import duplicate_share, top_response_share
from rlhfkit.eval.overoptimization import WatchConfig, check_overoptimization, watch_metrics


def test_duplicate_and_top_response_shares() -> None:
    prompts = ["a", "b", "c", "d"]
    assert duplicate_share(prompts, ["x.", "y", "z", "w"]) == 0.0
    assert duplicate_share(prompts, ["Great find.", "great find", "z", "w"]) == 0.5  # case and punctuation
    assert top_response_share(prompts, ["x", "x", "x", "w"]) == 0.75
    assert duplicate_share(["a", "a"], ["x", "x"]) == 0.0  # one prompt sampled twice is not reuse
    assert duplicate_share([], []) == 0.0 and top_response_share([], []) == 0.0


@pytest.mark.parametrize("series,needle", [
    (CollapseSeries(distinct=[0.7, 0.6, 0.4]), "distinct-2 0.4 is below 0.75 x"),
    (CollapseSeries(duplicates=[0.02, 0.05, 0.3]), "30% of responses were also given to other prompts"),
    (CollapseSeries(length=[16.7, 14.0, 9.2]), "length collapse: mean length 9.2 words"),
    (CollapseSeries(on_topic=[0.95, 0.9, 0.6]), "off-topic: 40% of responses do not mention"),
])
def test_each_collapse_signal_stops_relative_to_the_base(series: CollapseSeries, needle: str) -> None:
    d = check_overoptimization(gold=[0.0, 0.3, 0.5], collapse=series)
    assert d.status == "stop" and needle in d.reason and d.best_round == 1  # best healthy gold, not round 2
    warn = check_overoptimization(gold=[0.0, 0.3, 0.5], collapse=series, config=WatchConfig(on_trigger="warn"))
    assert warn.status == "warn"


def test_no_collapse_within_limits_and_an_earlier_collapse_is_not_the_best_round() -> None:
    calm = CollapseSeries(distinct=[0.72, 0.66, 0.6], length=[16.7, 14.0, 12.0], duplicates=[0.03, 0.05, 0.1],
                          on_topic=[0.9, 0.85, 0.8])
    assert check_overoptimization(gold=[0.0, 0.2, 0.3], collapse=calm).status == "ok"
    recovered = CollapseSeries(distinct=[0.7, 0.3, 0.65])
    d = check_overoptimization(gold=[0.0, 0.6, 0.4], collapse=recovered, config=WatchConfig(gold_drop=0.5))
    assert d.status == "ok" and d.best_round == 2


def test_watch_metrics_reads_round_metrics_and_checks_config() -> None:
    rounds = [(0, {"eval/gold_reward": 0.0, "eval/distinct_2": 0.718, "length/mean": 16.7}),
              (1, {"eval/gold_reward": 0.49, "eval/distinct_2": 0.374, "length/mean": 9.2, "note": "x"})]
    d = watch_metrics(rounds)
    assert d is not None and d.status == "stop" and d.best_round == 0
    assert "diversity collapse" in d.reason and "length collapse" in d.reason
    assert watch_metrics([(0, {"time/eval_s": 3.0})]) is None
    with pytest.raises(ValueError, match="distinct_ratio"):
        WatchConfig(distinct_ratio=1.5)
    with pytest.raises(ValueError, match="expected 2"):
        check_overoptimization(gold=[0.1, 0.2], collapse=CollapseSeries(length=[1.0]))
