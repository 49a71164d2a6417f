"""The report's gold-aspect table and its collapse and independent checks, read from per-round metrics.

Checks compare the latest evaluated policy with the base policy (the first evaluated round), with
the run's own watch thresholds (config ``eval.watch``, else the defaults), so a collapsed policy
shows red here even when its gold rose, and even when the run then rolled back to an earlier round. Two checks are
fixed: no single response for more than 5% of the prompts, and a judge the loop never trains on
(``eval.judge``, default the task's strict rubric) must not prefer the base policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from rlhfkit.eval.collapse import flag
from rlhfkit.eval.overoptimization import WatchConfig
from rlhfkit.eval.run_data import RoundData, RunData, finite

ASPECT_PREFIX = "eval/aspect/"
MAX_TOP_RESPONSE_SHARE = 0.05
Formatter = Callable[[Any], str]


def _measured(run: RunData) -> list[RoundData]:
    return [r for r in run.rounds if r.metrics]


def _task_aspects(run: RunData) -> tuple[dict[str, str], str]:
    """Aspect descriptions and the combination of a preset task named in config.json (never a task file)."""
    from rlhfkit.tasks import TASKS

    name = (run.config or {}).get("task")
    task = TASKS.get(name) if isinstance(name, str) else None
    if task is None:
        return {}, ""
    return {a.name: a.description for a in task.aspects}, task.combination


def aspects_section(run: RunData, fmt: Formatter) -> dict[str, Any] | None:
    """Each gold aspect's mean per round, with what it measures and how the gold combines them."""
    rounds = _measured(run)
    names = sorted({k[len(ASPECT_PREFIX):] for r in rounds for k in r.metrics if k.startswith(ASPECT_PREFIX)})
    if not names:
        return None
    described, combination = _task_aspects(run)
    return {"columns": ["aspect", "what it measures", *[f"round {r.index}" for r in rounds]],
            "rows": [[n, described.get(n, ""), *[fmt(finite(r.metrics.get(ASPECT_PREFIX + n))) for r in rounds]]
                     for n in names],
            "combination": combination}


def _watch_config(run: RunData) -> WatchConfig:
    """The run's watch thresholds from config.json (unknown or invalid entries: the defaults)."""
    raw = ((run.config or {}).get("eval") or {}).get("watch")
    if not isinstance(raw, Mapping):
        return WatchConfig()
    known = {f.name for f in fields(WatchConfig)}
    try:
        return WatchConfig(**{k: v for k, v in raw.items() if k in known})
    except (TypeError, ValueError):
        return WatchConfig()


def _final_round(run: RunData) -> int | None:
    """The round whose policy the run ends with, from summary.json (None when absent)."""
    return next((row.get("round") for row in run.summary or [] if isinstance(row.get("round"), int)), None)


COLLAPSE_CHECKS = (("distinct", "distinct-2", "eval/distinct_2"),
                   ("duplicates", "responses also given to other prompts", "eval/duplicate_share"),
                   ("length", "mean length (words)", "length/mean"),
                   ("on_topic", "responses that mention their prompt's subject", "eval/on_topic"))


def checks_section(run: RunData, fmt: Formatter) -> dict[str, Any] | None:
    """Rows (check, base, latest, verdict, status ok/stop) for the collapse and independent checks."""
    rounds = _measured(run)
    if len(rounds) < 2:
        return None
    base, final = rounds[0], rounds[-1]
    limits = _watch_config(run).collapse_limits()
    rows = []
    for name, label, key in COLLAPSE_CHECKS:
        b, f = finite(base.metrics.get(key)), finite(final.metrics.get(key))
        if b is None or f is None:
            continue
        message = flag(name, f, b, limits)
        rows.append({"check": label, "base": fmt(b), "final": fmt(f), "status": "stop" if message else "ok",
                     "verdict": message or "within the watch's limit"})
    top = finite(final.metrics.get("eval/top_response_share"))
    if top is not None:
        rows.append({"check": "largest share of prompts given one response", "final": fmt(top),
                     "base": fmt(finite(base.metrics.get("eval/top_response_share"))),
                     "status": "stop" if top > MAX_TOP_RESPONSE_SHARE else "ok",
                     "verdict": f"fixed limit {MAX_TOP_RESPONSE_SHARE:.0%}"})
    judge = finite(final.metrics.get("eval/judge_win_rate"))
    if judge is not None:
        low, high = (finite(final.metrics.get(f"eval/judge_win_rate_{s}")) for s in ("low", "high"))
        interval = f" (95% interval {fmt(low)}-{fmt(high)})" if low is not None and high is not None else ""
        rows.append({"check": "win rate vs base by the judge (eval.judge, never trained on)", "base": "0.5",
                     "final": fmt(judge), "status": "stop" if judge < 0.5 else "ok",
                     "verdict": ("the judge prefers the base policy" if judge < 0.5 else "the judge prefers "
                                 "the final policy or ties") + interval})
    if not rows:
        return None
    return {"rows": rows, "base_round": base.index, "latest_round": final.index, "final_round": _final_round(run)}
