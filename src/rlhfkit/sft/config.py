"""Configuration of ``rlhfkit sft``: every field has a default that works on the built-in model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlhfkit.config import ConfigError, field


@dataclass
class SFTConfig:
    """Supervised fine-tuning settings (defaults < YAML file < ``--set key=value`` < flags)."""

    model: str = field("builtin", help="Model to fine-tune: 'builtin', a local save_pretrained directory or a hub id.")
    data: str | None = field(None, help="JSONL file (prompt/completion or messages records) or a save_to_disk "
                                        "dataset directory; unset: a demo dataset made from the built-in corpus.")
    data_split: str = field("train", help="Split to use when `data` is a dataset dictionary.")
    demo_records: int = field(200, help="Number of demo records generated when `data` is unset.")
    output_dir: str = field("runs/sft", help="Where checkpoints, logs and the final model (output_dir/final) go.")
    max_length: int | None = field(None, help="Longest sequence in tokens; unset: the model's context length.")
    skip_long_prompts: bool = field(False, help="Skip (and count) records whose prompt fills max_length instead "
                                                "of stopping with an error naming the record.")
    per_device_batch_size: int = field(8, help="Examples per process per micro-batch.")
    gradient_accumulation_steps: int = field(1, help="Micro-batches per optimizer step; global batch = "
                                                     "per_device_batch_size x gradient_accumulation_steps x processes.")
    num_epochs: float = field(3.0, help="Passes over the data (fractions allowed); ignored when max_steps is set.")
    max_steps: int | None = field(None, help="Optimizer steps to run; overrides num_epochs.")
    learning_rate: float = field(5e-4, help="Peak AdamW learning rate (after warmup).")
    weight_decay: float = field(0.0, help="AdamW decoupled weight decay.")
    adam_beta1: float = field(0.9, help="AdamW beta1.")
    adam_beta2: float = field(0.999, help="AdamW beta2.")
    adam_epsilon: float = field(1e-8, help="AdamW epsilon.")
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = field(
        "cosine", help="Learning-rate schedule after warmup (transformers.get_scheduler).")
    warmup_ratio: float = field(0.05, help="Fraction of the steps spent warming up linearly from 0.")
    warmup_steps: int | None = field(None, help="Warmup steps; overrides warmup_ratio when set.")
    max_grad_norm: float = field(1.0, help="Clip the global gradient L2 norm to this; 0 disables clipping.")
    mixed_precision: Literal["no", "fp16", "bf16"] | None = field(
        None, help="Mixed precision through accelerate; unset: what `accelerate config`/launch chose, else no.")
    cpu: bool = field(False, help="Train on CPU even when a GPU is present (forced when there is none).")
    seed: int = field(0, help="Seed for data order, dropout and initialisation.")
    save_steps: int = field(50, help="Write a checkpoint every this many optimizer steps (0: only the final model).")
    save_total_limit: int = field(2, help="Keep this many newest checkpoints.")
    logging_steps: int = field(1, help="Log metrics every this many optimizer steps.")
    report_to: str = field("tensorboard", help="Metric backends, comma separated: tensorboard, wandb, mlflow, none.")
    resume: bool = field(False, help="Continue from the newest checkpoint in output_dir (start fresh if none).")
    overwrite: bool = field(False, help="Delete checkpoints of an earlier run in output_dir instead of refusing.")
    trust_remote_code: bool = field(False, help="Allow model code from the hub (only for models you trust).")
    progress: bool = field(True, help="Show a rich progress bar.")

    def __post_init__(self) -> None:
        positive = {"per_device_batch_size": self.per_device_batch_size,
                    "gradient_accumulation_steps": self.gradient_accumulation_steps,
                    "demo_records": self.demo_records, "logging_steps": self.logging_steps,
                    "save_total_limit": self.save_total_limit}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.max_steps is None and self.num_epochs <= 0:
            raise ConfigError(f"num_epochs must be positive, got {self.num_epochs}")
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"max_length must be at least 2, got {self.max_length}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        for name in ("learning_rate", "weight_decay", "max_grad_norm", "save_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
