"""Configuration of reward-model training (``rlhfkit train-rm``): defaults, YAML, ``--set`` overrides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Optional

from rlhfkit.config import field
from rlhfkit.training_config import OptimConfig, Schedule


@dataclass
class RewardLossConfig:
    """How each kind of feedback turns into a loss, and how kinds are mixed."""

    use_margin: bool = field(True, help="Subtract a pair's margin inside Bradley-Terry: -log σ(r_c - r_r - m).")
    label_smoothing: float = field(0.0, help="Bradley-Terry label smoothing ε (share of preferences assumed flipped).")
    rating_loss: Literal["regression", "ordinal"] = field(
        "regression", help="Ratings: squared error on normalized ratings, or a cumulative-link ordinal model.")
    pairwise_weight: float = field(1.0, help="Mixture weight of comparisons.")
    ranking_weight: float = field(1.0, help="Mixture weight of rankings (Plackett-Luce).")
    rating_weight: float = field(1.0, help="Mixture weight of ratings.")
    label_weight: float = field(1.0, help="Mixture weight of good/bad labels (BCE).")

    def kind_weights(self) -> dict[str, float]:
        """Mixture weight per record kind."""
        return {"pairwise": self.pairwise_weight, "ranking": self.ranking_weight,
                "rating": self.rating_weight, "label": self.label_weight}


@dataclass
class RewardOptimConfig(OptimConfig):
    """Optimizer defaults of reward-model training: 5% warmup, then linear decay; unfused AdamW.

    The trunk at lr 1e-4 with early stopping, the head (``head_lr``, from zero) at 3e-3: on real human
    preferences, 5-fold by question (bench/reward_real.py --folds 5), the best of the settings measured
    (docs/reward-models.md); with the old random head, 1e-4 fitted the noise within an epoch.
    """

    lr: float = field(1e-4, help="Peak learning rate of the trunk (after warmup).")
    schedule: Schedule = field("linear", help="Learning-rate decay after warmup: constant, linear or cosine (to 0).")
    warmup_ratio: float = field(0.05, help="Share of the optimizer steps spent warming up (when warmup_steps is None).")
    fused: bool = field(False, help="Fused AdamW kernel on CPU/CUDA; same update, fewer passes over the parameters.")


@dataclass
class RewardTrainConfig:
    """Everything ``rlhfkit train-rm`` needs; each field can be set in YAML or with ``--set``."""

    RENAMED: ClassVar[dict[str, str]] = {
        "lr": "optim.lr", "grad_accum": "optim.grad_accum", "weight_decay": "optim.weight_decay",
        "warmup_ratio": "optim.warmup_ratio", "max_grad_norm": "optim.max_grad_norm"}

    model: str = field("builtin", help="Trunk: 'builtin', a local model directory, or a sequence classifier.")
    data: list[str] = field(default_factory=list, help="Feedback files (.jsonl/.json/.csv/.parquet or HF dataset dirs).")
    eval_data: list[str] = field(default_factory=list, help="Held-out feedback; when empty, eval_fraction of data.")
    eval_fraction: float = field(0.1, help="Share of records held out for evaluation when eval_data is empty.")
    output_dir: str = field("runs/reward-model", help="Checkpoints, logs, final model (model/) and reports.")
    rating_scale: Optional[list[float]] = field(None, help="Scale [low, high] for ratings that do not declare one.")
    critiques: list[str] = field(default_factory=list, help="Critique files (JSONL: prompt, response, critique[, "
                                 "rating, scale]) encoded into ratings on [-1, 1] weighted by confidence, mixed in.")
    critique_encoder: str = field("rules", help="Critique encoder: rules, rules:FILE, learned, learned:FILE.npz, "
                                  "module:function or a reward-model directory.")
    critique_min_confidence: float = field(0.0, help="Encoded critiques at or below this confidence are dropped.")
    max_length: int = field(512, help="Tokens per prompt+response (capped by the trunk's context length).")
    min_prompt_tokens: int = field(64, help="Prompt tokens kept (from its end) before a long response is cut.")
    pooling: Literal["last", "mean", "last_mean"] = field(
        "last", help="What a fresh head reads: the last token's hidden state, the mean over tokens, or both "
                     "(a saved reward model keeps its own).")
    likelihood: bool = field(False, help="A fresh head also reads the response's mean log-probability under the "
                                         "trunk's own LM head (one weight per head, from 0): what a pretrained LM "
                                         "knows about an answer, which a linear head on hidden states cannot compute.")
    likelihood_model: Optional[str] = field(
        None, help="A frozen causal LM (directory or name) whose mean log-probability of each response a fresh head "
                   "also reads (one weight per head, from 0): e.g. a larger LM that has read the sources the "
                   "annotators checked. Scored once per response, saved inside the reward model.")
    likelihood_fit: Literal["separate", "joint"] = field(
        "separate", help="How a head that reads a likelihood weighs it. separate: the pooled head trains as "
                         "without it, then the weight is the likelihood's own Bradley-Terry fit on the training "
                         "pairs and rankings, so the reward adds two independently calibrated log-odds; joint: "
                         "the weight learns from 0 with the head, then is refit on the early-stopping slice.")
    batch_size: int = field(16, help="Records per micro-batch (a pair's two responses share one forward pass).")
    epochs: int = field(2, help="Passes over the training records (at most: early stopping may end sooner).")
    max_steps: Optional[int] = field(None, help="Optimizer steps; overrides epochs when set.")
    early_stopping_fraction: float = field(
        0.1, help="Share of the training prompts held out to keep the step with the lowest held-out loss "
                  "(0 = keep the last step). Real preferences are noisy: the best step comes early and varies by "
                  "seed, so it is measured rather than guessed.")
    early_stopping_checks: int = field(4, help="Held-out checks per epoch (plus one at the last step).")
    early_stopping_patience: int = field(3, help="Stop after this many checks without a new best (0 = never).")
    optim: RewardOptimConfig = field(default_factory=RewardOptimConfig,
                                     help="AdamW, accumulation, clipping and schedule.")
    head_init_std: Optional[float] = field(0.0, help="Std of a fresh reward head's weights (0: every reward starts "
                                                     "at 0 and each pair at loss ln 2; None: 1/sqrt(width+1)).")
    head_lr: Optional[float] = field(3e-3, help="Peak learning rate of the reward head (None: optim.lr), on optim's "
                                               "schedule: the head is fitted like a logistic probe on the trunk's "
                                               "features while the trunk moves at optim.lr.")
    disable_dropout: bool = field(True, help="Turn dropout off in the trunk (steadier reward training).")
    gradient_checkpointing: bool = field(False, help="Recompute the trunk's activations in the backward: less "
                                                     "memory, ~30% more compute.")
    row_halves: Literal["auto", "always", "never"] = field(
        "auto", help="CPU, 2+ threads, no dropout: each micro-batch's records run as two halves side by side, on "
                     "half the threads each, forward and backward (the gradient of the whole micro-batch up to float "
                     "rounding; never under gradient checkpointing; auto is always here: a reward model trains "
                     "every parameter).")
    num_heads: int = field(1, help="Scalar heads on one trunk; >1 makes a k-head ensemble.")
    ensemble_size: int = field(1, help="Independent models trained with seeds seed..seed+k-1 (bootstrapped data).")
    bootstrap: bool = field(True, help="With several heads/members, weight records by Poisson(1) draws per member.")
    bootstrap_unit: Literal["record", "prompt"] = field(
        "record", help="What one bootstrap draw weighs: each record, or each prompt (all its records share the draw, "
                       "a cluster bootstrap like an evaluation on unseen prompts).")
    group_by_length: bool = field(True, help="Batch records of similar length together (less padding).")
    seed: int = field(0, help="Seed for initialization, data order and splits.")
    device: str = field("auto", help="cpu, cuda, cuda:N or auto.")
    dtype: str = field("float32", help="float32, bfloat16 (autocast, float32 weights) or auto.")
    threads: Optional[int] = field(None, help="CPU threads (default: RLHFKIT_THREADS or up to 8).")
    save_every: int = field(200, help="Optimizer steps between checkpoints (0 = only at the end).")
    keep_checkpoints: int = field(2, help="Newest checkpoints kept.")
    resume: bool = field(True, help="Continue from the newest checkpoint in output_dir when there is one.")
    log_every: int = field(10, help="Optimizer steps between metric records.")
    eval_every: int = field(0, help="Optimizer steps between evaluations (0 = only at the end).")
    normalization_samples: int = field(512, help="Reference responses whose reward mean/std are stored with the model.")
    bootstrap_samples: int = field(1000, help="Bootstrap resamples for the evaluation's confidence intervals.")
    progress: bool = field(True, help="Show a rich progress bar.")
    report_to: str = field("tensorboard", help="Metric backends: tensorboard, wandb, mlflow, none.")
    loss: RewardLossConfig = field(default_factory=RewardLossConfig, help="Loss settings.")


@dataclass
class RewardEvalConfig:
    """Settings of ``rlhfkit eval-rm``."""

    model: str = field("", help="Reward model directory (from train-rm) or a sequence classifier directory.")
    data: list[str] = field(default_factory=list, help="Held-out feedback files of any kinds.")
    output_dir: str = field("runs/reward-eval", help="Where eval.json, reliability.png and logs go.")
    rating_scale: Optional[list[float]] = field(None, help="Scale [low, high] for ratings that do not declare one.")
    bootstrap_samples: int = field(1000, help="Bootstrap resamples for confidence intervals.")
    confidence: float = field(0.95, help="Confidence level of the intervals.")
    batch_size: int = field(32, help="Sequences per forward pass.")
    device: str = field("auto", help="cpu, cuda, cuda:N or auto.")
    threads: Optional[int] = field(None, help="CPU threads.")
    seed: int = field(0, help="Seed of the bootstrap.")
    report_to: str = field("none", help="Metric backends: tensorboard, wandb, mlflow, none.")


@dataclass
class RewardProbeConfig:
    """Settings of ``rlhfkit probe-rm``."""

    model: str = field("", help="Reward model directory.")
    data: list[str] = field(default_factory=list, help="Feedback files whose good responses are probed.")
    output_dir: str = field("runs/reward-probe", help="Where probes.json and logs go.")
    rating_scale: Optional[list[float]] = field(None, help="Scale [low, high] for ratings that do not declare one.")
    samples: int = field(64, help="Distinct (prompt, response) samples to probe.")
    probes: list[str] = field(default_factory=list, help="Probe names (empty = all).")
    suffix_length: int = field(3, help="Words of the greedy suffix search (0 = skip it).")
    suffix_candidates: int = field(32, help="Frequent response words added to the generic suffix candidates.")
    batch_size: int = field(64, help="Sequences per forward pass.")
    device: str = field("auto", help="cpu, cuda, cuda:N or auto.")
    threads: Optional[int] = field(None, help="CPU threads.")
    report_to: str = field("none", help="Metric backends: tensorboard, wandb, mlflow, none.")
