"""Named phase timers: each training step reports where its time went (time/<phase> metrics)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


def wait_for_device() -> None:
    """Wait for queued GPU work, so a phase's time is not booked to the next one (no-op without CUDA)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class PhaseTimer:
    """Accumulates wall-clock seconds per phase name until :meth:`pop` is called."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the body of a ``with`` block under ``name`` (repeated phases add up; GPU work is waited for)."""
        wait_for_device()
        start = time.perf_counter()
        try:
            yield
        finally:
            wait_for_device()
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start

    def pop(self) -> dict[str, float]:
        """``{"time/<name>": seconds}`` for everything timed since the last pop, then reset."""
        out = {f"time/{name}": seconds for name, seconds in self.totals.items()}
        self.totals = {}
        return out
