"""Discrete labels: majority vote and Dawid-Skene EM with per-annotator reliability.

A vote is (item, annotator, label) with label a class index 0..K-1; for pairwise tasks label 0 means
the item's first response ("a") won and 1 that the second ("b") won, for good/bad tasks 1 means good.
- Dawid & Skene (1979), "Maximum likelihood estimation of observer error-rates using the EM
  algorithm": per-annotator confusion matrices ("two-coin" for binary) or a single accuracy
  ("one-coin"), fitted by EM with the true labels latent.
- Raykar & Yu (2012), "Eliminating spammers and ranking annotators for crowdsourced labeling tasks":
  the spammer score used in `AnnotatorReliability.spammer_score`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ReliabilityModel = Literal["one-coin", "two-coin", "confusion"]


@dataclass(frozen=True)
class Vote:
    """One annotator's label of one item: label in 0..K-1 (pairwise: 0 = "a" won, 1 = "b" won).

    `flipped` (two classes only) says the annotator saw the item's responses in swapped order (b shown
    first); Dawid-Skene then fits confusion matrices in displayed positions, which captures position bias.
    """

    item: Hashable
    annotator: str
    label: int
    weight: float = 1.0
    flipped: bool = False


@dataclass
class AnnotatorReliability:
    """Per-annotator estimate: accuracy = P(label == truth) under the fitted class prior."""

    annotator: str
    accuracy: float
    spammer_score: float
    n_votes: int
    confusion: list[list[float]] = field(default_factory=list)

    @property
    def log_odds_weight(self) -> float:
        """Optimal weighted-majority weight log(a / (1 - a)) of a symmetric rater (Nitzan & Paroush 1982)."""
        a = min(max(self.accuracy, 1e-6), 1 - 1e-6)
        return math.log(a / (1.0 - a))


@dataclass
class AggregateResult:
    """Posterior class probabilities per item (rows follow `items`) plus annotator reliabilities."""

    items: list[Hashable]
    posterior: np.ndarray
    annotators: dict[str, AnnotatorReliability]
    class_prior: np.ndarray
    iterations: int = 0
    converged: bool = True
    log_likelihood: float = float("nan")

    def winners(self) -> dict[Hashable, int | None]:
        """Most probable class per item; None where the top classes tie exactly."""
        out: dict[Hashable, int | None] = {}
        for item, row in zip(self.items, self.posterior):
            top = np.flatnonzero(np.isclose(row, row.max(), rtol=0.0, atol=1e-12))
            out[item] = int(top[0]) if len(top) == 1 else None
        return out

    def probability(self, cls: int = 0) -> dict[Hashable, float]:
        """P(true class == cls) per item (pairwise: cls 0 gives P("a" is preferred))."""
        return {item: float(row[cls]) for item, row in zip(self.items, self.posterior)}


def _index_votes(votes: Sequence[Vote], n_classes: int) -> tuple[list, list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Dense indices (item_idx, annotator_idx, label) for vectorized EM; validates labels."""
    if not votes:
        raise ValueError("aggregate: no votes")
    items: list[Hashable] = []
    item_index: dict[Hashable, int] = {}
    annotators: list[str] = []
    ann_index: dict[str, int] = {}
    ii = np.empty(len(votes), dtype=np.int64)
    jj = np.empty(len(votes), dtype=np.int64)
    ll = np.empty(len(votes), dtype=np.int64)
    for v_i, vote in enumerate(votes):
        is_int = isinstance(vote.label, (int, np.integer)) and not isinstance(vote.label, bool)
        if not is_int or not 0 <= vote.label < n_classes:
            raise ValueError(f"aggregate: vote {v_i} (item {vote.item!r}, annotator {vote.annotator!r}) has label "
                             f"{vote.label!r}; expected an int in 0..{n_classes - 1}")
        if vote.item not in item_index:
            item_index[vote.item] = len(items)
            items.append(vote.item)
        if vote.annotator not in ann_index:
            ann_index[vote.annotator] = len(annotators)
            annotators.append(vote.annotator)
        ii[v_i], jj[v_i], ll[v_i] = item_index[vote.item], ann_index[vote.annotator], vote.label
    return items, annotators, ii, jj, ll


def majority_vote(
    votes: Sequence[Vote],
    n_classes: int = 2,
    annotator_weights: Mapping[str, float] | None = None,
) -> AggregateResult:
    """(Weighted) majority vote: posterior[i, k] = share of item i's vote weight on class k.

    Each vote counts vote.weight times annotator_weights[annotator] (default 1; annotators missing from
    the mapping count 0; negative weights are clipped to 0). Items whose weights are all zero get a
    uniform row, and exact ties stay ties (`winners()` gives None). Reliabilities are the share of each
    annotator's votes that agree with the majority winner, ties excluded.
    """
    items, annotators, ii, jj, ll = _index_votes(votes, n_classes)
    w = np.array([v.weight for v in votes], dtype=float)
    if annotator_weights is not None:
        w = w * np.array([max(float(annotator_weights.get(a, 0.0)), 0.0) for a in annotators])[jj]
    counts = np.zeros((len(items), n_classes))
    np.add.at(counts, (ii, ll), w)
    totals = counts.sum(axis=1, keepdims=True)
    posterior = np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), 1.0 / n_classes)
    result = AggregateResult(items, posterior, {}, posterior.mean(axis=0))
    winners = result.winners()
    agree = np.zeros(len(annotators))
    decided = np.zeros(len(annotators))
    for i_idx, j_idx, label in zip(ii, jj, ll):
        win = winners[items[i_idx]]
        if win is not None:
            decided[j_idx] += 1
            agree[j_idx] += label == win
    n_votes = np.bincount(jj, minlength=len(annotators))
    for j, name in enumerate(annotators):
        acc = float(agree[j] / decided[j]) if decided[j] else float("nan")
        result.annotators[name] = AnnotatorReliability(name, acc, float("nan"), int(n_votes[j]))
    return result


def _spammer_score(confusion: np.ndarray) -> float:
    """Raykar & Yu (2012): 1/(K(K-1)) sum_{c<c'} sum_k (A_ck - A_c'k)^2; 0 for a rater who ignores the item."""
    k = confusion.shape[0]
    diff = confusion[:, None, :] - confusion[None, :, :]
    return float((diff**2).sum() / 2.0 / (k * (k - 1)))


def dawid_skene(
    votes: Sequence[Vote],
    n_classes: int = 2,
    *,
    model: ReliabilityModel = "two-coin",
    gold: Mapping[Hashable, int] | None = None,
    max_iter: int = 200,
    tol: float = 1e-7,
    smoothing: float = 1.0,
    diagonal_prior: float = 2.0,
    fit_class_prior: bool = True,
) -> AggregateResult:
    """Dawid-Skene EM: latent true class per item, per-annotator error model, MAP with Dirichlet smoothing.

    E-step: T[i, k] ∝ pi_k * prod_{votes v of item i} A[j_v, k, l_v]
    M-step: pi_k = (sum_i T[i, k] + s) / (N + K s)  (uniform instead when fit_class_prior=False);
            "two-coin"/"confusion":
                A[j, k, l] = (sum_v∈j T[i_v, k] [l_v = l] + s + d [k = l]) / (sum_v∈j T[i_v, k] + K s + d)
            "one-coin":
                A[j, k, k] = a_j = (sum_v∈j T[i_v, l_v] + s + d) / (n_j + 2 s + d), off-diagonal (1 - a_j)/(K - 1).
    Pseudo-counts (a Dirichlet MAP): `smoothing` s keeps rates off 0/1, `diagonal_prior` d says "annotators
    are better than random" until their votes show otherwise; without it an annotator with one or two
    votes is best explained as a constant answerer and small campaigns collapse to 50/50. Use
    fit_class_prior=False when the class order is arbitrary (pairwise a/b). `gold` maps
    items with a known answer (honeypots) to their class; their posteriors are clamped to that class, which
    anchors the EM (and fixes the label-switching symmetry). Without gold, EM starts from majority vote
    (Dawid & Skene 1979); with gold, the first M-step sees only the gold items, so each annotator's starting
    error model is estimated from its gold votes (the priors alone for one without any) and a
    coordinated wrong majority cannot set the start. Vote weights are ignored (votes are evidence, not
    preferences of the caller). With flipped votes (see `Vote`) the confusion matrices are indexed by
    displayed position, not canonical class.
    """
    if model not in ("one-coin", "two-coin", "confusion"):
        raise ValueError(f"dawid_skene: unknown model {model!r}; use one-coin, two-coin or confusion")
    if n_classes < 2:
        raise ValueError("dawid_skene: need at least 2 classes")
    items, annotators, ii, jj, ll = _index_votes(votes, n_classes)
    n_items, n_ann, k = len(items), len(annotators), n_classes
    clamp = np.zeros(n_items, dtype=bool)
    clamp_rows = np.zeros((n_items, k))
    position = {item: i for i, item in enumerate(items)}
    for item, cls in (gold or {}).items():
        if isinstance(cls, bool) or not isinstance(cls, (int, np.integer)) or not 0 <= cls < k:
            raise ValueError(f"dawid_skene: gold answer {cls!r} for item {item!r} is not a class in 0..{k - 1}")
        if item in position:
            clamp[position[item]] = True
            clamp_rows[position[item], cls] = 1.0

    flipped = np.array([v.flipped for v in votes], dtype=bool)
    if flipped.any() and k != 2:
        raise ValueError("dawid_skene: flipped (position-swapped) votes need exactly 2 classes")
    shown_label = np.where(flipped, 1 - ll, ll)  # the label in displayed positions (== ll when not flipped)
    counts = np.zeros((n_items, k))
    np.add.at(counts, (ii, ll), 1.0)
    posterior = counts / counts.sum(axis=1, keepdims=True)
    posterior[clamp] = clamp_rows[clamp]
    n_votes = np.bincount(jj, minlength=n_ann).astype(float)
    start_from_gold = bool(clamp.any())
    log_lik = -np.inf
    converged = False
    iteration = 0
    for iteration in range(1, max_iter + 1):
        # M-step (the first one from the gold items only, when there are any)
        seen = clamp if iteration == 1 and start_from_gold else np.ones(n_items, dtype=bool)
        if fit_class_prior:
            prior = (posterior[seen].sum(axis=0) + smoothing) / (seen.sum() + k * smoothing)
        else:
            prior = np.full(k, 1.0 / k)
        soft = posterior[ii] * seen[ii, None]  # (V, K): belief about the true class of each vote's item
        soft[flipped] = soft[flipped, ::-1]  # ... in displayed positions
        if model == "one-coin":
            correct = np.bincount(jj, weights=soft[np.arange(len(ll)), shown_label], minlength=n_ann)
            seen_votes = np.bincount(jj, weights=seen[ii].astype(float), minlength=n_ann)
            acc = (correct + smoothing + diagonal_prior) / (seen_votes + 2.0 * smoothing + diagonal_prior)
            confusion = np.broadcast_to(((1.0 - acc) / (k - 1))[:, None, None], (n_ann, k, k)).copy()
            confusion[:, np.arange(k), np.arange(k)] = acc[:, None]
        else:
            tallies = np.zeros((n_ann, k, k))
            for true_k in range(k):
                np.add.at(tallies[:, true_k, :], (jj, shown_label), soft[:, true_k])
            tallies += smoothing + diagonal_prior * np.eye(k)
            confusion = tallies / tallies.sum(axis=2, keepdims=True)
        # E-step
        log_post = np.tile(np.log(prior), (n_items, 1))
        evidence = np.log(confusion[jj, :, shown_label])  # (V, K) over the displayed truth
        evidence[flipped] = evidence[flipped, ::-1]  # back to canonical classes
        np.add.at(log_post, ii, evidence)
        norm = np.logaddexp.reduce(log_post, axis=1, keepdims=True)
        new_posterior = np.exp(log_post - norm)
        new_posterior[clamp] = clamp_rows[clamp]
        new_log_lik = float(norm.sum())
        change = float(np.abs(new_posterior - posterior).max())
        posterior = new_posterior
        if change < tol or abs(new_log_lik - log_lik) < tol * max(1.0, abs(new_log_lik)):
            log_lik = new_log_lik
            converged = True
            break
        log_lik = new_log_lik

    result = AggregateResult(items, posterior, {}, prior, iterations=iteration, converged=converged,
                             log_likelihood=log_lik)
    for j, name in enumerate(annotators):
        acc_j = float((prior * np.diagonal(confusion[j])).sum())
        result.annotators[name] = AnnotatorReliability(name, acc_j, _spammer_score(confusion[j]), int(n_votes[j]),
                                                       confusion[j].round(6).tolist())
    return result
