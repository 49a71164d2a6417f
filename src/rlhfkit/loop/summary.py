"""The run's summary table (base policy vs final policy) and the over-optimization decision over rounds."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlhfkit.eval.overoptimization import WatchConfig, WatchDecision, check_overoptimization

SUMMARY_ROWS: tuple[tuple[str, str], ...] = (
    ("gold reward", "eval/gold_reward"),
    ("reward-model score (proxy)", "eval/proxy_reward"),
    ("KL to base (nats/sequence)", "eval/kl"),
    ("win rate vs base (gold)", "eval/win_rate"),
    ("RM held-out accuracy", "rm/accuracy"),
    ("RM gold agreement", "rm/gold_accuracy"),
    ("distinct-2", "eval/distinct_2"),
    ("mean length (words)", "length/mean"),
)


def read_round_metrics(round_dir: Path) -> dict[str, float]:
    """The round's ``metrics.json`` (empty when absent)."""
    path = round_dir / "metrics.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def summary_rows(base: Mapping[str, float], final: Mapping[str, float], final_round: int) -> list[dict[str, Any]]:
    """``[{"metric", "base", "final", "round"}]`` for the metrics either side has (run_layout.md summary.json)."""
    rows = []
    for label, key in SUMMARY_ROWS:
        if key in base or key in final:
            rows.append({"metric": label, "base": base.get(key), "final": final.get(key), "round": final_round})
    return rows


def watch_rounds(rounds: Sequence[tuple[int, Mapping[str, float]]], config: WatchConfig) -> WatchDecision:
    """The over-optimization decision from per-round metrics (round index, metrics), oldest first."""
    def series(key: str) -> list[float | None] | None:
        values = [m.get(key) for _, m in rounds]
        return values if any(v is not None for v in values) else None

    return check_overoptimization(gold=series("eval/gold_reward"), proxy=series("eval/proxy_reward"),
                                  disagreement=series("eval/disagreement"), rounds=[i for i, _ in rounds],
                                  config=config, gold_se=series("eval/gold_reward_se"))
