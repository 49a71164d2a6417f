"""Record the matrix products a piece of PyTorch code runs, then time those products alone.

The replay is the arithmetic no implementation of the same computation can skip: the same
``mm``/``addmm``/``bmm``/``baddbmm`` calls with the same shapes, strides and dtypes, in the same order,
into preallocated outputs, with nothing else in between (no norms, activations, softmax, copies or
Python). Calls with the same signature share their tensors, so the replay is, if anything, more
cache-friendly than the real run: its time is a lower bound.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
MATMUL_OPS = {aten.mm.default: torch.mm, aten.addmm.default: torch.addmm, aten.bmm.default: torch.bmm,
              aten.baddbmm.default: torch.baddbmm}

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
    for _, specs, _ in calls:
        left, right = specs[-2][0], specs[-1][0]
        batch = left[0] if len(left) == 3 else 1
        total += 2.0 * batch * left[-2] * left[-1] * right[-1]
    return total


def _materialize(spec: Spec, generator: torch.Generator) -> torch.Tensor:
    shape, stride, dtype = spec
    size = 1 + sum((n - 1) * s for n, s in zip(shape, stride))
    storage = torch.randn(size, generator=generator).to(dtype)
    return storage.as_strided(shape, stride)


def replay_seconds(calls: list[Call], repeats: int = 5) -> tuple[float, float]:
    """Median wall and process CPU seconds of running every recorded product once, in order, into
    preallocated outputs."""
    generator = torch.Generator().manual_seed(0)
    tensors: dict[tuple[Spec, ...], list[torch.Tensor]] = {}
    outputs: dict[Call, torch.Tensor] = {}
    program: list[tuple[Callable[..., torch.Tensor], list[torch.Tensor], dict[str, Any], torch.Tensor]] = []
    for call in calls:
        op, specs, keywords = call
        inputs = tensors.setdefault(specs, [_materialize(spec, generator) for spec in specs])
        if call not in outputs:
            outputs[call] = MATMUL_OPS[op](*inputs, **dict(keywords))
        program.append((MATMUL_OPS[op], inputs, dict(keywords), outputs[call]))
    times, cpu = [], []
    for _ in range(repeats + 1):  # the first pass warms caches and is dropped
        started, cpu_started = time.perf_counter(), time.process_time()
        for fn, inputs, keywords, out in program:
            fn(*inputs, **keywords, out=out)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return statistics.median(times[1:]), statistics.median(cpu[1:])
