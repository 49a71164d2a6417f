"""Which objective an on-policy configuration optimizes, stated once for the docs, ``--help`` and the trainer.

The target of every default is J(pi) = E_pi[r] - beta * KL(pi || pi_ref). Where the KL goes and which
per-token estimator (Schulman 2020; log-ratio l = log pi - log pi_ref, rho = pi_ref / pi) is used
decide what the gradient actually follows:

- in the reward, k1 = l: the score-function gradient of E_pi[r - beta * sum_t l_t] is exactly grad J
  (the term E_pi[grad log pi] that the reward's own dependence on pi adds is 0);
- in the reward, k3 = rho - 1 - log rho: that dependence adds grad KL(pi_ref || pi) with the wrong sign,
  so the "penalty" follows grad KL(pi||ref) - grad KL(ref||pi) and can raise the KL: refused;
- as a loss, k1: E_pi[grad l] = E_pi[grad log pi] = 0, no gradient at all: refused;
- as a loss, k2 = l^2 / 2: gradient E_pi[l grad log pi] = grad KL(pi || pi_ref) at the sampled prefixes;
- as a loss, k3: gradient E_pi[(1 - rho) grad log pi] = grad KL(pi_ref || pi), the forward KL
  (the published GRPO recipe, Shao et al. 2024).
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhfkit.config import ConfigError

ALGORITHMS = ("ppo", "grpo", "rloo", "reinforce")

RECIPES: dict[str, dict[str, object]] = {
    "exact": {},
    "grpo-paper": {"kl_in": "loss", "kl.estimator": "k3", "scale_by_std": True, "loss_aggregation": "seq_mean"},
}
"""Named objective settings. ``grpo-paper`` is Shao et al. (2024): k3 KL as a loss term (forward KL),
advantages divided by the group std, per-sequence token means."""


@dataclass(frozen=True)
class KLPlacement:
    """What one (where, estimator) pair optimizes."""

    kl_in: str
    estimator: str
    objective: str
    exact: bool
    refused_because: str | None = None


KL_PLACEMENTS: tuple[KLPlacement, ...] = (
    KLPlacement("reward", "k1", "E[r] - beta KL(pi||ref): the score-function gradient is exact", True),
    KLPlacement("reward", "k2", "E[r] - beta E[sum_t l_t^2 / 2]: a squared log-ratio penalty, not the KL", False),
    KLPlacement("reward", "k3", "grad KL(pi||ref) - grad KL(ref||pi): can raise the KL", False,
                "k3 in the reward follows grad KL(pi||ref) - grad KL(ref||pi) and can raise the KL; "
                "use kl.estimator=k1 (exact) or kl_in=loss with k2 or k3"),
    KLPlacement("loss", "k1", "no KL gradient at all (E[grad log pi] = 0)", False,
                "k1 as a loss has zero expected gradient; use kl.estimator=k2 with kl_in=loss, "
                "or kl_in=reward with k1 (exact)"),
    KLPlacement("loss", "k2", "E[r] - beta KL(pi||ref) per token at the sampled prefixes (later-token KL "
                              "is not credited to earlier tokens; exact for one-token responses)", False),
    KLPlacement("loss", "k3", "E[r] - beta KL(ref||pi): the forward KL (published GRPO recipe)", False),
)


OTHER_SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("scale_by_std=true", "group algorithms", "each prompt's reward divided by its group's std: rewards are "
                                              "re-weighted per prompt (biased)"),
    ("loss_aggregation=seq_mean", "any", "each response's token mean: short responses' tokens weigh more "
                                         "(biased towards length changes)"),
    ("loss_aggregation=token_mean", "any", "mean over the mini-batch's tokens: the exact gradient times a "
                                           "positive per-mini-batch factor (default)"),
    ("reward.scaling=batch|running|whiten", "any", "rewards divided by a std: the effective beta becomes "
                                                   "beta x std"),
    ("reward.invalid_score / missing_eos_penalty", "any", "scores of unfinished (or empty) responses replaced "
                                                          "or penalized: a different reward"),
    ("entropy_coef > 0", "any", "adds an entropy bonus to the objective"),
    ("lam < 1 (PPO)", "ppo", "GAE trades variance for bias from the value estimate; the objective is unchanged"),
)


def placement(kl_in: str, estimator: str) -> KLPlacement:
    """The table row of (``kl_in``, ``estimator``)."""
    for row in KL_PLACEMENTS:
        if row.kl_in == kl_in and row.estimator == estimator:
            return row
    raise ConfigError(f"unknown KL placement kl_in={kl_in!r}, kl.estimator={estimator!r}: "
                      "kl_in is reward or loss, the estimator k1, k2 or k3")


def check_objective(kl_in: str, estimator: str, beta: float, adaptive: bool = False) -> KLPlacement:
    """The placement row; a one-line :class:`ConfigError` for combinations whose gradient is zero or wrong.

    With beta = 0 and no adaptive controller no KL term exists, so nothing is refused.
    """
    row = placement(kl_in, estimator)
    if row.refused_because is not None and (beta > 0 or adaptive):
        raise ConfigError(f"kl_in={kl_in} with kl.estimator={estimator} is refused: {row.refused_because}")
    return row


def describe_objective(kl_in: str, estimator: str, scale_by_std: bool, loss_aggregation: str,
                       scaling: str = "none", replaces_scores: bool = False, entropy_coef: float = 0.0) -> str:
    """One line saying what a configuration optimizes and whether it is the exact regularized objective."""
    row = placement(kl_in, estimator)
    active = {"scale_by_std=true": scale_by_std, "loss_aggregation=seq_mean": loss_aggregation == "seq_mean",
              "reward.scaling=batch|running|whiten": scaling != "none",
              "reward.invalid_score / missing_eos_penalty": replaces_scores, "entropy_coef > 0": entropy_coef > 0}
    reasons = ([] if row.exact else [row.objective]) + [
        f"{setting}: {effect}" for setting, _, effect in OTHER_SETTINGS if active.get(setting)]
    verdict = "exact" if not reasons else "not exact: " + "; ".join(reasons)
    return f"KL in the {kl_in} with {estimator} ({verdict})"


def objective_table_markdown() -> str:
    """The objective table as Markdown (README/docs and ``--help``)."""
    lines = ["| KL goes in | estimator | objective followed | exact | allowed |", "|---|---|---|---|---|"]
    for row in KL_PLACEMENTS:
        allowed = "refused" if row.refused_because else "yes"
        lines.append(f"| {row.kl_in} | {row.estimator} | {row.objective} | {'yes' if row.exact else 'no'} | {allowed} |")
    lines += ["", "| setting | applies to | effect on the objective |", "|---|---|---|"]
    lines += [f"| `{setting}` | {applies} | {effect} |" for setting, applies, effect in OTHER_SETTINGS]
    return "\n".join(lines)


def objective_table_text() -> str:
    """The objective table as plain lines for ``--help``."""
    lines = [f"KL in the {row.kl_in} with {row.estimator}: {row.objective}"
             + (" [REFUSED]" if row.refused_because else " [exact]" if row.exact else "") for row in KL_PLACEMENTS]
    lines += [f"{setting} ({applies}): {effect}" for setting, applies, effect in OTHER_SETTINGS]
    return "\n".join(lines)
