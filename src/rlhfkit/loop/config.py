"""The RLHF loop's configuration: one dataclass per phase, composed into :class:`LoopConfig`.

The defaults are the demo (``rlhfkit demo``): built-in model, sentiment task, SQLite store,
simulated panel through the server API, three rounds sized to finish in minutes on 2 CPU cores.
Trainer settings reuse the trainers' own configs (``policy.ppo`` is a :class:`PPOConfig`,
``reward.train`` a :class:`RewardTrainConfig`); the loop sets their model, data and output paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlhfkit.config import field
from rlhfkit.eval.overoptimization import WatchConfig
from rlhfkit.reward.config import RewardOptimConfig, RewardTrainConfig
from rlhfkit.rl.config import (DPOConfig, DPOOptimConfig, DPORunConfig, GenerationConfig, KLConfig, OptimConfig,
                               PolicyGradientConfig, PPOConfig, RewardConfig, RunConfig)

FeedbackSource = Literal["panel", "judge", "humans"]
FeedbackKind = Literal["pairwise", "critique", "edit"]
Algorithm = Literal["ppo", "grpo", "rloo", "reinforce", "dpo"]


@dataclass
class CandidateConfig:
    """How many responses the current policy writes for annotators each round."""

    prompts_per_round: int = field(80, help="Training-split prompts drawn per round (a fresh draw each round).")
    per_prompt: int = field(4, help="Candidate responses sampled per prompt (k >= 2; pairs are chosen among them).")
    max_new_tokens: int | None = field(None, help="Tokens per candidate at most (None = the task's max_new_tokens).")
    temperature: float = field(1.3, help="Sampling temperature of candidates; above 1 keeps the pool diverse after "
                                         "the policy sharpens, so annotators still see contrasting pairs.")


@dataclass
class SelectionConfig:
    """Which pairs of candidates are sent to annotators."""

    strategy: Literal["random", "active"] = field(
        "active", help="random pairs, or active: the pairs where the reward-model heads disagree most "
                       "(round 1 has no reward model yet and falls back to random).")
    comparisons_per_round: int = field(200, help="Pairwise comparisons asked per round (capped by the distinct pairs).")
    max_per_prompt: int = field(3, help="At most this many comparisons share one prompt.")


@dataclass
class PanelConfig:
    """The simulated annotator panel; its hidden utility is the task's gold reward."""

    size: int = field(5, help="Simulated annotators.")
    spammers: int = field(1, help="Members who answer uniformly at random (reliability estimation should spot them).")
    adversarial: int = field(0, help="Members who invert the utility.")
    temperature: float = field(0.1, help="Bradley-Terry noise of honest members, in gold-reward units.")
    position_bias: float = field(0.0, help="Added to the utility of the left-hand response.")
    length_bias: float = field(0.0, help="Utility added per 100 characters of response.")
    critique_noise: float = field(0.1, help="feedback.kind=critique or edit: Gaussian noise on each gold aspect score "
                                            "(in [0, 1]) an honest member perceives before writing its critique "
                                            "or rewrite.")


@dataclass
class JudgeConfig:
    """An AI judge that annotates through the same API (one annotator, redundancy 1)."""

    scorer: str = field("gold", help="'gold' (the task's gold reward as the judge), a reward-model directory, "
                                     "or module:function / path.py:function scoring (prompts, responses).")
    temperature: float = field(0.0, help="0 = deterministic choices; > 0 samples Bradley-Terry choices.")


@dataclass
class HumansConfig:
    """Human annotators in the web app: the loop waits until a quota or a deadline."""

    annotators: list[str] = field(default_factory=list, help="Names of existing annotators to add to each campaign "
                                                              "(others are invited with `rlhfkit campaign invite`).")
    quota: float = field(1.0, help="Stop waiting when this fraction of the round's comparisons is complete.")
    deadline_s: float = field(3600.0, help="Stop waiting this many seconds after the campaign opened.")
    poll_s: float = field(5.0, help="Seconds between progress checks.")


@dataclass
class FeedbackConfig:
    """Where comparisons go and who answers them."""

    source: FeedbackSource = field("panel", help="panel (simulated), judge (AI) or humans (web app).")
    kind: FeedbackKind = field(
        "pairwise", help="pairwise: annotators compare the selected pairs; critique: a rating campaign with "
                         "free-text critiques on the selected pairs' candidates, and the reward model trains on "
                         "the encoded critiques alone (the numeric ratings are dropped, so only the text carries "
                         "the signal); edit: an edit campaign on those candidates, whose rewrites become "
                         "preference pairs for the reward model (feedback.edit_pairs).")
    critique_encoder: str = field("rules", help="feedback.kind=critique: the critique encoder (rules, rules:FILE, "
                                                "learned, learned:FILE.npz, module:function, or a reward-model "
                                                "directory; see `rlhfkit encode-critiques --help`).")
    critique_min_confidence: float = field(0.0, help="feedback.kind=critique: drop encoded critiques at or below "
                                                     "this confidence.")
    edit_pairs: Literal["rewrite", "ranked", "both"] = field(
        "both", help="feedback.kind=edit: the reward model's pairs: rewrite (each rewrite over its original), "
                     "ranked (candidates of one prompt ranked by how much their editors changed them) or both "
                     "(demo seed 0, gold -0.189 ->: rewrite -0.083 rolled back, ranked -0.083, both 0.057).")
    edit_rank_gap: float = field(0.1, help="feedback.edit_pairs ranked/both: pair two candidates only when their "
                                           "mean normalized edit distances differ by more than this.")
    edits_sft: bool = field(False, help="feedback.kind=edit: before the policy phase, fine-tune the current policy "
                                        "(rlhfkit.sft) on the round's rewrites.")
    edits_sft_steps: int = field(8, help="feedback.edits_sft: optimizer steps per round.")
    edits_sft_lr: float = field(5e-5, help="feedback.edits_sft: peak learning rate.")
    edits_sft_batch_size: int = field(8, help="feedback.edits_sft: rewrites per step.")
    db_url: str | None = field(None, help="Feedback database for the loop's own server "
                                          "(default: SQLite RUN_DIR/feedback/feedback.db; PostgreSQL by URL).")
    server_url: str | None = field(None, help="Use an already running `rlhfkit serve` instead of starting one "
                                              "(its admin token from $RLHFKIT_ADMIN_TOKEN).")
    port: int = field(0, help="Port of the loop's own server on 127.0.0.1 (0 = any free port).")
    redundancy: int = field(2, help="Answers collected per comparison (the judge always uses 1).")
    reproducible: bool = field(True, help="Simulated panel or judge: members answer in turns and the loop's own "
                                          "server seeds task choice and display order from `seed`, so a run "
                                          "repeats exactly; false: members answer concurrently, as people do.")
    aggregate: Literal["reliability", "majority"] = field(
        "reliability", help="Combine answers by Dawid-Skene reliability EM or by majority vote.")
    instructions: str | None = field(None, help="Annotator instructions (default: the task's judge instructions).")
    wait_timeout_s: float = field(600.0, help="Panel/judge collection gives up after this many seconds.")
    panel: PanelConfig = field(default_factory=PanelConfig, help="Simulated panel (source=panel).")
    judge: JudgeConfig = field(default_factory=JudgeConfig, help="AI judge (source=judge).")
    humans: HumansConfig = field(default_factory=HumansConfig, help="Human annotators (source=humans).")


def _default_reward_train() -> RewardTrainConfig:
    """The loop's reward phase: three heads at lr 1e-3 from a random head (train-rm's real-data head settings,
    a zero head at head_lr 3e-3, are not adopted: on the demo's feedback this recipe reaches ~0.997 of Bayes)."""
    return RewardTrainConfig(num_heads=3, epochs=3, batch_size=16, optim=RewardOptimConfig(lr=1e-3),
                             head_init_std=None, head_lr=None, max_length=128,
                             min_prompt_tokens=16, eval_fraction=0.15, save_every=50, log_every=5,
                             normalization_samples=256, bootstrap_samples=200, progress=False,
                             early_stopping_fraction=0.0)


@dataclass
class AdversarialConfig:
    """An adversarial round after the reward phase: probe the reward model, ask annotators about its worst exploits."""

    enabled: bool = field(False, help="Probe the new reward model (rlhfkit probe-rm's probes), send the probed "
                                      "responses whose reward rose most to the annotators as pairwise comparisons "
                                      "(probed vs original), add their answers and retrain the reward model.")
    samples: int = field(64, help="This round's candidates the probes rewrite (one per distinct response).")
    comparisons: int = field(48, help="Probed-vs-original comparisons sent to annotators (largest reward rise first).")
    probes: list[str] = field(default_factory=list, help="Probe names (default: all of rlhfkit.reward.probes.PROBES).")
    suffix_length: int = field(2, help="Words of the greedy reward-raising suffix probe (0 = no suffix probe).")


@dataclass
class RewardPhaseConfig:
    """Reward-model update each round, on all feedback collected so far."""

    warm_start: bool = field(True, help="Continue from the previous round's reward model (or ensemble) instead of "
                                        "the base trunk.")
    train: RewardTrainConfig = field(default_factory=_default_reward_train,
                                     help="Reward training settings (model, data, output_dir, resume and progress "
                                          "are set by the loop).")
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig,
                                           help="Adversarial round after the reward phase.")


def _default_ppo() -> PPOConfig:
    """KL 0.15 and an entropy bonus of 0.01: at KL 0.1 the demo's third round lost diversity (distinct-2
    below 0.6 on seed 0, a rollback on seed 2); this keeps it at 0.63-0.70 on seeds 0-2 (README)."""
    return PPOConfig(run=RunConfig(steps=16, save_every=4, progress=False),
                     generation=GenerationConfig(max_new_tokens=48),
                     reward=RewardConfig(uncertainty_coef=0.5), kl=KLConfig(coef=0.15), optim=OptimConfig(lr=1e-4),
                     num_prompts=64, epochs=4, num_minibatches=4, entropy_coef=0.01)


def _default_group() -> PolicyGradientConfig:
    return PolicyGradientConfig(run=RunConfig(steps=16, save_every=4, progress=False),
                                generation=GenerationConfig(max_new_tokens=48), optim=OptimConfig(lr=1e-4),
                                num_prompts=16, group_size=4)


def _default_dpo() -> DPOConfig:
    return DPOConfig(run=DPORunConfig(steps=0, save_every=10, progress=False), optim=DPOOptimConfig(lr=5e-4),
                     beta=0.1, epochs=3, batch_size=16, max_prompt_tokens=32, max_response_tokens=48)


@dataclass
class PolicyPhaseConfig:
    """Policy optimization against the updated reward model."""

    algorithm: Algorithm = field("ppo", help="ppo (policy.ppo settings), grpo / rloo / reinforce (policy.group), or "
                                             "dpo (policy.dpo: offline on all aggregated feedback so far, reference = "
                                             "the base policy; the reward model still drives selection and eval).")
    prompts: int = field(256, help="Training-split prompts the policy is optimized on each round.")
    ppo: PPOConfig = field(default_factory=_default_ppo, help="PPO settings; run.model, run.output_dir, run.seed and "
                                                               "reward.models are set by the loop.")
    group: PolicyGradientConfig = field(default_factory=_default_group,
                                        help="GRPO/RLOO/REINFORCE settings (algo is set from policy.algorithm).")
    dpo: DPOConfig = field(default_factory=_default_dpo, help="DPO/IPO settings; run.model, run.output_dir, run.seed "
                                                              "and data are set by the loop.")


@dataclass
class EvalConfig:
    """End-of-round evaluation on held-out prompts, and the over-optimization watch."""

    prompts: int = field(64, help="Eval-split prompts (the same ones every round; base samples are the win-rate baseline).")
    samples_per_prompt: int = field(1, help="Responses per eval prompt.")
    judge: str | None = field("strict", help="Also judge the policy against the base policy by a scorer the loop never "
                                             "trains on -> eval/judge_win_rate: 'strict' (the task's strict rubric; "
                                             "skipped for a task without one), a reward-model directory, "
                                             "module:function scoring (prompts, responses), or null for none (the "
                                             "gold win rate is always measured when the task has gold).")
    ask_annotators: bool = field(False, help="Also ask the round's annotators (feedback.source: panel, judge or "
                                             "humans) to compare the policy's eval answers with the base policy's "
                                             "in a campaign per round -> eval/feedback_win_rate.")
    on_overoptimization: Literal["warn", "stop", "rollback"] = field(
        "rollback", help="When the watch fires: warn, stop the loop, or stop and roll back to the best round's policy.")
    watch: WatchConfig = field(default_factory=lambda: WatchConfig(gold_drop=0.1, drop_z=2.5),
                               help="Thresholds of the over-optimization watch: a gold drop from the best round "
                                    "must exceed 0.1 and 2.5 standard errors of the difference of the two "
                                    "rounds' gold means, so eval noise alone rarely stops a run; collapse "
                                    "(distinct-2, repeated responses, length, off-topic answers) is measured "
                                    "against the base policy of round 0.")


@dataclass
class LoopConfig:
    """Everything `rlhfkit loop` needs; the defaults are `rlhfkit demo`."""

    run_dir: str = field("runs/loop", help="Run directory: state, feedback DB, per-round outputs, report.")
    task: str = field("sentiment", help="Task preset (sentiment, explain, summary) or a path to a task .py file.")
    model: str = field("builtin", help="Base policy: 'builtin', a local model directory, or a cached hub id.")
    rounds: int = field(3, help="Rounds of generate -> feedback -> reward model -> policy -> evaluate.")
    seed: int = field(0, help="Seed of prompts, sampling, the panel and training.")
    device: str = field("auto", help="cpu, cuda or auto.")
    threads: int | None = field(None, help="CPU threads (default: RLHFKIT_THREADS or min(cores, 8)).")
    sampler: Literal["hf", "cached", "cached-static", "compiled"] = field("cached", help="Rollout backend (rlhfkit.rl.rollout).")
    report_to: str = field("tensorboard", help="Metric backends: tensorboard, wandb, mlflow, none.")
    keep_checkpoints: bool = field(False, help="Keep the trainers' resume checkpoints of finished rounds "
                                               "(only needed to resume a phase; final models are always kept).")
    candidates: CandidateConfig = field(default_factory=CandidateConfig, help="Candidate generation.")
    selection: SelectionConfig = field(default_factory=SelectionConfig, help="Choosing comparisons.")
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig, help="Feedback collection and aggregation.")
    reward: RewardPhaseConfig = field(default_factory=RewardPhaseConfig, help="Reward-model update.")
    policy: PolicyPhaseConfig = field(default_factory=PolicyPhaseConfig, help="Policy optimization.")
    eval: EvalConfig = field(default_factory=EvalConfig, help="Evaluation and over-optimization watch.")

    def __post_init__(self) -> None:
        problems = []
        if self.rounds < 1:
            problems.append(f"rounds must be >= 1, got {self.rounds}")
        if self.candidates.per_prompt < 2:
            problems.append(f"candidates.per_prompt must be >= 2 to form pairs, got {self.candidates.per_prompt}")
        if self.candidates.prompts_per_round < 1:
            problems.append("candidates.prompts_per_round must be >= 1")
        if self.selection.comparisons_per_round < 1 or self.selection.max_per_prompt < 1:
            problems.append("selection.comparisons_per_round and selection.max_per_prompt must be >= 1")
        if self.feedback.redundancy < 1:
            problems.append(f"feedback.redundancy must be >= 1, got {self.feedback.redundancy}")
        panel = self.feedback.panel
        if panel.size < 1 or panel.spammers + panel.adversarial > panel.size:
            problems.append(f"feedback.panel: {panel.spammers} spammers + {panel.adversarial} adversarial "
                            f"do not fit in {panel.size} members")
        if self.feedback.source == "panel" and self.feedback.redundancy > panel.size:
            problems.append(f"feedback.redundancy {self.feedback.redundancy} exceeds the panel size {panel.size}")
        if self.feedback.kind == "critique":
            if self.feedback.source == "judge":
                problems.append("feedback.kind=critique needs feedback.source panel or humans (the judge writes "
                                "no critiques)")
            if self.policy.algorithm == "dpo":
                problems.append("feedback.kind=critique gives rating records, not the preference pairs "
                                "policy.algorithm=dpo trains on; use ppo, grpo, rloo or reinforce")
            if not 0 <= self.feedback.critique_min_confidence < 1:
                problems.append("feedback.critique_min_confidence must be in [0, 1), "
                                f"got {self.feedback.critique_min_confidence}")
        problems += _edit_problems(self)
        if not 0 < self.feedback.humans.quota <= 1:
            problems.append(f"feedback.humans.quota must be in (0, 1], got {self.feedback.humans.quota}")
        if self.eval.prompts < 1 or self.eval.samples_per_prompt < 1:
            problems.append("eval.prompts and eval.samples_per_prompt must be >= 1")
        if problems:
            raise ValueError("; ".join(problems))


def _edit_problems(config: LoopConfig) -> list[str]:
    """Combinations of feedback.kind=edit and its SFT phase that cannot work, one line each."""
    feedback, problems = config.feedback, []
    if feedback.kind == "edit" and feedback.source == "judge":
        problems.append("feedback.kind=edit needs feedback.source panel or humans (the judge writes no rewrites)")
    if feedback.edits_sft and feedback.kind != "edit":
        problems.append(f"feedback.edits_sft needs feedback.kind=edit (got {feedback.kind!r}): only edits give "
                        "rewritten texts to fine-tune on")
    adversarial = config.reward.adversarial
    if adversarial.enabled and (min(adversarial.samples, adversarial.comparisons) < 1 or adversarial.suffix_length < 0):
        problems.append("reward.adversarial.samples and comparisons must be >= 1, suffix_length >= 0")
    if adversarial.enabled and feedback.source == "humans":
        problems.append("reward.adversarial needs feedback.source panel or judge (it waits for the answers "
                        "before retraining within the round)")
    if not 0 <= feedback.edit_rank_gap < 1:
        problems.append(f"feedback.edit_rank_gap must be in [0, 1), got {feedback.edit_rank_gap}")
    if feedback.edits_sft_steps < 1 or feedback.edits_sft_batch_size < 1 or not feedback.edits_sft_lr > 0:
        problems.append("feedback.edits_sft_steps and edits_sft_batch_size must be >= 1 and edits_sft_lr > 0")
    return problems
