"""Bradley-Terry with a per-annotator temperature and sign for pairwise and ranking answers.

The model fitted here is Bradley & Terry (1952) with one signed scale beta_j per annotator:
P(annotator j says a > b) = sigmoid(beta_j (s_a - s_b)); beta_j ~ 0 is a random rater, beta_j < 0 an
inverted one. It is not the Crowd-BT model of Chen et al. (2013), "Pairwise ranking aggregation in a
crowdsourced setting", which mixes the true preference and its reverse with a per-annotator probability
eta_j of agreeing with the truth: P(j says a > b) = eta_j sigmoid(s_a - s_b) + (1 - eta_j) sigmoid(s_b - s_a).
Both discount random raters and invert adversaries; they differ on clear pairs: Crowd-BT caps a rater's
agreement at eta_j however large the score gap, while here any beta_j > 0 agrees almost surely on a
large gap.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Comparison:
    """A pairwise judgement between two scored objects (e.g. samples): winner beat loser."""

    winner: Hashable
    loser: Hashable
    annotator: str


@dataclass
class CrowdBTResult:
    """Latent scores per object and per-annotator scales beta (1 = typical, 0 = random, < 0 = inverted)."""

    scores: dict[Hashable, float]
    beta: dict[str, float]
    iterations: int
    converged: bool
    log_likelihood: float

    def preference(self, a: Hashable, b: Hashable) -> float:
        """P(a preferred to b) for a typical (beta = 1) annotator: sigmoid(s_a - s_b)."""
        return 1.0 / (1.0 + math.exp(-(self.scores[a] - self.scores[b])))


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log(sigmoid(x)) without overflow."""
    return -np.logaddexp(0.0, -x)


def crowd_bradley_terry(
    comparisons: Sequence[Comparison],
    *,
    score_l2: float = 0.1,
    beta_l2: float = 0.5,
    beta_prior: float = 1.0,
    max_iter: int = 500,
    tol: float = 1e-7,
) -> CrowdBTResult:
    """Bradley-Terry with per-annotator temperature: P(j says w > l) = sigmoid(beta_j (s_w - s_l)).

    Maximizes sum log sigmoid(beta_j (s_w - s_l)) - score_l2/2 |s|^2 - beta_l2/2 sum_j (beta_j - beta_prior)^2
    by block coordinate Newton steps (both blocks are concave given the other) until the objective changes
    by less than `tol` (relative). A spammer's beta goes to ~0 and an adversary's below 0, so they stop
    moving the scores. The scale shared by beta and s is then fixed by setting the vote-weighted mean of
    the positive betas to 1. Dense Newton on the scores: meant for up to a few thousand objects per call.
    """
    if not comparisons:
        raise ValueError("crowd_bradley_terry: no comparisons")
    objects: dict[Hashable, int] = {}
    annotators: dict[str, int] = {}
    for c in comparisons:
        if c.winner == c.loser:
            raise ValueError(f"crowd_bradley_terry: comparison of {c.winner!r} with itself")
        for o in (c.winner, c.loser):
            objects.setdefault(o, len(objects))
        annotators.setdefault(c.annotator, len(annotators))
    w = np.array([objects[c.winner] for c in comparisons])
    lo = np.array([objects[c.loser] for c in comparisons])
    jj = np.array([annotators[c.annotator] for c in comparisons])
    n_obj, n_ann = len(objects), len(annotators)
    s = np.zeros(n_obj)
    beta = np.full(n_ann, beta_prior)

    def objective(s_: np.ndarray, b_: np.ndarray) -> float:
        return float(_log_sigmoid(b_[jj] * (s_[w] - s_[lo])).sum() - score_l2 / 2 * (s_**2).sum()
                     - beta_l2 / 2 * ((b_ - beta_prior) ** 2).sum())

    current = objective(s, beta)
    converged = False
    iteration = 0
    for iteration in range(1, max_iter + 1):
        # Newton step on scores: x_v = beta_j (e_w - e_l), gradient x (1 - sigmoid), Hessian x x^T p (1 - p)
        z = beta[jj] * (s[w] - s[lo])
        p = 1.0 / (1.0 + np.exp(-z))
        g_v = beta[jj] * (1.0 - p)
        grad = np.bincount(w, g_v, n_obj) - np.bincount(lo, g_v, n_obj) - score_l2 * s
        h_v = beta[jj] ** 2 * p * (1.0 - p)
        flat = np.concatenate([w * n_obj + w, lo * n_obj + lo, w * n_obj + lo, lo * n_obj + w])
        hess = np.bincount(flat, np.concatenate([h_v, h_v, -h_v, -h_v]), n_obj * n_obj).reshape(n_obj, n_obj)
        hess[np.diag_indices(n_obj)] += score_l2
        s = s + np.linalg.solve(hess, grad)
        # Newton step on each beta_j (1-D): d_v = s_w - s_l
        d = s[w] - s[lo]
        p = 1.0 / (1.0 + np.exp(-beta[jj] * d))
        grad_b = np.bincount(jj, d * (1.0 - p), n_ann) - beta_l2 * (beta - beta_prior)
        hess_b = np.bincount(jj, d**2 * p * (1.0 - p), n_ann) + beta_l2
        beta = beta + grad_b / hess_b
        new = objective(s, beta)
        if abs(new - current) < tol * max(1.0, abs(new)):
            current = new
            converged = True
            break
        current = new
    positive = beta[jj][beta[jj] > 0]
    scale = float(positive.mean()) if len(positive) else 0.0
    if scale > 0:
        s, beta = s * scale, beta / scale
    ll = float(_log_sigmoid(beta[jj] * (s[w] - s[lo])).sum())
    return CrowdBTResult({o: float(s[i]) for o, i in objects.items()},
                         {a: float(beta[i]) for a, i in annotators.items()}, iteration, converged, ll)


def ranking_to_comparisons(objects: Sequence[Hashable], ranks: Sequence[int], annotator: str) -> list[Comparison]:
    """All strict pairs implied by one ranking (ranks 1 = best; equal ranks give no pair)."""
    if len(objects) != len(ranks):
        raise ValueError(f"ranking_to_comparisons: {len(objects)} objects but {len(ranks)} ranks")
    out = []
    for x in range(len(objects)):
        for y in range(len(objects)):
            if ranks[x] < ranks[y]:
                out.append(Comparison(objects[x], objects[y], annotator))
    return out
