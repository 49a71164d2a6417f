"""Evaluation metrics for policy samples: diversity, length, BLEU/ROUGE, win rate, KL, correlations.

Pure functions over plain Python sequences (and torch tensors for the KL helpers), so the loop,
the report and the tests share one definition of each number.
- distinct-n: Li et al. (2016), "A Diversity-Promoting Objective Function for Neural Conversation
  Models", sec. 4.3: distinct n-grams / total n-grams over all responses.
- Collapse across prompts: the share of responses also given to another prompt, and the largest
  share of prompts given one same response (texts compared lower-cased, punctuation dropped).
- BLEU: Papineni et al. (2002) through sacrebleu (Post, 2018); ROUGE: Lin (2004) through rouge-score.
- Win-rate interval: Wilson (1927) score interval, or a percentile bootstrap (Efron, 1979).
- KL per sequence: sum of per-token estimates over the response mask (Schulman, 2020, k1/k2/k3;
  see rlhfkit.rl.kl), averaged over sequences as in Ziegler et al. (2019).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from rlhfkit.tasks.aspects import normalized
from rlhfkit.utils.text_metrics import ngrams as _ngrams
from rlhfkit.utils.text_metrics import reference_streams as _reference_streams
from rlhfkit.utils.text_metrics import repetition_rate as repetition_rate  # re-exported: part of the metrics API
from rlhfkit.utils.text_metrics import rouge_per_item

if TYPE_CHECKING:  # torch is imported only by the KL helpers' callers, keeping text metrics light
    import torch

    from rlhfkit.rl.kl import KLEstimator

Outcome = float | str
_OUTCOME_VALUES = {"win": 1.0, "loss": 0.0, "tie": 0.5}


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Corpus distinct-n: unique n-grams / total n-grams over whitespace tokens (0.0 when none).

    1.0 means no n-gram repeats anywhere; a policy collapsing onto one answer drifts toward 0.
    """
    if n < 1:
        raise ValueError(f"distinct_n: n must be >= 1, got {n}")
    grams: list[tuple[str, ...]] = []
    for text in texts:
        grams.extend(_ngrams(text.split(), n))
    return len(set(grams)) / len(grams) if grams else 0.0


def _prompts_by_response(prompts: Sequence[str], responses: Sequence[str]) -> dict[str, set[str]]:
    """normalized response -> the distinct prompts it was given to."""
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
    given: dict[str, set[str]] = defaultdict(set)
    for prompt, response in zip(prompts, responses):
        given[normalized(response)].add(prompt)
    return given


def duplicate_share(prompts: Sequence[str], responses: Sequence[str]) -> float:
    """Share of responses whose text (normalized) was also given to a different prompt (0.0 when none).

    A base policy repeats a short stock line now and then; a collapsed one gives most prompts the
    same answer.
    """
    if not responses:
        return 0.0
    given = _prompts_by_response(prompts, responses)
    return sum(len(given[normalized(r)]) > 1 for r in responses) / len(responses)


def top_response_share(prompts: Sequence[str], responses: Sequence[str]) -> float:
    """The largest share of the distinct prompts that got one same response (0.0 when none)."""
    given = _prompts_by_response(prompts, responses)
    n_prompts = len(set(prompts))
    return max(len(p) for p in given.values()) / n_prompts if n_prompts else 0.0


@dataclass(frozen=True)
class LengthStats:
    """Summary of response lengths (in whitespace words, or tokens when a tokenizer is given)."""

    mean: float
    std: float
    min: int
    median: float
    max: int
    empty_fraction: float

    def to_dict(self, prefix: str = "length/") -> dict[str, float]:
        """Flat scalars for a Tracker, e.g. ``length/mean``."""
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items()}


def length_stats(texts: Sequence[str], tokenizer: Any | None = None) -> LengthStats:
    """Mean/std/min/median/max length and the fraction of empty responses.

    Lengths are whitespace words by default; pass a Hugging Face tokenizer to count tokens instead.
    """
    if not texts:
        raise ValueError("length_stats: no texts given")
    if tokenizer is None:
        lengths = [len(t.split()) for t in texts]
    else:
        lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    arr = np.asarray(lengths, dtype=np.float64)
    return LengthStats(mean=float(arr.mean()), std=float(arr.std()), min=int(arr.min()),
                       median=float(np.median(arr)), max=int(arr.max()),
                       empty_fraction=float(np.mean([not t.strip() for t in texts])))


def bleu(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> float:
    """Corpus BLEU on sacrebleu's 0-100 scale (13a tokenization); one or several references each."""
    refs = _reference_streams(references, len(hypotheses))
    if not hypotheses:
        raise ValueError("bleu: no hypotheses given")
    width = max(len(r) for r in refs)
    if min(len(r) for r in refs) < 1:
        raise ValueError("bleu: every hypothesis needs at least one reference")
    # sacrebleu wants one stream per reference slot; pad short lists with their first reference.
    streams = [[r[i] if i < len(r) else r[0] for r in refs] for i in range(width)]
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), streams).score)


def rouge(hypotheses: Sequence[str],
          references: Sequence[str] | Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 over the corpus: ``{"rouge1", "rouge2", "rougeL"}`` in [0, 1]."""
    if not hypotheses:
        raise ValueError("rouge: no hypotheses given")
    items = rouge_per_item(hypotheses, references)
    return {key: float(np.mean([it[key] for it in items])) for key in ("rouge1", "rouge2", "rougeL")}


@dataclass(frozen=True)
class WinRate:
    """Win rate with ties counted as half a win, and its confidence interval."""

    rate: float
    low: float
    high: float
    wins: int
    losses: int
    ties: int
    n: int
    method: str
    confidence: float

    def to_dict(self, prefix: str = "win_rate") -> dict[str, float]:
        """Flat scalars, e.g. ``win_rate``, ``win_rate_low``, ``win_rate_high``, ``win_rate_n``."""
        return {prefix: self.rate, f"{prefix}_low": self.low, f"{prefix}_high": self.high,
                f"{prefix}_n": float(self.n), f"{prefix}_ties": float(self.ties)}


def _outcome_value(outcome: Outcome, index: int) -> float:
    """Map 'win'/'loss'/'tie' or 1/0/0.5 to a score, rejecting anything else by position."""
    if isinstance(outcome, str):
        if outcome not in _OUTCOME_VALUES:
            raise ValueError(f"outcome {index}: {outcome!r} is not one of win/loss/tie")
        return _OUTCOME_VALUES[outcome]
    value = float(outcome)
    if value not in (0.0, 0.5, 1.0):
        raise ValueError(f"outcome {index}: {outcome!r} is not 1 (win), 0 (loss) or 0.5 (tie)")
    return value


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion successes/n (successes may be fractional for ties).

    center = (p + z^2/2n) / (1 + z^2/n),  half = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2).
    """
    if n <= 0:
        raise ValueError("wilson_interval: n must be positive")
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0))
    return max(0.0, center - half), min(1.0, center + half)


def win_rate(outcomes: Sequence[Outcome], *, method: Literal["wilson", "bootstrap"] = "wilson",
             confidence: float = 0.95, n_bootstrap: int = 2000, seed: int = 0) -> WinRate:
    """Win rate of a policy over a baseline from per-comparison outcomes (win/loss/tie or 1/0/0.5).

    rate = (wins + ties / 2) / n. The interval is Wilson's on that proportion, or the percentile
    bootstrap of the mean outcome (seeded, so reports are reproducible).
    """
    if not outcomes:
        raise ValueError("win_rate: no comparisons given")
    if not 0 < confidence < 1:
        raise ValueError(f"win_rate: confidence must be in (0, 1), got {confidence}")
    values = np.asarray([_outcome_value(o, i) for i, o in enumerate(outcomes)], dtype=np.float64)
    n = len(values)
    wins, losses = int((values == 1.0).sum()), int((values == 0.0).sum())
    ties = n - wins - losses
    rate = float(values.mean())
    if method == "wilson":
        low, high = wilson_interval(rate * n, n, confidence)
    elif method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = values[rng.integers(0, n, size=(n_bootstrap, n))].mean(axis=1)
        alpha = (1 - confidence) / 2
        low, high = (float(q) for q in np.quantile(means, [alpha, 1 - alpha]))
    else:
        raise ValueError(f"win_rate: unknown method {method!r}; choose wilson or bootstrap")
    return WinRate(rate=rate, low=low, high=high, wins=wins, losses=losses, ties=ties, n=n,
                   method=method, confidence=confidence)


def outcomes_from_scores(policy_scores: Sequence[float], baseline_scores: Sequence[float],
                         tie_tolerance: float = 0.0) -> list[float]:
    """Per-prompt outcomes 1/0/0.5 from paired scores (e.g. gold reward of policy vs base sample).

    |policy - baseline| <= tie_tolerance counts as a tie.
    """
    if len(policy_scores) != len(baseline_scores):
        raise ValueError(f"got {len(policy_scores)} policy scores but {len(baseline_scores)} "
                         "baseline scores")
    out = []
    for p, b in zip(policy_scores, baseline_scores):
        diff = float(p) - float(b)
        out.append(0.5 if abs(diff) <= tie_tolerance else (1.0 if diff > 0 else 0.0))
    return out


def sequence_kl(per_token_kl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence KL: sum over response tokens of a per-token estimate. (b, R), (b, R) -> (b,)."""
    if per_token_kl.shape != mask.shape:
        raise ValueError(f"per-token KL {tuple(per_token_kl.shape)} and mask {tuple(mask.shape)} "
                         "differ in shape")
    return (per_token_kl.float() * mask.float()).sum(dim=-1)


def kl_summary(per_token_kl: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """``kl/mean`` (mean of per-sequence sums), ``kl/std``, ``kl/max`` and ``kl/per_token``.

    per_token_kl, mask: (b, R). kl/per_token = total KL / number of response tokens.
    """
    seq = sequence_kl(per_token_kl, mask)
    if seq.numel() == 0:
        raise ValueError("kl_summary: empty batch")
    tokens = mask.float().sum()
    return {"kl/mean": float(seq.mean()), "kl/std": float(seq.std(correction=0)),
            "kl/max": float(seq.max()),
            "kl/per_token": float(seq.sum() / tokens) if tokens > 0 else 0.0}


def kl_from_logprobs(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                     estimator: KLEstimator = "k3") -> dict[str, float]:
    """KL summary of policy vs reference from sampled-token log-probs, all (b, R).

    k3 by default: unbiased and never negative per token, which keeps small-sample reports sane.
    """
    from rlhfkit.rl.kl import kl_estimate

    return kl_summary(kl_estimate(logprobs.float(), ref_logprobs.float(), estimator), mask)


@dataclass(frozen=True)
class Correlation:
    """Pearson and Spearman correlation of two score lists (None where undefined)."""

    pearson: float | None
    spearman: float | None
    n: int


def reward_correlation(gold: Sequence[float], proxy: Sequence[float]) -> Correlation:
    """How well the proxy (reward model) tracks the gold reward on the same samples.

    Non-finite pairs are dropped; with fewer than 3 pairs or a constant side the correlation is None.
    """
    if len(gold) != len(proxy):
        raise ValueError(f"got {len(gold)} gold scores but {len(proxy)} proxy scores")
    pairs = [(float(g), float(p)) for g, p in zip(gold, proxy)
             if math.isfinite(float(g)) and math.isfinite(float(p))]
    n = len(pairs)
    if n < 3:
        return Correlation(None, None, n)
    g = np.array([a for a, _ in pairs])
    p = np.array([b for _, b in pairs])
    if np.ptp(g) == 0 or np.ptp(p) == 0:
        return Correlation(None, None, n)
    from scipy import stats

    return Correlation(pearson=float(stats.pearsonr(g, p)[0]),
                       spearman=float(stats.spearmanr(g, p)[0]), n=n)


def ensemble_disagreement(member_scores: Sequence[Sequence[float]] | np.ndarray) -> float:
    """Mean over samples of the std across ensemble members; input (k members, b samples).

    Rising disagreement on the policy's own samples flags it leaving the reward model's data.
    """
    arr = np.asarray(member_scores, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 2 or arr.shape[1] < 1:
        raise ValueError(f"ensemble_disagreement: need (members>=2, samples>=1), got {arr.shape}")
    return float(arr.std(axis=0).mean())
