"""`build_report(run_dir)`: one self-contained HTML page summarizing an RLHF run.

Plots are inline base64 PNGs (matplotlib, Agg), CSS is inline, and the page loads nothing from
anywhere else. Text from the run (prompts, responses, config) is HTML-escaped by Jinja2's
autoescaping. What the page reads is documented in run_layout.md; missing pieces show as
"not available".
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhfkit.eval import plots
from rlhfkit.eval.checks import aspects_section, checks_section
from rlhfkit.eval.overoptimization import watch_metrics
from rlhfkit.eval.run_data import RoundData, RunData, finite, load_run
from rlhfkit.models.chat import ChatError, parse_messages
from rlhfkit.utils.atomic_file import atomic_write_text

TEMPLATE_DIR = Path(__file__).parent / "templates"
MAX_SAMPLES = 8


def fmt(value: Any) -> str:
    """Compact display of a table cell: 4 significant digits for floats, '–' for missing."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _timeline_series(run: RunData, key: str) -> plots.Series | None:
    """(steps, values) of a metric in metrics.jsonl, finite values only."""
    xs, ys = [], []
    for record in run.timeline:
        step, value = finite(record.get("step")), finite(record.get(key))
        if step is not None and value is not None:
            xs.append(step)
            ys.append(value)
    return (xs, ys) if xs else None


def _round_series(rounds: Sequence[RoundData], key: str) -> plots.Series | None:
    """(round indices, values) of a per-round metric, finite values only."""
    pairs = [(r.index, finite(r.metrics.get(key))) for r in rounds]
    pairs = [(i, v) for i, v in pairs if v is not None]
    return ([float(i) for i, _ in pairs], [v for _, v in pairs]) if pairs else None


def _rewards_kl_section(run: RunData) -> dict[str, Any]:
    """The gold/proxy/KL figure from the timeline, else from per-round metrics."""
    keys = ("eval/gold_reward", "eval/proxy_reward", "eval/kl")
    series = [_timeline_series(run, k) for k in keys]
    train = [_timeline_series(run, k) for k in ("reward/mean", "kl/mean")]
    x_label, source = "policy step", "metrics.jsonl"
    if not any(series) and not any(train):
        series = [_round_series(run.rounds, k) for k in keys]
        x_label, source = "round", "rounds/*/metrics.json"
    image = plots.rewards_kl_plot(*series, train_reward=train[0], train_kl=train[1],
                                  x_label=x_label)
    return {"image": image, "source": source}


def _rm_accuracy_section(run: RunData) -> str | None:
    """Bars of reward-model accuracy for the rounds that have rm_eval.json."""
    rows = [(r.index, finite(r.rm_eval.get("accuracy")), finite(r.rm_eval.get("gold_accuracy")))
            for r in run.rounds if r.rm_eval]
    rows = [row for row in rows if row[1] is not None]
    if not rows:
        return None
    return plots.rm_accuracy_plot([r[0] for r in rows], [r[1] for r in rows],  # type: ignore[misc]
                                  [r[2] for r in rows])


WIN_RATE_JUDGES: tuple[tuple[str, str], ...] = (("eval/win_rate", "gold reward"),
                                                 ("eval/judge_win_rate", "judge"),
                                                 ("eval/feedback_win_rate", "annotators"))


def _win_rate_section(run: RunData) -> str | None:
    """Per-round win rate with its interval, one line per judge present (gold, judge function, annotators)."""
    series = []
    for key, label in WIN_RATE_JUDGES:
        rows = [(r.index, finite(r.metrics.get(key)), finite(r.metrics.get(f"{key}_low")),
                 finite(r.metrics.get(f"{key}_high"))) for r in run.rounds]
        rows = [row for row in rows if row[1] is not None]
        if rows:
            series.append(plots.WinRateSeries(label, [r[0] for r in rows], [r[1] for r in rows],  # type: ignore[misc]
                                              [r[2] for r in rows], [r[3] for r in rows]))
    return plots.win_rate_plot(series)


def _reliability_section(run: RunData) -> dict[str, Any] | None:
    """Bar chart of the latest round's annotator reliability."""
    for rnd in reversed(run.rounds):
        entries = [e for e in (rnd.reliability or []) if finite(e.get("reliability")) is not None]
        if entries:
            image = plots.reliability_plot(
                [str(e.get("annotator", f"#{i}")) for i, e in enumerate(entries)],
                [finite(e["reliability"]) for e in entries],  # type: ignore[misc]
                [finite(e.get("true_accuracy")) for e in entries])
            return {"image": image, "round": rnd.index}
    return None


def _samples_section(run: RunData) -> dict[str, Any] | None:
    """Base-policy vs final-policy responses paired by prompt."""
    before, before_round = None, None
    if run.rounds and run.rounds[0].index == 0 and run.rounds[0].samples_after:
        before, before_round = run.rounds[0].samples_after, 0
    else:
        for rnd in run.rounds:
            if rnd.samples_before:
                before, before_round = rnd.samples_before, rnd.index
                break
    after_round = next((r for r in reversed(run.rounds) if r.samples_after
                        and (before_round is None or r.index > before_round)), None)
    if not before or after_round is None or not after_round.samples_after:
        return None
    after = after_round.samples_after
    by_prompt = {}
    for sample in before:
        by_prompt.setdefault(str(sample.get("prompt", "")), sample)
    pairs = [(by_prompt[str(a.get("prompt", ""))], a) for a in after
             if str(a.get("prompt", "")) in by_prompt]
    if not pairs:
        pairs = list(zip(before, after))
    rows = [{"prompt": str(b.get("prompt", "")), "turns": _turns(b.get("prompt_messages")),
             "before": str(b.get("response", "")), "before_gold": fmt(finite(b.get("gold"))),
             "before_proxy": fmt(finite(b.get("proxy"))),
             "after": str(a.get("response", "")), "after_gold": fmt(finite(a.get("gold"))),
             "after_proxy": fmt(finite(a.get("proxy")))} for b, a in pairs[:MAX_SAMPLES]]
    return {"rows": rows, "before_round": before_round, "after_round": after_round.index,
            "shown": len(rows), "total": len(pairs)}


def _turns(value: Any) -> list[dict[str, str]] | None:
    """A conversational prompt's turns from a sample row (None when absent or malformed: the plain text shows)."""
    try:
        return [dict(m) for m in parse_messages(value)] if value is not None else None
    except ChatError:
        return None


def _summary_section(run: RunData) -> dict[str, Any] | None:
    """summary.json as a table, else first vs last round's metrics."""
    if run.summary:
        columns: list[str] = []
        for row in run.summary:
            columns += [c for c in row if c not in columns]
        return {"columns": columns, "source": "summary.json",
                "rows": [[fmt(row.get(c)) for c in columns] for row in run.summary]}
    measured = [r for r in run.rounds if r.metrics]
    if not measured:
        return None
    first, last = measured[0], measured[-1]
    keys = sorted(set(first.metrics) | set(last.metrics))
    if first is last:
        columns = ["metric", f"round {last.index}"]
        rows = [[k, fmt(last.metrics.get(k))] for k in keys]
    else:
        columns = ["metric", f"round {first.index}", f"round {last.index}"]
        rows = [[k, fmt(first.metrics.get(k)), fmt(last.metrics.get(k))] for k in keys]
    return {"columns": columns, "rows": rows, "source": "first and last rounds' metrics.json"}


def _rounds_table(run: RunData) -> dict[str, Any] | None:
    """Every per-round metric: one row per metric, one column per round (rounds are few)."""
    measured = [r for r in run.rounds if r.metrics]
    if not measured:
        return None
    keys = sorted({k for r in measured for k in r.metrics})
    return {"columns": ["metric", *[f"round {r.index}" for r in measured]],
            "rows": [[k, *[fmt(r.metrics.get(k)) for r in measured]] for k in keys]}


def _watch_section(run: RunData) -> dict[str, Any] | None:
    """watch.json, else the watch recomputed with default thresholds on per-round metrics."""
    if run.watch and run.watch.get("status") in ("ok", "warn", "stop"):
        return {**run.watch, "source": "watch.json"}
    decision = watch_metrics([(r.index, r.metrics) for r in run.rounds if r.metrics])
    if decision is None:
        return None
    return {**decision.to_dict(), "source": "computed with default thresholds"}


def render_report(run: RunData) -> str:
    """The report's HTML for a loaded run."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATE_DIR)),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    stage_logs = sorted(str(p.relative_to(run.run_dir))
                        for p in run.run_dir.glob("rounds/*/*/metrics.jsonl"))
    context = {
        "title": run.run_dir.resolve().name,
        "run_dir": str(run.run_dir.resolve()),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "n_rounds": len(run.rounds),
        "watch": _watch_section(run),
        "checks": checks_section(run, fmt),
        "summary": _summary_section(run),
        "aspects": aspects_section(run, fmt),
        "rewards_kl": _rewards_kl_section(run),
        "rm_accuracy": _rm_accuracy_section(run),
        "win_rate": _win_rate_section(run),
        "reliability": _reliability_section(run),
        "samples": _samples_section(run),
        "rounds_table": _rounds_table(run),
        "config": json.dumps(run.config, indent=2, sort_keys=True, default=str)
        if run.config is not None else None,
        "stage_logs": stage_logs,
        "notes": sorted(run.notes.items()),
    }
    return env.get_template("report.html").render(**context)


def build_report(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write ``run_dir/report.html`` (or ``output``) for a run directory and return its path."""
    run = load_run(run_dir)
    path = Path(output) if output is not None else run.run_dir / "report.html"
    atomic_write_text(path, render_report(run))
    return path
