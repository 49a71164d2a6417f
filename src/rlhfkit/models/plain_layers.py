"""Whether a layer may be run other than through its own ``forward`` (packed, concatenated, in blocks)."""

from __future__ import annotations

from torch import nn


def runs_as_its_class(layer: object, classes: tuple[type, ...] = (nn.Linear,)) -> bool:
    """``layer`` is exactly one of ``classes`` (no adapter wrapper or subclass), with no forward hooks and no forward
    replaced on the instance (accelerate's offloading): computing its output from its weights skips nothing."""
    return (type(layer) in classes and isinstance(layer, nn.Module) and not layer._forward_hooks
            and not layer._forward_pre_hooks and "forward" not in vars(layer))
