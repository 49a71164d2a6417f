"""The run's summary table (base policy vs final policy) and the over-optimization decision over rounds."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlhfkit.eval.overoptimization import WatchConfig, WatchDecision, watch_metrics

SUMMARY_ROWS: tuple[tuple[str, str], ...] = (
    ("gold reward", "eval/gold_reward"),
    ("reward-model score (proxy)", "eval/proxy_reward"),
    ("KL to base (nats/sequence)", "eval/kl"),
    ("win rate vs base (gold)", "eval/win_rate"),
    ("win rate vs base (judge, eval.judge)", "eval/judge_win_rate"),
    ("RM held-out accuracy", "rm/accuracy"),
    ("RM gold agreement", "rm/gold_accuracy"),
    ("distinct-2", "eval/distinct_2"),
    ("mean length (words)", "length/mean"),
    ("responses also given to other prompts", "eval/duplicate_share"),
    ("largest share of one response", "eval/top_response_share"),
    ("responses that mention the subject", "eval/on_topic"),
    ("probes raising the reward, before adversarial round (held-out)", "adversarial/held_out/all_before"),
    ("probes raising the reward, after adversarial round (held-out)", "adversarial/held_out/all_after"),
)
ASPECT_PREFIX = "eval/aspect/"


def read_round_metrics(round_dir: Path) -> dict[str, float]:
    """The round's ``metrics.json`` (empty when absent)."""
    path = round_dir / "metrics.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def summary_rows(base: Mapping[str, float], final: Mapping[str, float], final_round: int) -> list[dict[str, Any]]:
    """``[{"metric", "base", "final", "round"}]`` for the metrics either side has (run_layout.md summary.json)."""
    aspects = sorted({k for k in (*base, *final) if k.startswith(ASPECT_PREFIX)})
    rows = []
    for label, key in (*SUMMARY_ROWS, *((f"gold aspect: {k[len(ASPECT_PREFIX):]}", k) for k in aspects)):
        if key in base or key in final:
            rows.append({"metric": label, "base": base.get(key), "final": final.get(key), "round": final_round})
    return rows


def watch_rounds(rounds: Sequence[tuple[int, Mapping[str, float]]], config: WatchConfig) -> WatchDecision:
    """The over-optimization decision from per-round metrics (round index, metrics), oldest first."""
    decision = watch_metrics(rounds, config)
    return decision or WatchDecision(status="ok", reason="nothing measured yet", best_round=None)
