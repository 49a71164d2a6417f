"""Value functions V(s_t) for PPO: a scalar head on the policy trunk, or a separate critic model.

Both score every token position: values (b, T). Heads are kept in float32 (cheap, and value
regression targets need the precision) and saved as ``value_head.safetensors`` beside the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlhfkit.models.head_rows import lm_head_rows
from rlhfkit.models.positions import position_ids_from_mask
from rlhfkit.utils.runtime import this_thread_only

VALUE_HEAD_FILE = "value_head.safetensors"
CRITIC_CONFIG_FILE = "rlhfkit_critic.json"


class ValueHead(nn.Module):
    """hidden (b, T, H) -> values (b, T): dropout, then one float32 linear unit per position."""

    def __init__(self, hidden_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden_size, 1, dtype=torch.float32)
        nn.init.normal_(self.linear.weight, std=1.0 / (hidden_size + 1) ** 0.5)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(b, T, H) any dtype -> (b, T) float32."""
        return self.linear(self.dropout(hidden.to(self.linear.weight.dtype))).squeeze(-1)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the head to ``directory/value_head.safetensors``."""
        path = Path(directory) / VALUE_HEAD_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in self.state_dict().items()}
        save_file(tensors, str(path), metadata={"hidden_size": str(self.hidden_size)})
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str], hidden_size: int) -> ValueHead:
        """Read a head written by :meth:`save`; the hidden size must match the trunk's."""
        path = Path(directory) / VALUE_HEAD_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no value head at {path}")
        tensors = load_file(str(path))
        found = tensors["linear.weight"].shape[-1]
        if found != hidden_size:
            raise ValueError(f"{path}: value head has hidden size {found}, the model has {hidden_size}")
        head = cls(hidden_size)
        head.load_state_dict(tensors)
        return head


@dataclasses.dataclass
class ValueHeadOutput:
    """logits (b, K, V) and values (b, K) over the same K kept positions (or (n, V) and (n,) at kept rows)."""

    logits: torch.Tensor
    values: torch.Tensor
    hidden: torch.Tensor | None = None  # (n, H) the head's input at the kept rows, when the head was deferred


def hidden_size_of(config: Any) -> int:
    """The width of the final hidden state, whatever the config calls it.

    OPT projects its last hidden state to ``word_embed_proj_dim`` (OPT-350m: 1024 -> 512) before the LM head.
    """
    names = ("word_embed_proj_dim", "hidden_size", "n_embd", "d_model")
    size = next((getattr(config, name) for name in names if getattr(config, name, None)), None)
    if size is None:
        raise ValueError(f"cannot find the hidden size in {type(config).__name__}")
    return int(size)


class PolicyWithValueHead(nn.Module):
    """A causal LM (plain or peft) plus a value head reading the final hidden state of the same trunk.

    The hidden state is the input of the LM head, captured with a forward hook, so no extra
    ``output_hidden_states`` copies are kept.
    """

    def __init__(self, policy: nn.Module, head: ValueHead | None = None) -> None:
        super().__init__()
        self.policy = policy
        hidden = hidden_size_of(policy.config)
        self.value_head = head if head is not None else ValueHead(hidden)
        self.value_head.to(next(policy.parameters()).device)

    @property
    def config(self) -> Any:
        """The policy's config."""
        return self.policy.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, logits_to_keep: int = 0, keep: torch.Tensor | None = None,
                defer_head: bool = False, **kwargs: Any) -> ValueHeadOutput:
        """(b, T) ids -> logits (b, K, V) and values (b, K); K = T, or the last ``logits_to_keep`` positions.

        With ``keep`` (bool (b, T)), both heads run only at its True positions: logits (n, V) and values
        (n,), row-major; with ``defer_head`` as well, the LM head does not run and ``hidden`` holds the (n, H)
        states it would have read (for a caller that runs it in chunks). Position ids default to generate's
        (``cumsum(mask) - 1``) so left-padded batches score right.
        """
        if defer_head and keep is None:
            raise ValueError("defer_head needs keep: the rows whose hidden states the caller scores")
        if position_ids is None and attention_mask is not None:
            position_ids = position_ids_from_mask(attention_mask)
        captured: list[torch.Tensor] = []
        lm_head = self.policy.get_output_embeddings()
        capture = this_thread_only(lambda module, inputs, output: captured.append(inputs[0]))
        handle = lm_head.register_forward_hook(capture)
        if logits_to_keep:
            kwargs["logits_to_keep"] = logits_to_keep
        kwargs.setdefault("use_cache", False)
        try:
            with lm_head_rows(self.policy, keep, defer_head) if keep is not None else nullcontext() as rows:
                output = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                     **kwargs)
        finally:
            handle.remove()
        if defer_head:
            return ValueHeadOutput(logits=output.logits, values=self.value_head(rows.hidden), hidden=rows.hidden)
        return ValueHeadOutput(logits=output.logits, values=self.value_head(captured[-1]))

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Save the policy (``save_pretrained``, safetensors) and the head next to it."""
        self.policy.save_pretrained(directory)
        self.value_head.save(directory)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str], *, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, adapter_trainable: bool = False) -> PolicyWithValueHead:
        """Load the policy with ``load_causal_lm`` and its saved head (a fresh head when there is none)."""
        from rlhfkit.models.loading import ModelError, load_causal_lm, resolve_model_path

        policy = load_causal_lm(name_or_path, device=device, dtype=dtype, adapter_trainable=adapter_trainable)
        directory = Path(resolve_model_path(name_or_path))
        if not (directory / VALUE_HEAD_FILE).is_file():
            return cls(policy)
        try:
            return cls(policy, ValueHead.load(directory, hidden_size_of(policy.config)))
        except ValueError as exc:
            raise ModelError(str(exc)) from exc


class CriticModel(nn.Module):
    """A separate value model: a transformer trunk (``AutoModel``) and a scalar head per token."""

    def __init__(self, trunk: nn.Module, head: ValueHead | None = None) -> None:
        super().__init__()
        self.trunk = trunk
        hidden = hidden_size_of(trunk.config)
        self.value_head = head if head is not None else ValueHead(hidden)
        self.value_head.to(next(trunk.parameters()).device)

    @property
    def config(self) -> Any:
        """The trunk's config."""
        return self.trunk.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """(b, T) ids -> (b, T) float32 values, with generate-style positions for left padding."""
        if position_ids is None and attention_mask is not None:
            position_ids = position_ids_from_mask(attention_mask)
        kwargs.setdefault("use_cache", False)
        output = self.trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        return self.value_head(output.last_hidden_state)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Save the trunk with ``save_pretrained`` (safetensors), the head, and a marker file."""
        directory = Path(directory)
        self.trunk.save_pretrained(directory)
        self.value_head.save(directory)
        (directory / CRITIC_CONFIG_FILE).write_text(json.dumps({"kind": "critic", "hidden_size": self.value_head.hidden_size}))

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str], *, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None) -> CriticModel:
        """Load a saved critic, or start one from any checkpoint's trunk (policy, SFT or reward model) with a new head."""
        from rlhfkit.models.loading import ModelError, load_trunk, resolve_model_path

        trunk = load_trunk(name_or_path, device=device, dtype=dtype)
        directory = Path(resolve_model_path(name_or_path))
        if not (directory / VALUE_HEAD_FILE).is_file():
            return cls(trunk)
        try:
            return cls(trunk, ValueHead.load(directory, hidden_size_of(trunk.config)))
        except ValueError as exc:
            raise ModelError(str(exc)) from exc

