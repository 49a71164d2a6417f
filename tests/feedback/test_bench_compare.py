"""The benchmark's --compare summary: PostgreSQL/SQLite ratios per pair, their medians, losses counted."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "feedback_server.py"


def _bench():
    spec = importlib.util.spec_from_file_location("feedback_server_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _run(per_s: float, p99: float, missing: int = 0, duplicates: int = 0) -> dict:
    return {"acknowledged_per_s": per_s, "submit_ms_p99": p99, "acknowledged_but_missing": missing,
            "duplicates": duplicates}


def test_compare_ratios_by_hand() -> None:
    pairs = [(_run(200, 50), _run(160, 60)), (_run(100, 40), _run(50, 80, duplicates=1)),
             (_run(300, 100), _run(270, 90, missing=2))]
    summary = _bench().compare_ratios(pairs)
    assert summary["pg_over_sqlite_per_s"] == [0.8, 0.5, 0.9]
    assert summary["pg_over_sqlite_p99"] == [1.2, 2.0, 0.9]
    assert summary["median_per_s_ratio"] == 0.8 and summary["median_p99_ratio"] == 1.2
    assert summary["lost_or_duplicated"] == 3
