"""Reward-model evaluation: accuracy, rank correlation, rating error and calibration, with bootstrap CIs.

Metrics per feedback kind: pairwise accuracy and the expected calibration error (ECE) of
P(chosen ≻ rejected) = σ(r_c - r_r) for comparisons, mean Kendall τ-b per ranking, Spearman ρ and
RMSE for ratings, accuracy of sign(r) for labels. Each comes with a percentile bootstrap
confidence interval over records (Efron & Tibshirani 1993).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from rlhfkit.data.records import Comparison, FeedbackRecord, Label, Ranking, Rating, responses_of


@dataclass
class Metric:
    """A point estimate with its bootstrap interval and the number of records behind it."""

    value: float
    low: float
    high: float
    n: int


@dataclass
class EvalReport:
    """All metrics of one evaluation plus the calibration data for the reliability diagram."""

    metrics: dict[str, Metric] = field(default_factory=dict)
    probabilities: list[float] = field(default_factory=list)
    confidence_level: float = 0.95

    def flat(self, prefix: str = "eval/") -> dict[str, float]:
        """``{prefix+name: value, prefix+name+'_low': ..., '_high': ...}`` for metric trackers."""
        out: dict[str, float] = {}
        for name, metric in self.metrics.items():
            out[f"{prefix}{name}"] = metric.value
            out[f"{prefix}{name}_low"] = metric.low
            out[f"{prefix}{name}_high"] = metric.high
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the probabilities are left out)."""
        return {"confidence_level": self.confidence_level,
                "metrics": {k: asdict(v) for k, v in self.metrics.items()}}

    def lines(self) -> list[str]:
        """One human-readable line per metric."""
        pct = int(round(self.confidence_level * 100))
        return [f"{name:>24}: {m.value:.4f}  [{pct}% CI {m.low:.4f}, {m.high:.4f}]  n={m.n}"
                for name, m in self.metrics.items()]


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` resampling ``n`` records with replacement."""
    if n == 0 or resamples <= 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(resamples)], dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))


def pairwise_outcomes(chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    """1 where r_c > r_r, 0.5 on an exact tie, 0 otherwise; (n,) -> (n,)."""
    return np.where(chosen > rejected, 1.0, np.where(chosen == rejected, 0.5, 0.0))


def expected_calibration_error(probabilities: np.ndarray, n_bins: int = 10) -> tuple[float, list[dict[str, float]]]:
    """ECE of P(chosen ≻ rejected) (Guo et al. 2017), symmetrised over the pair's two orders.

    Each pair contributes (p, outcome 1) and (1 - p, outcome 0), so the diagram does not depend
    on which response is listed first. Returns the ECE and per-bin {confidence, frequency, count}.
    """
    p = np.asarray(probabilities, dtype=float)
    conf = np.concatenate([p, 1.0 - p])
    outcome = np.concatenate([np.ones_like(p), np.zeros_like(p)])
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
    ece, bins = 0.0, []
    for b in range(n_bins):
        sel = which == b
        count = int(sel.sum())
        if count == 0:
            continue
        mean_conf, freq = float(conf[sel].mean()), float(outcome[sel].mean())
        ece += count / conf.size * abs(freq - mean_conf)
        bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "confidence": mean_conf,
                     "frequency": freq, "count": count})
    return float(ece), bins


def mean_kendall_tau(score_lists: Sequence[np.ndarray], rank_lists: Sequence[np.ndarray]) -> np.ndarray:
    """Kendall τ-b between scores and (negated) ranks for each ranking; NaN when undefined."""
    taus = []
    for scores, ranks in zip(score_lists, rank_lists):
        tau = stats.kendalltau(scores, -np.asarray(ranks, dtype=float)).statistic
        taus.append(float(tau) if tau is not None else math.nan)
    return np.array(taus, dtype=float)


def predicted_normalized_rating(rewards: np.ndarray, thresholds: Sequence[float] | None = None) -> np.ndarray:
    """Rating on [0, 1] a reward stands for: inverse of the regression target ``2y - 1``, or the
    expected level under the cumulative-link model when its ``thresholds`` are given."""
    rewards = np.asarray(rewards, dtype=float)
    if not thresholds:
        return np.clip((rewards + 1.0) / 2.0, 0.0, 1.0)
    cuts = np.asarray(thresholds, dtype=float)
    cumulative = 1.0 / (1.0 + np.exp(-(cuts[None, :] - rewards[:, None])))
    cumulative = np.concatenate([np.zeros((rewards.size, 1)), cumulative, np.ones((rewards.size, 1))], axis=1)
    probs = np.diff(cumulative, axis=1)
    levels = np.arange(probs.shape[1]) / (probs.shape[1] - 1)
    return probs @ levels


def score_records(model: Any, records: Sequence[FeedbackRecord], batch_size: int = 32,
                  scorer: Callable[[list[str], list[str]], Any] | None = None) -> list[np.ndarray]:
    """Rewards of every response of every record (each distinct prompt/response scored once), by
    ``scorer(prompts, responses)`` (default: ``model.score_texts``)."""
    keys = sorted({(r.prompt, t) for r in records for t in responses_of(r)})
    if not keys:
        return [np.zeros(0) for _ in records]
    if scorer is None:
        scorer = partial(model.score_texts, batch_size=batch_size)
    values = scorer([k[0] for k in keys], [k[1] for k in keys])
    lookup = dict(zip(keys, values.float().cpu().numpy().tolist()))
    return [np.array([lookup[(r.prompt, t)] for t in responses_of(r)], dtype=float) for r in records]


def _metric(values_fn: Callable[[np.ndarray], float], n: int, resamples: int, confidence: float,
            seed: int) -> Metric:
    value = values_fn(np.arange(n))
    low, high = bootstrap_ci(values_fn, n, resamples, confidence, seed)
    return Metric(float(value), low, high, n)


def evaluate_scores(records: Sequence[FeedbackRecord], scores: Sequence[np.ndarray], resamples: int = 1000,
                    confidence: float = 0.95, seed: int = 0, n_bins: int = 10,
                    ordinal_thresholds: dict[str, list[float]] | None = None) -> EvalReport:
    """All metrics from precomputed rewards (``scores[i]`` follows ``responses_of(records[i])``)."""
    report = EvalReport(confidence_level=confidence)
    pairs = [(r, s) for r, s in zip(records, scores) if isinstance(r, Comparison) and not r.tie]
    if pairs:
        chosen = np.array([s[0] for _, s in pairs])
        rejected = np.array([s[1] for _, s in pairs])
        outcomes = pairwise_outcomes(chosen, rejected)
        report.metrics["pairwise_accuracy"] = _metric(lambda i: float(outcomes[i].mean()), len(pairs),
                                                      resamples, confidence, seed)
        probs = 1.0 / (1.0 + np.exp(-(chosen - rejected)))
        report.probabilities = probs.tolist()
        report.metrics["pairwise_ece"] = _metric(lambda i: expected_calibration_error(probs[i], n_bins)[0],
                                                 len(pairs), resamples, confidence, seed + 1)
    rankings = [(r, s) for r, s in zip(records, scores) if isinstance(r, Ranking)]
    if rankings:
        taus = mean_kendall_tau([s for _, s in rankings], [np.array(r.ranks) for r, _ in rankings])
        report.metrics["ranking_kendall_tau"] = _metric(lambda i: float(np.nanmean(taus[i])) if np.isfinite(taus[i]).any()
                                                        else math.nan, len(rankings), resamples, confidence, seed + 2)
    ratings = [(r, s) for r, s in zip(records, scores) if isinstance(r, Rating)]
    if ratings:
        rewards = np.array([s[0] for _, s in ratings])
        truth = np.array([r.normalized for r, _ in ratings])
        spans = np.array([r.scale[1] - r.scale[0] for r, _ in ratings])
        thresholds = ordinal_thresholds or {}
        predicted = np.array([predicted_normalized_rating(np.array([s[0]]),
                                                          thresholds.get(f"{r.scale[0]:g}:{r.scale[1]:g}"))[0]
                              for r, s in ratings])
        errors = (predicted - truth) * spans
        report.metrics["rating_spearman"] = _metric(lambda i: _spearman(rewards[i], truth[i]), len(ratings),
                                                    resamples, confidence, seed + 3)
        report.metrics["rating_rmse"] = _metric(lambda i: float(np.sqrt(np.mean(errors[i] ** 2))), len(ratings),
                                                resamples, confidence, seed + 4)
    labels = [(r, s) for r, s in zip(records, scores) if isinstance(r, Label)]
    if labels:
        correct = np.array([float((s[0] > 0) == r.label) for r, s in labels])
        report.metrics["label_accuracy"] = _metric(lambda i: float(correct[i].mean()), len(labels),
                                                   resamples, confidence, seed + 5)
    return report


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if np.unique(x).size < 2 or np.unique(y).size < 2:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def evaluate_model(model: Any, records: Sequence[FeedbackRecord], resamples: int = 1000, confidence: float = 0.95,
                   seed: int = 0, batch_size: int = 32) -> EvalReport:
    """Score ``records`` with ``model`` (a RewardModel or RewardEnsemble) and compute every metric."""
    scores = score_records(model, records, batch_size=batch_size)
    members = getattr(model, "members", [model])
    thresholds = getattr(members[0], "settings", None)
    ordinal = getattr(thresholds, "ordinal_thresholds", None) if thresholds is not None else None
    return evaluate_scores(records, scores, resamples=resamples, confidence=confidence, seed=seed,
                           ordinal_thresholds=ordinal)


def plot_reliability(probabilities: Sequence[float], path: str | Path, n_bins: int = 10,
                     title: str = "Reward model calibration") -> Path:
    """Save a reliability diagram (predicted P(chosen ≻ rejected) vs observed frequency) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ece, bins = expected_calibration_error(np.asarray(probabilities, dtype=float), n_bins)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    centers = [(b["low"] + b["high"]) / 2 for b in bins]
    width = 1.0 / n_bins
    top.bar(centers, [b["frequency"] for b in bins], width=width * 0.9, color="#4c72b0", label="observed")
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    top.plot([b["confidence"] for b in bins], [b["frequency"] for b in bins], "o", color="#dd8452",
             label="mean confidence")
    top.set_ylabel("frequency chosen ≻ rejected")
    top.set_title(f"{title} (ECE {ece:.3f}, {len(probabilities)} pairs)")
    top.legend(loc="upper left")
    bottom.bar(centers, [b["count"] for b in bins], width=width * 0.9, color="#55a868")
    bottom.set_xlabel("predicted probability σ(r_a - r_b)")
    bottom.set_ylabel("count")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
