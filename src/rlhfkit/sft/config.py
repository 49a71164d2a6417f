"""Configuration of ``rlhfkit sft``: every field has a default that works on the built-in model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from rlhfkit.config import ConfigError, field
from rlhfkit.training_config import OptimConfig, Schedule


@dataclass
class SFTOptimConfig(OptimConfig):
    """Optimizer defaults of SFT: a cosine schedule after 5% warmup, unfused AdamW."""

    lr: float = field(5e-4, help="Peak learning rate (after warmup).")
    schedule: Schedule = field("cosine", help="Learning-rate decay after warmup: constant, linear or cosine (to 0).")
    warmup_ratio: float = field(0.05, help="Share of the optimizer steps spent warming up (when warmup_steps is None).")
    fused: bool = field(False, help="Fused AdamW kernel on CPU/CUDA; same update, fewer passes over the parameters.")


@dataclass
class SFTConfig:
    """Supervised fine-tuning settings (defaults < YAML file < ``--set key=value`` < flags)."""

    RENAMED: ClassVar[dict[str, str]] = {
        "learning_rate": "optim.lr", "gradient_accumulation_steps": "optim.grad_accum",
        "weight_decay": "optim.weight_decay", "adam_beta1": "optim.beta1", "adam_beta2": "optim.beta2",
        "adam_epsilon": "optim.eps", "lr_scheduler": "optim.schedule", "warmup_ratio": "optim.warmup_ratio",
        "warmup_steps": "optim.warmup_steps", "max_grad_norm": "optim.max_grad_norm"}

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
    num_epochs: float = field(3.0, help="Passes over the data (fractions allowed); ignored when max_steps is set.")
    max_steps: int | None = field(None, help="Optimizer steps to run; overrides num_epochs.")
    optim: SFTOptimConfig = field(default_factory=SFTOptimConfig,
                                  help="AdamW, accumulation, clipping and schedule; global batch = "
                                       "per_device_batch_size x optim.grad_accum x processes.")
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
        positive = {"per_device_batch_size": self.per_device_batch_size, "demo_records": self.demo_records, "logging_steps": self.logging_steps,
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
        if self.save_steps < 0:
            raise ConfigError(f"save_steps must not be negative, got {self.save_steps}")
