"""Frozen linear layers with their weights reordered once for oneDNN, for sampling and frozen forwards on the CPU.

PyTorch's float32 ``addmm`` on CPU calls MKL, which repacks the whole weight on every call. Measured on
2 cores with one thread: a 6-row product with a 256 x 4,096 LM head takes ~300 us there and ~145 us
in oneDNN with the weight packed once; at 1,024 rows oneDNN is still 15-25% faster. A rollout's
weights do not change while it samples, so :class:`rlhfkit.rl.rollout.CachedSampler` packs them once
per rollout (:func:`packed_linears_while`); so do the frozen reference's log-probs (on-policy trainers,
DPO) and reward-model scoring (``bench/grpo.py``'s reference phase: ~10% less). The ops are those ``torch.compile``'s CPU backend emits
(``torch.ops.mkldnn``); where a build lacks them or they disagree with ``F.linear`` on a first check,
every module keeps its own forward.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Collection, Iterator

import torch
from torch import nn

from rlhfkit.models.plain_layers import runs_as_its_class
from rlhfkit.utils.runtime import across_threads


@functools.cache
def onednn_linear_available() -> bool:
    """True when this PyTorch build packs and runs oneDNN linear layers and agrees with ``F.linear``."""
    ops = torch.ops.mkldnn
    if not torch.backends.mkldnn.is_available() or not all(
            hasattr(ops, name) for name in ("_reorder_linear_weight", "_linear_pointwise")):
        return False
    return agrees_with_modules(lambda packed, layer, inputs, _: [(packed(inputs), layer(inputs))])


Results = Callable[["PackedLinear", nn.Linear, torch.Tensor, torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]


def agrees_with_modules(results: Results, dtype: torch.dtype = torch.float32, atol: float = 1e-5) -> bool:
    """Whether each (packed, plain) pair of outputs ``results`` computes from a small random layer packed in ``dtype``
    and plain, inputs (3, 16) and a residual (3, 24) has one dtype and agrees within ``atol``; False where an op is
    missing or fails. The layer's initialisation leaves the caller's RNG alone (a resumed run draws what an
    uninterrupted one does), and the check runs without the caller's autocast (``results`` enters what it compares
    against; the answer is cached for the process)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad(), torch.random.fork_rng(devices=[]), torch.autocast("cpu", enabled=False):
        layer = nn.Linear(16, 24)
        layer.weight.copy_(torch.randn(24, 16, generator=generator) * 0.3)
        inputs, residual = torch.randn(3, 16, generator=generator), torch.randn(3, 24, generator=generator)
        try:
            pairs = results(PackedLinear(layer, dtype), layer, inputs, residual)
        except (RuntimeError, AttributeError):
            return False
    return all(packed.dtype == plain.dtype and torch.allclose(packed.float(), plain.float(), atol=atol)
               for packed, plain in pairs)


class PackedLinear(nn.Module):
    """A frozen ``nn.Linear`` or transformers ``Conv1D`` (CPU) with its weight packed for oneDNN in ``dtype``.

    ``weight`` and ``bias`` stay the original parameters, so code that reads their dtype or device
    still works; only the forward uses the packed copy. Inference only (no gradient flows). In bfloat16 (a pass
    under CPU bf16 autocast) it computes what autocast's linear does: inputs, weight and bias in bf16, a bf16
    output; at a decode step's 32 rows on one thread ~1.8x faster than autocast's own product, which casts and
    repacks the weight on every call (74 against 138 us for 256 x 768 on session 26's AMD EPYC).
    """

    def __init__(self, layer: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        from transformers.pytorch_utils import Conv1D

        super().__init__()
        self.weight, self.bias, self.dtype = layer.weight, layer.bias, dtype
        matrix = layer.weight.t() if type(layer) is Conv1D else layer.weight  # Conv1D stores (in, out)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(matrix.detach().to(dtype).contiguous())
        self.bias_data = None if layer.bias is None else layer.bias.detach().to(dtype)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(inputs.to(self.dtype), self.packed, self.bias_data, "none", [], "")

    def gelu(self, inputs: torch.Tensor, algorithm: str) -> torch.Tensor:
        """GELU of this layer's output in the same oneDNN call; ``algorithm`` ``"tanh"`` (the tanh approximation)
        or ``"none"`` (the exact erf form). PyTorch's own tanh GELU took 68 us for 32 x 1,024 on one thread here
        and the fused call saves ~75 us of its 260; on 3,072 rows and two threads 8.9 -> 6.2 ms."""
        return torch.ops.mkldnn._linear_pointwise(inputs.to(self.dtype), self.packed, self.bias_data, "gelu", [],
                                                  algorithm)

    def plus(self, inputs: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``residual + self(inputs)``, in one oneDNN call in float32 (``residual`` has the output's shape); in
        bf16 as autocast adds: the bf16 output promoted into the float32 residual."""
        if self.dtype != torch.float32:
            return residual + self(inputs)
        return torch.ops.mkldnn._linear_pointwise.binary(inputs, residual, self.packed, self.bias_data, "add")


def packable(layer: nn.Module, dtype: torch.dtype = torch.float32) -> bool:
    """A plain CPU ``nn.Linear`` or ``Conv1D`` (:func:`rlhfkit.models.plain_layers.runs_as_its_class`: a hooked
    layer keeps running, so its hooks still fire) whose weight may run in ``dtype``: float32 weights for float32,
    float32 or bfloat16 ones for bfloat16 (what autocast would cast them to)."""
    from transformers.pytorch_utils import Conv1D

    weight = getattr(layer, "weight", None)
    allowed = (torch.float32,) if dtype == torch.float32 else (torch.float32, dtype)
    return (runs_as_its_class(layer, (nn.Linear, Conv1D)) and isinstance(weight, torch.Tensor)
            and weight.dtype in allowed and weight.device.type == "cpu")


def _is_adapter(module: nn.Module) -> bool:
    """A peft tuner layer (LoRA and the like)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return isinstance(module, BaseTunerLayer)


def packing_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype :func:`packed_linears_while` packs ``model``'s layers in here, or None: on the CPU with oneDNN and
    no adapters, float32 outside autocast and bfloat16 under CPU bf16 autocast (where this build's bf16 products
    agree with autocast's)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if device.type != "cpu" or not onednn_linear_available() or any(_is_adapter(layer) for layer in model.modules()):
        return None
    if not torch.is_autocast_enabled("cpu"):
        return torch.float32
    dtype = torch.get_autocast_dtype("cpu")
    return dtype if dtype == torch.bfloat16 and onednn_bf16_linear_available() else None


def packing_applies(model: nn.Module) -> bool:
    """Whether :func:`packed_linears_while` packs ``model``'s layers in float32 here (:func:`packing_dtype`)."""
    return packing_dtype(model) == torch.float32


@functools.cache
def onednn_bf16_linear_available() -> bool:
    """True when oneDNN runs bf16 packed products here and they agree with autocast's linear within bf16 rounding."""
    def under_autocast(layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return layer(inputs)

    return agrees_with_modules(lambda packed, layer, inputs, _: [(packed(inputs), under_autocast(layer, inputs))],
                               dtype=torch.bfloat16, atol=0.05)


def packed_for_pass(model: nn.Module, compute_dtype: torch.dtype) -> contextlib.AbstractContextManager[object]:
    """:func:`packed_linears_while` for a pass that will run in ``compute_dtype``: packed only in float32. Packing is
    decided here, before the pass enters its own autocast, so it would pack in float32 and run a bf16 pass's
    products in float32 (before :class:`PackedLinear` cast its inputs, oneDNN failed on them); packed in bf16 these
    passes' products were only 5-18% faster (2,048-3,072 rows, session 26), so they run unpacked."""
    return packed_linears_while(model) if compute_dtype == torch.float32 else contextlib.nullcontext()


@contextlib.contextmanager
def packed_linears_while(model: nn.Module, skip: Collection[nn.Module] = (), fuse_mlps: bool = True
                         ) -> Iterator[int]:
    """Inside the block, every packable linear layer of ``model`` (but those in ``skip``, which the caller will
    not run) runs as a :class:`PackedLinear`, and with ``fuse_mlps`` GPT-2 MLPs so packed run their GELU inside
    the first product (:mod:`rlhfkit.rl.packed_mlp`: oneDNN's GELU, which may differ from PyTorch's in the last
    bit; float32 only); the modules are put back after. Under CPU bf16 autocast the layers are packed in bf16
    (:func:`packing_dtype`). Yields the count of packed layers (0 off the CPU, under another autocast, or without
    oneDNN).

    A model with adapters (peft's LoRA and the like) is left alone: LoRA is chosen to save memory, and the
    packed copies of its frozen weights would add their size to the rollout (bench/memory.py's PPO-LoRA
    peak did not move beyond its +-10 MiB noise when they were packed, so this is caution, not a measurement).
    """
    sites = []
    dtype = packing_dtype(model)
    if dtype is not None:
        skipped = {id(layer) for layer in skip}
        sites = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
                 if packable(child, dtype) and id(child) not in skipped]
    if sites:
        for (parent, name, _), layer in zip(sites, packed_in_parallel([child for _, _, child in sites], dtype)):
            setattr(parent, name, layer)
    from rlhfkit.rl.packed_mlp import fused_mlp_sites

    mlps = fused_mlp_sites(model) if sites and fuse_mlps and dtype == torch.float32 else []
    for parent, name, _, fused in mlps:
        setattr(parent, name, fused)
    try:
        yield len(sites)
    finally:
        for parent, name, mlp, _ in mlps:
            setattr(parent, name, mlp)
        for parent, name, child in sites:
            setattr(parent, name, child)


def packed_in_parallel(layers: list[nn.Module], dtype: torch.dtype = torch.float32) -> list[PackedLinear]:
    """:class:`PackedLinear` of each layer, in order, packed by all intra-op threads: oneDNN's reorder runs on one
    (17 layers of 4.2M parameters: 10-11 ms on one thread, 6-7 on two); largest layers first, each to the least
    loaded thread. The packed weights are those of a serial pack (the demo's seed 0 reproduces bit for bit)."""
    threads = min(torch.get_num_threads(), len(layers))
    if threads < 2:
        return [PackedLinear(layer, dtype) for layer in layers]
    shares: list[list[int]] = [[] for _ in range(threads)]
    loads = [0] * threads
    for index in sorted(range(len(layers)), key=lambda i: -layers[i].weight.numel()):
        lightest = loads.index(min(loads))
        shares[lightest].append(index)
        loads[lightest] += layers[index].weight.numel()
    packed = across_threads([functools.partial(_pack, layers, share, dtype) for share in shares])
    return [layer for _, layer in sorted((pair for part in packed for pair in part), key=lambda pair: pair[0])]


def _pack(layers: list[nn.Module], share: list[int], dtype: torch.dtype) -> list[tuple[int, PackedLinear]]:
    """(index, packed layer in ``dtype``) for each index of ``share``."""
    return [(index, PackedLinear(layers[index], dtype)) for index in share]
