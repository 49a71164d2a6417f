"""Feedback campaigns of the loop: open one per round, add annotators, collect answers through the API.

Every step is safe to repeat after a kill. The campaign is found again by its name (unique per
run and round); its tasks are created only if missing; the simulated panel's tokens are kept
in a 0600 file so a restart continues as the same annotators (an assignment served before the
kill is served again to its owner, an acknowledged answer is never asked again). Answers live
in the database, so nothing acknowledged is lost.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.critiques.simulated import AspectCritic
from rlhfkit.feedback.annotators import Decider, make_panel, run_panel
from rlhfkit.feedback.client import FeedbackClient
from rlhfkit.feedback.editors import AspectEditor
from rlhfkit.feedback.rules import PROMPT_MESSAGES, storable_text
from rlhfkit.loop.candidates import Candidate
from rlhfkit.loop.config import FeedbackConfig
from rlhfkit.loop.edit_panel import EditPanelMember
from rlhfkit.loop.selection import Pair
from rlhfkit.loop.server import read_secret_json, write_secret
from rlhfkit.tasks.aspects import context_index
from rlhfkit.tasks.base import Task

MEMBERS_FILE = "annotators.json"
CRITIQUE_SCALE = (1.0, 5.0)
ProgressHook = Callable[[int, int], None]


class CollectionError(RuntimeError):
    """Feedback could not be collected; the message says which campaign and why."""


def campaign_name(run_id: str, round_index: int) -> str:
    """The campaign's name: unique per run and round, so a restart finds it instead of opening another."""
    return f"{run_id} round {round_index}"


def campaign_samples(candidates: Sequence[Candidate], used: Sequence[int], round_index: int,
                     models: Sequence[str] | None) -> list[dict[str, Any]]:
    """The server samples of the candidates ``used``, each with its candidate index in ``meta``."""
    return [{"prompt": storable_text(candidates[i].prompt), "response": storable_text(candidates[i].response),
             "model": models[i] if models is not None else f"policy-r{round_index - 1}", "round": round_index,
             "meta": {"candidate": i, **_turns(candidates[i])}} for i in used]


def _turns(candidate: Candidate) -> dict[str, Any]:
    """Sample meta with a conversational prompt's turns, so the annotation page shows them turn by turn."""
    if not candidate.prompt_messages:
        return {}
    return {PROMPT_MESSAGES: [{k: storable_text(v) for k, v in m.items()} for m in candidate.prompt_messages]}


def open_campaign(admin: FeedbackClient, name: str, candidates: Sequence[Candidate], pairs: Sequence[Pair],
                  config: FeedbackConfig, instructions: str, round_index: int,
                  models: Sequence[str] | None = None, kind: str = "pairwise") -> int:
    """Create (or find) the round's campaign; returns its id.

    ``kind`` pairwise: one task per chosen pair; critique: a rating campaign that accepts critiques,
    one task per candidate of the chosen pairs (the server takes critiques only on single-response tasks);
    edit: an edit campaign with one task per candidate of the chosen pairs.
    Samples carry their candidate index in ``meta`` so tasks can be (re)built from the server's
    sample ids; a campaign found without tasks (killed in between) gets them now. ``models`` labels
    each candidate's policy (default: the policy of the previous round, which wrote them).
    """
    used = sorted({i for p in pairs for i in (p.a, p.b)})
    found = [c for c in admin.campaigns() if c["name"] == name]
    if found:
        campaign_id = int(found[0]["id"])
    else:
        redundancy = 1 if config.source == "judge" else config.redundancy
        options: dict[str, Any] = ({"scale": list(CRITIQUE_SCALE), "allow_critique": True} if kind == "critique"
                                   else {})
        campaign = admin.create_campaign(name, {"critique": "rating", "edit": "edit"}.get(kind, "pairwise"),
                                         samples=campaign_samples(candidates, used, round_index, models),
                                         redundancy=redundancy, gold_rate=0.0, instructions=instructions,
                                         build_tasks=False, **options)
        campaign_id = int(campaign["id"])
    if not admin.tasks(campaign_id):
        by_candidate = {int(s["meta"]["candidate"]): int(s["id"]) for s in admin.samples(campaign_id)}
        missing = sorted(set(used) - set(by_candidate))
        if missing:
            raise CollectionError(f"campaign {name!r} (id {campaign_id}) lacks samples of candidates {missing[:5]}; "
                                  "it was not created by this run")
        groups = [[i] for i in used] if kind in ("critique", "edit") else [[p.a, p.b] for p in pairs]
        admin.create_tasks(campaign_id, [{"sample_ids": [by_candidate[i] for i in group]} for group in groups])
    return campaign_id


@dataclass
class Member:
    """An annotator account the loop drives: its decider and its own API client."""

    decider: Decider
    client: FeedbackClient


def join_members(admin: FeedbackClient, deciders: Sequence[Decider], campaign_id: int, directory: Path) -> list[Member]:
    """Invite each decider once per run (tokens kept in ``directory``/annotators.json) and add it to the campaign."""
    path = directory / MEMBERS_FILE
    saved: dict[str, dict[str, Any]] = read_secret_json(path) or {}
    for decider in deciders:
        if decider.name not in saved:
            created = admin.create_annotator(decider.name, [campaign_id])
            saved[decider.name] = {"id": int(created["id"]), "token": created["token"]}
            write_secret(path, json.dumps(saved, indent=2, sort_keys=True))
    members = []
    for decider in deciders:
        entry = saved[decider.name]
        admin.add_member(campaign_id, entry["id"])
        members.append(Member(decider, admin.with_token(entry["token"])))
    return members


def panel_deciders(task: Task, config: FeedbackConfig, seed: int,
                   context: Sequence[tuple[str, str]] = ()) -> list[Decider]:
    """The simulated panel: hidden utility = the task's gold reward (its aspects, judged in the ``context``
    of the campaign's (prompt, response) pairs), with noise, biases and spammers; with feedback.kind
    critique, honest members also write critiques of the gold aspects they notice (spammers write none);
    with feedback.kind edit, members rewrite responses (:mod:`rlhfkit.loop.edit_panel`)."""
    if not task.has_gold:
        raise CollectionError(f"task {task.name!r} has no gold reward for a simulated panel; "
                              "use feedback.source=judge or humans")
    panel = config.panel
    members = make_panel(task.utility_with(context), panel.size, spammer_fraction=panel.spammers / panel.size,
                         temperature=panel.temperature, position_bias=panel.position_bias,
                         length_bias=panel.length_bias, adversarial=panel.adversarial, seed=seed,
                         critic=panel_critic(task, config, context) if config.kind == "critique" else None,
                         editor=panel_editor(task, config, context) if config.kind == "edit" else None)
    return [EditPanelMember(m) for m in members] if config.kind == "edit" else list(members)


def panel_editor(task: Task, config: FeedbackConfig, context: Sequence[tuple[str, str]] = ()) -> AspectEditor:
    """The rewriter of the simulated panel: fixes the gold aspects it perceives as weak (noise as for critiques)."""
    try:
        editor = AspectEditor.for_task(task, noise=config.panel.critique_noise)
    except ValueError as exc:
        raise CollectionError(f"{exc}; use feedback.kind=pairwise or feedback.source=humans") from None
    editor.context = context_index(context)
    return editor


def panel_critic(task: Task, config: FeedbackConfig, context: Sequence[tuple[str, str]] = ()) -> AspectCritic:
    """The critique writer of the simulated panel: phrases for the task's gold aspects, perceived with noise."""
    if not task.aspects:
        raise CollectionError(f"task {task.name!r} declares no aspects for the simulated panel to critique; "
                              "use feedback.kind=pairwise or feedback.source=humans")
    return AspectCritic(task.aspects, noise=config.panel.critique_noise, context=context_index(context),
                        combine=task.combine)


def judge_scorer(task: Task, scorer: str, device: Any = None) -> Callable[[Sequence[str], Sequence[str]], list[float]]:
    """A scoring function (prompts, responses) -> scores from ``scorer``: "gold" (the task's gold reward),
    a reward-model directory (normalized score), "strict" (the task's strict rubric, never trained on), or a
    ``module:function`` / ``path.py:function`` spec."""
    if scorer == "strict":
        if not task.has_rubric:
            raise CollectionError(f"task {task.name!r} has no strict rubric; declare aspects or rubric_fn")
        return task.rubric
    if scorer == "gold":
        if not task.has_gold:
            raise CollectionError(f"task {task.name!r} has no gold reward; use a reward model directory or "
                                  "module:function as the judge")
        return lambda prompts, responses: task.gold_reward(prompts, responses) or []
    if Path(scorer).is_dir():
        from rlhfkit.loop.scoring import load_scorer

        model = load_scorer(scorer, device=device)
        return lambda prompts, responses: model.score_texts(list(prompts), list(responses), normalized=True).tolist()
    from rlhfkit.rl.rewards import load_function

    function = load_function(scorer)
    return lambda prompts, responses: [float(v) for v in function(list(prompts), list(responses))]


def judge_decider(task: Task, config: FeedbackConfig, seed: int, device: Any = None) -> Decider:
    """An AI judge scoring with the task's gold, a reward model directory, or a function spec."""
    from rlhfkit.feedback.judges import AIJudge

    scorer = config.judge.scorer
    name = {"gold": "ai-judge-gold"}.get(scorer, "ai-judge-rm" if Path(scorer).is_dir() else "ai-judge")
    return AIJudge(judge_scorer(task, scorer, device), name=name, temperature=config.judge.temperature, seed=seed)


def complete_fraction(progress: dict[str, Any]) -> float:
    """Share of the campaign's regular tasks that have all their answers."""
    return progress["complete"] / progress["tasks"] if progress["tasks"] else 1.0


def run_members(admin: FeedbackClient, members: Sequence[Member], campaign_id: int, timeout_s: float,
                on_progress: ProgressHook | None = None, poll_s: float = 0.5,
                sequential: bool = False) -> dict[str, Any]:
    """Let simulated members (or a judge) answer until nothing is left; bounded by ``timeout_s``.

    Members run in a worker thread (one thread each inside it, or taking turns with ``sequential``);
    this thread reports progress and stops them at the deadline. Returns the campaign's final progress.
    """
    stop = threading.Event()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            run_panel([m.client for m in members], [m.decider for m in members], campaign_id, stop=stop,
                      sequential=sequential)
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=work, name="annotators", daemon=True)
    worker.start()
    deadline = time.monotonic() + timeout_s
    while worker.is_alive():
        worker.join(poll_s)
        if on_progress is not None:
            progress = admin.progress(campaign_id)
            on_progress(progress["complete"], progress["tasks"])
        if time.monotonic() > deadline:
            stop.set()
            worker.join(30.0)
            raise CollectionError(f"campaign {campaign_id}: annotators did not finish within {timeout_s:g} s "
                                  "(feedback.wait_timeout_s); answers so far are kept, rerun with --resume")
    if failure:
        raise CollectionError(f"campaign {campaign_id}: an annotator failed: {failure[0]}") from failure[0]
    progress = admin.progress(campaign_id)
    if on_progress is not None:
        on_progress(progress["complete"], progress["tasks"])
    return progress


def wait_for_humans(admin: FeedbackClient, campaign_id: int, quota: float, deadline_s: float, poll_s: float,
                    opened_at: float, on_progress: ProgressHook | None = None,
                    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Poll the campaign until ``quota`` of its tasks is complete or ``deadline_s`` after ``opened_at`` (epoch s)."""
    while True:
        progress = admin.progress(campaign_id)
        if on_progress is not None:
            on_progress(progress["complete"], progress["tasks"])
        if complete_fraction(progress) >= quota or clock() >= opened_at + deadline_s:
            return progress
        sleep(min(poll_s, max(0.0, opened_at + deadline_s - clock())))
