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


def test_runs_started_in_the_same_second_each_get_a_directory(tmp_path: Path, monkeypatch) -> None:
    """Seeds started side by side: every caller claims its own name, none fails on another's mkdir."""
    import threading
    import time

    monkeypatch.setattr(time, "strftime", lambda fmt: "20261207-150614")
    (tmp_path / "demo-20261207-150614").mkdir()  # another process got there first
    monkeypatch.setattr(Path, "exists", lambda self: False)  # ... right after this process looked
    made: list[Path] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            made.append(new_run_dir(tmp_path, "demo"))
        except BaseException as exc:  # noqa: BLE001 - any failure is the test's
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(path.name for path in made) == sorted(f"demo-20261207-150614-{n}" for n in range(2, 10))


def test_unknown_backend_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        Tracker(tmp_path, report_to="neptune")


def test_none_backend_still_writes_jsonl(tmp_path: Path) -> None:
    with Tracker(tmp_path, report_to="none") as tracker:
        tracker.log({"a": 1}, step=0)
    assert read_metrics(tmp_path) == [{"step": 0, "time": read_metrics(tmp_path)[0]["time"], "a": 1.0}]
    assert not (tmp_path / "tensorboard").exists()
