"""SFT checkpoints: ``output_dir/checkpoint-<step>/`` with ``model/`` (save_pretrained, safetensors,
tokenizer included, so any checkpoint loads on its own) and ``trainer_state.pt`` (optimizer,
scheduler, every process's RNG state, counters), written atomically by the main process.

Under FSDP or DeepSpeed the full weights are gathered and saved, but the sharded optimizer state
is not, so ``--resume`` is refused there (single process and DDP resume exactly).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhfkit.utils.checkpoint import (atomic_write_dir, atomic_write_json, capture_rng_state, checkpoint_dirs,
                                      latest_checkpoint, load_state, prune_checkpoints, save_state)

if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import PreTrainedTokenizerBase

STATE_FILE = "trainer_state.pt"
MODEL_DIR = "model"
FINAL_DIR = "final"


class SFTError(RuntimeError):
    """A training run that cannot start or continue; the message says why and what to do."""


@dataclass
class TrainProgress:
    """Counters that, with the seed, fully determine where training stands."""

    step: int = 0
    skipped_steps: int = 0
    tokens_seen: int = 0
    global_batch_size: int = 0
    total_steps: int = 0
    num_examples: int = 0

    def position(self) -> dict[str, float]:
        """Where the data stream stands: examples consumed and (fractional) epoch."""
        samples = self.step * self.global_batch_size
        return {"samples_seen": samples, "epoch": samples / max(self.num_examples, 1)}


def prepare_output_dir(output_dir: Path, resume: bool, overwrite: bool, is_main: bool) -> Path | None:
    """Check ``output_dir`` for an earlier run and return the checkpoint to resume from (or None).

    Refuses to mix runs: checkpoints without ``resume``/``overwrite`` raise :class:`SFTError`.
    The main process deletes leftovers of an interrupted save and, with ``overwrite``, the old run.
    """
    existing = checkpoint_dirs(output_dir)
    final = output_dir / FINAL_DIR
    if (existing or final.exists()) and not resume and not overwrite:
        raise SFTError(f"{output_dir} already holds a run (checkpoints or final/): pass --resume to continue "
                       "it, --overwrite to replace it, or choose another --output-dir")
    if is_main and output_dir.is_dir():
        for leftover in output_dir.glob(".*.tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if overwrite and not resume:
            for old in [*existing, final]:
                shutil.rmtree(old, ignore_errors=True)
    return latest_checkpoint(output_dir) if resume else None


def save_checkpoint(path: Path, accelerator: Accelerator, model: Any, tokenizer: PreTrainedTokenizerBase,
                    optimizer: Any, scheduler: Any, progress: TrainProgress, keep: int) -> None:
    """Write one checkpoint (collective: every process must call it) and prune older ones."""
    from accelerate.utils import gather_object

    from rlhfkit.utils.checkpoint import all_finite

    unwrapped = accelerator.unwrap_model(model)
    if not all_finite(unwrapped):
        raise SFTError(f"weights are not finite at step {progress.step}; refusing to save {path} "
                       "(lower the learning rate; the previous checkpoint is intact)")
    rng_states = gather_object([capture_rng_state()])
    sharded = _is_sharded(accelerator)  # FSDP/DeepSpeed: full weights are gathered; optimizer shards are not saved
    state_dict = accelerator.get_state_dict(model) if sharded else None
    if accelerator.is_main_process:

        def write(tmp: Path) -> None:
            unwrapped.save_pretrained(tmp / MODEL_DIR, state_dict=state_dict)
            tokenizer.save_pretrained(tmp / MODEL_DIR)
            save_state(tmp / STATE_FILE, {"optimizer": None if sharded else optimizer.state_dict(),
                                          "scheduler": scheduler.state_dict(),
                                          "rng": rng_states, "progress": asdict(progress)})
            atomic_write_json(tmp / "trainer_state.json", {**asdict(progress), **progress.position()})

        atomic_write_dir(path, write)
        prune_checkpoints(path.parent, keep)
    accelerator.wait_for_everyone()


def save_final(path: Path, accelerator: Accelerator, model: Any, tokenizer: PreTrainedTokenizerBase,
               extra_files: dict[str, str]) -> None:
    """Write the final model + tokenizer (loadable by from_pretrained) atomically; collective call."""
    from rlhfkit.utils.checkpoint import all_finite

    unwrapped = accelerator.unwrap_model(model)
    if not all_finite(unwrapped):
        raise SFTError(f"final weights are not finite; refusing to save {path}")
    state_dict = accelerator.get_state_dict(model) if _is_sharded(accelerator) else None
    if accelerator.is_main_process:

        def write(tmp: Path) -> None:
            unwrapped.save_pretrained(tmp, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)
            for name, text in extra_files.items():
                (tmp / name).write_text(text, encoding="utf-8")

        atomic_write_dir(path, write)
    accelerator.wait_for_everyone()


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """The ``trainer_state.pt`` of ``checkpoint`` (weights-only load), with a clear error if unreadable."""
    try:
        return load_state(checkpoint / STATE_FILE)
    except (OSError, RuntimeError) as exc:
        raise SFTError(f"cannot read {checkpoint / STATE_FILE}: {exc}") from None


def check_resumable(saved: TrainProgress, current: TrainProgress, checkpoint: Path, state: dict[str, Any]) -> None:
    """Resume only runs with the same data size, global batch and length (else the data order differs)."""
    if state.get("optimizer") is None:
        raise SFTError(f"cannot resume from {checkpoint}: it was written under FSDP/DeepSpeed without the "
                       "optimizer state; resume is supported for single-process and DDP runs")
    for name in ("num_examples", "global_batch_size", "total_steps"):
        if getattr(saved, name) != getattr(current, name):
            raise SFTError(f"cannot resume from {checkpoint}: {name} was {getattr(saved, name)}, now "
                           f"{getattr(current, name)}; use the same data and batch settings, or --overwrite")


def _is_sharded(accelerator: Accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
