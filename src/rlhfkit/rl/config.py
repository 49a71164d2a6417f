"""Config dataclasses of the RL trainers: one per concern, composed per algorithm.

Loaded with ``rlhfkit.config.load_config(cls, yaml, ["key=value", ...])``; nested keys read
``kl.coef=0.05``. Every default is visible here and in ``rlhfkit <cmd> --help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlhfkit.config import field


@dataclass
class GenerationConfig:
    """How responses are sampled (logits of policy and reference use the same temperature)."""

    max_new_tokens: int = field(32, help="Tokens sampled per response at most.")
    min_new_tokens: int = field(0, help="EOS is suppressed before this many tokens.")
    temperature: float = field(1.0, help="Sampling temperature; log-probs use softmax(logits / temperature).")
    top_k: int = field(0, help="Sample from the k most likely tokens (0 = off).")
    top_p: float = field(1.0, help="Nucleus sampling mass (1.0 = off).")
    stop_strings: list[str] = field(default_factory=list, help="Responses are truncated after any of these.")
    backend: Literal["hf", "cached", "cached-static"] = field("cached", help="Rollout backend: transformers generate or our KV-cache loop.")


@dataclass
class RewardConfig:
    """Where scores come from and how they are turned into rewards."""

    models: list[str] = field(default_factory=list, help="Reward model directories (several = an ensemble).")
    functions: list[str] = field(default_factory=list, help="Reward functions module:function, f(prompts, responses) -> scores.")
    gold_function: str | None = field(None, help="Optional gold reward module:function, logged next to the proxy reward.")
    normalized: bool = field(True, help="Apply the reward models' stored mean/std normalization.")
    uncertainty_coef: float = field(0.0, help="Uncertainty penalty: reward = mean - coef * std over all heads of all "
                                                "reward models (a k-head model counts as k).")
    invalid_score: float | None = field(-1.0, help="Score replacing that of responses without EOS or empty ones (None = keep).")
    missing_eos_penalty: float | None = field(None, help="Instead of replacement, subtract this from scores of responses without EOS.")
    penalize_empty: bool = field(True, help="Treat responses with no token before EOS as invalid.")
    clip: float | None = field(None, help="Clip scores to [-clip, clip] before shaping.")
    scaling: Literal["none", "batch", "running", "whiten"] = field("none", help="Divide scores by the batch std or a running std, or whiten them over the batch (mean 0, std 1).")
    non_finite: Literal["skip", "error"] = field("skip", help="NaN/inf scores: skip the step (logged) or stop with an error.")


@dataclass
class KLConfig:
    """KL regularisation toward the reference policy."""

    coef: float = field(0.05, help="Initial KL coefficient beta.")
    estimator: Literal["k1", "k2", "k3"] = field("k1", help="Per-token KL estimator (Schulman 2020).")
    target: float | None = field(None, help="Target sequence KL for the adaptive controller (None = fixed beta).")
    horizon: float = field(10000.0, help="Adaptive controller horizon in episodes (Ziegler et al. 2019).")
    warn_negative: bool = field(True, help="Warn when the batch-mean KL estimate goes negative.")


@dataclass
class OptimConfig:
    """AdamW and learning-rate schedule."""

    lr: float = field(1e-5, help="Peak learning rate.")
    weight_decay: float = field(0.0, help="AdamW weight decay.")
    beta1: float = field(0.9, help="AdamW beta1.")
    beta2: float = field(0.999, help="AdamW beta2.")
    eps: float = field(1e-8, help="AdamW epsilon.")
    max_grad_norm: float | None = field(1.0, help="Clip the global gradient norm (None = off).")
    warmup_steps: int = field(0, help="Linear warmup, in optimizer steps.")
    schedule: Literal["constant", "linear", "cosine"] = field("constant", help="Learning-rate decay after warmup.")
    fused: bool = field(True, help="Fused AdamW kernel on CPU/CUDA (else foreach); same update, fewer passes.")


@dataclass
class LoraOptions:
    """LoRA adapter settings (mirrors rlhfkit.models.lora.LoraSettings without importing torch)."""

    r: int = field(16, help="Rank of the low-rank update.")
    alpha: float = field(32.0, help="Scaling numerator: the update is scaled by alpha / r.")
    dropout: float = field(0.0, help="Adapter dropout (RL trainers run the policy in eval mode, so it stays off).")
    target_modules: list[str] | None = field(None, help="Module names to adapt; None = detect the attention projections.")
    bias: Literal["none", "all", "lora_only"] = field("none", help="Which biases to train.")


@dataclass
class RunConfig:
    """What to train, where to write, how long, how robustly."""

    model: str = field("builtin", help="Policy: 'builtin', a local directory, or a cached hub id.")
    prompts: str | None = field(None, help="Prompt file (.txt one per line, or .jsonl with 'prompt'); default: a small built-in set.")
    output_dir: str | None = field(None, help="Run directory: checkpoints, metrics.jsonl, TensorBoard, final model (default runs/ppo, runs/grpo, ... after the command).")
    steps: int = field(100, help="Training steps (one rollout batch each).")
    seed: int = field(0, help="Seed for sampling, shuffling and initialisation.")
    device: str = field("auto", help="cpu, cuda, or auto.")
    dtype: str = field("auto", help="float32, bfloat16, float16, or auto.")
    threads: int | None = field(None, help="CPU threads (default: RLHFKIT_THREADS or min(cores, 8)).")
    lora: LoraOptions | None = field(None, help="LoRA adapters (e.g. --set run.lora.r=8); the reference is then the base with adapters off.")
    save_every: int = field(10, help="Checkpoint every N steps (0 = only at the end).")
    keep_checkpoints: int = field(2, help="Checkpoints kept on disk (the newest is never deleted).")
    max_consecutive_skips: int = field(5, help="Stop after this many consecutive skipped (non-finite) updates.")
    log_every: int = field(1, help="Log metrics every N steps.")
    progress: bool = field(True, help="Show a progress bar.")
    fused_gelu: bool = field(True, help="Run gelu_new as PyTorch's fused tanh-GELU (same function, faster).")


@dataclass
class GroupKLConfig(KLConfig):
    """KL defaults of GRPO: k3 as a loss term with beta = 0.04 (Shao et al. 2024)."""

    coef: float = field(0.04, help="KL coefficient beta.")
    estimator: Literal["k1", "k2", "k3"] = field("k3", help="Per-token KL estimator (Schulman 2020).")


@dataclass
class DPORunConfig(RunConfig):
    """Run settings of DPO: steps default to whole epochs over the data."""

    steps: int = field(0, help="Optimizer steps (0 = run `epochs` passes over the data).")


@dataclass
class DPOOptimConfig(OptimConfig):
    """Optimizer defaults of DPO."""

    lr: float = field(5e-7, help="Peak learning rate.")


@dataclass
class PPOConfig:
    """PPO for language models (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022)."""

    run: RunConfig = field(default_factory=RunConfig, help="Model, data, output, run length.")
    generation: GenerationConfig = field(default_factory=GenerationConfig, help="Sampling.")
    reward: RewardConfig = field(default_factory=RewardConfig, help="Reward source and shaping.")
    kl: KLConfig = field(default_factory=KLConfig, help="KL penalty in the reward.")
    optim: OptimConfig = field(default_factory=OptimConfig, help="Optimizer (policy and value).")
    batch_size: int = field(64, help="Prompts (= episodes) per step.")
    epochs: int = field(4, help="PPO epochs over each batch.")
    num_minibatches: int = field(4, help="Optimizer steps per epoch.")
    grad_accum: int = field(1, help="Micro-batches per mini-batch (gradient accumulation).")
    clip_range: float = field(0.2, help="Policy ratio clip epsilon.")
    clip_range_high: float | None = field(None, help="Upper ratio clip (None = clip_range).")
    value_model: Literal["head", "critic"] = field("head", help="Value head on the policy trunk, or a separate critic.")
    critic_model: str | None = field(None, help="Critic initialisation (default: the policy model).")
    value_clip: float | None = field(0.2, help="Value clipping range (None = off).")
    vf_coef: float = field(0.1, help="Value-loss weight.")
    gamma: float = field(1.0, help="Discount.")
    lam: float = field(0.95, help="GAE lambda.")
    whiten_advantages: bool = field(True, help="Whiten advantages over the batch.")
    entropy_coef: float = field(0.0, help="Entropy bonus weight.")
    approx_kl_stop: float | None = field(0.1, help="Stop an update epoch once the mini-batch approx KL exceeds this.")
    loss_aggregation: Literal["token_mean", "seq_mean"] = field("token_mean", help="How per-token losses are averaged.")


@dataclass
class PolicyGradientConfig:
    """GRPO (Shao et al. 2024), RLOO (Ahmadian et al. 2024) and REINFORCE on groups of samples."""

    run: RunConfig = field(default_factory=RunConfig, help="Model, data, output, run length.")
    generation: GenerationConfig = field(default_factory=GenerationConfig, help="Sampling.")
    reward: RewardConfig = field(default_factory=RewardConfig, help="Reward source and shaping.")
    kl: GroupKLConfig = field(default_factory=GroupKLConfig, help="KL regularisation.")
    optim: OptimConfig = field(default_factory=OptimConfig, help="Optimizer.")
    algo: Literal["grpo", "rloo", "reinforce"] = field("grpo", help="Advantage estimator.")
    num_prompts: int = field(16, help="Prompts per step.")
    group_size: int = field(4, help="Completions per prompt.")
    epochs: int = field(1, help="Passes over each batch (1 = on-policy, ratio 1).")
    num_minibatches: int = field(1, help="Optimizer steps per epoch.")
    grad_accum: int = field(1, help="Micro-batches per mini-batch (gradient accumulation).")
    clip_range: float = field(0.2, help="Ratio clip epsilon (matters when epochs or mini-batches > 1).")
    clip_range_high: float | None = field(None, help="Upper ratio clip (None = clip_range).")
    kl_in: Literal["auto", "loss", "reward"] = field("auto", help="KL as a loss term or in the reward; auto = loss for GRPO, reward for RLOO/REINFORCE.")
    scale_by_std: bool = field(True, help="GRPO: divide by the group std (False = Dr. GRPO).")
    gamma: float = field(1.0, help="REINFORCE discount.")
    whiten_advantages: bool = field(True, help="REINFORCE: whiten returns over the batch (baseline + scale).")
    entropy_coef: float = field(0.0, help="Entropy bonus weight.")
    loss_aggregation: Literal["token_mean", "seq_mean"] = field("seq_mean", help="How per-token losses are averaged.")


@dataclass
class DPOConfig:
    """DPO (Rafailov et al. 2023) / IPO (Azar et al. 2023) on offline preference pairs."""

    run: DPORunConfig = field(default_factory=DPORunConfig, help="Model, output, seed.")
    optim: DPOOptimConfig = field(default_factory=DPOOptimConfig, help="Optimizer.")
    data: str = field("", help="Preference data (pairwise JSONL, TRL prompt/chosen/rejected, ...).")
    beta: float = field(0.1, help="DPO beta (strength of the implicit KL).")
    loss_type: Literal["sigmoid", "ipo"] = field("sigmoid", help="sigmoid = DPO, ipo = IPO.")
    label_smoothing: float = field(0.0, help="cDPO: assumed fraction of flipped labels.")
    epochs: int = field(1, help="Passes over the data (used when run.steps = 0).")
    batch_size: int = field(16, help="Pairs per optimizer step.")
    grad_accum: int = field(1, help="Micro-batches per optimizer step.")
    max_prompt_tokens: int = field(128, help="Prompt tokens kept (from the end).")
    max_response_tokens: int = field(128, help="Response tokens kept (from the start).")
    append_eos: bool = field(True, help="End every response with EOS (as sampled responses end).")
