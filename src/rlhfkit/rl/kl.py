"""KL estimators between the policy and the reference, and KL-coefficient controllers.

Estimators follow Schulman (2020), "Approximating KL divergence"
(http://joschu.net/blog/kl-approx.html): with tokens sampled from the policy pi and
log r = log pi_ref(x) - log pi(x),
  k1 = -log r                (unbiased, high variance, can be negative per sample)
  k2 = (log r)^2 / 2         (biased, low variance, >= 0)
  k3 = (r - 1) - log r       (unbiased, low variance, >= 0)
Controllers follow Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences", sec. 2.2.
"""

from __future__ import annotations

from typing import Literal

import torch

KLEstimator = Literal["k1", "k2", "k3"]


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k1 = log pi - log pi_ref; inputs (b, T) log-probs of the sampled tokens."""
    return logprobs - ref_logprobs


def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k2 = (log pi_ref - log pi)^2 / 2, shape (b, T)."""
    return 0.5 * (ref_logprobs - logprobs) ** 2


EXP_CAP = 20.0
"""Log-ratio above which exp is continued along its tangent (exp(20) ~ 4.9e8) so it never overflows."""


def capped_exp(x: torch.Tensor, cap: float = EXP_CAP) -> torch.Tensor:
    """exp(x) for x <= cap, continued linearly above (exp(cap) * (1 + x - cap)): finite, with slope > 0.

    Equal to ``torch.exp(x)`` bit for bit below the cap; above it the value and the gradient stay
    finite and nonzero where exp would overflow (a hard clamp would zero the gradient instead).
    """
    return torch.exp(x.clamp(max=cap)) * (1.0 + (x - cap).clamp(min=0.0))


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 = exp(log r) - 1 - log r with log r = log pi_ref - log pi, shape (b, T).

    Exact for log r <= EXP_CAP (exp cannot overflow below, so no lower clamp); above, exp is
    continued along its tangent, so a token the reference finds far likelier than the policy does
    gives a finite k3 with a gradient of the right sign instead of inf or zero.
    """
    log_ratio = ref_logprobs - logprobs
    capped = log_ratio.clamp(max=EXP_CAP)
    return torch.expm1(capped) + (log_ratio - EXP_CAP).clamp(min=0.0) * torch.exp(capped) - log_ratio


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                estimator: KLEstimator) -> torch.Tensor:
    """Dispatch to k1/k2/k3 by name; (b, T) in, (b, T) out."""
    match estimator:
        case "k1":
            return kl_k1(logprobs, ref_logprobs)
        case "k2":
            return kl_k2(logprobs, ref_logprobs)
        case "k3":
            return kl_k3(logprobs, ref_logprobs)
    raise ValueError(f"unknown KL estimator {estimator!r}; choose k1, k2 or k3")


class FixedKLController:
    """A constant KL coefficient beta."""

    def __init__(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"KL coefficient must be >= 0, got {value}")
        self.value = float(value)

    def update(self, current_kl: float, n_steps: int) -> float:
        """No-op; returns the unchanged coefficient."""
        return self.value

    def state_dict(self) -> dict[str, float]:
        """The coefficient, for checkpoints."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.value = float(state["value"])


class AdaptiveKLController:
    """Proportional controller driving the observed KL toward ``target`` (Ziegler et al. 2019, eq. 2).

    e_t = clip(KL_t / target - 1, -0.2, 0.2);  beta_{t+1} = beta_t * (1 + K_beta * e_t),
    with K_beta = n_steps / horizon (n_steps = episodes in the batch).
    """

    def __init__(self, init_value: float, target: float, horizon: float) -> None:
        if init_value <= 0 or target <= 0 or horizon <= 0:
            raise ValueError("adaptive KL controller needs init_value, target and horizon > 0, "
                             f"got {init_value}, {target}, {horizon}")
        self.value = float(init_value)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Adjust beta after a batch of ``n_steps`` episodes with mean sequence KL ``current_kl``."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        """Coefficient and settings, for checkpoints."""
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = float(state["horizon"])


def make_kl_controller(init_value: float, target: float | None,
                       horizon: float) -> FixedKLController | AdaptiveKLController:
    """Adaptive controller when a ``target`` KL is given, else a fixed coefficient."""
    if target is None:
        return FixedKLController(init_value)
    return AdaptiveKLController(init_value, target, horizon)
