"""Config dataclasses of the RL trainers: one per concern, composed per algorithm.

Loaded with ``rlhfkit.config.load_config(cls, yaml, ["key=value", ...])``; nested keys read
``kl.coef=0.05``. Every default is visible here and in ``rlhfkit <cmd> --help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from rlhfkit.config import ConfigError, field
from rlhfkit.rl.sampling import SamplingConfig
from rlhfkit.training_config import LoraConfig, OptimConfig


@dataclass
class GenerationConfig(SamplingConfig):
    """Sampling of the RL trainers: the shared sampling config with shorter responses by default
    (logits of policy and reference use the same temperature)."""

    max_new_tokens: int = field(32, help="Tokens sampled per response at most.")


@dataclass
class RewardConfig:
    """Where scores come from and how they are turned into rewards."""

    models: list[str] = field(default_factory=list, help="Reward model directories (several = an ensemble).")
    functions: list[str] = field(default_factory=list, help="Reward functions module:function, f(prompts, responses) -> scores.")
    gold_function: str | None = field(None, help="Optional gold reward module:function, logged next to the proxy reward.")
    normalized: bool = field(True, help="Apply the reward models' stored mean/std normalization.")
    uncertainty_coef: float = field(0.0, help="Uncertainty penalty: reward = mean - coef * std over all heads of all "
                                                "reward models (a k-head model counts as k).")
    invalid_score: float | None = field(None, help="Opt-in: score replacing that of responses without EOS (and empty "
                                                    "ones with penalize_empty); None = every score is kept as given.")
    missing_eos_penalty: float | None = field(None, help="Opt-in: subtract this from the scores of responses without EOS "
                                                          "(instead of replacing them).")
    penalize_empty: bool = field(False, help="With invalid_score or missing_eos_penalty on: also treat responses with "
                                             "no text before EOS as invalid.")
    clip: float | None = field(None, help="Clip scores to [-clip, clip] before shaping.")
    scaling: Literal["none", "batch", "running", "whiten"] = field("none", help="Divide scores by the batch std or a running std, or whiten them over the batch (mean 0, std 1).")
    non_finite: Literal["skip", "error"] = field("skip", help="NaN/inf scores: skip the step (logged) or stop with an error.")
    offload: bool | None = field(None, help="Keep the reward models' weights in a file between scorings (CPU): "
                                             "they take no memory during generation and training; mapped back from "
                                             "the page cache to score. None (auto): on for reward models on the CPU "
                                             "unless the temporary directory is in memory (tmpfs); true: every "
                                             "reward model; false: off.")


@dataclass
class KLConfig:
    """KL regularisation toward the reference policy."""

    coef: float = field(0.05, help="Initial KL coefficient beta.")
    estimator: Literal["k1", "k2", "k3"] = field("k1", help="Per-token KL estimator of the penalty (Schulman 2020); "
                                                             "k1 in the reward is exact, see the objective table.")
    target: float | None = field(None, help="Target sequence KL for the adaptive controller (None = fixed beta).")
    horizon: float = field(10000.0, help="Adaptive controller horizon in episodes (Ziegler et al. 2019).")
    warn_negative: bool = field(True, help="Warn when the batch-mean KL estimate goes negative.")


@dataclass
class LoraOptions(LoraConfig):
    """LoRA defaults of the RL trainers: the shared LoraConfig without adapter dropout."""

    dropout: float = field(0.0, help="Adapter dropout (RL trainers run the policy in eval mode, so it stays off).")


@dataclass
class RunConfig:
    """What to train, where to write, how long, how robustly."""

    model: str = field("builtin", help="Policy: 'builtin', a local directory, or a cached hub id.")
    prompts: str | None = field(None, help="Prompt file (.txt one per line, or .jsonl with 'prompt' or chat "
                                                     "'messages'); default: a small built-in set.")
    output_dir: str | None = field(None, help="Run directory: checkpoints, metrics.jsonl, TensorBoard, final model (default runs/ppo, runs/grpo, ... after the command).")
    steps: int = field(100, help="Training steps (one rollout batch each).")
    seed: int = field(0, help="Seed for sampling, shuffling and initialisation.")
    device: str = field("auto", help="cpu, cuda, or auto.")
    dtype: str = field("auto", help="Compute dtype: float32, bfloat16, float16, or auto (bf16 on capable GPUs, else "
                                     "float32). bf16/fp16 run forwards under autocast with float32 master weights for "
                                     "everything trained; log-probs and losses stay float32.")
    gradient_checkpointing: bool = field(False, help="Recompute activations in the backward (policy and critic): less "
                                                     "memory, ~30% more compute.")
    threads: int | None = field(None, help="CPU threads (default: RLHFKIT_THREADS or min(cores, 8)).")
    lora: LoraOptions | None = field(None, help="LoRA adapters (e.g. --set run.lora.r=8); the reference is then the base with adapters off.")
    save_every: int = field(10, help="Checkpoint every N steps (0 = only at the end).")
    keep_checkpoints: int = field(2, help="Checkpoints kept on disk (the newest is never deleted).")
    max_consecutive_skips: int = field(5, help="Stop after this many consecutive skipped (non-finite) updates.")
    log_every: int = field(1, help="Log metrics every N steps.")
    progress: bool = field(True, help="Show a progress bar.")
    fused_gelu: bool = field(True, help="Run gelu_new as PyTorch's fused tanh-GELU (same function, faster).")
    side_by_side: bool = field(True, help="CPU, 2+ threads: independent models run at once, on half the threads "
                                          "each: a separate critic beside the policy (training) and the reference pass "
                                          "(values), a torch reward model beside the reference pass (PPO updates "
                                          "~15-20% faster on 2 cores; results differ from one after the other in "
                                          "float rounding only; off while run.release_memory is on).")
    row_halves: Literal["auto", "always", "never"] = field(
        "auto", help="CPU, 2+ threads, one trained model (no critic beside it): each micro-batch runs as two row "
                     "halves side by side, on half the threads each, forward and backward, and DPO's reference "
                     "pass as halves of its batches (GRPO updates ~10% faster and DPO runs ~12% faster on 2 cores; the "
                     "gradient of the whole micro-batch up to float rounding, as with gradient accumulation; never "
                     "under run.release_memory, gradient checkpointing or live dropout; with optim.grad_accum > 1 "
                     "the later micro-batches hold the second half's gradients apart until added: one more set "
                     "of the trained weights' gradients). auto: "
                     "not for adapters (LoRA), where the second thread's own heap raised PPO's peak memory by "
                     "10-20% for ~6% speed.")
    release_memory: bool = field(False, help="CPU on-policy runs: between phases, free MKL's cached buffers and return "
                                             "free heap pages to the OS (lower peak RSS, 5-10% more CPU time).")


@dataclass
class DPORunConfig(RunConfig):
    """Run settings of DPO: steps default to whole epochs over the data."""

    steps: int = field(0, help="Optimizer steps (0 = run `epochs` passes over the data).")


@dataclass
class DPOOptimConfig(OptimConfig):
    """Optimizer defaults of DPO."""

    lr: float = field(5e-7, help="Peak learning rate.")


@dataclass
class OnPolicyConfig:
    """What PPO, GRPO, RLOO and REINFORCE share: one batch of num_prompts x group_size responses a step,
    epochs of clipped updates on it, and the KL to the reference in the reward or the loss."""

    RENAMED: ClassVar[dict[str, str]] = {"grad_accum": "optim.grad_accum"}

    run: RunConfig = field(default_factory=RunConfig, help="Model, data, output, run length.")
    generation: GenerationConfig = field(default_factory=GenerationConfig, help="Sampling.")
    reward: RewardConfig = field(default_factory=RewardConfig, help="Reward source and shaping.")
    kl: KLConfig = field(default_factory=KLConfig, help="KL regularisation toward the reference.")
    optim: OptimConfig = field(default_factory=OptimConfig, help="Optimizer (policy and value model).")
    algo: Literal["ppo", "grpo", "rloo", "reinforce"] = field("ppo", help="Advantage estimator (rlhfkit.rl.algorithms).")
    recipe: Literal["exact", "grpo-paper"] = field("exact", help="Objective settings: exact = E[r] - beta KL(pi||ref); "
                                                                "grpo-paper = Shao et al. 2024 (k3 KL loss, std "
                                                                "scaling, seq_mean), which follows the forward KL.")
    num_prompts: int = field(64, help="Prompts per step.")
    group_size: int = field(1, help="Responses sampled per prompt (rows per step = num_prompts x group_size).")
    epochs: int = field(1, help="Passes over each batch (1 with one mini-batch = purely on-policy, ratio 1).")
    num_minibatches: int = field(1, help="Optimizer steps per epoch.")
    clip_range: float = field(0.2, help="Policy ratio clip epsilon.")
    clip_range_high: float | None = field(None, help="Upper ratio clip (None = clip_range).")
    kl_in: Literal["reward", "loss"] = field("reward", help="KL penalty in the per-token reward (exact with k1) or as a "
                                                            "loss term (k2: reverse KL at sampled prefixes; k3: forward KL).")
    scale_by_std: bool = field(False, help="GRPO: divide advantages by the group std (re-weights prompts: biased).")
    gamma: float = field(1.0, help="Discount of the per-token rewards.")
    whiten_advantages: bool = field(True, help="PPO/REINFORCE: whiten advantages over the batch (baseline + scale).")
    entropy_coef: float = field(0.0, help="Entropy bonus weight (changes the objective).")
    loss_aggregation: Literal["token_mean", "seq_mean"] = field("token_mean", help="Per-token losses averaged over the "
                                                                                   "mini-batch's tokens, or per response "
                                                                                   "first (length-biased).")
    value_model: Literal["head", "critic"] = field("head", help="PPO: value head on the policy trunk, or a separate critic.")
    critic_model: str | None = field(None, help="PPO: critic initialisation (default: the policy model).")
    value_clip: float | None = field(0.2, help="PPO: value clipping range (None = off).")
    vf_coef: float = field(0.1, help="PPO: value-loss weight.")
    lam: float = field(0.95, help="PPO: GAE lambda.")
    approx_kl_stop: float | None = field(None, help="Stop an update epoch once the mini-batch approx KL exceeds this.")

    def __post_init__(self) -> None:
        from rlhfkit.rl.objectives import RECIPES, check_objective

        for dotted, value in RECIPES[self.recipe].items():
            owner, _, name = dotted.rpartition(".")
            setattr(getattr(self, owner) if owner else self, name, value)
        check_objective(self.kl_in, self.kl.estimator, self.kl.coef, self.kl.target is not None)
        if self.num_prompts < 1 or self.group_size < 1:
            raise ConfigError(f"num_prompts and group_size must be >= 1, got {self.num_prompts} and {self.group_size}")
        if self.algo in ("grpo", "rloo") and self.group_size < 2:
            raise ConfigError(f"{self.algo} compares responses within a group: set group_size >= 2")

    def objective(self) -> str:
        """One line saying what this configuration optimizes (logged and printed at the start)."""
        from rlhfkit.rl.objectives import describe_objective

        replaces = self.reward.invalid_score is not None or self.reward.missing_eos_penalty is not None
        return describe_objective(self.kl_in, self.kl.estimator, self.scale_by_std and self.algo == "grpo",
                                  self.loss_aggregation, self.reward.scaling, replaces, self.entropy_coef)


@dataclass
class PPOConfig(OnPolicyConfig):
    """PPO for language models (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022)."""

    RENAMED: ClassVar[dict[str, str]] = {"grad_accum": "optim.grad_accum", "batch_size": "num_prompts"}

    algo: Literal["ppo", "grpo", "rloo", "reinforce"] = field("ppo", help="Advantage estimator: ppo = GAE on a value model.")
    num_prompts: int = field(64, help="Prompts (= episodes with group_size 1) per step.")
    epochs: int = field(4, help="PPO epochs over each batch.")
    num_minibatches: int = field(4, help="Optimizer steps per epoch.")
    approx_kl_stop: float | None = field(0.1, help="Stop an update epoch once the mini-batch approx KL exceeds this.")


@dataclass
class PolicyGradientConfig(OnPolicyConfig):
    """GRPO (Shao et al. 2024), RLOO (Ahmadian et al. 2024) and REINFORCE on groups of samples."""

    algo: Literal["ppo", "grpo", "rloo", "reinforce"] = field("grpo", help="Advantage estimator: grpo, rloo or reinforce.")
    num_prompts: int = field(16, help="Prompts per step.")
    group_size: int = field(4, help="Completions per prompt.")


@dataclass
class DPOConfig:
    """DPO (Rafailov et al. 2023) / IPO (Azar et al. 2023) on offline preference pairs."""

    RENAMED: ClassVar[dict[str, str]] = {"grad_accum": "optim.grad_accum"}

    run: DPORunConfig = field(default_factory=DPORunConfig, help="Model, output, seed.")
    optim: DPOOptimConfig = field(default_factory=DPOOptimConfig, help="Optimizer.")
    data: str = field("", help="Preference data (pairwise JSONL, TRL prompt/chosen/rejected, ...).")
    beta: float = field(0.1, help="DPO beta (strength of the implicit KL).")
    loss_type: Literal["sigmoid", "ipo"] = field("sigmoid", help="sigmoid = DPO, ipo = IPO.")
    label_smoothing: float = field(0.0, help="cDPO: assumed fraction of flipped labels.")
    epochs: int = field(1, help="Passes over the data (used when run.steps = 0).")
    batch_size: int = field(16, help="Pairs per optimizer step.")
    max_prompt_tokens: int = field(128, help="Prompt tokens kept (from the end).")
    max_response_tokens: int = field(128, help="Response tokens kept (from the start).")
    append_eos: bool = field(True, help="End every response with EOS (as sampled responses end).")

    def __post_init__(self) -> None:
        """Refuse label smoothing outside [0, 0.5) or under IPO, where it would be silently ignored."""
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.loss_type == "ipo" and self.label_smoothing != 0.0:
            raise ConfigError(f"label_smoothing={self.label_smoothing} applies only to loss_type=sigmoid "
                              "(cDPO); set label_smoothing=0 for loss_type=ipo")
