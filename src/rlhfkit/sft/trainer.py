"""Supervised fine-tuning through ``accelerate``: one loop for CPU, one GPU, DDP, FSDP and DeepSpeed.

The spine of :meth:`SFTTrainer.train`: pick the step's global batch (a pure function of seed and
step, see :mod:`rlhfkit.sft.stream`), run this process's micro-batches with gradient
accumulation, clip, step AdamW and the schedule, log, checkpoint. The loss of a step is the summed
completion NLL divided by the completion-token count of the *whole global batch*, so the update
does not depend on how the batch is split across micro-batches or processes.

A step whose loss or gradient norm is not finite is skipped (no update, counted as
``train/skipped_steps``; the batch is consumed and the schedule advances). Weights are checked
before every save and never written when not finite.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from rlhfkit.config import config_to_dict
from rlhfkit.data.sft import SFTCollator, load_sft_dataset
from rlhfkit.sft.checkpointing import (FINAL_DIR, MODEL_DIR, SFTError, TrainProgress, check_resumable,
                                       load_trainer_state, prepare_output_dir, save_checkpoint, save_final)
from rlhfkit.sft.config import SFTConfig
from rlhfkit.sft.loss import model_nll_sum
from rlhfkit.sft.stream import global_batch_indices, rank_micro_batches, total_steps

if TYPE_CHECKING:
    from accelerate import Accelerator

# The shared schedule names as transformers.get_scheduler spells them (linear warmup in each).
HF_SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


@dataclass
class StepStats:
    """What one optimizer step measured (identical on every process)."""

    loss: float
    grad_norm: float
    lr: float
    tokens: int
    skipped: bool


@dataclass
class SFTResult:
    """Summary of a finished run (what ``rlhfkit sft`` prints)."""

    final_dir: Path
    run_dir: Path | None
    steps: int
    resumed_from_step: int
    final_loss: float
    first_loss: float
    skipped_steps: int
    num_examples: int
    truncated_examples: int
    skipped_long_prompts: int
    tokens_per_s: float
    elapsed_s: float
    num_processes: int


def make_accelerator(config: SFTConfig) -> Accelerator:
    """An Accelerator honouring the config and any ``accelerate launch``/torchrun environment."""
    from accelerate import Accelerator

    has_gpu = torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())
    try:
        accelerator = Accelerator(cpu=config.cpu or not has_gpu, mixed_precision=config.mixed_precision,
                                  gradient_accumulation_steps=config.optim.grad_accum)
    except (ValueError, RuntimeError) as exc:
        raise SFTError(f"accelerate could not start: {exc}") from None
    _refuse_dropped_engine(accelerator)
    return accelerator


def _refuse_dropped_engine(accelerator: Accelerator) -> None:
    """Refuse an FSDP/DeepSpeed launch that accelerate turned into plain data parallel (it does on CPU)."""
    from accelerate.utils import DistributedType

    for variable, engine in (("ACCELERATE_USE_FSDP", DistributedType.FSDP),
                             ("ACCELERATE_USE_DEEPSPEED", DistributedType.DEEPSPEED)):
        if os.environ.get(variable, "").lower() == "true" and accelerator.distributed_type != engine:
            raise SFTError(f"the accelerate config asks for {engine.value} but accelerate runs "
                           f"{accelerator.distributed_type.value} on this machine (FSDP and DeepSpeed need GPUs): "
                           "on CPU run data parallel with torchrun (see docs/distributed.md)")


def _configure_threads(accelerator: Accelerator) -> None:
    """Bound intra-op threads; several processes on one CPU share its cores instead of oversubscribing."""
    from rlhfkit.utils.runtime import configure_threads

    if accelerator.num_processes == 1 or "RLHFKIT_THREADS" in os.environ:
        configure_threads()
        return
    local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    configure_threads(max(1, (os.cpu_count() or 1) // local))


def resolve_max_length(requested: int | None, model_config: Any) -> int:
    """``requested``, checked against the model's context length, or that context (1024 if unknown)."""
    context = None
    for name in ("max_position_embeddings", "n_positions", "seq_length"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            context = value
            break
    if requested is None:
        return context or 1024
    if context is not None and requested > context:
        raise SFTError(f"max_length {requested} exceeds the model's context of {context} tokens")
    return requested


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only; biases and norm gains (1-D parameters) are not decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


class SFTTrainer:
    """Holds the model, data, optimizer and schedule of one SFT run; :meth:`train` runs it."""

    def __init__(self, config: SFTConfig, accelerator: Accelerator | None = None) -> None:
        from transformers import get_scheduler

        from rlhfkit.models.loading import load_causal_lm, load_tokenizer, resolve_model_path
        from rlhfkit.utils.runtime import seed_everything

        self.config = config
        self.accelerator = accelerator or make_accelerator(config)
        _configure_threads(self.accelerator)
        seed_everything(config.seed)
        self.output_dir = Path(config.output_dir)
        acc = self.accelerator
        self.resume_from = prepare_output_dir(self.output_dir, config.resume, config.overwrite, acc.is_main_process)
        acc.wait_for_everyone()
        with acc.main_process_first():  # the main process builds the built-in model once; the others load it
            model_path = resolve_model_path(config.model)
            self.tokenizer = load_tokenizer(model_path, padding_side="right",
                                            trust_remote_code=config.trust_remote_code)
            model = load_causal_lm(self.resume_from / MODEL_DIR if self.resume_from else model_path, device="cpu",
                                   dtype=torch.float32, trust_remote_code=config.trust_remote_code,
                                   adapter_trainable=True)
        model.train()
        self.max_length = resolve_max_length(config.max_length, model.config)
        self.data_path = self._data_path()
        self.dataset = load_sft_dataset(self.data_path, self.tokenizer, self.max_length,
                                        config.skip_long_prompts, config.data_split)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.collate = SFTCollator(pad_token_id=pad_id if pad_id is not None else 0)
        self.global_batch = config.per_device_batch_size * config.optim.grad_accum * acc.num_processes
        steps = total_steps(len(self.dataset), self.global_batch, config.num_epochs, config.max_steps)
        self.progress = TrainProgress(global_batch_size=self.global_batch, total_steps=steps,
                                      num_examples=len(self.dataset))
        optim = config.optim
        optimizer = torch.optim.AdamW(_param_groups(model, optim.weight_decay),
                                      **optim.adamw_kwargs({acc.device.type}))
        self.scheduler = get_scheduler(HF_SCHEDULES[optim.schedule], optimizer, num_warmup_steps=optim.warmup(steps),
                                       num_training_steps=steps)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        if self.resume_from is not None:
            self._restore(self.resume_from)
        self.resumed_from_step = self.progress.step

    def _data_path(self) -> Path:
        """The configured data, or the demo dataset (written once by the main process) when unset."""
        if self.config.data is not None:
            return Path(self.config.data)
        from rlhfkit.sft.demo import fits_context, write_demo_dataset

        path = self.output_dir / "demo_sft.jsonl"
        if self.accelerator.is_main_process and not path.exists():
            write_demo_dataset(path, self.config.demo_records, seed=self.config.seed,
                               keep=fits_context(self.tokenizer, self.max_length))
        self.accelerator.wait_for_everyone()
        return path

    def _restore(self, checkpoint: Path) -> None:
        """Load optimizer, schedule, counters and (last, after anything that draws random numbers) RNG."""
        from rlhfkit.utils.checkpoint import restore_rng_state

        state = load_trainer_state(checkpoint)
        saved = TrainProgress(**state["progress"])
        check_resumable(saved, self.progress, checkpoint, state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.progress = saved
        rng = state["rng"]
        restore_rng_state(rng[self.accelerator.process_index % len(rng)])

    def train_step(self, step: int) -> StepStats:
        """One optimizer step on global batch ``step``: accumulate, reduce, clip, update (or skip)."""
        acc, cfg = self.accelerator, self.config
        indices = global_batch_indices(step, len(self.dataset), self.global_batch, cfg.seed)
        target_tokens = sum(self.dataset.examples[i].num_target_tokens for i in indices)
        # accelerate divides by the accumulation steps and DDP averages over processes; undo both
        # so the gradient is that of (summed NLL of the global batch) / (its target tokens).
        scale = acc.num_processes * acc.gradient_accumulation_steps / max(target_tokens, 1)
        nll_total = torch.zeros((), device=acc.device)
        tokens = torch.zeros((), device=acc.device, dtype=torch.long)
        micro = rank_micro_batches(indices, acc.process_index, acc.num_processes, cfg.per_device_batch_size,
                                   cfg.optim.grad_accum)
        for micro_indices in micro:
            examples = [self.dataset.examples[i] for i in micro_indices]
            batch = {k: v.to(acc.device) for k, v in self.collate(examples).items()}
            with acc.accumulate(self.model):
                nll, _ = model_nll_sum(self.model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                       inner=acc.unwrap_model(self.model))
                acc.backward(nll * scale)
            nll_total += nll.detach().float()
            tokens += batch["attention_mask"].sum()
        loss = (acc.reduce(nll_total, reduction="sum") / max(target_tokens, 1)).item()
        total_tokens = int(acc.reduce(tokens, reduction="sum").item())
        norm = acc.clip_grad_norm_(self.model.parameters(), cfg.optim.clip_threshold())
        grad_norm = float(norm) if norm is not None else float("nan")
        lr = self.scheduler.get_last_lr()[0]
        finite = math.isfinite(loss) and (norm is None or math.isfinite(grad_norm))
        skipped = not finite
        if finite or acc.scaler is not None:
            self.optimizer.step()
            skipped = skipped or acc.optimizer_step_was_skipped
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return StepStats(loss=loss, grad_norm=grad_norm, lr=lr, tokens=total_tokens, skipped=skipped)

    def train(self) -> SFTResult:
        """Run the remaining steps, checkpoint every ``save_steps``, save ``output_dir/final``."""
        from rlhfkit.config import save_config
        from rlhfkit.utils.progress import make_progress
        from rlhfkit.utils.tracking import Tracker, new_run_dir

        acc, cfg, prog = self.accelerator, self.config, self.progress
        run_dir = new_run_dir(self.output_dir / "logs", "sft") if acc.is_main_process else None
        if acc.is_main_process:
            save_config(cfg, self.output_dir / "sft_config.yaml")
        tracker = Tracker(run_dir or self.output_dir, report_to=cfg.report_to, config=config_to_dict(cfg),
                          enabled=acc.is_main_process)
        first_loss = last_loss = float("nan")
        start, start_tokens = time.perf_counter(), prog.tokens_seen
        with tracker, make_progress(disable=not (cfg.progress and acc.is_main_process)) as bar:
            task = bar.add_task("sft", total=prog.total_steps, completed=prog.step, info="")
            while prog.step < prog.total_steps:
                tick = time.perf_counter()
                stats = self.train_step(prog.step)
                prog.step += 1
                prog.tokens_seen += stats.tokens
                prog.skipped_steps += int(stats.skipped)
                last_loss = stats.loss
                first_loss = stats.loss if math.isnan(first_loss) else first_loss
                if prog.step % cfg.logging_steps == 0 or prog.step == prog.total_steps:
                    tracker.log(self._metrics(stats, time.perf_counter() - tick), prog.step)
                bar.update(task, completed=prog.step, info=f"loss {stats.loss:.4f} lr {stats.lr:.2e}")
                if cfg.save_steps and prog.step % cfg.save_steps == 0:
                    save_checkpoint(self.output_dir / f"checkpoint-{prog.step}", acc, self.model, self.tokenizer,
                                    self.optimizer, self.scheduler, prog, cfg.save_total_limit)
        elapsed = time.perf_counter() - start
        final_dir = self.output_dir / FINAL_DIR
        save_final(final_dir, acc, self.model, self.tokenizer,
                   {"sft_config.yaml": yaml.safe_dump(config_to_dict(cfg), sort_keys=False)})
        return SFTResult(final_dir=final_dir, run_dir=run_dir, steps=prog.step, resumed_from_step=self.resumed_from_step,
                         final_loss=last_loss, first_loss=first_loss, skipped_steps=prog.skipped_steps,
                         num_examples=len(self.dataset), truncated_examples=self.dataset.num_truncated,
                         skipped_long_prompts=len(self.dataset.skipped_long_prompts),
                         tokens_per_s=(prog.tokens_seen - start_tokens) / max(elapsed, 1e-9), elapsed_s=elapsed,
                         num_processes=acc.num_processes)

    def _metrics(self, stats: StepStats, seconds: float) -> dict[str, float]:
        prog = self.progress
        return {"loss/total": stats.loss, "optim/lr": stats.lr, "grad/norm": stats.grad_norm,
                "perf/tokens_per_s": stats.tokens / max(seconds, 1e-9), "time/step": seconds,
                "train/epoch": prog.position()["epoch"],
                "train/skipped_steps": prog.skipped_steps}


def train_sft(config: SFTConfig) -> SFTResult:
    """Build an :class:`SFTTrainer` from ``config`` and run it to the end."""
    return SFTTrainer(config).train()


def result_as_dict(result: SFTResult) -> dict[str, Any]:
    """The result as plain JSON-able values (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
