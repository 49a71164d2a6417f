"""Models whose cache carries a recurrent state per row instead of one key and value per position.

Linear attention (Qwen3-Next, Qwen3.5), short convolutions (LFM2) and state-space heads (Falcon-H1) keep
such a state. A static cache sized for attention keys and values does not carry it, so the fixed-shape
samplers refuse these models; the dynamic ``cached`` sampler and HF ``generate`` run them.
"""

from __future__ import annotations

from torch import nn


def recurrent_layer_kinds(model: nn.Module) -> list[str]:
    """The names of ``model``'s cache layers that hold recurrent state (empty for attention-only models)."""
    try:
        from transformers.cache_utils import DynamicCache, LinearAttentionCacheLayerMixin
    except ImportError:  # transformers without linear-attention cache layers
        return []
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # a capability probe: a config transformers cannot build a cache for has no such layers here
        return []
    return [type(layer).__name__ for layer in layers if isinstance(layer, LinearAttentionCacheLayerMixin)]


def refuse_recurrent(model: nn.Module, sampler: str) -> None:
    """Raise a clear error when a fixed-shape (static-cache) ``sampler`` is asked to decode a recurrent model."""
    kinds = recurrent_layer_kinds(model)
    if kinds:
        model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        counts = ", ".join(f"{kinds.count(kind)} x {kind}" for kind in sorted(set(kinds)))
        raise ValueError(f"the {sampler!r} sampler keeps attention keys and values only, but {model_type!r} keeps a "
                         f"recurrent state in some layers ({counts}): use generation.backend 'cached' or 'hf'")
