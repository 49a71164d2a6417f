"""bench/memory.py reports each side's median run over its repeats (one run's peak varies by up to ~10 MiB)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import memory as memory_bench  # noqa: E402


def test_median_run_is_the_middle_delta_with_every_delta_listed() -> None:
    runs = [{"delta_mb": 130.0, "cpu": 1.0}, {"delta_mb": 120.0, "cpu": 2.0}, {"delta_mb": 125.0, "cpu": 3.0}]
    assert memory_bench.median_run(runs) == {"delta_mb": 125.0, "cpu": 3.0, "deltas_mb": [130.0, 120.0, 125.0]}


def test_median_of_an_even_count_is_the_lower_middle_run() -> None:
    runs = [{"delta_mb": 4.0}, {"delta_mb": 1.0}, {"delta_mb": 3.0}, {"delta_mb": 2.0}]
    assert memory_bench.median_run(runs)["delta_mb"] == 2.0


def test_size_sets_both_sides_model_and_rejects_what_gpt2_cannot_build(monkeypatch, capsys) -> None:
    import pytest

    import rl_workload as wl

    for name in ("LAYERS", "EMBD", "HEADS"):
        monkeypatch.setattr(wl, name, getattr(wl, name))  # restored after the test
    seen = []
    monkeypatch.setattr(memory_bench, "measure", lambda part, steps: seen.append(wl.gpt2_config()) or {"delta_mb": 1.0})
    monkeypatch.setattr(sys, "argv", ["memory.py", "--part", "policy", "--size", "6x384"])
    memory_bench.main()
    assert (seen[0].n_layer, seen[0].n_embd, seen[0].n_head) == (6, 384, 6)
    for size in ("6x100", "0x256", "big"):
        monkeypatch.setattr(sys, "argv", ["memory.py", "--part", "policy", "--size", size])
        with pytest.raises(SystemExit):
            memory_bench.main()
    assert "--size" in capsys.readouterr().err
