"""``rlhfkit evaluate``: a policy against the base policy on a task's held-out prompts, aspect by aspect."""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer

from rlhfkit.commands.common import fail

HELP = """Compare a policy with the base policy on a task's held-out prompts: the same table as the end of
`rlhfkit demo` (gold, win rates, KL, distinct-2, length) with each gold aspect's mean, base vs policy.

Example: rlhfkit evaluate runs/demo-.../rounds/round-003/policy/final --task sentiment
"""


def evaluate(
    policy: Annotated[str, typer.Argument(help="Policy model: a directory (e.g. a loop round's policy/final), "
                                               "'builtin' or a cached hub id.")],
    base: Annotated[str, typer.Option("--base", help="Base policy: win-rate baseline and KL reference.")] = "builtin",
    task: Annotated[str, typer.Option("--task", help="Task preset or path to a task .py file.")] = "sentiment",
    prompts: Annotated[int, typer.Option("--prompts", min=1, help="Held-out (eval split) prompts.")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the prompts and sampling (the loop's `seed` gives "
                                                     "the loop's eval prompts and samples).")] = 0,
    reward_model: Annotated[Optional[str], typer.Option("--reward-model", help="Also score with this reward "
                                                                              "model (proxy reward).")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", min=1,
                                                          help="Tokens per response (default: the task's).")] = None,
    sampler: Annotated[str, typer.Option("--sampler", help="hf | cached | cached-static.")] = "cached",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, ...")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON instead of a table.")] = False,
) -> None:
    """Evaluate a policy against the base policy and print the base-vs-policy table."""
    from rlhfkit.models.loading import ModelError, resolve_model_path
    from rlhfkit.models.reward_model import RewardModelError
    from rlhfkit.tasks import get_task
    from rlhfkit.tasks.base import TaskError
    from rlhfkit.utils.runtime import configure_threads, pick_device

    configure_threads()
    try:
        the_task = get_task(task)
        rows = _compare(the_task, resolve_model_path(policy), resolve_model_path(base), prompts, seed,
                        reward_model, max_new_tokens or the_task.max_new_tokens, sampler, pick_device(device))
    except (TaskError, ModelError, RewardModelError, FileNotFoundError) as exc:
        fail(str(exc))
        return
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        _print(rows, f"rlhfkit evaluate · {the_task.name} · {policy} vs {base}")


def _compare(task: Any, policy: str, base: str, n: int, seed: int, reward_model: str | None, max_new_tokens: int,
             sampler: str, device: Any) -> list[dict[str, Any]]:
    """Sample base and policy on the same eval prompts with the same seed; the summary rows of both."""
    from rlhfkit.loop.evaluate_phase import eval_prompts, evaluate_policy
    from rlhfkit.loop.phases import judge_win_rate
    from rlhfkit.loop.summary import summary_rows

    prompts = eval_prompts(task, n, 1, seed)
    common = {"max_new_tokens": max_new_tokens, "seed": seed, "sampler_name": sampler, "device": device}
    base_metrics, base_samples = evaluate_policy(task, base, base, prompts, **common)
    baseline = [s["response"] for s in base_samples]
    policy_metrics, samples = evaluate_policy(task, policy, base, prompts, reward_model=reward_model,
                                              baseline_responses=baseline, **common)
    if task.has_rubric:
        policy_metrics.update(judge_win_rate(task.rubric, prompts, [s["response"] for s in samples], baseline))
    return [{"metric": r["metric"], "base": r["base"], "policy": r["final"]}
            for r in summary_rows(base_metrics, policy_metrics, 0)]


def _print(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column, justify in (("metric", "left"), ("base", "right"), ("policy", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(row["metric"], *("–" if row[k] is None else f"{row[k]:.3f}" for k in ("base", "policy")))
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add evaluate to the CLI."""
    app.command("evaluate", help=HELP)(evaluate)
