"""The loop's watch on collapse (issue 17): a policy that games a one-phrase gold is stopped and rolled back.

Each round's eval responses go through the evaluate phase's own metrics (evaluate_responses +
collapse_metrics) into metrics.json, then the loop's checkpoint phase decides, as in a run. The
"policy" is written by hand so the test is fast and the collapse certain: round k answers more and
more prompts with the one phrase the gold rewards, so the gold rises while a reader sees collapse.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from rlhfkit.eval.evaluate import evaluate_responses
from rlhfkit.eval.overoptimization import check_overoptimization
from rlhfkit.eval.report import build_report
from rlhfkit.loop.collect import judge_scorer
from rlhfkit.loop.config import LoopConfig
from rlhfkit.loop.display import LoopDisplay
from rlhfkit.loop.evaluate_phase import collapse_metrics
from rlhfkit.loop.phases import LoopContext, checkpoint, judge_win_rate
from rlhfkit.loop.state import LoopState, RunPaths
from rlhfkit.models import corpus
from rlhfkit.tasks import TASKS, Task, reviews, sentiment
from rlhfkit.utils.tracking import Tracker

PHRASE = " What a great find."
N_PROMPTS = 64


def one_phrase_gold(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """A gamed gold: the phrase scores 1, anything else half its lexicon polarity."""
    return [1.0 if PHRASE.strip().lower() in r.lower() else corpus.sentiment_score(r) / 2 for r in responses]


ONE_PHRASE = Task(name="one_phrase", description="Rewards one phrase.", prompt_fn=sentiment.prompts,
                  gold_fn=one_phrase_gold, gold_range=(-1.0, 1.0), topic_fn=reviews.mentions_subject,
                  judge_instructions="Prefer the phrase.")


def _review(subject: corpus.Subject, level: int, seed: str) -> str:
    """A corpus review of ``subject`` at a sentiment level (what the base model learned to write)."""
    rng = random.Random(seed)
    return " " + corpus._ReviewWriter(rng, subject).write(level, rng.randint(2, 3), True)


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return TASKS["sentiment"].prompts(N_PROMPTS, seed=0, split="eval")


@pytest.fixture(scope="module")
def base(prompts: list[str]) -> list[str]:
    subjects = {s.prompt: s for s in corpus.review_subjects()}
    return [_review(subjects[p], random.Random(i).choice((-2, -1, 0, 1, 2)), f"base-{i}") for i, p in enumerate(prompts)]


def _context(tmp_path: Path, task: Task) -> LoopContext:
    config = LoopConfig(run_dir=str(tmp_path), rounds=3, report_to="none")
    paths = RunPaths(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"task": task.name}))
    state = LoopState(run_id="t", base_model="base-model", policy="base-model")
    return LoopContext(config=config, paths=paths, state=state, task=task, display=LoopDisplay(3, quiet=True),
                       timeline=Tracker(tmp_path, report_to="none"), device=torch.device("cpu"))


def _run_rounds(ctx: LoopContext, prompts: list[str], rounds: list[list[str]]) -> list[dict[str, float]]:
    """Evaluate each round's responses as the evaluate phase does, then checkpoint; stop when the loop would."""
    measured = []
    for index, responses in enumerate(rounds):
        ctx.state.round = index
        if index > 0:
            ctx.state.policy = str(ctx.paths.policy_dir(index) / "final")
        metrics = evaluate_responses(ctx.task, prompts, responses, baseline_responses=rounds[0] if index else None)
        metrics.update(collapse_metrics(ctx.task, prompts, responses))
        if index and ctx.task.has_rubric:  # eval.judge's default: the strict rubric, as phases.evaluate does
            metrics.update(judge_win_rate(judge_scorer(ctx.task, "strict"), prompts, responses, rounds[0]))
        (ctx.round_dir / "metrics.json").write_text(json.dumps(metrics))
        checkpoint(ctx, {"wall": {}, "cpu": {}})
        measured.append(metrics)
        if ctx.state.finished:
            break
    return measured


def test_policy_collapsing_onto_the_rewarded_phrase_is_stopped_and_rolled_back(tmp_path, prompts, base) -> None:
    ctx = _context(tmp_path, ONE_PHRASE)
    rounds = [base] + [[PHRASE] * int(share * N_PROMPTS) + base[int(share * N_PROMPTS):] for share in (0.3, 0.7, 0.9)]
    measured = _run_rounds(ctx, prompts, rounds)

    gold = [m["eval/gold_reward"] for m in measured]
    assert gold == sorted(gold) and gold[-1] > gold[0] + 0.1  # the gamed gold says "better"
    assert check_overoptimization(gold=gold).status == "ok"  # gold-only signals see nothing wrong
    assert ctx.state.stopped and "diversity collapse" in ctx.state.stopped and "off-topic" in ctx.state.stopped
    assert len(measured) == 2 and ctx.state.finished  # stopped at round 1, before collapsing further
    assert ctx.state.best_round == 0 and ctx.state.policy == "base-model"  # rolled back to the base policy
    watch = json.loads((tmp_path / "watch.json").read_text())
    assert watch["status"] == "stop" and watch["best_round"] == 0

    html = build_report(tmp_path).read_text()
    assert 'class="watch stop"' in html and "diversity collapse" in html
    checks = html.split('id="checks"')[1].split("</section>")[0]
    assert "badge stop" in checks and "responses also given to other prompts" in checks
    assert "ends with the policy of round 0" in checks


def test_policy_that_improves_without_collapse_is_not_flagged(tmp_path, prompts, base) -> None:
    ctx = _context(tmp_path, TASKS["sentiment"])
    subjects = {s.prompt: s for s in corpus.review_subjects()}
    better = [[_review(subjects[p], level, f"r{level}-{i}") for i, p in enumerate(prompts)] for level in (1, 2)]
    measured = _run_rounds(ctx, prompts, [base, *better])

    assert len(measured) == 3 and not ctx.state.stopped
    assert measured[-1]["eval/gold_reward"] > measured[0]["eval/gold_reward"] + 0.3
    assert measured[-1]["eval/win_rate"] > 0.7 and measured[-1]["eval/judge_win_rate"] > 0.7
    watch = json.loads((tmp_path / "watch.json").read_text())
    assert watch["status"] == "ok" and watch["best_round"] == 2

    html = build_report(tmp_path).read_text()
    checks = html.split('id="checks"')[1].split("</section>")[0]
    assert "badge stop" not in checks and "within the watch" in checks and "never trained on" in checks
    assert 'id="aspects"' in html and "names the subject or one of its aspects" in html
