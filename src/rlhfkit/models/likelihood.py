"""What a pretrained LM knows about a response: its mean next-token log-probability, under the trunk's own LM
head or under a frozen LM beside the reward model.

A linear head on pooled hidden states cannot compute a likelihood (each token's log-probability is
``h_{t-1} . e(y_t)`` normalized over the vocabulary), yet a base that has read the sources a response
draws on finds a supported answer likelier. :class:`RewardHead` gives the reward head that number as one
more input, one weight per head starting at 0, so training decides how much it counts;
:class:`FrozenLikelihood` computes it with an LM that is never trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhfkit.models.head_logprobs import chunked_head_applies, head_logprobs


def response_mask(attention_mask: torch.Tensor, response_start: torch.Tensor) -> torch.Tensor:
    """True at each row's response positions: from ``response_start[r]`` to its last non-pad token; (b, T) bool.

    Position 0 is never a response position (no token before it predicts it).
    """
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    start = response_start.to(attention_mask.device).clamp_min(1)[:, None]
    return (positions[None, :] >= start) & attention_mask.bool()


def mean_response_logprob(hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          response_start: torch.Tensor, output_embeddings: nn.Module) -> torch.Tensor:
    """Mean log p(token_t | tokens_<t) over each row's response positions; (b,) float32 (0 for a row without any).

    ``hidden`` (b, T, E) are the trunk's final hidden states; logits are formed only where a response
    token is predicted (no (b, T, V) tensor).
    """
    targets = response_mask(attention_mask, response_start)[:, 1:]
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(targets)[targets]
    logprobs = head_token_logprobs(hidden[:, :-1][targets], input_ids[:, 1:][targets], output_embeddings)
    totals = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device).index_add(0, rows, logprobs)
    counts = targets.sum(dim=-1).clamp_min(1).to(torch.float32)
    return totals / counts


def head_token_logprobs(states: torch.Tensor, tokens: torch.Tensor, output_embeddings: nn.Module,
                   chunk: int = 1024) -> torch.Tensor:
    """log p(token) (n,) float32 from the states (n, E) that predict them, ``chunk`` rows of logits at a time; with
    gradients and logits past the training budget, a plain linear head runs over vocabulary blocks instead
    (:func:`rlhfkit.models.head_logprobs.head_logprobs`: no (n, V) logits kept for the backward)."""
    if torch.is_grad_enabled() and chunked_head_applies(output_embeddings, states.shape[0], states.device):
        return head_logprobs(states, output_embeddings, tokens)[0]  # type: ignore[arg-type]
    out = []
    for start in range(0, states.shape[0], chunk):
        logits = output_embeddings(states[start:start + chunk]).float()
        picked = logits.gather(1, tokens[start:start + chunk, None])[:, 0]
        out.append(picked - torch.logsumexp(logits, dim=-1))
    return torch.cat(out) if out else states.new_zeros(0, dtype=torch.float32)


class RewardHead(nn.Linear):
    """Linear reward head; with ``likelihood`` also a weight per head (from 0) on the mean response log-probability.

    ``reward_h = W_h . pooled + b_h + gain * likelihood_weight_h * mean_logprob``. The extra weight lives in
    the head so that it trains at the head's learning rate and is saved with it. Adam moves every weight by
    about the learning rate per step, so the ``width`` pooled weights together move the reward ~``width``
    times faster than one weight could; ``gain = width`` lets the likelihood keep pace. (On real preferences,
    bench/reward_real.py fold 0: gain 1 left the weight at 0.02 and the model at 0.517, sqrt(width) 0.532,
    width 0.553, while the trunk's likelihood alone ranked 0.572.)
    """

    def __init__(self, width: int, num_heads: int, likelihood: bool = False) -> None:
        super().__init__(width, num_heads)
        self.likelihood_weight = nn.Parameter(torch.zeros(num_heads)) if likelihood else None
        self.likelihood_gain = float(width)

    def forward(self, pooled: torch.Tensor, mean_logprob: torch.Tensor | None = None) -> torch.Tensor:
        """Per-head rewards (b, num_heads) from the pooled states (b, width) and, when the head reads it, (b,)."""
        rewards = super().forward(pooled)
        if self.likelihood_weight is None:
            return rewards
        if mean_logprob is None:
            raise ValueError("this reward head reads the response's log-likelihood: pass mean_logprob")
        weight = self.likelihood_gain * self.likelihood_weight.to(rewards.dtype)
        return rewards + mean_logprob.to(rewards.dtype)[:, None] * weight


class FrozenLikelihood(nn.Module):
    """A frozen causal LM that scores each response by its mean next-token log-probability after the prompt.

    Unlike the trunk's own LM head it is never trained, may be larger than the trunk and has its own
    tokenizer, so it scores texts: the reward model computes its number once per (prompt, response) and
    the head weighs it like any other input. Prompts are cut from the left to fit the LM's context.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, batch_size: int = 16) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.context = context_length(model)

    def train(self, mode: bool = True) -> FrozenLikelihood:
        """Stay in eval mode whatever the reward model around it does (no dropout in a frozen scorer)."""
        return super().train(False)

    @classmethod
    def load(cls, name_or_path: str | Path) -> FrozenLikelihood:
        """The causal LM and tokenizer saved at ``name_or_path`` (or ``builtin``)."""
        from transformers import AutoModelForCausalLM

        from rlhfkit.models.loading import load_tokenizer, resolve_model_path

        path = resolve_model_path(str(name_or_path))
        return cls(AutoModelForCausalLM.from_pretrained(path), load_tokenizer(path, padding_side="right"))

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the LM and its tokenizer into ``directory``."""
        self.model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        return Path(directory)

    @torch.no_grad()
    def score(self, prompts: Sequence[Any], responses: Sequence[Any]) -> torch.Tensor:
        """Mean log p(response token | everything before it) per pair; (n,) float32 on the CPU.

        Each distinct pair is scored once; a response with no token to score is an error naming it.
        """
        from rlhfkit.models.chat import pair_ids
        from rlhfkit.models.reward_model import pad_batch

        pairs = list(dict.fromkeys(zip(prompts, responses)))
        prompt_ids, response_ids, _ = pair_ids(self.tokenizer, [p for p, _ in pairs], [r for _, r in pairs], False)
        sequences, starts = [], []
        for (prompt, response), head, body in zip(pairs, prompt_ids, response_ids):
            if not body:
                raise ValueError(f"likelihood model: response {str(response)[:60]!r} has no token to score")
            ids = [*head, *body][-self.context:]
            sequences.append(ids)
            starts.append(max(1, len(ids) - len(body)))
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        values = torch.zeros(len(pairs), dtype=torch.float32)
        order = sorted(range(len(pairs)), key=lambda i: len(sequences[i]))
        for begin in range(0, len(order), self.batch_size):
            chunk = order[begin:begin + self.batch_size]
            ids, mask = pad_batch([sequences[i] for i in chunk], pad, device)
            start = torch.tensor([starts[i] for i in chunk], device=device)
            hidden = self.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            values[torch.tensor(chunk)] = mean_response_logprob(hidden, ids, mask, start,
                                                                self.model.get_output_embeddings()).cpu()
        index = {pair: i for i, pair in enumerate(pairs)}
        return values[torch.tensor([index[pair] for pair in zip(prompts, responses)], dtype=torch.long)]


def context_length(model: nn.Module) -> int:
    """The model's context length from its config (``n_positions`` or ``max_position_embeddings``), else 2^30."""
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1 << 30
