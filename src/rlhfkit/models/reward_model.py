"""Reward models: a transformer trunk with a scalar head read at the last non-pad token.

``RewardModel`` also wraps any ``AutoModelForSequenceClassification`` with ``num_labels=1``.
A saved reward model is a directory that ``AutoModel.from_pretrained`` can read as the trunk, plus
``reward_head.safetensors`` and ``reward_config.json`` (head count, per-head normalization mean/std,
text encoding). ``k`` heads on one trunk, or ``k`` whole models (:class:`RewardEnsemble`), give an
ensemble: the mean over members is the reward, their standard deviation the uncertainty.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlhfkit.models.chat import pair_ids
from rlhfkit.models.last_token import last_token_hidden, supports_last_token
from rlhfkit.models.likelihood import FrozenLikelihood, RewardHead, context_length, mean_response_logprob
from rlhfkit.models.pooling import check_pooling, pool, pooled_width
from rlhfkit.models.shared_prefix import SharedPrefix, shared_prefix
from rlhfkit.models.value import hidden_size_of
from rlhfkit.models.gelu import fuse_gelu

REWARD_CONFIG = "reward_config.json"
REWARD_HEAD = "reward_head.safetensors"
ENSEMBLE_CONFIG = "reward_ensemble.json"
LIKELIHOOD_MODEL = "likelihood_model"


class RewardModelError(ValueError):
    """A reward model that cannot be loaded or used, with the path and the reason."""


@dataclass
class RewardModelSettings:
    """What ``reward_config.json`` stores next to the weights.

    ``head_mean``/``head_std`` normalize each head on its own: heads' offsets and scales are arbitrary,
    so with shared statistics the spread over heads would measure those instead of disagreement.
    ``mean``/``std`` describe the head-average score; they normalize every head only in models saved
    before per-head statistics (``head_mean`` None). ``pooling`` is what the head reads
    (:mod:`rlhfkit.models.pooling`); ``likelihood``: the head also reads the response's mean log-probability
    under the trunk's own LM head (:mod:`rlhfkit.models.likelihood`), so the trunk is kept with its LM head;
    ``likelihood_model``: the sub-directory holding the frozen LM whose likelihood the head reads instead.
    """

    architecture: str = "trunk_head"
    num_heads: int = 1
    mean: float = 0.0
    std: float = 1.0
    head_mean: list[float] | None = None
    head_std: list[float] | None = None
    max_length: int = 512
    min_prompt_tokens: int = 64
    append_eos: bool = True
    pooling: str = "last"
    likelihood: bool = False
    likelihood_model: str | None = None
    ordinal_thresholds: dict[str, list[float]] | None = None
    format_version: int = 1


def truncate_pair(prompt_ids: Sequence[int], response_ids: Sequence[int], max_length: int,
                  eos_id: int | None, min_prompt_tokens: int = 64) -> tuple[list[int], bool]:
    """``prompt + response (+ EOS)`` in at most ``max_length`` tokens, and whether anything was cut.

    The response has priority: the prompt loses tokens from its start (keeping at least
    ``min_prompt_tokens`` of its tail, or all of it if shorter), then the response loses tokens
    from its end. The EOS the score is read at is always kept.
    """
    ids, cut, _ = truncate_pair_span(prompt_ids, response_ids, max_length, eos_id, min_prompt_tokens)
    return ids, cut


def truncate_pair_span(prompt_ids: Sequence[int], response_ids: Sequence[int], max_length: int,
                       eos_id: int | None, min_prompt_tokens: int = 64) -> tuple[list[int], bool, int]:
    """:func:`truncate_pair` plus where the response starts in the kept ids (the kept prompt's length)."""
    tail = [eos_id] if eos_id is not None else []
    total = len(prompt_ids) + len(response_ids) + len(tail)
    if total <= max_length:
        return [*prompt_ids, *response_ids, *tail], False, len(prompt_ids)
    budget = max_length - len(tail)
    keep_prompt = max(budget - len(response_ids), min(len(prompt_ids), min_prompt_tokens, budget // 2))
    keep_prompt = max(0, min(keep_prompt, len(prompt_ids)))
    keep_response = max(0, budget - keep_prompt)
    prompt_part = list(prompt_ids[len(prompt_ids) - keep_prompt:]) if keep_prompt else []
    return [*prompt_part, *response_ids[:keep_response], *tail], True, len(prompt_part)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last position with mask 1 in each row, for left or right padding; (b, T) -> (b,)."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.to(positions.dtype)).argmax(dim=-1)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int,
              device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists to the longest one: (input_ids, attention_mask), both (b, T_max)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    if device is not None:
        ids, mask = ids.to(device), mask.to(device)
    return ids, mask


def _is_sequence_classifier(model: nn.Module) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


class RewardModel(nn.Module):
    """Trunk + linear head (``num_heads`` scalar outputs) read at the last non-pad token.

    ``backbone`` is a base transformer returning ``last_hidden_state`` (e.g. ``GPT2Model``) or a
    ``*ForSequenceClassification`` with one label, whose own pooling and head are used.
    ``frozen_likelihood``: a frozen LM whose mean response log-probability the head also reads.
    """

    def __init__(self, backbone: nn.Module, tokenizer: Any, settings: RewardModelSettings | None = None,
                 frozen_likelihood: FrozenLikelihood | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.settings = settings or RewardModelSettings()
        self.frozen_likelihood = frozen_likelihood
        check_pooling(self.settings.pooling)
        if frozen_likelihood is not None and self.settings.likelihood:
            raise RewardModelError("a reward head reads one likelihood: the trunk's own (likelihood=true) or a "
                                   "frozen LM's (likelihood_model), not both")
        fuse_gelu(backbone)
        if _is_sequence_classifier(backbone):
            if getattr(backbone.config, "num_labels", 1) != 1:
                raise RewardModelError(f"{type(backbone).__name__} has num_labels="
                                       f"{backbone.config.num_labels}; a reward model needs 1")
            if self.settings.pooling != "last":
                raise RewardModelError(f"{type(backbone).__name__} pools with its own head; pooling="
                                       f"{self.settings.pooling!r} needs a plain trunk")
            if self.settings.likelihood or frozen_likelihood is not None:
                raise RewardModelError(f"{type(backbone).__name__} scores with its own head; likelihood=true "
                                       "and likelihood_model need a causal LM trunk")
            self.settings.architecture = "sequence_classification"
            self.settings.num_heads = 1
            self.head = None
            if backbone.config.pad_token_id is None:
                backbone.config.pad_token_id = self.pad_id
        else:
            if self.settings.likelihood and _output_embeddings(backbone) is None:
                raise RewardModelError(f"likelihood=true reads the trunk's LM head, and {type(backbone).__name__} "
                                       "has none: load the trunk as a causal LM (AutoModelForCausalLM)")
            width = pooled_width(hidden_size_of(backbone.config), self.settings.pooling)
            reads_likelihood = self.settings.likelihood or frozen_likelihood is not None
            self.head = RewardHead(width, self.settings.num_heads, reads_likelihood)
            nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(width + 1))
            nn.init.zeros_(self.head.bias)
            param = next(backbone.parameters())
            self.head.to(device=param.device, dtype=param.dtype)

    def reset_head(self, std: float) -> None:
        """Draw the head's weights anew from N(0, std^2) (all zero when std is 0) and zero its bias."""
        if self.head is None:
            raise RewardModelError("a sequence classifier's own head is not reset; it keeps its weights")
        with torch.no_grad():
            if std > 0:
                self.head.weight.normal_(0.0, std)
            else:
                self.head.weight.zero_()
            self.head.bias.zero_()
            if self.head.likelihood_weight is not None:
                self.head.likelihood_weight.zero_()

    @property
    def num_heads(self) -> int:
        """Number of scalar heads (ensemble members sharing the trunk)."""
        return self.settings.num_heads

    @property
    def pad_id(self) -> int:
        """Token id used for padding (the tokenizer's pad, else EOS, else 0)."""
        for name in ("pad_token_id", "eos_token_id"):
            value = getattr(self.tokenizer, name, None)
            if value is not None:
                return int(value)
        return 0

    @property
    def device(self) -> torch.device:
        """Device of the trunk's parameters."""
        return next(self.backbone.parameters()).device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                response_start: torch.Tensor | None = None, likelihood: torch.Tensor | None = None) -> torch.Tensor:
        """Raw per-head rewards read at the last non-pad token (or as ``settings.pooling`` says); -> (b, num_heads).

        A sequence classifier is read there too (its trunk, then its ``score`` layer): its own pooling
        finds the last token that is not the pad id, which misses a final EOS when pad = EOS. GPT-2 trunks
        read at the last token run their last block only there (:mod:`rlhfkit.models.last_token`).
        ``response_start`` (b,): where each row's response begins, needed when the head reads the trunk's
        likelihood; ``likelihood`` (b,): the frozen LM's score of each row (:meth:`frozen_likelihood_of`).
        """
        head, trunk = self.head, self.backbone
        if head is None:
            head = getattr(self.backbone, "score", None)
            if not isinstance(head, nn.Module):
                return self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            trunk = self.backbone.base_model
        elif self.settings.likelihood:
            return self._forward_with_likelihood(input_ids, attention_mask, response_start)
        index = last_token_index(attention_mask)
        pooling = self.settings.pooling
        if pooling == "last" and supports_last_token(trunk):  # the last block only at the read position
            prefix = self._shared_prompts(trunk, input_ids, attention_mask, index, response_start)
            pooled = last_token_hidden(trunk, input_ids, attention_mask, index,
                                       None if prefix is None else prefix.for_rows(slice(None)))
        else:
            hidden = trunk(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
            pooled = pool(hidden, attention_mask, index, pooling)
        if self.frozen_likelihood is None:
            return head(pooled)
        if likelihood is None:
            raise RewardModelError("this reward model reads a frozen LM's likelihood (likelihood_model): score "
                                   "(prompt, response) texts, or pass likelihood=frozen_likelihood_of(...)")
        return head(pooled, likelihood.to(pooled.device))

    @staticmethod
    def _shared_prompts(trunk: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, index: torch.Tensor,
                        response_start: torch.Tensor | None) -> SharedPrefix | None:
        """The rows' repeated prompts (right-padded rows: their first ``min(response_start)`` columns) run once,
        or None (:func:`rlhfkit.models.shared_prefix.shared_prefix`); every read position lies after them."""
        if response_start is None or response_start.numel() == 0:
            return None
        length = int(response_start.min())
        if length < 1 or bool((index < length).any()):
            return None
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        return shared_prefix(trunk, input_ids, attention_mask, positions, length)

    def frozen_likelihood_of(self, prompts: Sequence[Any], responses: Sequence[Any]) -> torch.Tensor | None:
        """The frozen LM's mean log-probability of each response (n,), or None when the head reads none."""
        if self.frozen_likelihood is None:
            return None
        return self.frozen_likelihood.score(prompts, responses)

    def _forward_with_likelihood(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                 response_start: torch.Tensor | None) -> torch.Tensor:
        """Pooled head plus the weighted mean response log-probability under the trunk's LM head."""
        if response_start is None:
            raise RewardModelError("this reward model reads the response's likelihood (likelihood=true): score "
                                   "(prompt, response) texts, or pass response_start with the token ids")
        trunk = self.backbone.base_model
        hidden = trunk(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        index = last_token_index(attention_mask)
        mean_logprob = mean_response_logprob(hidden, input_ids, attention_mask, response_start,
                                             _output_embeddings(self.backbone))
        return self.head(pool(hidden, attention_mask, index, self.settings.pooling), mean_logprob)

    def normalize(self, rewards: torch.Tensor) -> torch.Tensor:
        """Per-head reference statistics, ``(r_h - mean_h) / std_h`` on (..., num_heads) scores.

        Models saved without per-head statistics apply their single ``mean``/``std`` to every head.
        """
        if self.settings.head_mean is None or self.settings.head_std is None:
            return (rewards - self.settings.mean) / self.settings.std
        mean = torch.tensor(self.settings.head_mean, dtype=rewards.dtype, device=rewards.device)
        std = torch.tensor(self.settings.head_std, dtype=rewards.dtype, device=rewards.device)
        return (rewards - mean) / std

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalized: bool = False,
              response_start: torch.Tensor | None = None, likelihood: torch.Tensor | None = None) -> torch.Tensor:
        """Reward per sequence, the mean over (normalized) heads; (b, T) -> (b,) float."""
        rewards = self.forward(input_ids, attention_mask, response_start, likelihood).float()
        return (self.normalize(rewards) if normalized else rewards).mean(dim=-1)

    def score_with_uncertainty(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                               normalized: bool = False, response_start: torch.Tensor | None = None,
                               likelihood: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) over heads per sequence, each (b,); std is 0 for a single head."""
        per_head = self.forward(input_ids, attention_mask, response_start, likelihood).float()
        if normalized:
            per_head = self.normalize(per_head)
        spread = per_head.std(dim=-1, unbiased=False) if per_head.shape[-1] > 1 else torch.zeros_like(per_head[:, 0])
        return per_head.mean(dim=-1), spread

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids of each ``prompt + response (+ EOS)`` truncated per :func:`truncate_pair`.

        A conversation prompt goes through the tokenizer's chat template (:func:`~rlhfkit.models.chat.pair_ids`).
        """
        sequences, cut, _ = self.encode_spans(prompts, responses)
        return sequences, cut

    def encode_spans(self, prompts: Sequence[str], responses: Sequence[str]
                     ) -> tuple[list[list[int]], list[bool], list[int]]:
        """:meth:`encode` plus where each response starts in its ids."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        prompt_ids, response_ids, templated_eos = pair_ids(self.tokenizer, list(prompts), list(responses), False)
        eos_id = self.tokenizer.eos_token_id
        out = [truncate_pair_span(p, r, self.settings.max_length, eos_id if self.settings.append_eos or e else None,
                                  self.settings.min_prompt_tokens)
               for p, r, e in zip(prompt_ids, response_ids, templated_eos)]
        return [ids for ids, _, _ in out], [cut for _, cut, _ in out], [start for _, _, start in out]

    @torch.no_grad()
    def score_texts(self, prompts: Sequence[str], responses: Sequence[str], normalized: bool = False,
                    batch_size: int = 32, with_uncertainty: bool = False, per_head: bool = False) -> Any:
        """Rewards (b,) for text pairs: the mean over heads.

        ``with_uncertainty`` adds the per-sample std over heads (b,); ``per_head`` instead returns
        every head's score, (b, num_heads), e.g. for a committee that compares heads.
        """
        if with_uncertainty and per_head:
            raise ValueError("score_texts: ask for with_uncertainty or per_head, not both")
        heads = self._head_scores(prompts, responses, normalized, batch_size)
        if per_head:
            return heads
        spread = heads.std(dim=-1, unbiased=False) if heads.shape[-1] > 1 else torch.zeros(heads.shape[0])
        return (heads.mean(dim=-1), spread) if with_uncertainty else heads.mean(dim=-1)

    def _head_scores(self, prompts: Sequence[str], responses: Sequence[str], normalized: bool,
                     batch_size: int) -> torch.Tensor:
        """Per-head float32 scores (b, num_heads) on the CPU, in batches of similar length, in eval mode."""
        was_training = self.training
        self.eval()
        sequences, _, starts = self.encode_spans(prompts, responses)
        frozen = self.frozen_likelihood_of(prompts, responses)
        out = torch.zeros((len(sequences), self.num_heads), dtype=torch.float32)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            ids, mask = pad_batch([sequences[i] for i in chunk], self.pad_id, self.device)
            response_start = torch.tensor([starts[i] for i in chunk], dtype=torch.long, device=self.device)
            likelihood = frozen[torch.tensor(chunk, dtype=torch.long)] if frozen is not None else None
            rewards = self.forward(ids, mask, response_start, likelihood).float()
            out[torch.tensor(chunk, dtype=torch.long)] = (self.normalize(rewards) if normalized else rewards).cpu()
        self.train(was_training)
        return out

    def set_normalization(self, rewards: torch.Tensor) -> tuple[float, float]:
        """Store each head's mean/std of raw rewards on a reference set, so that ``normalized=True``
        gives every head mean 0 and std 1 there; ``rewards`` is (n, num_heads), or (n,) for one head.

        Returns the mean and std of the raw head-average score (also stored, as ``mean``/``std``).
        """
        rewards = rewards.detach().float()
        if rewards.dim() == 1 and self.num_heads == 1:
            rewards = rewards.unsqueeze(-1)
        if rewards.dim() != 2 or rewards.shape[1] != self.num_heads:
            raise ValueError(f"normalization needs rewards of shape (n, {self.num_heads}) (score_texts with "
                             f"per_head=True), got {tuple(rewards.shape)}")
        if rewards.shape[0] < 2:
            raise ValueError("normalization needs rewards of at least 2 reference samples")
        self.settings.head_mean = rewards.mean(0).tolist()
        self.settings.head_std = rewards.std(0, unbiased=False).clamp_min(1e-6).tolist()
        average = rewards.mean(-1)
        self.settings.mean, self.settings.std = float(average.mean()), max(float(average.std(unbiased=False)), 1e-6)
        return self.settings.mean, self.settings.std

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write trunk (safetensors), head, tokenizer and ``reward_config.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(directory, safe_serialization=True)
        if self.tokenizer is not None and hasattr(self.tokenizer, "save_pretrained"):
            self.tokenizer.save_pretrained(directory)
        if self.head is not None:
            state = {k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}
            save_file(state, str(directory / REWARD_HEAD))
        if self.frozen_likelihood is not None:
            self.frozen_likelihood.save_pretrained(directory / LIKELIHOOD_MODEL)
            self.settings.likelihood_model = LIKELIHOOD_MODEL
        (directory / REWARD_CONFIG).write_text(json.dumps(asdict(self.settings), indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None) -> RewardModel:
        """Load what :meth:`save_pretrained` wrote, or a sequence classifier with one label."""
        from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification,
                                  AutoTokenizer)

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise RewardModelError(f"{directory} is not a model directory (no config.json)")
        tokenizer = AutoTokenizer.from_pretrained(directory)
        kwargs = {"dtype": dtype} if dtype is not None else {}
        if (directory / REWARD_CONFIG).is_file():
            raw = json.loads((directory / REWARD_CONFIG).read_text())
            known = set(RewardModelSettings.__dataclass_fields__)
            settings = RewardModelSettings(**{k: v for k, v in raw.items() if k in known})
            if settings.architecture == "sequence_classification":
                backbone = AutoModelForSequenceClassification.from_pretrained(directory, **kwargs)
                model = cls(backbone, tokenizer, settings)
            else:
                loader = AutoModelForCausalLM if settings.likelihood else AutoModel
                backbone = loader.from_pretrained(directory, **kwargs)
                frozen = (FrozenLikelihood.load(directory / settings.likelihood_model)
                          if settings.likelihood_model else None)
                model = cls(backbone, tokenizer, settings, frozen)
                head_state = load_file(str(directory / REWARD_HEAD))
                model.head.load_state_dict({k: v.to(model.head.weight.dtype) for k, v in head_state.items()})
        else:
            config = AutoConfig.from_pretrained(directory)
            architectures = getattr(config, "architectures", None) or []
            if not any(a.endswith("ForSequenceClassification") for a in architectures):
                raise RewardModelError(f"{directory} is neither an rlhfkit reward model ({REWARD_CONFIG} missing) "
                                       "nor a sequence classifier with num_labels=1")
            backbone = AutoModelForSequenceClassification.from_pretrained(directory, **kwargs)
            model = cls(backbone, tokenizer, RewardModelSettings(append_eos=False))
        model.eval()
        return model.to(device) if device is not None else model

    @classmethod
    def from_trunk(cls, name_or_path: str | Path, num_heads: int = 1, max_length: int = 512,
                   device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                   seed: int | None = None, pooling: str = "last", likelihood: bool = False,
                   likelihood_model: str | None = None) -> RewardModel:
        """A fresh reward model on the trunk of a pretrained (causal) LM; ``"builtin"`` works.

        ``likelihood`` keeps the LM head beside the trunk and lets the reward head read it;
        ``likelihood_model`` (a causal LM directory or name) is loaded frozen for the head to read instead."""
        from transformers import AutoModel, AutoModelForCausalLM

        from rlhfkit.models.loading import load_tokenizer, resolve_model_path

        path = resolve_model_path(str(name_or_path))
        tokenizer = load_tokenizer(path)
        kwargs = {"dtype": dtype} if dtype is not None else {}
        backbone = (AutoModelForCausalLM if likelihood else AutoModel).from_pretrained(path, **kwargs)
        if seed is not None:
            torch.manual_seed(seed)
        settings = RewardModelSettings(num_heads=num_heads, max_length=min(max_length, context_length(backbone)),
                                       pooling=pooling, likelihood=likelihood)
        frozen = FrozenLikelihood.load(likelihood_model) if likelihood_model else None
        model = cls(backbone, tokenizer, settings, frozen)
        return model.to(device) if device is not None else model


def _output_embeddings(backbone: nn.Module) -> nn.Module | None:
    """The LM head of a causal LM (tied or not), or None for a bare trunk."""
    getter = getattr(backbone, "get_output_embeddings", None)
    return getter() if callable(getter) else None


class RewardEnsemble:
    """``k`` reward models scored together: reward = mean over members, uncertainty = their std."""

    def __init__(self, members: Sequence[RewardModel]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)

    @property
    def tokenizer(self) -> Any:
        """The first member's tokenizer (members are expected to share one for :meth:`score`)."""
        return self.members[0].tokenizer

    def to(self, device: torch.device | str) -> RewardEnsemble:
        """Move every member to ``device``."""
        for member in self.members:
            member.to(device)
        return self

    def eval(self) -> RewardEnsemble:
        """Put every member in eval mode."""
        for member in self.members:
            member.eval()
        return self

    def _stack(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalized: bool,
               response_start: torch.Tensor | None) -> torch.Tensor:
        return torch.stack([m.score(input_ids, attention_mask, normalized=normalized, response_start=response_start)
                            for m in self.members], dim=-1)

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalized: bool = False,
              response_start: torch.Tensor | None = None) -> torch.Tensor:
        """Mean member reward; (b, T) -> (b,)."""
        return self._stack(input_ids, attention_mask, normalized, response_start).mean(dim=-1)

    def score_with_uncertainty(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                               normalized: bool = False, response_start: torch.Tensor | None = None
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) over members, each (b,)."""
        stacked = self._stack(input_ids, attention_mask, normalized, response_start)
        return stacked.mean(dim=-1), stacked.std(dim=-1, unbiased=False)

    def score_texts(self, prompts: Sequence[str], responses: Sequence[str], normalized: bool = False,
                    batch_size: int = 32, with_uncertainty: bool = False, per_head: bool = False) -> Any:
        """Mean member reward (b,) for text pairs; each member encodes with its own tokenizer.

        ``with_uncertainty`` adds the std over members (b,); ``per_head`` instead returns the scores
        of every head of every member side by side, (b, sum of the members' head counts).
        """
        if with_uncertainty and per_head:
            raise ValueError("score_texts: ask for with_uncertainty or per_head, not both")
        if per_head:
            return torch.cat([m.score_texts(prompts, responses, normalized=normalized, batch_size=batch_size,
                                            per_head=True) for m in self.members], dim=-1)
        stacked = torch.stack([m.score_texts(prompts, responses, normalized=normalized, batch_size=batch_size)
                               for m in self.members], dim=-1)
        mean, std = stacked.mean(dim=-1), stacked.std(dim=-1, unbiased=False)
        return (mean, std) if with_uncertainty else mean

    def save_pretrained(self, directory: str | Path) -> Path:
        """Members in ``member-<i>/`` plus ``reward_ensemble.json`` listing them."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names = []
        for index, member in enumerate(self.members):
            member.save_pretrained(directory / f"member-{index}")
            names.append(f"member-{index}")
        (directory / ENSEMBLE_CONFIG).write_text(json.dumps({"members": names}, indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None) -> RewardEnsemble:
        """Load an ensemble directory written by :meth:`save_pretrained`."""
        directory = Path(directory)
        names = json.loads((directory / ENSEMBLE_CONFIG).read_text())["members"]
        return cls([RewardModel.from_pretrained(directory / n, device=device, dtype=dtype) for n in names])


def load_reward_model(path_or_name: str | Path, device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None) -> RewardModel | RewardEnsemble:
    """A trained reward model (or ensemble) from a directory; clear error if it is not one."""
    path = Path(path_or_name)
    if not path.is_dir():
        raise RewardModelError(f"reward model {path_or_name} is not a directory; train one with "
                               "`rlhfkit train-rm` or pass a sequence-classification model directory")
    if (path / ENSEMBLE_CONFIG).is_file():
        return RewardEnsemble.from_pretrained(path, device=device, dtype=dtype)
    return RewardModel.from_pretrained(path, device=device, dtype=dtype)
