"""LoRA adapters through peft (Hu et al. 2021): settings, target-module detection, and applying them."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from torch import nn

from rlhfkit.training_config import LoraConfig

if TYPE_CHECKING:
    from peft import PeftModel

# Attention projections to adapt, by naming family, tried in order (first family present wins).
TARGET_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("q_proj", "v_proj"),          # Llama, Mistral, Qwen, OPT, Gemma, Phi-3 style
    ("c_attn",),                   # GPT-2 (fused qkv Conv1D)
    ("query_key_value",),          # GPT-NeoX, Pythia, Falcon, BLOOM
    ("qkv_proj",),                 # Phi-3 fused
    ("Wqkv",),                     # MPT
    ("query", "value"),            # BERT-like trunks
)

# Input projections of token mixers that are not attention (linear attention, short convolutions, state-space
# heads), adapted in the decoder layers that have no attention projection (Qwen3-Next and Qwen3.5, LFM2).
MIXER_INPUTS: tuple[str, ...] = ("in_proj_qkvz", "in_proj_qkv", "in_proj")
_DECODER_LAYER = re.compile(r"(?:.*\.)?(?:layers|h|blocks)\.\d+(?=\.|$)")

LoraSettings = LoraConfig  # the shared LoRA config under its earlier name


def _leaf_names(model: nn.Module) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}


def detect_target_modules(model: nn.Module) -> list[str]:
    """The attention projection names of ``model``'s family (see ``TARGET_FAMILIES``), plus the input projection
    of the other token mixers (``MIXER_INPUTS``) where decoder layers have no attention, as in hybrid models."""
    present = _leaf_names(model)
    for family in TARGET_FAMILIES:
        if all(name in present for name in family):
            return list(family) + _mixer_inputs_of_layers_without(model, family)
    linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)})
    raise ValueError("cannot detect LoRA target modules for "
                     f"{type(model).__name__}; set lora.target_modules to some of its linear layers: {linear[:20]}")


def _mixer_inputs_of_layers_without(model: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """The first name of ``MIXER_INPUTS`` present in each decoder layer holding none of ``targets``."""
    leaves: dict[str, set[str]] = {}
    for name, module in model.named_modules():
        layer = _decoder_layer(name)
        if layer is not None and isinstance(module, nn.Linear):
            leaves.setdefault(layer, set()).add(name.rsplit(".", 1)[-1])
    extra: list[str] = []
    for names in leaves.values():
        if not names & set(targets):
            found = next((candidate for candidate in MIXER_INPUTS if candidate in names), None)
            if found is not None and found not in extra:
                extra.append(found)
    return extra


def _decoder_layer(name: str) -> str | None:
    """The decoder layer that module ``name`` lies in (``model.layers.3`` for ``model.layers.3.mlp.up_proj``)."""
    match = _DECODER_LAYER.match(name)
    return match.group(0) if match else None


def _uses_conv1d(model: nn.Module, targets: list[str]) -> bool:
    """GPT-2's Conv1D stores weights transposed; peft then needs fan_in_fan_out=True."""
    return any(type(module).__name__ == "Conv1D" and name.rsplit(".", 1)[-1] in targets
               for name, module in model.named_modules())


def apply_lora(model: nn.Module, settings: LoraConfig, task_type: str = "CAUSAL_LM") -> PeftModel:
    """Wrap ``model`` with trainable LoRA adapters; the base weights are frozen by peft."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets = list(settings.target_modules) if settings.target_modules else detect_target_modules(model)
    missing = [name for name in targets if name not in _leaf_names(model)]
    if missing:
        raise ValueError(f"lora.target_modules {missing} are not modules of {type(model).__name__}")
    config = PeftLoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=targets,
        bias=settings.bias, task_type=task_type, fan_in_fan_out=_uses_conv1d(model, targets),
    )
    return get_peft_model(model, config)


def is_peft_model(model: nn.Module) -> bool:
    """Whether ``model`` is a peft wrapper (adapters can be switched off with ``disable_adapter``)."""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")
