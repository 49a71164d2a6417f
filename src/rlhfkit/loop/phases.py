"""The phases of a round, one small function each: read inputs from disk, write outputs, update the state.

Each phase may be interrupted at any point and run again: outputs are written atomically (or
rebuilt from the feedback database), trainers resume from their checkpoints, and the state is
only marked done by the runner after the phase returns.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from rlhfkit.loop import aggregate, collect, selection
from rlhfkit.loop.candidates import generate_candidates, read_candidates, read_jsonl, write_candidates, write_jsonl
from rlhfkit.loop.config import LoopConfig
from rlhfkit.loop.display import LoopDisplay
from rlhfkit.loop.server import FeedbackServer
from rlhfkit.loop.state import LoopState, RunPaths
from rlhfkit.loop.summary import read_round_metrics, summary_rows, watch_rounds
from rlhfkit.tasks.base import Task
from rlhfkit.utils.checkpoint import atomic_write_json, atomic_write_text
from rlhfkit.utils.tracking import Tracker


@dataclass
class LoopContext:
    """What every phase reads: config, paths, state, task, display, the timeline, the feedback server."""

    config: LoopConfig
    paths: RunPaths
    state: LoopState
    task: Task
    display: LoopDisplay
    timeline: Tracker
    device: torch.device
    server: FeedbackServer | None = None

    @property
    def round(self) -> int:
        """The round in flight."""
        return self.state.round

    @property
    def round_dir(self) -> Path:
        """Its directory (created on first use)."""
        path = self.paths.round_dir(self.round)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def feedback(self) -> FeedbackServer:
        """The feedback server, started on first use (and stopped by the runner)."""
        if self.server is None:
            feedback = self.config.feedback
            seed = self.config.seed if feedback.reproducible and feedback.source != "humans" else None
            self.server = FeedbackServer(feedback, self.paths.feedback_dir, assignment_seed=seed).start()
            self.display.log(f"feedback server at {self.server.url}")
        return self.server

    def max_new_tokens(self) -> int:
        """Response length of candidates and evaluation (the task's unless configured)."""
        return self.config.candidates.max_new_tokens or self.task.max_new_tokens


def _load_policy(ctx: LoopContext) -> tuple[torch.nn.Module, Any]:
    from rlhfkit.models.loading import load_causal_lm, load_tokenizer

    assert ctx.state.policy is not None
    return load_causal_lm(ctx.state.policy, device=ctx.device), load_tokenizer(ctx.state.policy)


def generate(ctx: LoopContext) -> None:
    """k candidates per prompt from the current policy -> candidates.jsonl."""
    from rlhfkit.rl.rollout import SamplingParams, make_sampler

    cfg = ctx.config.candidates
    prompts = ctx.task.prompts(cfg.prompts_per_round, seed=ctx.config.seed * 1009 + ctx.round, split="train")
    model, tokenizer = _load_policy(ctx)
    total = len(prompts) * cfg.per_prompt
    ctx.display.phase(f"round {ctx.round} · generate", total)
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        ctx.display.update(done[0])

    generator = torch.Generator(device=ctx.device).manual_seed(ctx.config.seed * 7919 + ctx.round)
    params = SamplingParams(max_new_tokens=ctx.max_new_tokens(), temperature=cfg.temperature)
    candidates = generate_candidates(model, tokenizer, make_sampler(ctx.config.sampler), prompts, cfg.per_prompt,
                                     params, generator, on_batch=advance)
    write_candidates(ctx.paths.candidates(ctx.round), candidates)
    ctx.display.log(f"round {ctx.round}: {len(candidates)} candidates for {len(prompts)} prompts")


def select(ctx: LoopContext) -> None:
    """Choose the comparisons (random, or where the reward-model heads disagree most) -> comparisons.json."""
    cfg = ctx.config.selection
    candidates = read_candidates(ctx.paths.candidates(ctx.round))
    pairs = selection.candidate_pairs(candidates)
    seed = ctx.config.seed * 31 + ctx.round
    ctx.display.phase(f"round {ctx.round} · select", None)
    if cfg.strategy == "active" and ctx.state.reward_model is not None:
        from rlhfkit.loop.scoring import head_scores, load_scorer

        model = load_scorer(ctx.state.reward_model, device=ctx.device)
        scores = head_scores(model, [c.prompt for c in candidates], [c.response for c in candidates])
        chosen = selection.active_pairs(pairs, scores, cfg.comparisons_per_round, cfg.max_per_prompt, seed)
        strategy = "active"
    else:
        chosen = selection.random_pairs(pairs, cfg.comparisons_per_round, cfg.max_per_prompt, seed)
        strategy = "random"
    if not chosen:
        raise collect.CollectionError(f"round {ctx.round}: no pair of distinct, non-empty candidates to compare")
    selection.write_pairs(ctx.paths.comparisons(ctx.round), chosen, strategy)
    ctx.display.log(f"round {ctx.round}: {len(chosen)} comparisons chosen ({strategy}) out of {len(pairs)} pairs")


def _deciders(ctx: LoopContext, context: list[tuple[str, str]] | None = None) -> list[Any]:
    source = ctx.config.feedback.source
    if source == "panel":
        return collect.panel_deciders(ctx.task, ctx.config.feedback, ctx.config.seed, context or [])
    if source == "judge":
        return [collect.judge_decider(ctx.task, ctx.config.feedback, ctx.config.seed, device=ctx.device)]
    return []


def open_campaign(ctx: LoopContext) -> None:
    """Open (or find again) the round's campaign with one task per comparison, and add its annotators."""
    candidates = read_candidates(ctx.paths.candidates(ctx.round))
    _, pairs = selection.read_pairs(ctx.paths.comparisons(ctx.round))
    ctx.display.phase(f"round {ctx.round} · open campaign", None)
    server = ctx.feedback()
    instructions = ctx.config.feedback.instructions or ctx.task.judge_instructions
    with server.admin() as admin:
        campaign_id = collect.open_campaign(admin, collect.campaign_name(ctx.state.run_id, ctx.round), candidates,
                                            pairs, ctx.config.feedback, instructions, ctx.round,
                                            kind=ctx.config.feedback.kind)
        add_annotators(ctx, admin, campaign_id)
    if campaign_id not in ctx.state.campaign_ids:
        ctx.state.campaign_ids.append(campaign_id)
    if ctx.config.feedback.kind in ("critique", "edit"):
        what = "rate and critique" if ctx.config.feedback.kind == "critique" else "edit"
        size = f"{len({i for p in pairs for i in (p.a, p.b)})} responses to {what}"
    else:
        size = f"{len(pairs)} comparisons"
    ctx.display.log(f"round {ctx.round}: campaign {campaign_id} open with {size} at {server.url}")


def add_annotators(ctx: LoopContext, admin: Any, campaign_id: int) -> None:
    """The simulated panel or judge (invited once per run), or the configured human annotators."""
    deciders = _deciders(ctx)
    if deciders:
        collect.join_members(admin, deciders, campaign_id, ctx.paths.feedback_dir)
    else:
        _add_humans(admin, campaign_id, ctx.config.feedback.humans.annotators)


def _add_humans(admin: Any, campaign_id: int, names: list[str]) -> None:
    existing = {a["name"]: int(a["id"]) for a in admin.annotators()}
    missing = [n for n in names if n not in existing]
    if missing:
        raise collect.CollectionError(f"feedback.humans.annotators: no annotator named {missing} on the server; "
                                      "create them with `rlhfkit campaign invite`")
    for name in names:
        admin.add_member(campaign_id, existing[name])


def collect_feedback(ctx: LoopContext) -> None:
    """Wait for answers: the simulated panel or judge answers through the API; humans until quota/deadline."""
    cfg = ctx.config.feedback
    campaign_id = ctx.state.campaign_ids[-1]
    ctx.display.phase(f"round {ctx.round} · collect ({cfg.source})", None)

    unit = "tasks" if cfg.kind in ("critique", "edit") else "comparisons"

    def show(complete: int, total: int) -> None:
        ctx.display.update(complete, total, info=f"{unit} complete")

    started = time.perf_counter()
    progress = collect_answers(ctx, campaign_id, show)
    ctx.display.log(f"round {ctx.round}: {progress['annotations']} answers, {progress['complete']}/{progress['tasks']} "
                    f"{unit} complete ({time.perf_counter() - started:.1f} s)")


def collect_answers(ctx: LoopContext, campaign_id: int, show: Any) -> dict[str, Any]:
    """Answers for one campaign (panel/judge through the API, or humans until quota/deadline); closes it."""
    cfg = ctx.config.feedback
    server = ctx.feedback()
    with server.admin() as admin:
        campaign = admin.campaign(campaign_id)
        if campaign["status"] == "open" and cfg.source in ("panel", "judge"):
            seen = ([(str(s["prompt"]), str(s["response"])) for s in admin.samples(campaign_id)]
                    if cfg.source == "panel" else [])
            members = collect.join_members(admin, _deciders(ctx, seen), campaign_id, ctx.paths.feedback_dir)
            try:
                progress = collect.run_members(admin, members, campaign_id, cfg.wait_timeout_s, on_progress=show,
                                               sequential=cfg.reproducible)
            finally:
                for member in members:
                    member.client.close()
        elif campaign["status"] == "open":
            opened = opened_at(campaign["created_at"])
            ctx.display.log(f"waiting for annotators at {server.url} (campaign {campaign_id}): until "
                            f"{cfg.humans.quota:.0%} complete or {cfg.humans.deadline_s:g} s after opening")
            progress = collect.wait_for_humans(admin, campaign_id, cfg.humans.quota, cfg.humans.deadline_s,
                                               cfg.humans.poll_s, opened, on_progress=show)
        else:
            progress = admin.progress(campaign_id)
        admin.close_campaign(campaign_id)
    return progress


def opened_at(created_at: str) -> float:
    """Epoch seconds of a campaign's ``created_at``; a naive time (SQLite drops the zone) is UTC, the store's clock."""
    moment = datetime.fromisoformat(created_at)
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def aggregate_feedback(ctx: LoopContext) -> None:
    """Every campaign's answers so far -> weighted records (feedback.jsonl) and annotator reliability."""
    ctx.display.phase(f"round {ctx.round} · aggregate", None)
    rows = campaign_rows(ctx)
    cfg = ctx.config.feedback
    records, extra = feedback_records(ctx, rows)
    if not records and rows:
        raise collect.CollectionError(f"round {ctx.round}: none of the {len(rows)} answers in campaigns "
                                      f"{ctx.state.campaign_ids} made a training record (see the lines above; "
                                      "with feedback.kind=critique, e.g. every critique encoded with confidence 0)")
    if not records:
        raise collect.CollectionError(f"round {ctx.round}: no answers yet in campaigns {ctx.state.campaign_ids}; "
                                      "nothing to train the reward model on")
    gold = ctx.task.gold_reward if ctx.task.has_gold and cfg.source == "panel" else None
    reliability = aggregate.annotator_reliability(rows, gold)
    write_jsonl(ctx.paths.feedback_records(ctx.round), records)
    atomic_write_json(ctx.round_dir / "annotator_reliability.json", reliability)
    this_round = [r for r in rows if r["samples"] and r["samples"][0].get("round") == ctx.round]
    atomic_write_json(ctx.round_dir / "feedback_stats.json",
                      {"feedback/answers_total": len(rows), "feedback/answers_round": len(this_round),
                       "feedback/records": len(records), **extra})
    spread = ", ".join(f"{e['annotator']} {e['reliability']:.2f}" for e in reliability)
    what = {"critique": "critique rating records (ratings dropped)",
            "edit": f"preference records from edits ({cfg.edit_pairs})"}.get(cfg.kind, "preference records")
    ctx.display.log(f"round {ctx.round}: {len(records)} {what} from {len(rows)} answers"
                    + (f"; reliability: {spread}" if spread else ""))


def campaign_rows(ctx: LoopContext) -> list[dict[str, Any]]:
    """Every answer of the run's feedback campaigns so far (the reward model's data)."""
    rows: list[dict[str, Any]] = []
    with ctx.feedback().admin() as admin:
        for campaign_id in ctx.state.campaign_ids:
            rows.extend(admin.annotations(campaign_id))
    return rows


def feedback_records(ctx: LoopContext, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Training records from answer rows, and extra stats: encoded critiques (critique mode; pairwise answers of
    adversarial rounds are added as pairs), edit pairs as ``feedback.edit_pairs`` says (edit mode), else aggregated
    pairs."""
    cfg = ctx.config.feedback
    if cfg.kind == "edit":
        from rlhfkit.loop.edit_records import edit_feedback_records

        return edit_feedback_records(rows, cfg.edit_pairs, cfg.aggregate, cfg.edit_rank_gap)
    if cfg.kind != "critique":
        return aggregate.aggregate_feedback(rows, cfg.aggregate), {}
    try:
        encoded = aggregate.critique_records(rows, cfg.critique_encoder, cfg.critique_min_confidence, ctx.config.seed)
    except ValueError as exc:
        raise collect.CollectionError(f"round {ctx.round}: {exc}") from exc
    for line in encoded.lines:
        ctx.display.log(line)
    pairs = aggregate.aggregate_feedback([r for r in rows if r.get("kind") == "pairwise"], cfg.aggregate)
    return encoded.records + pairs, encoded.stats


def train_reward(ctx: LoopContext) -> None:
    """Update the reward model on all feedback so far -> reward/model, rm_eval.json."""
    from rlhfkit.loop.reward_phase import expected_steps, gold_pair_accuracy, reward_train_config, train_round_reward

    data = ctx.paths.feedback_records(ctx.round)
    previous = ctx.state.reward_model
    warm = ctx.config.reward.warm_start and previous is not None
    start_from = previous if warm else ctx.state.base_model
    assert start_from is not None
    train_config = reward_train_config(ctx.config, data, ctx.paths.reward_dir(ctx.round), start_from, ctx.round)
    total = expected_steps(train_config, len(read_jsonl(data)))
    ctx.display.phase(f"round {ctx.round} · reward model", total)
    model_dir, result = train_round_reward(train_config, on_step=lambda step: ctx.display.update(step, total))
    rm_eval: dict[str, Any] = {k: v for k, v in result.items() if v is not None}
    gold = gold_pair_accuracy(model_dir, ctx.task, read_candidates(ctx.paths.candidates(ctx.round)), ctx.device)
    if gold is not None:
        rm_eval["gold_accuracy"], rm_eval["gold_pairs"] = gold
    atomic_write_json(ctx.round_dir / "rm_eval.json", rm_eval)
    ctx.state.reward_model = str(model_dir)
    if "accuracy" not in rm_eval and "rating_spearman" in rm_eval:
        held_out = f"held-out rating Spearman {rm_eval['rating_spearman']:.3f}"
    else:
        held_out = "held-out accuracy " + (f"{rm_eval['accuracy']:.3f}" if "accuracy" in rm_eval else "n/a")
    agreement = f"{rm_eval['gold_accuracy']:.3f}" if "gold_accuracy" in rm_eval else "n/a"
    ctx.display.log(f"round {ctx.round}: reward model {held_out}, gold agreement {agreement}")


def optimize(ctx: LoopContext) -> None:
    """Optimize the policy against the new reward model (PPO by default) -> policy/final."""
    from rlhfkit.loop.policy_phase import optimize_policy, trainer_config

    assert ctx.state.policy is not None and ctx.state.base_model is not None and ctx.state.reward_model is not None
    output = ctx.paths.policy_dir(ctx.round)
    feedback = ctx.paths.feedback_records(ctx.round)
    steps = trainer_config(ctx.config, ctx.state.policy, output, Path(ctx.state.reward_model), ctx.round,
                           feedback).run.steps
    ctx.display.phase(f"round {ctx.round} · policy ({ctx.config.policy.algorithm})", steps)
    prompts = ctx.task.prompts(ctx.config.policy.prompts, seed=ctx.config.seed, split="train")

    def show(step: int, metrics: Any) -> None:
        ctx.display.update(step, steps, info=_step_info(metrics))

    final, done = optimize_policy(ctx.config, ctx.task, ctx.state.base_model, ctx.state.policy,
                                  Path(ctx.state.reward_model), prompts, output, ctx.round, ctx.timeline,
                                  ctx.state.global_step, on_step=show, feedback=feedback)
    ctx.state.policy = str(final)
    ctx.state.global_step += done


def _step_info(metrics: Any) -> str:
    """The progress line of a policy step: reward and KL (online algorithms) or loss and accuracy (DPO)."""
    if "loss/dpo" in metrics:
        return f"loss {metrics['loss/dpo']:.3f} accuracy {metrics.get('rewards/accuracy', float('nan')):.2f}"
    gold = metrics.get("reward/gold_mean")
    info = f"reward {metrics.get('reward/mean', float('nan')):.3f} kl {metrics.get('kl/mean', float('nan')):.2f}"
    return info + (f" gold {gold:.3f}" if gold is not None else "")


def _baseline_responses(ctx: LoopContext) -> list[str] | None:
    path = ctx.paths.round_dir(0) / "samples_after.jsonl"
    return [row["response"] for row in read_jsonl(path)] if ctx.round > 0 and path.is_file() else None


def evaluate(ctx: LoopContext) -> None:
    """Evaluate the policy on the held-out prompts -> metrics.json, samples_after.jsonl (+ samples_before)."""
    from rlhfkit.loop.evaluate_phase import eval_prompts, evaluate_policy

    assert ctx.state.policy is not None and ctx.state.base_model is not None
    cfg = ctx.config.eval
    prompts = eval_prompts(ctx.task, cfg.prompts, cfg.samples_per_prompt, ctx.config.seed)
    ctx.display.phase(f"round {ctx.round} · evaluate", None)
    metrics, samples = evaluate_policy(ctx.task, ctx.state.policy, ctx.state.base_model, prompts,
                                       max_new_tokens=ctx.max_new_tokens(), seed=ctx.config.seed,
                                       sampler_name=ctx.config.sampler, device=ctx.device,
                                       reward_model=ctx.state.reward_model if ctx.round > 0 else None,
                                       baseline_responses=_baseline_responses(ctx))
    for name in ("rm_eval.json", "feedback_stats.json", "sft_stats.json", "adversarial_stats.json"):
        path = ctx.round_dir / name
        if path.is_file():
            extra = json.loads(path.read_text(encoding="utf-8"))
            if name == "rm_eval.json":
                extra = {f"rm/{k}": v for k, v in extra.items()}
            metrics.update({k: float(v) for k, v in extra.items() if isinstance(v, (int, float))})
    baseline = _baseline_responses(ctx)
    if cfg.judge is not None and baseline is not None and (cfg.judge != "strict" or ctx.task.has_rubric):
        metrics.update(judge_win_rate(collect.judge_scorer(ctx.task, cfg.judge, ctx.device), prompts,
                                      [s["response"] for s in samples], baseline))
    write_jsonl(ctx.round_dir / "samples_after.jsonl", samples)
    previous = ctx.paths.round_dir(ctx.round - 1) / "samples_after.jsonl"
    if ctx.round > 0 and previous.is_file():
        shutil.copyfile(previous, ctx.round_dir / "samples_before.jsonl")
    atomic_write_json(ctx.round_dir / "metrics.json", metrics)
    parts = [f"{label} {metrics[key]:{spec}}" for label, key, spec in
             (("gold", "eval/gold_reward", ".3f"), ("KL", "eval/kl", ".2f"), ("win rate vs base", "eval/win_rate", ".2f"))
             if key in metrics]
    ctx.display.log(f"round {ctx.round}: " + "  ".join(parts))


def judge_win_rate(scorer: Any, prompts: list[str], responses: list[str], baseline: list[str]) -> dict[str, float]:
    """``eval/judge_win_rate`` (+ interval) of ``responses`` over ``baseline`` by a scoring function."""
    from rlhfkit.eval.metrics import outcomes_from_scores, win_rate

    policy_scores, base_scores = scorer(prompts, responses), scorer(prompts, baseline)
    return win_rate(outcomes_from_scores(policy_scores, base_scores)).to_dict("eval/judge_win_rate")


def compare_with_base(ctx: LoopContext) -> None:
    """eval.ask_annotators: the round's annotators compare the policy's eval answers with the base policy's."""
    from rlhfkit.eval.metrics import win_rate
    from rlhfkit.loop import compare

    if not ctx.config.eval.ask_annotators:
        return
    policy_rows = read_jsonl(ctx.round_dir / "samples_after.jsonl")
    baseline = _baseline_responses(ctx)
    if baseline is None:
        raise collect.CollectionError(f"round {ctx.round}: no base-policy samples (round 0) to compare with")
    prompts = [row["prompt"] for row in policy_rows]
    candidates, models, pairs, settled = compare.comparison_candidates(
        prompts, [row["response"] for row in policy_rows], baseline)
    ctx.display.phase(f"round {ctx.round} · compare with base ({ctx.config.feedback.source})", None)
    outcomes = list(settled.values())
    if pairs:
        instructions = ctx.config.feedback.instructions or ctx.task.judge_instructions
        with ctx.feedback().admin() as admin:
            campaign_id = collect.open_campaign(admin, compare.comparison_name(ctx.state.run_id, ctx.round),
                                                candidates, pairs, ctx.config.feedback, instructions, ctx.round,
                                                models=models)
            add_annotators(ctx, admin, campaign_id)
        collect_answers(ctx, campaign_id,
                        lambda done, total: ctx.display.update(done, total, info="comparisons complete"))
        with ctx.feedback().admin() as admin:
            outcomes += compare.majority_outcomes(admin.annotations(campaign_id))
    if not outcomes:
        raise collect.CollectionError(f"round {ctx.round}: no answers comparing the policy with the base policy")
    metrics = read_round_metrics(ctx.round_dir)
    metrics.update(win_rate(outcomes).to_dict("eval/feedback_win_rate"))
    atomic_write_json(ctx.round_dir / "metrics.json", metrics)
    ctx.display.log(f"round {ctx.round}: annotators prefer the policy over the base policy in "
                    f"{metrics['eval/feedback_win_rate']:.2f} of {len(outcomes)} comparisons")


def checkpoint(ctx: LoopContext, timings: dict[str, dict[str, float]]) -> None:
    """Close the round: timings into metrics.json, timeline record, watch decision, summary; maybe stop.

    Wall seconds per phase go in as ``time/<phase>_s``, CPU seconds of the process (all threads)
    as ``cpu/<phase>_s``: on a shared machine their ratio shows how much of a core the loop got.
    """
    metrics = read_round_metrics(ctx.round_dir)
    metrics.update({f"time/{phase}_s": seconds for phase, seconds in timings["wall"].items()})
    metrics.update({f"cpu/{phase}_s": seconds for phase, seconds in timings["cpu"].items()})
    atomic_write_json(ctx.round_dir / "metrics.json", metrics)
    ctx.timeline.log({k: v for k, v in metrics.items() if k.startswith(("eval/", "rm/", "length/"))},
                     step=ctx.state.global_step)
    rounds = [(i, read_round_metrics(ctx.paths.round_dir(i))) for i in range(ctx.round + 1)]
    decision = watch_rounds(rounds, ctx.config.eval.watch)
    atomic_write_json(ctx.paths.root / "watch.json", decision.to_dict())
    ctx.state.best_round = decision.best_round
    action = ctx.config.eval.on_overoptimization
    if decision.status == "warn" or (decision.status == "stop" and action == "warn"):
        ctx.display.log(f"[yellow]over-optimization watch: {decision.reason}[/]")
    elif decision.status == "stop":
        ctx.display.log(f"[red]over-optimization watch: {decision.reason}[/]")
        ctx.state.stopped = decision.reason
        if action == "rollback" and decision.best_round is not None:
            ctx.state.policy = policy_of_round(ctx.paths, ctx.state, decision.best_round)
            ctx.display.log(f"rolled back to the policy of round {decision.best_round}")
    if ctx.state.stopped or ctx.round >= ctx.config.rounds:
        ctx.state.finished = True
    write_summary(ctx.paths, ctx.state)
    if not ctx.config.keep_checkpoints and ctx.round > 0:
        drop_resume_checkpoints(ctx.paths, ctx.round)


def drop_resume_checkpoints(paths: RunPaths, index: int) -> None:
    """Delete a finished round's trainer checkpoints (needed only to resume its phases); models stay."""
    for folder in [*paths.policy_dir(index).glob("checkpoint-*"), *paths.round_dir(index).glob("sft/checkpoint-*"),
                   paths.round_dir(index) / "reward_adversarial" / "checkpoints",
                   *paths.round_dir(index).glob("reward_adversarial/members/*/checkpoints"),
                   paths.reward_dir(index) / "checkpoints",
                   *paths.reward_dir(index).glob("members/*/checkpoints")]:
        shutil.rmtree(folder, ignore_errors=True)


def policy_of_round(paths: RunPaths, state: LoopState, index: int) -> str:
    """The policy evaluated at the end of round ``index`` (round 0: the base model)."""
    if index == 0:
        assert state.base_model is not None
        return state.base_model
    return str(paths.policy_dir(index) / "final")


def final_round(paths: RunPaths, state: LoopState) -> int:
    """The round whose policy the run ends with (the best round after a rollback)."""
    if state.stopped and state.best_round is not None and state.policy == policy_of_round(paths, state, state.best_round):
        return state.best_round
    return state.round


def write_summary(paths: RunPaths, state: LoopState) -> list[dict[str, Any]]:
    """summary.json: base policy (round 0) vs the policy the run ends with."""
    last = final_round(paths, state)
    rows = summary_rows(read_round_metrics(paths.round_dir(0)), read_round_metrics(paths.round_dir(last)), last)
    atomic_write_text(paths.root / "summary.json", json.dumps(rows, indent=2))
    return rows
