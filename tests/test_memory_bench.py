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
