"""Atomic checkpoint directories, RNG capture and weights-only state files."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from rlhfkit.utils import checkpoint as ckpt


def test_atomic_write_dir_replaces_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint-1"
    ckpt.atomic_write_dir(target, lambda d: (d / "a.txt").write_text("old"))

    def failing_write(directory: Path) -> None:
        (directory / "a.txt").write_text("half")
        raise RuntimeError("killed mid-save")

    with pytest.raises(RuntimeError):
        ckpt.atomic_write_dir(target, failing_write)
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-1"]
    ckpt.atomic_write_dir(target, lambda d: (d / "a.txt").write_text("new"))
    assert (target / "a.txt").read_text() == "new"


def test_checkpoint_listing_and_pruning(tmp_path: Path) -> None:
    for step in (2, 10, 1):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / ".checkpoint-11.tmp-abc").mkdir()
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path)] == ["checkpoint-1", "checkpoint-2", "checkpoint-10"]
    assert ckpt.latest_checkpoint(tmp_path).name == "checkpoint-10"
    ckpt.prune_checkpoints(tmp_path, keep=1)
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path)] == ["checkpoint-10"]
    assert ckpt.latest_checkpoint(tmp_path / "missing") is None


def test_rng_state_round_trip_through_weights_only_file(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ckpt.save_state(tmp_path / "rng.pt", ckpt.capture_rng_state())
    expected = (random.random(), float(np.random.rand()), torch.rand(3))
    ckpt.restore_rng_state(ckpt.load_state(tmp_path / "rng.pt"))
    again = (random.random(), float(np.random.rand()), torch.rand(3))
    assert expected[0] == again[0] and expected[1] == again[1]
    assert torch.equal(expected[2], again[2])


class Arbitrary:
    """A class that weights-only loading must refuse to unpickle."""


def test_load_state_refuses_pickled_objects(tmp_path: Path) -> None:
    torch.save({"x": Arbitrary()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        ckpt.load_state(tmp_path / "evil.pt")


def test_all_finite_detects_nan() -> None:
    layer = torch.nn.Linear(2, 2)
    assert ckpt.all_finite(layer)
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")
    assert not ckpt.all_finite(layer)


def test_atomic_write_json(tmp_path: Path) -> None:
    ckpt.atomic_write_json(tmp_path / "s.json", {"b": 1})
    assert (tmp_path / "s.json").read_text().strip().startswith("{")
