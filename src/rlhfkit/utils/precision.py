"""Mixed precision and memory options shared by the trainers, the same code on CPU and GPU.

``run.dtype`` is the compute dtype. Under bf16/fp16 every forward runs in ``torch.autocast`` while
everything that is trained (full policy, value head, critic, LoRA adapters) keeps float32 master
weights, so AdamW updates are not rounded away; frozen models (reference, LoRA base) are stored in the
compute dtype. Log-probs, KL, advantages and losses are float32 (log-softmax upcasts the logits).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Forwards in ``dtype`` (autocast) unless it is float32, where nothing changes."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


FLOAT_DROPOUT_ATTRIBUTES = ("dropout", "attention_dropout", "activation_dropout", "layerdrop")


def disable_dropout(module: nn.Module) -> None:
    """Set every dropout probability to 0 (modules and the config fields HF attention reads), so train mode
    (needed by gradient checkpointing) computes what eval mode does."""
    for sub in module.modules():
        if isinstance(sub, nn.Dropout):
            sub.p = 0.0
        for name in FLOAT_DROPOUT_ATTRIBUTES:  # some families (OPT) copy the rates into plain float attributes
            if isinstance(getattr(sub, name, None), float):
                setattr(sub, name, 0.0)
    config = getattr(module, "config", None)
    for name in ("attn_pdrop", "attention_dropout", "attention_probs_dropout_prob"):
        if config is not None and isinstance(getattr(config, name, None), float):
            setattr(config, name, 0.0)


def enable_gradient_checkpointing(model: nn.Module) -> bool:
    """Recompute activations in the backward pass instead of storing them; returns whether the model supports it.

    Transformers only checkpoints in train mode: dropout is switched off here, and the trainers run their
    loss forwards inside :func:`train_mode` (sampling and frozen forwards stay in eval mode with the KV cache).
    """
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(target, "supports_gradient_checkpointing", False):
        return False
    options = {"use_reentrant": False}
    if hasattr(target, "activation_checkpointing_enable"):  # transformers >= 5 (the old name is deprecated)
        target.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        target.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    disable_dropout(model)
    return True


@contextlib.contextmanager
def train_mode(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """``model`` in train mode for the block (so gradient checkpointing engages), then back to its mode."""
    if not enabled:
        yield
        return
    was_training = model.training
    model.train()
    try:
        yield
    finally:
        model.train(was_training)
