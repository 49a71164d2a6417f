"""The optimizer and LoRA settings every training command shares, so their keys read the same everywhere.

``sft``, ``train-rm`` and the RL commands each hold an ``optim`` section of this :class:`OptimConfig`
(a command subclasses it only to change defaults) and LoRA settings of this :class:`LoraConfig`.
Torch-free, so ``--help`` and config loading stay fast.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from rlhfkit.config import ConfigError, field

Schedule = Literal["constant", "linear", "cosine"]


@dataclass
class OptimConfig:
    """AdamW, gradient accumulation and clipping, and the learning-rate schedule."""

    lr: float = field(1e-5, help="Peak learning rate (after warmup).")
    weight_decay: float = field(0.0, help="AdamW decoupled weight decay (not applied to biases and norms).")
    beta1: float = field(0.9, help="AdamW beta1.")
    beta2: float = field(0.999, help="AdamW beta2.")
    eps: float = field(1e-8, help="AdamW epsilon.")
    max_grad_norm: float | None = field(1.0, help="Clip the global gradient L2 norm to this (None or 0 = off).")
    grad_accum: int = field(1, help="Micro-batches per optimizer step (gradient accumulation).")
    schedule: Schedule = field("constant", help="Learning-rate decay after warmup: constant, linear or cosine (to 0).")
    warmup_steps: int | None = field(None, help="Linear warmup in optimizer steps; None = use warmup_ratio.")
    warmup_ratio: float = field(0.0, help="Share of the optimizer steps spent warming up (when warmup_steps is None).")
    fused: bool = field(True, help="Fused AdamW kernel on CPU/CUDA; same update, fewer passes over the parameters.")

    def __post_init__(self) -> None:
        for name in ("lr", "weight_decay", "eps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"optim.{name} must not be negative, got {getattr(self, name)}")
        if self.max_grad_norm is not None and self.max_grad_norm < 0:
            raise ConfigError(f"optim.max_grad_norm must not be negative, got {self.max_grad_norm}")
        if self.grad_accum < 1:
            raise ConfigError(f"optim.grad_accum must be at least 1, got {self.grad_accum}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must not be negative, got {self.warmup_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"optim.{name} must be in [0, 1), got {getattr(self, name)}")

    def warmup(self, total_steps: int) -> int:
        """Warmup steps of a run of ``total_steps`` optimizer steps (warmup_steps, else the ratio)."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return int(self.warmup_ratio * total_steps)

    def clip_threshold(self) -> float:
        """The gradient-norm clip to pass to ``clip_grad_norm_`` (inf when clipping is off)."""
        return self.max_grad_norm if self.max_grad_norm else math.inf

    def adamw_kwargs(self, device_types: Collection[str]) -> dict[str, Any]:
        """Keyword arguments of ``torch.optim.AdamW`` (fused only where every parameter is on CPU or CUDA)."""
        kinds = set(device_types)
        fused = self.fused and bool(kinds) and (kinds <= {"cpu"} or kinds <= {"cuda"})
        return {"lr": self.lr, "betas": (self.beta1, self.beta2), "eps": self.eps,
                "weight_decay": self.weight_decay, **({"fused": True} if fused else {})}

    def lr_factor(self, step: int, total_steps: int) -> float:
        """Multiplier of ``lr`` at ``step``: linear warmup, then constant, linear or cosine decay to 0."""
        warmup = self.warmup(total_steps)
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, max(total_steps, warmup + 1) - warmup))
        if self.schedule == "linear":
            return 1.0 - progress
        if self.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0


@dataclass
class LoraConfig:
    """Low-rank adapters (Hu et al. 2021) on the attention projections; the frozen base can serve as reference."""

    r: int = field(16, help="Rank of the low-rank update.")
    alpha: float = field(32.0, help="Scaling numerator: the update is scaled by alpha / r.")
    dropout: float = field(0.05, help="Dropout on the adapter input during training.")
    target_modules: list[str] | None = field(None, help="Module names to adapt; None = detect the attention "
                                                        "projections (q_proj,v_proj / c_attn / ...).")
    bias: Literal["none", "all", "lora_only"] = field("none", help="Which biases to train (peft's 'bias').")

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"lora.r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if self.target_modules is not None and not self.target_modules:
            raise ConfigError("lora.target_modules is empty; leave it unset to detect the attention projections")
