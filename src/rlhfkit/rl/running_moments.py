"""Running mean/std of scalar rewards, merged batch by batch, for reward scaling across steps."""

from __future__ import annotations

import math

import torch


class RunningMoments:
    """Streaming mean and variance (Chan et al. 1979 parallel merge of batch moments).

    Used to scale rewards by a running std (Ziegler et al. 2019 normalise the reward so that
    it has unit variance); state is plain floats so checkpoints stay weights_only-loadable.
    """

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 1.0
        self.count = 0.0

    def update(self, values: torch.Tensor) -> tuple[float, float]:
        """Merge a 1-D batch of finite ``values``; returns the batch (mean, std)."""
        values = values.detach().double().flatten()
        n = float(values.numel())
        if n == 0:
            return 0.0, 0.0
        batch_mean = float(values.mean())
        batch_var = float(values.var(unbiased=False))
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total
        return batch_mean, math.sqrt(batch_var * n / max(n - 1, 1))

    @property
    def std(self) -> float:
        """Unbiased running standard deviation (1 before any data)."""
        if self.count < 2:
            return 1.0
        return math.sqrt(self.var * self.count / (self.count - 1))

    def state_dict(self) -> dict[str, float]:
        """Mean, variance and count, for checkpoints."""
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])
