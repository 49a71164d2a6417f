"""RLHF problems small enough to enumerate every response, so trainers can be scored exactly.

A problem is a vocabulary of ``V`` letters plus ``<eos>`` (id 0; letters are ids 1..V), one prompt,
and responses of at most ``L`` tokens: ``k < L`` letters followed by ``<eos>``, or ``L`` letters cut
there by ``max_new_tokens`` (no ``<eos>``; still a response). That makes
``sum_{k<L} V^k + V^L`` responses, each decoded to a distinct text. The policy is a tiny GPT-2
(1 layer, float32). ``log pi(y | prompt)`` of every response comes exactly from one batched
forward per prefix length (all ``V^k`` letter prefixes of length ``k`` at once).

For a reward table r(y) the KL-regularised objective J(pi) = E_pi[r] - beta KL(pi || pi_ref) has
the closed-form maximiser pi* ∝ pi_ref exp(r / beta) with J* = beta log E_ref[exp(r / beta)]
(e.g. Rafailov et al. 2023, eq. 4); ``improvement_fraction`` = (J(pi) - J(ref)) / (J* - J(ref)).
"""

from __future__ import annotations

import itertools
import math
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model, PreTrainedTokenizerFast

from rlhfkit.models.loading import PolicyBundle, make_frozen_reference
from rlhfkit.models.value import CriticModel, PolicyWithValueHead
from rlhfkit.rl.rewards import EnsembleReward, FunctionReward

EOS = "<eos>"


@dataclass
class EnumerableProblem:
    """``num_letters`` letters + <eos>, responses of at most ``max_len`` tokens, one prompt."""

    num_letters: int = 4
    max_len: int = 2
    prompt: str = "a"
    n_embd: int = 16
    responses: list[tuple[int, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.num_letters <= 26 or self.max_len < 1:
            raise ValueError("need 1..26 letters and max_len >= 1")
        letters = range(1, self.num_letters + 1)
        self.responses = [prefix + (0,) for k in range(self.max_len) for prefix in itertools.product(letters, repeat=k)]
        self.responses += list(itertools.product(letters, repeat=self.max_len))
        self.index = {self.text(r): i for i, r in enumerate(self.responses)}
        assert len(self.index) == len(self.responses)

    # vocabulary ---------------------------------------------------------------------------------

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(string.ascii_lowercase[: self.num_letters])

    def tokenizer(self) -> PreTrainedTokenizerFast:
        """Word-level tokenizer over {<eos>, letters}; eos = bos = pad, left padding."""
        vocab = {EOS: 0, **{letter: i + 1 for i, letter in enumerate(self.letters)}}
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=EOS))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS,
                                       padding_side="left")

    def prompt_ids(self) -> list[int]:
        ids = [self.letters.index(w) + 1 for w in self.prompt.split()]
        assert ids, "the prompt must hold at least one letter"
        return ids

    def text(self, tokens: Sequence[int]) -> str:
        """What the sampler's decoding yields for ``tokens`` (letters joined, <eos> dropped), spaces removed."""
        return "".join(self.letters[t - 1] for t in tokens if t != 0)

    @property
    def size(self) -> int:
        return len(self.responses)

    # models -------------------------------------------------------------------------------------

    def policy(self, seed: int = 0) -> GPT2LMHeadModel:
        """A 1-layer GPT-2 over the V + 1 tokens (float32, eval mode, no dropout)."""
        config = GPT2Config(vocab_size=self.num_letters + 1, n_positions=len(self.prompt_ids()) + self.max_len + 2,
                            n_embd=self.n_embd, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config).eval()

    def bundle(self, policy: torch.nn.Module | None = None, value: str = "none", seed: int = 0) -> PolicyBundle:
        """Policy (``policy`` or a fresh one), tokenizer, frozen reference copy, value model none/head/critic."""
        policy = policy if policy is not None else self.policy(seed)
        value_model: torch.nn.Module | None = None
        if value == "head":
            value_model = PolicyWithValueHead(policy)
        elif value == "critic":
            value_model = CriticModel(GPT2Model(policy.config))
        return PolicyBundle(policy=policy, tokenizer=self.tokenizer(), value_model=value_model,
                            frozen_reference=make_frozen_reference(policy))

    # exact distributions ------------------------------------------------------------------------

    def _next_token_logprobs(self, model: torch.nn.Module) -> list[torch.Tensor]:
        """[k] -> (V^k, V+1) log-probs of the next token after each length-k letter prefix (product order)."""
        prompt = self.prompt_ids()
        letters = range(1, self.num_letters + 1)
        out = []
        for k in range(self.max_len):
            prefixes = torch.tensor([prompt + list(p) for p in itertools.product(letters, repeat=k)])
            logits = model(prefixes, attention_mask=torch.ones_like(prefixes)).logits[:, -1].double()
            out.append(torch.log_softmax(logits, -1))
        return out

    def logprobs(self, model: torch.nn.Module) -> torch.Tensor:
        """(N,) float64 exact log pi(y | prompt) of every response, in ``self.responses`` order."""
        device = next(model.parameters()).device
        with torch.no_grad():
            steps = [t.cpu() for t in self._next_token_logprobs(model.to(device))]
        prefix = torch.zeros(1, dtype=torch.float64)  # log-prob of each letter prefix of length k
        ended = []
        for k in range(self.max_len):
            ended.append(prefix + steps[k][:, 0])
            prefix = (prefix[:, None] + steps[k][:, 1:]).reshape(-1)
        return torch.cat([*ended, prefix])

    def rewards(self, table: dict[str, float]) -> torch.Tensor:
        """(N,) float64 rewards from a table keyed by response text."""
        return torch.tensor([table[self.text(r)] for r in self.responses], dtype=torch.float64)

    def reward_table(self, values: torch.Tensor | Callable[[str], float]) -> dict[str, float]:
        """A table keyed by response text from (N,) values or a function of the text."""
        if callable(values):
            return {self.text(r): float(values(self.text(r))) for r in self.responses}
        return {self.text(r): float(v) for r, v in zip(self.responses, values)}

    def random_table(self, seed: int = 0, scale: float = 1.0) -> dict[str, float]:
        """A fixed uniform[0, scale) reward per response."""
        generator = torch.Generator().manual_seed(seed)
        return self.reward_table(torch.rand(self.size, generator=generator) * scale)

    def table_reward(self, table: dict[str, float]) -> EnsembleReward:
        """The table as a reward source keyed by response text (spaces the decoder adds removed)."""
        return EnsembleReward([FunctionReward(lambda prompts, responses: [table[r.replace(" ", "")] for r in responses],
                                              name="table")])


def objective(logp: torch.Tensor, ref_logp: torch.Tensor, rewards: torch.Tensor, beta: float) -> float:
    """J = E_pi[r] - beta * KL(pi || pi_ref), exactly."""
    p = logp.exp()
    return float((p * rewards).sum() - beta * (p * (logp - ref_logp)).sum())


def optimum(ref_logp: torch.Tensor, rewards: torch.Tensor, beta: float) -> float:
    """J* = beta * log E_ref[exp(r / beta)]."""
    return float(beta * torch.logsumexp(ref_logp + rewards / beta, 0))


def optimal_logprobs(ref_logp: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """log pi*, pi* ∝ pi_ref exp(r / beta)."""
    return torch.log_softmax(ref_logp + rewards / beta, 0)


def kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> float:
    """KL(pi || ref) of two exact response distributions."""
    return float((logp.exp() * (logp - ref_logp)).sum())


def k1_variance(logp: torch.Tensor, ref_logp: torch.Tensor) -> float:
    """Var_pi[log pi(y) - log ref(y)]: the variance of one sequence-level k1 KL sample."""
    p, d = logp.exp(), logp - ref_logp
    mean = (p * d).sum()
    return float((p * (d - mean) ** 2).sum())


def improvement_fraction(problem: EnumerableProblem, model: torch.nn.Module, reference: torch.nn.Module,
                         table: dict[str, float], beta: float) -> float:
    """(J(pi) - J(pi_ref)) / (J* - J(pi_ref)) of ``model``: 0 = untrained, 1 = optimum."""
    rewards = problem.rewards(table)
    ref = problem.logprobs(reference)
    start = objective(ref, ref, rewards, beta)
    best = optimum(ref, rewards, beta)
    assert best > start + 1e-6 and math.isfinite(best)
    return (objective(problem.logprobs(model), ref, rewards, beta) - start) / (best - start)


def exact_kl(problem: EnumerableProblem, model: torch.nn.Module, reference: torch.nn.Module) -> float:
    """Exact KL(pi_model || pi_reference) over all responses."""
    return kl(problem.logprobs(model), problem.logprobs(reference))


def fit_next_token_distribution(problem: EnumerableProblem, model: torch.nn.Module, probs: Sequence[float],
                                steps: int = 300, lr: float = 3e-2) -> float:
    """Train ``model`` so every prefix's next-token distribution approaches ``probs`` (V+1 values,
    <eos> first): cross-entropy over all prefixes, full batch, Adam. Returns the final mean KL."""
    target = torch.tensor(probs, dtype=torch.float32)
    target = target / target.sum()
    prompt = problem.prompt_ids()
    letters = range(1, problem.num_letters + 1)
    batches = [torch.tensor([prompt + list(p) for p in itertools.product(letters, repeat=k)])
               for k in range(problem.max_len)]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss = torch.zeros(())
    for _ in range(steps):
        optimizer.zero_grad()
        loss = sum(torch.nn.functional.kl_div(torch.log_softmax(model(b).logits[:, -1], -1),
                                              target[None].expand(len(b), -1), reduction="batchmean")
                   for b in batches) / len(batches)
        loss.backward()
        optimizer.step()
    model.eval()
    return float(loss.detach())


# trainers ---------------------------------------------------------------------------------------

ALGORITHMS = ("ppo", "grpo", "rloo", "reinforce")


def config_class(algo: str) -> type:
    """PPOConfig for PPO, PolicyGradientConfig for the group algorithms."""
    from rlhfkit.rl.config import PolicyGradientConfig, PPOConfig

    return PPOConfig if algo == "ppo" else PolicyGradientConfig


def problem_overrides(algo: str, output_dir: object, *, beta: float, lr: float, steps: int, max_new_tokens: int,
                      num_prompts: int, group_size: int = 1) -> list[str]:
    """Only the problem's own settings (KL coefficient, lr, steps, batch/group size, max_new_tokens)
    and run plumbing; every objective default is left alone. PPO's batch is ``num_prompts`` x
    ``group_size`` episodes under the old ``batch_size`` key when the config has no ``num_prompts``."""
    cls = config_class(algo)
    fields = cls.__dataclass_fields__
    out = [f"run.output_dir={output_dir}", f"run.steps={steps}", "run.progress=false", "run.save_every=0",
           f"generation.max_new_tokens={max_new_tokens}", f"kl.coef={beta}", f"optim.lr={lr}"]
    if algo != "ppo":
        out.append(f"algo={algo}")
    if "num_prompts" in fields:
        out.append(f"num_prompts={num_prompts}")
        if "group_size" in fields:
            out.append(f"group_size={group_size}")
        elif group_size != 1:
            raise ValueError(f"{cls.__name__} has no group_size")
    else:
        out.append(f"batch_size={num_prompts * group_size}")
    return out


def make_trainer(config: object, bundle: PolicyBundle, reward: EnsembleReward, prompts: list[str],
                 sampler: object) -> object:
    """The on-policy trainer: ``rlhfkit.rl.onpolicy.OnPolicyTrainer`` when it exists, else the old
    PPOTrainer / PolicyGradientTrainer chosen by the config type."""
    import importlib

    try:
        from rlhfkit.rl.onpolicy import OnPolicyTrainer
    except ImportError:  # before the one trainer: the two old classes (modules named by string on purpose)
        from rlhfkit.rl.config import PPOConfig

        name = ("ppo", "PPOTrainer") if isinstance(config, PPOConfig) else ("policy_gradient", "PolicyGradientTrainer")
        cls = getattr(importlib.import_module(f"rlhfkit.rl.{name[0]}"), name[1])
        return cls(config, bundle, reward, prompts, sampler)
    return OnPolicyTrainer(config, bundle, reward, prompts, sampler)


@dataclass
class ExactRun:
    """A finished run: improvement fraction, exact final KL, and per-step (logged, exact, sem) KL."""

    share: float
    kl: float
    kl_steps: list[tuple[float, float, float, float | None]]
    metrics: list[dict[str, float]]


def train_exact(problem: EnumerableProblem, algo: str, table: dict[str, float], output_dir: object, *,
                beta: float, lr: float, steps: int, num_prompts: int, group_size: int = 1,
                policy: torch.nn.Module | None = None, seed: int = 0, extra: Sequence[str] = ()) -> ExactRun:
    """Train ``algo`` on ``problem`` with only the problem's settings (+ ``extra``) and score it exactly.

    Before every step the exact KL(pi || ref) of the policy about to sample, and the exact standard
    error of a mean of ``n`` sequence-level k1 samples, are recorded next to the logged ``kl/mean``.
    """
    from rlhfkit.config import load_config
    from rlhfkit.rl.rollout import make_sampler

    overrides = problem_overrides(algo, output_dir, beta=beta, lr=lr, steps=steps, num_prompts=num_prompts,
                                  group_size=group_size, max_new_tokens=problem.max_len)
    config = load_config(config_class(algo), None, overrides + [f"run.seed={seed}", *extra])
    if policy is None:
        policy = problem.policy(seed)
    bundle = problem.bundle(policy, value="head" if algo == "ppo" else "none")
    trainer = make_trainer(config, bundle, problem.table_reward(table), [problem.prompt], make_sampler("cached"))
    ref_logp = problem.logprobs(bundle.frozen_reference)
    episodes = num_prompts * group_size
    kl_steps: list[tuple[float, float, float, float | None]] = []
    step = trainer.train_step

    def checked_step() -> dict[str, float]:
        logp = problem.logprobs(bundle.policy)
        exact, sem = kl(logp, ref_logp), math.sqrt(k1_variance(logp, ref_logp) / episodes)
        metrics = step()
        kl_steps.append((metrics["kl/mean"], exact, sem, metrics.get("kl/mean_sem")))
        return metrics

    trainer.train_step = checked_step  # type: ignore[method-assign]
    history = trainer.train()
    share = improvement_fraction(problem, bundle.policy, bundle.frozen_reference, table, beta)
    return ExactRun(share, exact_kl(problem, bundle.policy, bundle.frozen_reference), kl_steps, history)
