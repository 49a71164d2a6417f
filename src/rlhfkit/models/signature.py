"""What a model's forward accepts, looking through peft wrappers, for keywords that differ across versions."""

from __future__ import annotations

import inspect

from torch import nn


def forward_parameters(model: nn.Module) -> set[str]:
    """Names accepted by the forward of ``model`` (looking through peft wrappers to the base model)."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(target.forward).parameters)


def cache_argument(model: nn.Module) -> str:
    """The forward keyword for the KV cache: ``cache`` (newer transformers 5.x) or ``past_key_values``."""
    return "cache" if "cache" in forward_parameters(model) else "past_key_values"
