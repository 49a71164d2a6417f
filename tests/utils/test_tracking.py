"""Metric tracking writes TensorBoard events and a JSONL copy; bad backends fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhfkit.utils.tracking import Tracker, new_run_dir, read_metrics


def test_tracker_writes_jsonl_and_tensorboard(tmp_path: Path) -> None:
    run = new_run_dir(tmp_path, "sft")
    with Tracker(run, config={"lr": 0.1}) as tracker:
        tracker.log({"loss/train": 1.5, "lr": 0.1}, step=1)
        tracker.log({"loss/train": float("nan")}, step=2)
    records = read_metrics(run)
    assert records[0]["loss/train"] == 1.5 and records[1]["loss/train"] == "nan"
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tensorboard").iterdir())
    assert (run / "config.json").exists()
    assert new_run_dir(tmp_path, "sft") != run


def test_unknown_backend_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        Tracker(tmp_path, report_to="neptune")


def test_none_backend_still_writes_jsonl(tmp_path: Path) -> None:
    with Tracker(tmp_path, report_to="none") as tracker:
        tracker.log({"a": 1}, step=0)
    assert read_metrics(tmp_path) == [{"step": 0, "time": read_metrics(tmp_path)[0]["time"], "a": 1.0}]
    assert not (tmp_path / "tensorboard").exists()
