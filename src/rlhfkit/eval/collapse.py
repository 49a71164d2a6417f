"""Collapse signals of the over-optimization watch, each relative to the base policy's evaluation.

A policy that games its reward often collapses before its gold falls: the same generic sentence
for every prompt, shorter and shorter answers, answers that ignore the prompt. Each evaluation is
compared with the first one (round 0, the base policy):
- diversity: distinct-2 below ``distinct_ratio`` x the base's, or a share of responses also given
  to another prompt more than ``duplicate_rise`` above the base's;
- length: mean length below ``length_ratio`` x the base's;
- off-topic: a share of responses that do not mention their prompt's subject more than
  ``off_topic_rise`` above the base's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Series = Sequence[float | None] | None


@dataclass(frozen=True)
class CollapseSeries:
    """Per-evaluation diversity, length and topicality numbers (None where not measured)."""

    distinct: Series = None
    length: Series = None
    duplicates: Series = None
    on_topic: Series = None

    def items(self) -> list[tuple[str, Sequence[float | None]]]:
        """(name, series) of the series given."""
        return [(name, values) for name, values in vars(self).items() if values is not None]


@dataclass(frozen=True)
class CollapseLimits:
    """Thresholds relative to the base policy (see the module docstring)."""

    distinct_ratio: float
    length_ratio: float
    duplicate_rise: float
    off_topic_rise: float


def _value(values: Sequence[float | None], i: int) -> float | None:
    v = values[i]
    return float(v) if v is not None and math.isfinite(float(v)) else None


def flag(name: str, value: float, base: float, limits: CollapseLimits) -> str | None:
    """The message for one collapsed measurement, or None when it is within its limit."""
    if name == "distinct" and value < limits.distinct_ratio * base:
        return (f"diversity collapse: distinct-2 {value:.3g} is below {limits.distinct_ratio:g} x the "
                f"base policy's {base:.3g}")
    if name == "duplicates" and value > base + limits.duplicate_rise:
        return (f"diversity collapse: {value:.0%} of responses were also given to other prompts "
                f"(base policy {base:.0%}, limit +{limits.duplicate_rise:.0%})")
    if name == "length" and value < limits.length_ratio * base:
        return (f"length collapse: mean length {value:.3g} words is below {limits.length_ratio:g} x the "
                f"base policy's {base:.3g}")
    if name == "on_topic" and (1 - value) > (1 - base) + limits.off_topic_rise:
        return (f"off-topic: {1 - value:.0%} of responses do not mention their prompt's subject "
                f"(base policy {1 - base:.0%}, limit +{limits.off_topic_rise:.0%})")
    return None


def collapse_flags(series: CollapseSeries, n: int, limits: CollapseLimits) -> list[list[str]]:
    """For each of ``n`` evaluations, the collapse messages against the first measured one."""
    flags: list[list[str]] = [[] for _ in range(n)]
    for name, values in series.items():
        if len(values) != n:
            raise ValueError(f"over-optimization watch: {name} has {len(values)} values, expected {n}")
        present = [i for i in range(n) if _value(values, i) is not None]
        if not present:
            continue
        base = _value(values, present[0])
        assert base is not None
        for i in present[1:]:
            message = flag(name, _value(values, i) or 0.0, base, limits)
            if message is not None:
                flags[i].append(message)
    return flags
