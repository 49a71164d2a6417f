"""Frozen linear layers with their weights reordered once for oneDNN, for sampling and frozen forwards on the CPU.

PyTorch's float32 ``addmm`` on CPU calls MKL, which repacks the whole weight on every call. Measured on
2 cores with one thread: a 6-row product with a 256 x 4,096 LM head takes ~300 us there and ~145 us
in oneDNN with the weight packed once; at 1,024 rows oneDNN is still 15-25% faster. A rollout's
weights do not change while it samples, so :class:`rlhfkit.rl.rollout.CachedSampler` packs them once
per rollout (:func:`packed_linears_while`); so do the frozen reference's log-probs (on-policy trainers,
DPO) and reward-model scoring (``bench/grpo.py``'s reference phase: ~10% less). The ops are those ``torch.compile``'s CPU backend emits
(``torch.ops.mkldnn``); where a build lacks them or they disagree with ``F.linear`` on a first check,
every module keeps its own forward. Where an MLP applies an activation straight to one linear layer's output
(GPT-2's ``c_fc``, a Llama gate), the packed layer applies it too, as a oneDNN post-op: PyTorch's tanh GELU
runs at ~2.5 ns per element on this CPU (its ``tanh`` is slow), the post-op at ~0.5 (225 x 1,024 outputs: 1,512
us for the product then the GELU, 1,239 fused).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn

from rlhfkit.utils.runtime import worker_pool


@functools.cache
def onednn_linear_available() -> bool:
    """True when this PyTorch build packs and runs oneDNN linear layers and agrees with ``F.linear``."""
    ops = torch.ops.mkldnn
    if not torch.backends.mkldnn.is_available() or not all(
            hasattr(ops, name) for name in ("_reorder_linear_weight", "_linear_pointwise")):
        return False
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # a layer's init must not move the caller's RNG
        layer = nn.Linear(16, 24)
        layer.weight.copy_(torch.randn(24, 16, generator=generator))
        inputs = torch.randn(3, 16, generator=generator)
        try:
            return bool(torch.allclose(PackedLinear(layer)(inputs), layer(inputs), atol=1e-5))
        except RuntimeError:
            return False


#: A oneDNN post-op: (attribute, algorithm) of ``torch.ops.mkldnn._linear_pointwise``; ("none", "") is none.
PostOp = tuple[str, str]
NO_POST_OP: PostOp = ("none", "")

#: MLPs whose forward applies one activation module to one linear layer's output and uses it nowhere else:
#: class name -> (linear attribute, activation attribute). Read from the transformers sources of each.
ACTIVATION_SITES: dict[str, tuple[str, str]] = {
    "GPT2MLP": ("c_fc", "act"),
    "GPTNeoXMLP": ("dense_h_to_4h", "act"),
    "OPTDecoderLayer": ("fc1", "activation_fn"),
    **{name: ("gate_proj", "act_fn") for name in ("LlamaMLP", "Qwen2MLP", "MistralMLP", "GemmaMLP", "Gemma2MLP")},
}


class PackedLinear(nn.Module):
    """A frozen ``nn.Linear`` or transformers ``Conv1D`` (float32, CPU) with its weight packed for oneDNN,
    optionally followed by an activation applied as a post-op (``post_op``, see :func:`activation_post_op`).

    ``weight`` and ``bias`` stay the original parameters, so code that reads their dtype or device
    still works; only the forward uses the packed copy. Inference only (no gradient flows).
    """

    def __init__(self, layer: nn.Module, post_op: PostOp = NO_POST_OP) -> None:
        from transformers.pytorch_utils import Conv1D

        super().__init__()
        self.weight, self.bias = layer.weight, layer.bias
        self.post_op = post_op
        matrix = layer.weight.t() if type(layer) is Conv1D else layer.weight  # Conv1D stores (in, out)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(matrix.detach().contiguous())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.detach()
        attribute, algorithm = self.post_op
        return torch.ops.mkldnn._linear_pointwise(inputs, self.packed, bias, attribute, [], algorithm)


def activation_post_op(activation: nn.Module) -> PostOp | None:
    """The oneDNN post-op that computes ``activation`` (a hook-free GELU, tanh GELU, SiLU or ReLU module), or
    None when there is none or this build's post-op disagrees with the module on a first check."""
    from transformers import activations

    kind = type(activation)
    tanh_gelus = tuple(getattr(activations, name) for name in ("GELUTanh", "NewGELUActivation") if hasattr(activations, name))
    if activation._forward_hooks or activation._forward_pre_hooks:
        return None
    if kind in tanh_gelus or (kind is nn.GELU and activation.approximate == "tanh"):
        post_op: PostOp = ("gelu", "tanh")
    elif kind is getattr(activations, "GELUActivation", None) or (kind is nn.GELU and activation.approximate == "none"):
        post_op = ("gelu", "none")
    elif kind in (nn.SiLU, getattr(activations, "SiLUActivation", nn.SiLU)):
        post_op = ("swish", "")
    elif kind is nn.ReLU:
        post_op = ("relu", "")
    else:
        return None
    return post_op if _post_op_agrees(post_op, kind) else None


@functools.cache
def _post_op_agrees(post_op: PostOp, kind: type[nn.Module]) -> bool:
    """Whether the fused post-op matches a linear layer followed by a fresh ``kind`` activation (``nn.GELU``
    in the approximation ``post_op`` names)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        layer = nn.Linear(16, 24)
        layer.weight.copy_(torch.randn(24, 16, generator=generator))
        inputs = torch.randn(3, 16, generator=generator)
        activation = nn.GELU(approximate=post_op[1]) if kind is nn.GELU else kind()
        try:
            fused = PackedLinear(layer, post_op)(inputs)
        except RuntimeError:
            return False
        return bool(torch.allclose(fused, activation(layer(inputs)), atol=1e-5))


def packable(layer: nn.Module) -> bool:
    """A plain float32 CPU ``nn.Linear`` or ``Conv1D`` without hooks (a hooked layer keeps running, so its
    hooks still fire)."""
    from transformers.pytorch_utils import Conv1D

    weight = getattr(layer, "weight", None)
    return (type(layer) in (nn.Linear, Conv1D) and isinstance(weight, torch.Tensor)
            and weight.dtype == torch.float32 and weight.device.type == "cpu"
            and not layer._forward_hooks and not layer._forward_pre_hooks)


def _is_adapter(module: nn.Module) -> bool:
    """A peft tuner layer (LoRA and the like)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return isinstance(module, BaseTunerLayer)


@contextlib.contextmanager
def packed_linears_while(model: nn.Module) -> Iterator[int]:
    """Inside the block, every packable linear layer of ``model`` runs as a :class:`PackedLinear`, and one that
    an MLP of :data:`ACTIVATION_SITES` feeds straight into its activation applies it as a post-op (the
    activation module an identity meanwhile); the modules are put back after. Yields the count of packed
    layers (0 off the CPU, under autocast, or without oneDNN).

    A model with adapters (peft's LoRA and the like) is left alone: LoRA is chosen to save memory, and the
    packed copies of its frozen weights would add their size to the rollout (bench/memory.py's PPO-LoRA
    peak did not move beyond its +-10 MiB noise when they were packed, so this is caution, not a measurement).
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    sites = []
    if (device.type == "cpu" and not torch.is_autocast_enabled("cpu") and onednn_linear_available()
            and not any(_is_adapter(layer) for layer in model.modules())):
        sites = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
                 if packable(child)]
    post_ops = fused_activations(model) if sites else {}
    packed = packed_in_parallel([(child, post_ops[id(child)][2] if id(child) in post_ops else NO_POST_OP)
                                 for _, _, child in sites])
    swaps = [(parent, name, layer) for (parent, name, _), layer in zip(sites, packed)]
    owners = {id(owner): (owner, activation_name) for owner, activation_name, _ in post_ops.values()}
    swaps += [(owner, activation_name, nn.Identity()) for owner, activation_name in owners.values()]
    originals = [(parent, name, getattr(parent, name)) for parent, name, _ in swaps]
    for parent, name, module in swaps:
        setattr(parent, name, module)
    try:
        yield len(sites)
    finally:
        for parent, name, module in reversed(originals):
            setattr(parent, name, module)


def packed_in_parallel(layers: list[tuple[nn.Module, PostOp]]) -> list[PackedLinear]:
    """:class:`PackedLinear` of each (layer, post-op), in order, packed by all intra-op threads: oneDNN's reorder
    runs on one (17 layers of 4.2M parameters: 10-11 ms on one thread, 6-7 on two); largest layers first, each
    to the least loaded thread."""
    threads = min(torch.get_num_threads(), len(layers))
    if threads < 2:
        return [PackedLinear(layer, post_op) for layer, post_op in layers]
    shares: list[list[int]] = [[] for _ in range(threads)]
    loads = [0] * threads
    for index in sorted(range(len(layers)), key=lambda i: -layers[i][0].weight.numel()):
        lightest = loads.index(min(loads))
        shares[lightest].append(index)
        loads[lightest] += layers[index][0].weight.numel()

    def pack(share: list[int]) -> list[tuple[int, PackedLinear]]:
        return [(index, PackedLinear(*layers[index])) for index in share]

    futures = [worker_pool(threads - 1).submit(pack, share) for share in shares[1:]]
    try:
        done = pack(shares[0])
    finally:  # a failure here must not leave workers packing behind the caller's back
        concurrent.futures.wait(futures)
    for future in futures:
        done += future.result()
    return [layer for _, layer in sorted(done, key=lambda pair: pair[0])]


def fused_activations(model: nn.Module) -> dict[int, tuple[nn.Module, str, PostOp]]:
    """id(linear layer) -> (its MLP, the activation's attribute, the post-op) for each MLP of
    :data:`ACTIVATION_SITES` in ``model`` whose linear layer is packable and whose activation has a post-op."""
    found = {}
    for module in model.modules():
        names = ACTIVATION_SITES.get(type(module).__name__)
        if names is None:
            continue
        linear, activation = (getattr(module, name, None) for name in names)
        if isinstance(linear, nn.Module) and isinstance(activation, nn.Module) and packable(linear):
            post_op = activation_post_op(activation)
            if post_op is not None:
                found[id(linear)] = (module, names[1], post_op)
    return found
