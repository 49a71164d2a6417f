"""Training checkpoints for the RL trainers: weights via safetensors, the rest weights_only.

A checkpoint directory ``checkpoint-<step>`` holds one ``<name>.safetensors`` per module
(policy, value model, ...) and ``state.pt`` with optimizer, scheduler, KL controller, RNG,
data position and counters. It is written atomically; modules with non-finite weights are
refused, so the newest checkpoint on disk is always finite and pruning never removes it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from rlhfkit.utils.checkpoint import (
    all_finite,
    atomic_write_dir,
    latest_checkpoint,
    load_state,
    prune_checkpoints,
    save_state,
)

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; the message names the directory and part."""


def save_checkpoint(output_dir: str | Path, step: int, modules: Mapping[str, torch.nn.Module],
                    state: dict[str, Any], keep: int) -> Path | None:
    """Write ``checkpoint-<step>`` atomically and prune to ``keep``; None (logged) if weights are non-finite."""
    bad = [name for name, module in modules.items() if not all_finite(module)]
    if bad:
        logger.error("step %d: not saving a checkpoint, non-finite weights in %s", step, ", ".join(bad))
        return None

    def write(tmp: Path) -> None:
        for name, module in modules.items():
            save_model(module, str(tmp / f"{name}.safetensors"))
        save_state(tmp / STATE_FILE, state)

    path = atomic_write_dir(Path(output_dir) / f"checkpoint-{step}", write)
    prune_checkpoints(output_dir, keep)
    return path


def load_checkpoint(path: str | Path, modules: Mapping[str, torch.nn.Module]) -> dict[str, Any]:
    """Load module weights in place (strict) and return the saved state dict."""
    path = Path(path)
    for name, module in modules.items():
        file = path / f"{name}.safetensors"
        if not file.is_file():
            raise CheckpointError(f"{path}: missing {file.name}; was it written by another trainer?")
        missing, unexpected = load_model(module, str(file), strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{file}: weights do not match the model "
                                  f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise CheckpointError(f"{path}: missing {STATE_FILE}")
    return load_state(state_file)


def resolve_resume(resume: str | Path | bool | None, output_dir: str | Path) -> Path | None:
    """Which checkpoint to resume: an explicit directory, the latest in ``output_dir`` ("auto"/True), or none."""
    if resume in (None, False, "", "none"):
        return None
    if resume in (True, "auto", "latest"):
        return latest_checkpoint(output_dir)
    path = Path(str(resume))
    if path.is_dir() and (path / STATE_FILE).is_file():
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise CheckpointError(f"--resume {path}: neither a checkpoint nor a directory holding checkpoint-<step>")
    return found
