"""Non-finite step skipping: a bad loss, gradient, reward or advantage skips the update, not the run."""

from __future__ import annotations

import logging
import math

import torch

logger = logging.getLogger(__name__)


class TooManySkipsError(RuntimeError):
    """Raised after more consecutive skipped updates than the configured limit."""


class SkipGuard:
    """Counts skipped updates; any successful update resets the consecutive count.

    ``max_consecutive`` skips in a row are tolerated; one more stops the run with a message
    naming the last reason, since by then the model or data is broken, not unlucky.
    """

    def __init__(self, max_consecutive: int) -> None:
        if max_consecutive < 0:
            raise ValueError(f"max_consecutive_skips must be >= 0, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.total = 0

    def skip(self, reason: str, step: int) -> None:
        """Record one skipped update (logged); raise :class:`TooManySkipsError` past the limit."""
        self.consecutive += 1
        self.total += 1
        logger.warning("step %d: skipped an update (%s); %d in a row", step, reason, self.consecutive)
        if self.consecutive > self.max_consecutive:
            raise TooManySkipsError(
                f"stopping at step {step}: {self.consecutive} consecutive updates skipped, last because "
                f"{reason}. Lower the learning rate, check the reward source, or raise "
                f"max_consecutive_skips (now {self.max_consecutive})."
            )

    def ok(self) -> None:
        """Record a successful update."""
        self.consecutive = 0

    def state_dict(self) -> dict[str, int]:
        """Counters, for checkpoints."""
        return {"consecutive": self.consecutive, "total": self.total}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.consecutive = int(state["consecutive"])
        self.total = int(state["total"])


def first_non_finite(**tensors: torch.Tensor | float) -> str | None:
    """Name of the first argument holding a NaN/inf (e.g. ``loss``, ``grad_norm``), else None."""
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor):
            if not bool(torch.isfinite(value).all()):
                return name
        elif not math.isfinite(value):
            return name
    return None
