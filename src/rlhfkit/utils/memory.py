"""Hand memory a finished phase no longer uses back to the OS on a CPU run.

Two caches outlive a phase and add to the next phase's peak RSS: MKL keeps the GEMM packing buffers
of every matmul shape it has seen (56 MiB after one PPO step on the bench workload; ``import rlhfkit`` before
torch turns that manager off, so this matters where torch was loaded first), and glibc keeps freed heap pages
resident. :func:`release_cached_memory` frees both (about 3 ms);
each is skipped where the library or symbol is absent (non-glibc C library, torch without MKL).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache


def _symbol(library: str | None, name: str) -> Callable[..., int] | None:
    """``name`` from the already loaded shared ``library`` (None: the C library), or None if absent."""
    try:
        handle = ctypes.CDLL(library or ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return getattr(handle, name, None)


@cache
def _malloc_trim() -> Callable[..., int] | None:
    """glibc's ``malloc_trim``, looked up once (None with another C library)."""
    return _symbol(None, "malloc_trim")


@cache
def _releasers() -> tuple[tuple[Callable[..., int], tuple[int, ...]], ...]:
    """(function, arguments): MKL's buffer release (exported by torch's CPU library as ``mkl_serv_free_buffers``),
    then ``malloc_trim(0)``."""
    found = ((_symbol("libtorch_cpu.so", "mkl_serv_free_buffers"), ()), (_malloc_trim(), (0,)))
    return tuple((function, args) for function, args in found if function is not None)


def mkl_cached_bytes() -> int | None:
    """Bytes MKL's memory manager holds now (``mkl_serv_mem_stat``), or None without MKL."""
    stat = _symbol("libtorch_cpu.so", "mkl_serv_mem_stat")
    if stat is None:
        return None
    stat.restype = ctypes.c_int64
    buffers = ctypes.c_int(0)
    return int(stat(ctypes.byref(buffers)))


def release_cached_memory() -> None:
    """Free MKL's cached GEMM buffers and return glibc's free heap pages to the OS (each where available)."""
    for release, args in _releasers():
        release(*args)
