"""Sample with PyTorch's one-kernel tanh GELU in place of transformers' 7-op ``gelu_new``, then put it back.

The trainers already fuse the policy's GELU (:func:`rlhfkit.rl.speedups.fuse_gelu`); a model handed to a
sampler directly (``rlhfkit generate``, ``bench/rollout.py``) still runs ``NewGELUActivation``, ~10% of
an eager CPU rollout. The formula is the same (max abs difference ~2e-7 in float32), so log-probs
still match a forward pass of the unchanged model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def fused_gelu_while(model: nn.Module) -> Iterator[int]:
    """Inside: every ``NewGELUActivation`` of ``model`` is a ``GELUTanh``; yields how many were swapped."""
    from transformers.activations import GELUTanh, NewGELUActivation

    swapped = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if type(child) is NewGELUActivation]
    for parent, name, _ in swapped:
        setattr(parent, name, GELUTanh())
    try:
        yield len(swapped)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
