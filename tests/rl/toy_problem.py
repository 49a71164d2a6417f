"""An RLHF problem small enough to enumerate: vocabulary {a, b, c, d, <eos>}, responses of at most
two tokens (21 of them), a tiny GPT-2 policy, and a reward table.

The KL-regularised objective J(pi) = E_pi[r] - beta * KL(pi || pi_ref) has the closed-form optimum
J* = beta * log E_ref[exp(r / beta)] at pi* ∝ pi_ref * exp(r / beta) (e.g. Rafailov et al. 2023, eq. 4),
so a trainer's result can be scored exactly as the fraction of the possible improvement reached.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model, PreTrainedTokenizerFast

from rlhfkit.models.loading import PolicyBundle, make_frozen_reference
from rlhfkit.models.value import CriticModel, PolicyWithValueHead
from rlhfkit.rl.rewards import EnsembleReward, FunctionReward

EOS = "<eos>"
LETTERS = ("a", "b", "c", "d")
PROMPT = "a"


def toy_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over {<eos>, a, b, c, d}; eos = bos = pad."""
    vocab = {EOS: 0, **{letter: i + 1 for i, letter in enumerate(LETTERS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=EOS))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS,
                                   padding_side="left")


def toy_policy(seed: int = 0) -> GPT2LMHeadModel:
    """A 1-layer GPT-2 over the 5-token vocabulary, near-uniform at initialisation."""
    config = GPT2Config(vocab_size=5, n_positions=8, n_embd=16, n_layer=1, n_head=2, bos_token_id=0,
                        eos_token_id=0, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()


def toy_bundle(seed: int = 0, value: str = "none") -> PolicyBundle:
    """Policy, tokenizer, frozen reference copy, and a value model: none, head (shared trunk) or critic."""
    policy = toy_policy(seed)
    value_model: torch.nn.Module | None = None
    if value == "head":
        value_model = PolicyWithValueHead(policy)
    elif value == "critic":
        value_model = CriticModel(GPT2Model(policy.config))
    return PolicyBundle(policy=policy, tokenizer=toy_tokenizer(), value_model=value_model,
                        frozen_reference=make_frozen_reference(policy))


def all_responses() -> list[tuple[int, ...]]:
    """Every response as token ids: <eos>; x <eos>; x y (truncated at two tokens)."""
    letters = range(1, 5)
    return [(0,)] + [(x, 0) for x in letters] + [pair for pair in itertools.product(letters, letters)]


def response_text(tokens: tuple[int, ...]) -> str:
    """What the sampler's decoding yields for ``tokens`` (letters joined, <eos> dropped), spaces removed."""
    return "".join(LETTERS[t - 1] for t in tokens if t != 0)


def reward_table(seed: int = 0, scale: float = 1.0) -> dict[str, float]:
    """A fixed random reward for each of the 21 response texts."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand(len(all_responses()), generator=generator) * scale
    return {response_text(r): float(v) for r, v in zip(all_responses(), values)}


def table_reward(table: dict[str, float]) -> EnsembleReward:
    """The table as a reward source keyed by response text."""
    return EnsembleReward([FunctionReward(lambda prompts, responses: [table[r.replace(" ", "")] for r in responses],
                                          name="table")])


@torch.no_grad()
def response_logprobs(model: torch.nn.Module) -> torch.Tensor:
    """(21,) exact log pi(y | prompt) of every response, from two batched forwards."""
    first_inputs = torch.tensor([[1]])
    first = torch.log_softmax(model(first_inputs, attention_mask=torch.ones_like(first_inputs)).logits[0, -1].float(), -1)
    second_inputs = torch.tensor([[1, x] for x in range(1, 5)])
    second = torch.log_softmax(model(second_inputs, attention_mask=torch.ones_like(second_inputs)).logits[:, -1], -1)
    out = []
    for tokens in all_responses():
        value = first[tokens[0]]
        if len(tokens) == 2:
            value = value + second[tokens[0] - 1, tokens[1]]
        out.append(value)
    return torch.stack(out).double()


def objective(logp: torch.Tensor, ref_logp: torch.Tensor, rewards: torch.Tensor, beta: float) -> float:
    """J = E_pi[r] - beta * KL(pi || pi_ref), exactly, over the 21 responses."""
    p = logp.exp()
    return float((p * rewards).sum() - beta * (p * (logp - ref_logp)).sum())


def optimum(ref_logp: torch.Tensor, rewards: torch.Tensor, beta: float) -> float:
    """J* = beta * log E_ref[exp(r / beta)]."""
    return float(beta * torch.logsumexp(ref_logp + rewards / beta, 0))


def improvement_fraction(model: torch.nn.Module, reference: torch.nn.Module, table: dict[str, float],
                         beta: float) -> float:
    """(J(pi) - J(pi_ref)) / (J* - J(pi_ref)) for the trained ``model``."""
    rewards = torch.tensor([table[response_text(r)] for r in all_responses()], dtype=torch.float64)
    ref = response_logprobs(reference)
    start = objective(ref, ref, rewards, beta)
    best = optimum(ref, rewards, beta)
    assert best > start + 1e-6 and math.isfinite(best)
    return (objective(response_logprobs(model), ref, rewards, beta) - start) / (best - start)


def run_config_overrides(output_dir: Path, steps: int) -> list[str]:
    """Overrides shared by the toy runs: a silent, short run writing into ``output_dir``."""
    return [f"run.output_dir={output_dir}", f"run.steps={steps}", "run.progress=false", "run.save_every=0",
            "generation.max_new_tokens=2", "reward.invalid_score=null", "reward.penalize_empty=false"]
