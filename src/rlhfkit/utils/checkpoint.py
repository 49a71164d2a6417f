"""Atomic checkpoint directories and RNG state capture, shared by every trainer.

A checkpoint is a directory written under a temporary name and renamed into place, so a kill
during a save leaves the previous checkpoint intact. Everything loads with safetensors or
``torch.load(weights_only=True)``: no pickled code is ever executed.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def _fsync_tree(path: Path) -> None:
    for item in sorted(path.rglob("*")):
        if item.is_file():
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_dir(target: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` then move ``tmp_dir`` to ``target`` in one rename.

    An existing ``target`` is replaced only after the new one is complete and synced.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        _fsync_tree(tmp)
        if target.exists():
            trash = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.rename(target, trash)
            os.rename(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a small text file so readers see the old or the new content, never half of it (through a private
    temporary file, see :mod:`rlhfkit.utils.atomic_file`)."""
    from rlhfkit.utils.atomic_file import atomic_write_text as write

    write(path, text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    """JSON version of :func:`atomic_write_text`."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints under ``output_dir`` sorted by step (temporary dirs are ignored)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir()
             if p.is_dir() and (m := CHECKPOINT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step, or None."""
    dirs = checkpoint_dirs(output_dir)
    return dirs[-1] if dirs else None


def prune_checkpoints(output_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (never the newest one)."""
    dirs = checkpoint_dirs(output_dir)
    for old in dirs[: max(0, len(dirs) - max(1, keep))]:
        shutil.rmtree(old, ignore_errors=True)


def capture_rng_state() -> dict[str, Any]:
    """RNG state of Python, NumPy and torch as tensors and plain values (weights_only-loadable)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    internal, version, gauss = state["python"]
    random.setstate((version, tuple(int(x) for x in internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save a dict of tensors and plain values (optimizer, scheduler, RNG, counters)."""
    torch.save(state, path)


def load_state(path: str | Path) -> dict[str, Any]:
    """Load what :func:`save_state` wrote, refusing pickled code (weights_only=True)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def all_finite(module: torch.nn.Module) -> bool:
    """True when every parameter and buffer is finite; checked before any save."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return False
    return True
