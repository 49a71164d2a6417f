"""Over-optimization watch: notice when the policy games the reward model, and say where to roll back.

Optimizing a learned proxy reward past a point lowers the true (gold) reward while the proxy keeps
climbing (Gao et al., 2023, "Scaling Laws for Reward Model Overoptimization"). Without a gold reward,
growing disagreement of a reward-model ensemble on the policy's own samples is the usual stand-in
(Coste et al., 2024, "Reward Model Ensembles Help Mitigate Overoptimization").

Three signals, each computed from the per-evaluation series (one value per round or eval step):
- divergence: proxy rose and gold fell at each of the last ``patience`` evaluations;
- gold drop: gold fell below its best so far by more than ``gold_drop`` (absolute, in gold units)
  and, when standard errors of the gold means are given, by more than ``drop_z`` standard errors of
  the difference (so a 64-prompt evaluation's noise does not fire it, and a large eval set reacts to
  smaller real drops);
- disagreement: ensemble disagreement exceeds ``disagreement_factor`` x its first value;
- collapse (rlhfkit.eval.collapse): the latest evaluation's diversity, length or topicality fell too
  far below the base policy's (the first evaluation).
A signal that fires gives ``on_trigger`` ("stop" by default, or "warn"); a divergence streak shorter
than ``patience`` gives "warn". The best evaluation to roll back to is the one with the highest gold
reward (earliest on ties) among those that did not collapse; without gold, the highest proxy among
evaluations whose disagreement stayed within the bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rlhfkit.eval.collapse import CollapseLimits, CollapseSeries, collapse_flags

Status = Literal["ok", "warn", "stop"]
_SEVERITY = {"ok": 0, "warn": 1, "stop": 2}


@dataclass(frozen=True)
class WatchConfig:
    """Thresholds of the over-optimization watch."""

    patience: int = field(default=2, metadata={
        "help": "consecutive evaluations with proxy up and gold down that trigger"})
    gold_drop: float = field(default=0.1, metadata={
        "help": "trigger when gold falls more than this (absolute) below its best"})
    drop_z: float = field(default=2.0, metadata={
        "help": "with standard errors given, the drop must also exceed this many standard errors "
                "of the difference sqrt(se_best^2 + se_last^2)"})
    disagreement_factor: float = field(default=2.0, metadata={
        "help": "trigger when ensemble disagreement exceeds this multiple of its first value"})
    min_disagreement: float = field(default=1e-6, metadata={
        "help": "floor for the first disagreement value, so a zero start does not divide by zero"})
    on_trigger: Literal["warn", "stop"] = field(default="stop", metadata={
        "help": "decision when a signal fires: stop (and roll back) or only warn"})
    distinct_ratio: float = field(default=0.75, metadata={
        "help": "diversity collapse when distinct-2 falls below this fraction of the base policy's"})
    duplicate_rise: float = field(default=0.1, metadata={
        "help": "diversity collapse when the share of responses also given to other prompts exceeds "
                "the base policy's by more than this"})
    length_ratio: float = field(default=0.7, metadata={
        "help": "length collapse when the mean length falls below this fraction of the base policy's"})
    off_topic_rise: float = field(default=0.15, metadata={
        "help": "flag when the share of responses that do not mention their prompt's subject exceeds "
                "the base policy's by more than this"})

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"WatchConfig.patience must be >= 1, got {self.patience}")
        if self.gold_drop < 0:
            raise ValueError(f"WatchConfig.gold_drop must be >= 0, got {self.gold_drop}")
        if self.drop_z < 0:
            raise ValueError(f"WatchConfig.drop_z must be >= 0, got {self.drop_z}")
        if self.disagreement_factor <= 1:
            raise ValueError("WatchConfig.disagreement_factor must be > 1, "
                             f"got {self.disagreement_factor}")
        if self.on_trigger not in ("warn", "stop"):
            raise ValueError(f"WatchConfig.on_trigger must be warn or stop, got {self.on_trigger!r}")
        for name in ("distinct_ratio", "length_ratio", "duplicate_rise", "off_topic_rise"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"WatchConfig.{name} must be in [0, 1], got {getattr(self, name)}")

    def collapse_limits(self) -> CollapseLimits:
        """The collapse thresholds of this config."""
        return CollapseLimits(self.distinct_ratio, self.length_ratio, self.duplicate_rise, self.off_topic_rise)


@dataclass(frozen=True)
class WatchDecision:
    """What the watch concluded: status, why (one sentence per signal) and where to roll back."""

    status: Status
    reason: str
    best_round: int | None
    signals: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for watch.json and the report)."""
        out = asdict(self)
        out["signals"] = list(self.signals)
        return out


def _present(value: float | None) -> bool:
    """True for a finite number (None/NaN mark an evaluation without that measurement)."""
    return value is not None and math.isfinite(float(value))


def _check_lengths(n: int, **series: Sequence[float | None] | None) -> None:
    """Every given series must have one value per evaluation."""
    for name, values in series.items():
        if values is not None and len(values) != n:
            raise ValueError(f"over-optimization watch: {name} has {len(values)} values, "
                             f"expected {n} (one per evaluation)")


def _divergence_streak(gold: Sequence[float | None], proxy: Sequence[float | None]) -> int:
    """How many of the latest consecutive evaluations had proxy rising and gold falling."""
    idx = [i for i in range(len(gold)) if _present(gold[i]) and _present(proxy[i])]
    streak = 0
    for prev, cur in reversed(list(zip(idx, idx[1:]))):
        if float(proxy[cur]) > float(proxy[prev]) and float(gold[cur]) < float(gold[prev]):
            streak += 1
        else:
            break
    return streak


def _best_index(values: Sequence[float | None], allowed: Sequence[bool]) -> int | None:
    """Index of the largest present value among allowed positions (earliest on ties)."""
    best = None
    for i, v in enumerate(values):
        if allowed[i] and _present(v) and (best is None or float(v) > float(values[best])):
            best = i
    return best


def _difference_se(gold_se: Sequence[float | None] | None, i: int, j: int) -> float:
    """Standard error of gold[i] - gold[j] for independent means (0 when either is unknown)."""
    if gold_se is None or i == j or not (_present(gold_se[i]) and _present(gold_se[j])):
        return 0.0
    return math.hypot(float(gold_se[i]), float(gold_se[j]))


def check_overoptimization(
    gold: Sequence[float | None] | None = None,
    proxy: Sequence[float | None] | None = None,
    disagreement: Sequence[float | None] | None = None,
    rounds: Sequence[int] | None = None,
    config: WatchConfig | None = None,
    gold_se: Sequence[float | None] | None = None,
    collapse: CollapseSeries | None = None,
) -> WatchDecision:
    """Decide ok / warn / stop from per-evaluation gold, proxy, disagreement and collapse series.

    Each series has one entry per evaluation, oldest first (None/NaN = not measured then). ``rounds``
    labels the evaluations (default 0, 1, 2, ...); ``best_round`` is one of those labels.
    ``gold_se`` (standard error of each gold mean) makes the gold-drop test a significance test.
    """
    cfg = config or WatchConfig()
    collapse_series = [v for _, v in collapse.items()] if collapse is not None else []
    lengths = [len(s) for s in (gold, proxy, disagreement, rounds, *collapse_series) if s is not None]
    if not lengths:
        raise ValueError("over-optimization watch: give at least one of gold, proxy, disagreement, collapse")
    n = lengths[0]
    _check_lengths(n, gold=gold, proxy=proxy, disagreement=disagreement, rounds=rounds, gold_se=gold_se)
    labels = list(rounds) if rounds is not None else list(range(n))
    status: Status = "ok"
    signals: list[str] = []

    def raise_to(level: Status, message: str) -> None:
        nonlocal status
        signals.append(message)
        if _SEVERITY[level] > _SEVERITY[status]:
            status = level

    has_gold = gold is not None and any(_present(g) for g in gold)
    if has_gold and proxy is not None:
        streak = _divergence_streak(gold, proxy)
        if streak >= cfg.patience:
            raise_to(cfg.on_trigger, f"proxy reward rose while gold reward fell for {streak} "
                                     f"consecutive evaluations (patience {cfg.patience})")
        elif streak > 0:
            raise_to("warn", f"proxy reward rose while gold reward fell at the last {streak} "
                             f"evaluation(s); {cfg.patience} in a row would trigger")
    if has_gold:
        assert gold is not None
        best = _best_index(gold, [True] * n)
        last = max(i for i in range(n) if _present(gold[i]))
        assert best is not None
        drop = float(gold[best]) - float(gold[last])
        tolerance = max(cfg.gold_drop, cfg.drop_z * _difference_se(gold_se, best, last))
        if drop > tolerance:
            raise_to(cfg.on_trigger, f"gold reward {float(gold[last]):.4g} at round {labels[last]} "
                                     f"is {drop:.4g} below its best {float(gold[best]):.4g} "
                                     f"(round {labels[best]}; tolerance {tolerance:.4g})")
    within = [True] * n
    if disagreement is not None and any(_present(d) for d in disagreement):
        first = next(i for i in range(n) if _present(disagreement[i]))
        bound = cfg.disagreement_factor * max(float(disagreement[first]), cfg.min_disagreement)
        within = [not _present(d) or float(d) <= bound for d in disagreement]
        last = max(i for i in range(n) if _present(disagreement[i]))
        if not within[last]:
            ratio = float(disagreement[last]) / max(float(disagreement[first]), cfg.min_disagreement)
            raise_to(cfg.on_trigger, f"reward-model ensemble disagreement grew {ratio:.3g}x since "
                                     f"round {labels[first]} (limit {cfg.disagreement_factor:g}x)")
    flags = collapse_flags(collapse or CollapseSeries(), n, cfg.collapse_limits())
    for message in flags[-1]:
        raise_to(cfg.on_trigger, f"{message} at round {labels[-1]}")
    healthy = [not f for f in flags]
    if has_gold:
        assert gold is not None
        best_i = _best_index(gold, healthy)
        if best_i is None:
            best_i = _best_index(gold, [True] * n)
    elif proxy is not None:
        best_i = _best_index(proxy, [w and h for w, h in zip(within, healthy)])
    else:
        candidates = [i for i in range(n) if within[i] and healthy[i]]
        best_i = candidates[-1] if candidates else None
    best_round = labels[best_i] if best_i is not None else None
    if status == "ok":
        reason = "no sign of over-optimization"
    else:
        reason = "; ".join(signals)
        if status == "stop" and best_round is not None:
            reason += f"; roll back to round {best_round}"
    return WatchDecision(status=status, reason=reason, best_round=best_round, signals=tuple(signals))


WATCH_METRICS = {"gold": "eval/gold_reward", "proxy": "eval/proxy_reward", "disagreement": "eval/disagreement",
                 "gold_se": "eval/gold_reward_se"}
COLLAPSE_METRICS = {"distinct": "eval/distinct_2", "length": "length/mean", "duplicates": "eval/duplicate_share",
                    "on_topic": "eval/on_topic"}


def watch_metrics(rounds: Sequence[tuple[int, Mapping[str, Any]]], config: WatchConfig | None = None
                  ) -> WatchDecision | None:
    """The decision from per-round flat metrics ``(round, {"eval/gold_reward": ...})``, oldest first.

    None when no round has any watched metric.
    """
    def series(key: str) -> list[float | None] | None:
        values = [_number(m.get(key)) for _, m in rounds]
        return values if any(v is not None for v in values) else None

    given = {name: series(key) for name, key in WATCH_METRICS.items()}
    collapse = CollapseSeries(**{name: series(key) for name, key in COLLAPSE_METRICS.items()})
    if not any(v is not None for v in given.values()) and not collapse.items():
        return None
    return check_overoptimization(**given, rounds=[i for i, _ in rounds], config=config, collapse=collapse)


def _number(value: Any) -> float | None:
    """A finite float, or None for anything else (missing, text, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)
