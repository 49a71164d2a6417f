"""GPT-2 MLPs on packed weights with the GELU inside the first product, for sampling and frozen forwards on the CPU.

Inside :func:`rlhfkit.rl.packed_linear.packed_linears_while` a GPT-2 block's MLP runs its two packed products
as ``gelu(c_fc(x))`` in one oneDNN call (an eltwise post-op) instead of a product and PyTorch's GELU: the tanh
GELU is PyTorch's slowest elementwise op here (68 us for 32 x 1,024 floats on one thread, where ``exp`` takes
7), so the rollout's MLPs, the reference's and the reward model's lose it. :class:`PackedGeluMLP.plus` also
adds the residual in the second product (oneDNN's binary post-op) for the hand-written decode step.
The results are oneDNN's GELU, within float32 rounding of PyTorch's (~5e-7 here; checked once per process).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from rlhfkit.models.plain_layers import runs_as_its_class
from rlhfkit.rl.packed_linear import PackedLinear, agrees_with_modules, onednn_linear_available


def gelu_algorithm(activation: nn.Module) -> str | None:
    """oneDNN's name for ``activation``'s GELU: ``"tanh"`` for the tanh approximation (transformers' gelu_new,
    gelu_fast, gelu_pytorch_tanh), ``"none"`` for the exact erf form; None for any other activation."""
    from transformers.activations import (FastGELUActivation, GELUActivation, GELUTanh, NewGELUActivation,
                                          PytorchGELUTanh)

    kind = type(activation)
    if kind in (GELUTanh, PytorchGELUTanh, NewGELUActivation, FastGELUActivation):
        return "tanh"
    if kind is GELUActivation and getattr(activation, "act", None) is nn.functional.gelu:
        return "none"
    if kind is nn.GELU:
        return "tanh" if activation.approximate == "tanh" else "none"
    return None


@functools.cache
def onednn_fusions_available() -> bool:
    """True when oneDNN's GELU and residual-add post-ops agree with PyTorch's ops on a first check."""
    return onednn_linear_available() and agrees_with_modules(lambda packed, layer, inputs, residual: [
        (packed.gelu(inputs, "tanh"), nn.functional.gelu(layer(inputs), approximate="tanh")),
        (packed.gelu(inputs, "none"), nn.functional.gelu(layer(inputs))),
        (packed.plus(inputs, residual), residual + layer(inputs))])


class PackedGeluMLP(nn.Module):
    """A GPT-2 MLP (``c_fc``, GELU, ``c_proj``; dropout inactive) whose products run packed, the GELU fused into
    the first. :func:`rlhfkit.rl.cached_gpt2.plus` adds a residual inside its second product."""

    def __init__(self, c_fc: PackedLinear, c_proj: PackedLinear, algorithm: str) -> None:
        super().__init__()
        self.c_fc, self.c_proj, self.algorithm = c_fc, c_proj, algorithm

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.c_fc.gelu(hidden, self.algorithm))

    def plus(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``residual + self(hidden)``, the addition inside the second product."""
        return self.c_proj.plus(self.c_fc.gelu(hidden, self.algorithm), residual)


def fusable_mlp(module: nn.Module) -> str | None:
    """The GELU algorithm of a GPT-2 MLP whose products are packed and whose dropout does nothing (eval mode or
    p = 0), run through its own forward; None for any other module."""
    from transformers.models.gpt2.modeling_gpt2 import GPT2MLP

    if not runs_as_its_class(module, (GPT2MLP,)):
        return None
    if not all(isinstance(getattr(module, name, None), PackedLinear) for name in ("c_fc", "c_proj")):
        return None
    dropout = getattr(module, "dropout", None)
    if isinstance(dropout, nn.Dropout) and module.training and dropout.p > 0:
        return None
    return gelu_algorithm(getattr(module, "act", None))


def fused_mlp_sites(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module, PackedGeluMLP]]:
    """(parent, attribute, MLP, its fused replacement) for every fusable MLP of ``model`` (none where oneDNN's
    post-ops are missing or disagree). The post-ops are checked here, on the thread that packs, whatever the
    model: the decode steps' residual additions (:func:`rlhfkit.rl.cached_gpt2.plus`) then find the answer
    cached instead of checking on the shards' threads."""
    if not onednn_fusions_available():
        return []
    candidates = [(parent, name, child, fusable_mlp(child)) for parent in model.modules()
                  for name, child in parent.named_children()]
    candidates = [site for site in candidates if site[3] is not None]
    return [(parent, name, child, PackedGeluMLP(child.c_fc, child.c_proj, algorithm))
            for parent, name, child, algorithm in candidates]
