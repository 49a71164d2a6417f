"""Record the matrix products a piece of PyTorch code runs, then time those products alone.

The replay is the arithmetic no implementation of the same computation can skip: the same
``mm``/``addmm``/``bmm``/``baddbmm`` calls with the same shapes, strides and dtypes, in the same order,
into preallocated outputs, with nothing else in between (no norms, activations, softmax, copies or
Python). Products with a weight packed for oneDNN (``torch.ops.mkldnn._linear_pointwise``, the sampler's and
the frozen passes' linear layers: :mod:`rlhfkit.rl.packed_linear`) are replayed as such, their weights packed
once before the timing. Calls with the same signature share their tensors, so the replay is, if anything, more
cache-friendly than the real run: its time is a lower bound (the packed products allocate their outputs,
as the real run does).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
MATMUL_OPS = {aten.mm.default: torch.mm, aten.addmm.default: torch.addmm, aten.bmm.default: torch.bmm,
              aten.baddbmm.default: torch.baddbmm}

#: oneDNN's product with a packed weight: recorded as (input spec, (out_features,), bias or not), replayed on a
#: weight of that shape packed once.
PACKED_LINEAR = torch.ops.mkldnn._linear_pointwise.default

Spec = tuple[tuple[int, ...], tuple[int, ...], torch.dtype]
Call = tuple[Any, tuple[Spec, ...], tuple[tuple[str, Any], ...]]


def _spec(tensor: torch.Tensor) -> Spec:
    return tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype


class MatmulRecorder(TorchDispatchMode):
    """While active, appends (op, tensor specs, scalar keywords) of every matrix product to ``calls``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is PACKED_LINEAR:
            out = func(*args, **kwargs)
            inputs, bias = args[0], args[2]
            self.calls.append((func, (_spec(inputs),), (("bias", bias is not None), ("out_features", out.shape[-1]))))
            return out
        if func in MATMUL_OPS:
            specs = tuple(_spec(a) for a in args if isinstance(a, torch.Tensor))
            self.calls.append((func, specs, tuple(sorted(kwargs.items()))))
        return func(*args, **kwargs)


def record(fn: Callable[[], Any]) -> list[Call]:
    """The matrix products ``fn()`` runs, in order."""
    with MatmulRecorder() as recorder:
        fn()
    return recorder.calls


def flops(calls: list[Call]) -> float:
    """Multiply-adds x 2 of the recorded products (for a GFLOP/s figure)."""
    total = 0.0
    for op, specs, keywords in calls:
        if op is PACKED_LINEAR:
            shape = specs[0][0]
            total += 2.0 * math.prod(shape) * dict(keywords)["out_features"]
            continue
        left, right = specs[-2][0], specs[-1][0]
        batch = left[0] if len(left) == 3 else 1
        total += 2.0 * batch * left[-2] * left[-1] * right[-1]
    return total


def _materialize(spec: Spec, generator: torch.Generator) -> torch.Tensor:
    shape, stride, dtype = spec
    size = 1 + sum((n - 1) * s for n, s in zip(shape, stride))
    storage = torch.randn(size, generator=generator).to(dtype)
    return storage.as_strided(shape, stride)


def _packed_product(spec: Spec, keywords: dict[str, Any], generator: torch.Generator
                    ) -> tuple[Callable[..., torch.Tensor], list[Any], dict[str, Any], None]:
    """One recorded oneDNN product as a replay step: a random weight of its shape packed now, outside the timing."""
    inputs = _materialize(spec, generator)
    out_features = keywords["out_features"]
    weight = torch.randn(out_features, spec[0][-1], generator=generator).to(spec[2])
    bias = torch.randn(out_features, generator=generator).to(spec[2]) if keywords["bias"] else None
    packed = torch.ops.mkldnn._reorder_linear_weight(weight)
    return PACKED_LINEAR, [inputs, packed, bias, "none", [], ""], {}, None


def replay_seconds(calls: list[Call], repeats: int = 5) -> tuple[float, float]:
    """Median wall and process CPU seconds of running every recorded product once, in order, into
    preallocated outputs."""
    generator = torch.Generator().manual_seed(0)
    tensors: dict[tuple[Spec, ...], list[torch.Tensor]] = {}
    outputs: dict[Call, torch.Tensor] = {}
    program: list[tuple[Callable[..., torch.Tensor], list[Any], dict[str, Any], torch.Tensor | None]] = []
    for call in calls:
        op, specs, keywords = call
        if op is PACKED_LINEAR:
            program.append(_packed_product(specs[0], dict(keywords), generator))
            continue
        inputs = tensors.setdefault(specs, [_materialize(spec, generator) for spec in specs])
        if call not in outputs:
            outputs[call] = MATMUL_OPS[op](*inputs, **dict(keywords))
        program.append((MATMUL_OPS[op], inputs, dict(keywords), outputs[call]))
    times, cpu = [], []
    for _ in range(repeats + 1):  # the first pass warms caches and is dropped
        started, cpu_started = time.perf_counter(), time.process_time()
        for fn, inputs, keywords, out in program:
            if out is None:
                fn(*inputs, **keywords)
            else:
                fn(*inputs, **keywords, out=out)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return statistics.median(times[1:]), statistics.median(cpu[1:])
