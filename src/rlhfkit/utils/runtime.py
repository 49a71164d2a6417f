"""Process-level runtime choices: threads, seeds, device and dtype."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")


def configure_threads(num_threads: int | None = None) -> int:
    """Use a bounded number of intra-op threads (and, for child processes, a passive OpenMP wait policy).

    On a loaded machine libgomp's default spin-wait made generation about 20x slower. libgomp reads
    OMP_WAIT_POLICY once, when torch loads, so ``import rlhfkit`` sets it for this process (before any of
    its modules imports torch); here it is only set for processes started later.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if num_threads is None:
        num_threads = int(os.environ.get("RLHFKIT_THREADS", min(os.cpu_count() or 1, 8)))
    torch.set_num_threads(max(1, num_threads))
    return torch.get_num_threads()


@contextlib.contextmanager
def intra_op_threads_restored() -> Iterator[None]:
    """Restore torch's intra-op thread count after the block, whatever the block set it to."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


_WORKER_PREFIX = "rlhfkit-worker"


def worker_pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """The process's pool of ``workers`` threads for CPU work split across cores (PyTorch's ops release the GIL)."""
    return _pool_of_process(workers, os.getpid())


@functools.cache
def _pool_of_process(workers: int, pid: int) -> concurrent.futures.ThreadPoolExecutor:
    """One pool per process: a forked child has none of its parent's threads, so it must not reuse its pool."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=_WORKER_PREFIX)


class _Beside(threading.local):
    """Whether this thread runs a share of :func:`side_by_side` (then work it would split runs in place)."""

    active = False


_beside = _Beside()


def across_threads(works: Sequence[Callable[[], T]], grad: bool = False, threads: int = 1) -> list[T]:
    """Each work's result, in order: the first runs in the calling thread, the others on :func:`worker_pool`'s
    threads (``threads`` intra-op threads each, with gradients only when ``grad``, under the caller's CPU autocast if
    any: a bf16 rollout's row shards compute in bf16 on every thread). Returns, or raises the first
    failure, only once every work has finished (none is left running on state the caller is about to change). Inside
    a pool worker all run in place: a worker waiting on its own busy pool would wait forever."""
    if len(works) < 2 or threading.current_thread().name.startswith(_WORKER_PREFIX) or _beside.active:
        return [work() for work in works]
    pool = worker_pool(len(works) - 1)
    autocast = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
    futures = [pool.submit(_on_threads, work, grad, threads, autocast) for work in works[1:]]
    try:
        first = works[0]()
    finally:
        concurrent.futures.wait(futures)
    return [first, *(future.result() for future in futures)]


def this_thread_only(hook: Callable[..., T]) -> Callable[..., T | None]:
    """``hook`` acting only on calls from the thread that made it (None elsewhere): a module hook registered for one
    call while another thread runs the same model (:func:`side_by_side` row halves) must not touch that thread's
    pass."""
    owner = threading.get_ident()

    def bound(*args: object) -> T | None:
        return hook(*args) if threading.get_ident() == owner else None

    return bound


def beside_each_other(*models: torch.nn.Module | None) -> bool:
    """Whether ``models`` may run side by side (:func:`side_by_side`): each given, all on the CPU, no parameter
    shared (concurrent backward passes would add into one gradient in either order)."""
    seen: set[int] = set()
    for model in models:
        if model is None:
            return False
        for parameter in model.parameters():
            if parameter.device.type != "cpu" or id(parameter) in seen:
                return False
            seen.add(id(parameter))
    return len(models) > 1


def _on_threads(work: Callable[[], T], grad: bool = False, threads: int = 1,
                autocast: torch.dtype | None = None) -> T:
    """``work`` on ``threads`` intra-op threads, without gradients unless ``grad``, under CPU autocast to ``autocast``
    when given (all three are per-thread state in PyTorch: the caller's would not reach a pool thread)."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    precision = torch.autocast("cpu", dtype=autocast) if autocast is not None else contextlib.nullcontext()
    with torch.set_grad_enabled(grad), precision:
        return work()


def side_by_side(works: Sequence[Callable[[], T]]) -> list[T]:
    """Each work's result, the works run at once on an equal share of the intra-op threads each (one each on 2
    cores), the calling thread's included (its count restored after), in the caller's gradient mode: independent
    models' forwards or backward passes, or one model's row halves.

    On a few cores a small model's products use two intra-op threads poorly (a PPO mini-batch of 16 rows on
    ``bench/ppo.py``'s models: policy and critic forward+backward 245-251 ms one after the other on 2 threads,
    201-208 ms side by side on one each). The caller's CPU autocast reaches every work (:func:`across_threads`)."""
    if len(works) < 2:
        return [work() for work in works]
    share = max(1, torch.get_num_threads() // len(works))

    def in_place(work: Callable[[], T]) -> T:  # the caller's share owns its cores: what it splits runs in place
        _beside.active = True
        try:
            return work()
        finally:
            _beside.active = False

    with intra_op_threads_restored():
        torch.set_num_threads(share)
        return across_threads([functools.partial(in_place, works[0]), *works[1:]], grad=torch.is_grad_enabled(),
                              threads=share)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def pick_device(requested: str | None = None) -> torch.device:
    """The requested device, else CUDA when present, else CPU."""
    if requested and requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(device: torch.device, requested: str | None = None) -> torch.dtype:
    """float32 on CPU; bfloat16 on GPUs that support it unless another dtype is requested."""
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if requested and requested != "auto":
        if requested not in names:
            raise ValueError(f"unknown dtype {requested!r}; choose one of {sorted(names)} or 'auto'")
        return names[requested]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32
