"""Fused GELU: transformers' gelu_new as PyTorch's one-kernel tanh GELU, the same function (trainers, sampler, reward models)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


def _gelu_new_sites(module: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """Every (parent, attribute name, module) of a transformers ``NewGELUActivation`` inside ``module``."""
    from transformers.activations import NewGELUActivation

    return [(parent, name, child) for parent in module.modules() for name, child in parent.named_children()
            if type(child) is NewGELUActivation]


def fuse_gelu(module: nn.Module) -> int:
    """Swap transformers' ``NewGELUActivation`` ("gelu_new": a chain of 7 elementwise ops, each kept
    for backward) for PyTorch's fused tanh-approximation GELU: the same formula in one kernel
    (max abs difference ~2e-7 in float32), ~4x faster forward+backward on CPU. Returns the count.

    The model config is left untouched, so saved models still say ``gelu_new``.
    """
    from transformers.activations import GELUTanh

    sites = _gelu_new_sites(module)
    for parent, name, _ in sites:
        setattr(parent, name, GELUTanh())
    return len(sites)


@contextlib.contextmanager
def fused_gelu_while(module: nn.Module) -> Iterator[int]:
    """:func:`fuse_gelu` inside the block, the original modules put back after; yields the count.

    For a model handed to a sampler directly (``rlhfkit generate``, ``bench/rollout.py``), which the
    caller expects back unchanged; the trainers fuse their policy once instead.
    """
    sites = _gelu_new_sites(module)
    fuse_gelu(module)
    try:
        yield len(sites)
    finally:
        for parent, name, child in sites:
            setattr(parent, name, child)
