"""One call that turns a policy's eval samples into the flat ``eval/*`` metrics of run_layout.md.

Pure: the caller generates responses and scores them with the reward model / reference; this
module only combines the numbers, so the loop and the tests name every metric the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from rlhfkit.eval import metrics
from rlhfkit.tasks.base import Task


def evaluate_responses(
    task: Task,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    baseline_responses: Sequence[str] | None = None,
    proxy_scores: Sequence[float] | None = None,
    ensemble_scores: Sequence[Sequence[float]] | None = None,
    kl: Mapping[str, float] | None = None,
    tie_tolerance: float = 0.0,
    ci_method: Literal["wilson", "bootstrap"] = "wilson",
) -> dict[str, float]:
    """Metrics of ``responses`` to ``prompts``; each optional input adds its own metrics.

    - always: ``eval/distinct_1``, ``eval/distinct_2``, ``length/*`` (words);
    - the task's gold: ``eval/gold_reward`` (mean), ``eval/gold_reward_std``, ``eval/gold_reward_se``
      (standard error of the mean, std / sqrt(n - 1));
    - with ``baseline_responses`` (the base policy on the same prompts) and gold: the win rate
      ``eval/win_rate`` (+ ``_low``, ``_high``, ``_n``, ``_ties``), ties within ``tie_tolerance``;
    - with ``proxy_scores`` (reward model): ``eval/proxy_reward`` and, with gold,
      ``eval/gold_proxy_pearson`` / ``eval/gold_proxy_spearman`` (omitted when undefined);
    - with ``ensemble_scores`` (members x samples): ``eval/disagreement``;
    - with ``kl`` (``metrics.kl_summary`` output): ``eval/kl`` = its ``kl/mean``;
    - when the task has references: ``eval/bleu`` (0-100) and ``eval/rouge1/2/L`` (0-1).
    """
    n = len(prompts)
    if len(responses) != n:
        raise ValueError(f"evaluate_responses: {n} prompts but {len(responses)} responses")
    if n == 0:
        raise ValueError("evaluate_responses: no samples to evaluate")
    out: dict[str, float] = {"eval/distinct_1": metrics.distinct_n(responses, 1),
                             "eval/distinct_2": metrics.distinct_n(responses, 2),
                             **metrics.length_stats(responses).to_dict()}
    gold = task.gold_reward(prompts, responses)
    if gold is not None:
        out["eval/gold_reward"] = float(np.mean(gold))
        out["eval/gold_reward_std"] = float(np.std(gold))
        out["eval/gold_reward_se"] = float(np.std(gold, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    if baseline_responses is not None and gold is not None:
        if len(baseline_responses) != n:
            raise ValueError(f"evaluate_responses: {n} prompts but {len(baseline_responses)} "
                             "baseline responses")
        base_gold = task.gold_reward(prompts, baseline_responses) or []
        outcomes = metrics.outcomes_from_scores(gold, base_gold, tie_tolerance)
        out.update(metrics.win_rate(outcomes, method=ci_method).to_dict("eval/win_rate"))
    if proxy_scores is not None:
        if len(proxy_scores) != n:
            raise ValueError(f"evaluate_responses: {n} responses but {len(proxy_scores)} proxy scores")
        out["eval/proxy_reward"] = float(np.mean(proxy_scores))
        if gold is not None:
            corr = metrics.reward_correlation(gold, proxy_scores)
            if corr.pearson is not None:
                out["eval/gold_proxy_pearson"] = corr.pearson
            if corr.spearman is not None:
                out["eval/gold_proxy_spearman"] = corr.spearman
    if ensemble_scores is not None:
        if any(len(member) != n for member in ensemble_scores):
            raise ValueError(f"evaluate_responses: every ensemble member needs {n} scores")
        out["eval/disagreement"] = metrics.ensemble_disagreement(ensemble_scores)
    if kl is not None:
        out["eval/kl"] = float(kl["kl/mean"])
    references = task.references(prompts)
    if references is not None:
        out["eval/bleu"] = metrics.bleu(responses, references)
        out.update({f"eval/{k}": v for k, v in metrics.rouge(responses, references).items()})
    return out
