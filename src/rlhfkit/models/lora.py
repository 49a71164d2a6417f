"""LoRA adapters through peft (Hu et al. 2021): settings, target-module detection, and applying them."""

from __future__ import annotations

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


LoraSettings = LoraConfig  # the shared LoRA config under its earlier name


def _leaf_names(model: nn.Module) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}


def detect_target_modules(model: nn.Module) -> list[str]:
    """The attention projection names of ``model``'s family (see ``TARGET_FAMILIES``)."""
    present = _leaf_names(model)
    for family in TARGET_FAMILIES:
        if all(name in present for name in family):
            return list(family)
    linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)})
    raise ValueError("cannot detect LoRA target modules for "
                     f"{type(model).__name__}; set lora.target_modules to some of its linear layers: {linear[:20]}")


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
