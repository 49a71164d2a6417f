"""Store operations used by the web app, the JSON API and the commands (keyword-only functions).

Every write function commits before it returns, so a caller that answers 2xx afterwards only ever
acknowledges durable data. Visibility checks live here too: ``get_campaign_for`` and
``get_assignment_for`` raise NotFoundError for objects the caller may not see.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import combinations
from typing import Any, Literal, Optional, Sequence

from sqlalchemy import Text, and_, cast, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from rlhfkit.feedback.models import (TASK_KINDS, AdminToken, Annotation, Annotator, Assignment, Campaign,
                                     CampaignMember, Prompt, Sample, Task, TaskItem, utcnow)
from rlhfkit.feedback.errors import ConflictError, CrudError, InvalidError, NotFoundError, TooLargeError
from rlhfkit.feedback.rules import (MAX_CRITIQUE, PAIR_CHOICES, check_id, check_int, check_json, check_scale,
                                    PROMPT_MESSAGES, check_submission, check_text, is_number, prompt_turns,
                                    resolve_answer)
from rlhfkit.feedback.stored_json import load_stored
from rlhfkit.feedback.security import hash_token, new_token, token_matches

__all__ = ["ConflictError", "CrudError", "InvalidError", "NotFoundError", "TooLargeError", "MAX_CRITIQUE",
           "PAIR_CHOICES", "resolve_answer"]

Role = Literal["admin", "annotator"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin, or one annotator."""

    role: Role
    annotator_id: Optional[int] = None
    name: Optional[str] = None
    admin_token_id: Optional[int] = field(default=None, compare=False)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class SampleSpec:
    """A response to add to a campaign."""

    prompt: str
    response: str
    model: Optional[str] = None
    round: Optional[int] = None
    meta: Optional[dict[str, Any]] = None


@dataclass(frozen=True)
class TaskSpec:
    """A task over existing samples; ``gold`` makes it a honeypot with a known answer."""

    sample_ids: Sequence[int]
    kind: Optional[str] = None
    scale: Optional[tuple[float, float]] = None
    gold: Optional[dict[str, Any]] = None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (numbers must be finite)")


def parse_samples_jsonl(text: str, *, source: str) -> list[SampleSpec]:
    """Samples from JSON lines ``{"prompt", "response" (or "completion"), "model"?, "round"?, ...}``.

    A conversational prompt (``prompt`` or ``messages``: a list of ``{role, content}``) is stored as its
    plain text with its turns in ``meta["prompt_messages"]``.

    Other keys are kept in ``meta``. Errors name the source, line and field.
    """
    specs = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise InvalidError(f"{source}:{n}: not valid JSON ({exc.msg})") from None
        except ValueError as exc:
            raise InvalidError(f"{source}:{n}: {exc}") from None
        if not isinstance(obj, dict):
            raise InvalidError(f"{source}:{n}: expected a JSON object")
        obj = dict(obj)
        keys = sorted(obj)
        response = obj.pop("response", obj.pop("completion", None))
        raw_prompt = obj.pop("prompt") if "prompt" in obj else obj.pop("messages", None)
        prompt, turns = prompt_turns(raw_prompt, f"{source}:{n}: field 'prompt'")
        if turns is not None:
            obj[PROMPT_MESSAGES] = turns
        for name, value in (("prompt", prompt), ("response", response)):
            if value is None:
                hint = (" (one sample per line: write each of 'responses' as its own line)"
                        if name == "response" and "responses" in keys else "")
                raise InvalidError(f"{source}:{n}: missing field {name!r}; the record has {keys}{hint}")
            if not isinstance(value, str):
                raise InvalidError(f"{source}:{n}: field {name!r} must be a string, got {type(value).__name__}")
        model, round_ = obj.pop("model", None), obj.pop("round", None)
        if model is not None and not isinstance(model, str):
            raise InvalidError(f"{source}:{n}: field 'model' must be a string")
        if round_ is not None and (not isinstance(round_, int) or isinstance(round_, bool)):
            raise InvalidError(f"{source}:{n}: field 'round' must be an integer")
        meta = obj.pop("meta", {})
        if not isinstance(meta, dict):
            raise InvalidError(f"{source}:{n}: field 'meta' must be an object")
        specs.append(SampleSpec(prompt=prompt, response=response, model=model, round=round_, meta={**obj, **meta}))
    if not specs:
        raise InvalidError(f"{source}: no samples found")
    return specs


# ---------------------------------------------------------------- tokens and principals

def ensure_admin_token(session: Session, *, token: Optional[str] = None, keep_others: bool = False) -> Optional[str]:
    """Install ``token`` as the admin token, or create one if no valid one exists; returns a new plain token.

    Installing a chosen token revokes every other admin token (and ends their web sessions) unless
    ``keep_others``: restarting with a new ``--admin-token`` replaces the old one instead of adding to it.
    """
    now = utcnow()
    if token is not None:
        check_text(token, "admin token")
        if len(token) < 16:
            raise InvalidError("admin token: use at least 16 characters")
        digest = hash_token(token)
        row = session.scalar(select(AdminToken).where(AdminToken.token_hash == digest))
        if row is None:
            row = AdminToken(token_hash=digest, label="configured")
            session.add(row)
        elif row.revoked_at is not None:
            raise InvalidError(f"admin token: this token (id {row.id}) was revoked; choose a new one")
        session.flush()
        if not keep_others:
            from rlhfkit.feedback import access

            for other in session.scalars(select(AdminToken).where(AdminToken.id != row.id, AdminToken.revoked_at.is_(None))):
                access.revoke_admin_token(session, token_id=other.id, commit=False)
        session.commit()
        return None
    if session.scalar(select(func.count()).select_from(AdminToken).where(_admin_token_valid(now))):
        return None
    plain = new_token("adm")
    session.add(AdminToken(token_hash=hash_token(plain), label="generated"))
    session.commit()
    return plain


def _admin_token_valid(now: Any) -> Any:
    """SQL condition: an admin token that is neither revoked nor expired at ``now``."""
    return and_(AdminToken.revoked_at.is_(None), or_(AdminToken.expires_at.is_(None), AdminToken.expires_at > now))


def authenticate(session: Session, *, token: str) -> Optional[Principal]:
    """The principal owning ``token`` (valid admin tokens first, then active unexpired annotators), or None."""
    now = utcnow()
    digest = hash_token(token)
    admin = session.execute(select(AdminToken.id, AdminToken.token_hash)
                            .where(AdminToken.token_hash == digest, _admin_token_valid(now))).first()
    if admin is not None and token_matches(token, admin[1]):
        return Principal(role="admin", admin_token_id=admin[0])
    ann = session.scalar(select(Annotator).where(
        Annotator.token_hash == digest, Annotator.active.is_(True),
        or_(Annotator.token_expires_at.is_(None), Annotator.token_expires_at > now)))
    if ann is not None and token_matches(token, ann.token_hash):
        return Principal(role="annotator", annotator_id=ann.id, name=ann.name)
    return None


def principal_for_annotator(session: Session, *, annotator_id: int) -> Optional[Principal]:
    """Re-load an annotator principal from a session cookie (None if removed or deactivated)."""
    ann = session.get(Annotator, annotator_id)
    if ann is None or not ann.active or (ann.token_expires_at is not None and ann.token_expires_at <= utcnow()):
        return None
    return Principal(role="annotator", annotator_id=ann.id, name=ann.name)


# ---------------------------------------------------------------- campaigns, samples, tasks

def _check_kind(kind: str, field: str) -> str:
    if kind not in TASK_KINDS:
        raise InvalidError(f"{field}: unknown task kind {kind!r}; use one of {', '.join(TASK_KINDS)}")
    return kind


def _check_scale(scale: Sequence[float], field: str) -> tuple[float, float]:
    return check_scale(scale, field)


def create_campaign(session: Session, *, name: str, kind: str, redundancy: int = 1, scale: Sequence[float] = (1, 5),
                    rank_k: int = 3, allow_critique: bool = False, instructions: str = "", gold_rate: float = 0.1,
                    samples: Sequence[SampleSpec] = (), build_tasks: bool = True) -> Campaign:
    """Create a campaign, add its samples and (by default) build its tasks; commits."""
    if not check_text(name, "name", max_length=200).strip():
        raise InvalidError("name: must not be empty")
    check_text(instructions, "instructions", max_length=20_000)
    _check_kind(kind, "kind")
    lo, hi = _check_scale(scale, "scale")
    check_int(redundancy, "redundancy", 1, 100)
    check_int(rank_k, "rank_k", 2, 64)
    if not is_number(gold_rate) or not 0.0 <= gold_rate <= 1.0:
        raise InvalidError(f"gold_rate: must be in [0, 1], got {gold_rate}")
    campaign = Campaign(name=name.strip(), kind=kind, redundancy=redundancy, scale_lo=lo, scale_hi=hi, rank_k=rank_k,
                        allow_critique=allow_critique, instructions=instructions, gold_rate=gold_rate, status="open")
    session.add(campaign)
    session.flush()
    added = _add_samples(session, campaign=campaign, samples=samples)
    if build_tasks:
        _build_tasks(session, campaign=campaign, samples=added)
    session.commit()
    return campaign


def _prompt_for(session: Session, campaign: Campaign, text: str, cache: dict[str, Prompt]) -> Prompt:
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if digest in cache:
        return cache[digest]
    prompt = session.scalar(select(Prompt).where(Prompt.campaign_id == campaign.id, Prompt.text_sha256 == digest))
    if prompt is None:
        prompt = Prompt(campaign_id=campaign.id, text=text, text_sha256=digest)
        session.add(prompt)
        session.flush()
    cache[digest] = prompt
    return prompt


def _add_samples(session: Session, *, campaign: Campaign, samples: Sequence[SampleSpec]) -> list[Sample]:
    cache: dict[str, Prompt] = {}
    out = []
    for i, spec in enumerate(samples):
        check_text(spec.prompt, f"samples[{i}].prompt", max_length=200_000)
        check_text(spec.response, f"samples[{i}].response", max_length=200_000)
        if spec.model is not None:
            check_text(spec.model, f"samples[{i}].model", max_length=200)
        if spec.round is not None:
            check_int(spec.round, f"samples[{i}].round")
        check_json(spec.meta or {}, f"samples[{i}].meta")
        prompt = _prompt_for(session, campaign, spec.prompt, cache)
        sample = Sample(campaign_id=campaign.id, prompt_id=prompt.id, response=spec.response, model=spec.model,
                        round=spec.round, meta=dict(spec.meta or {}))
        session.add(sample)
        out.append(sample)
    session.flush()
    return out


def add_samples(session: Session, *, campaign: Campaign, samples: Sequence[SampleSpec]) -> list[Sample]:
    """Add samples (prompts de-duplicated by text) to a campaign; commits."""
    out = _add_samples(session, campaign=campaign, samples=samples)
    session.commit()
    return out


def _build_tasks(session: Session, *, campaign: Campaign, samples: Sequence[Sample]) -> list[Task]:
    by_prompt: dict[int, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_prompt[sample.prompt_id].append(sample)
    groups: list[list[Sample]] = []
    for group in by_prompt.values():
        if campaign.kind == "pairwise":
            groups.extend([a, b] for a, b in combinations(group, 2))
        elif campaign.kind == "ranking":
            chunks = [group[i:i + campaign.rank_k] for i in range(0, len(group), campaign.rank_k)]
            groups.extend(c for c in chunks if len(c) >= 2)
        else:
            groups.extend([s] for s in group)
    specs = [TaskSpec(sample_ids=[s.id for s in g]) for g in groups]
    return _add_tasks(session, campaign=campaign, tasks=specs)


def _validate_gold(kind: str, gold: dict[str, Any], ids: list[int], scale: tuple[float, float] | None, field: str) -> dict[str, Any]:
    if not isinstance(gold, dict):
        raise InvalidError(f"{field}: gold must be an object")
    if kind == "edit":
        raise InvalidError(f"{field}: edit tasks take no gold answer (a rewrite has no single right text)")
    if kind == "pairwise":
        winner = gold.get("winner")
        if winner != "tie" and winner not in ids:
            raise InvalidError(f"{field}: gold.winner must be one of the task's sample ids {ids} or 'tie'")
        return {"winner": winner}
    if kind == "rating":
        rating, tol = gold.get("rating"), gold.get("tolerance", 0)
        if not is_number(rating) or not is_number(tol) or tol < 0:
            raise InvalidError(f"{field}: gold needs a numeric rating and tolerance >= 0")
        assert scale is not None
        if not scale[0] <= rating <= scale[1]:
            raise InvalidError(f"{field}: gold.rating {rating} outside the scale {list(scale)}")
        return {"rating": float(rating), "tolerance": float(tol)}
    if kind == "ranking":
        order = gold.get("order")
        if not isinstance(order, list) or sorted(order) != sorted(ids):
            raise InvalidError(f"{field}: gold.order must be a permutation of {ids}")
        return {"order": order}
    label = gold.get("label")
    if label not in ("good", "bad"):
        raise InvalidError(f"{field}: gold.label must be 'good' or 'bad'")
    return {"label": label}


def _add_tasks(session: Session, *, campaign: Campaign, tasks: Sequence[TaskSpec]) -> list[Task]:
    out = []
    for i, spec in enumerate(tasks):
        field = f"tasks[{i}]"
        kind = _check_kind(spec.kind or campaign.kind, f"{field}.kind")
        ids = [check_id(x, f"{field}.sample_ids[{j}]") for j, x in enumerate(spec.sample_ids)]
        need = {"pairwise": (2, 2), "ranking": (2, 64), "rating": (1, 1), "binary": (1, 1), "edit": (1, 1)}[kind]
        if not need[0] <= len(ids) <= need[1] or len(set(ids)) != len(ids):
            raise InvalidError(f"{field}.sample_ids: a {kind} task needs {need[0]}..{need[1]} distinct samples, got {ids}")
        found = session.scalars(select(Sample).where(Sample.id.in_(ids), Sample.campaign_id == campaign.id)).all()
        if len(found) != len(ids):
            missing = sorted(set(ids) - {s.id for s in found})
            raise InvalidError(f"{field}.sample_ids: samples {missing} are not in campaign {campaign.id}")
        prompts = {s.prompt_id for s in found}
        if len(prompts) != 1:
            raise InvalidError(f"{field}.sample_ids: samples of one task must share one prompt")
        scale = _check_scale(spec.scale, f"{field}.scale") if spec.scale else (campaign.scale_lo, campaign.scale_hi)
        gold = _validate_gold(kind, check_json(spec.gold, f"{field}.gold"), ids, scale, field) if spec.gold is not None else None
        task = Task(campaign_id=campaign.id, prompt_id=prompts.pop(), kind=kind,
                    scale_lo=scale[0] if kind == "rating" else None, scale_hi=scale[1] if kind == "rating" else None,
                    is_gold=gold is not None, gold=gold,
                    items=[TaskItem(slot=j, sample_id=sid) for j, sid in enumerate(ids)])
        session.add(task)
        out.append(task)
    session.flush()
    return out


def add_tasks(session: Session, *, campaign: Campaign, tasks: Sequence[TaskSpec]) -> list[Task]:
    """Add explicit tasks (optionally gold) over samples of this campaign; commits."""
    out = _add_tasks(session, campaign=campaign, tasks=tasks)
    session.commit()
    return out


def close_campaign(session: Session, *, campaign: Campaign) -> Campaign:
    """Stop serving and accepting answers for a campaign; commits."""
    campaign.status = "closed"
    session.commit()
    return campaign


def get_campaign_for(session: Session, *, campaign_id: int, principal: Principal) -> Campaign:
    """The campaign if the caller may see it (admin, or a member annotator), else NotFoundError."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFoundError(f"campaign {campaign_id} not found")
    if principal.is_admin:
        return campaign
    member = session.get(CampaignMember, (campaign_id, principal.annotator_id))
    if member is None:
        raise NotFoundError(f"campaign {campaign_id} not found")
    return campaign


def list_campaigns(session: Session, *, principal: Principal) -> list[Campaign]:
    """All campaigns for the admin; an annotator's own campaigns otherwise."""
    query = select(Campaign).order_by(Campaign.id)
    if not principal.is_admin:
        query = query.join(CampaignMember).where(CampaignMember.annotator_id == principal.annotator_id)
    return list(session.scalars(query))


def campaign_summary(session: Session, *, campaign: Campaign) -> dict[str, Any]:
    """The campaign as a JSON-ready dict with its sample and task counts."""
    n_samples = session.scalar(select(func.count()).select_from(Sample).where(Sample.campaign_id == campaign.id))
    n_tasks = session.scalar(select(func.count()).select_from(Task).where(Task.campaign_id == campaign.id))
    return {"id": campaign.id, "name": campaign.name, "kind": campaign.kind, "redundancy": campaign.redundancy,
            "scale": [campaign.scale_lo, campaign.scale_hi], "rank_k": campaign.rank_k,
            "allow_critique": campaign.allow_critique, "instructions": campaign.instructions,
            "gold_rate": campaign.gold_rate, "status": campaign.status, "created_at": campaign.created_at.isoformat(),
            "n_samples": n_samples, "n_tasks": n_tasks, "warning": _no_tasks_warning(campaign, n_samples, n_tasks)}


def _no_tasks_warning(campaign: Campaign, n_samples: Optional[int], n_tasks: Optional[int]) -> Optional[str]:
    """Why a campaign with samples has no task (pairwise and ranking need >= 2 samples of one prompt)."""
    if not n_samples or n_tasks:
        return None
    if campaign.kind in ("pairwise", "ranking"):
        return (f"{n_samples} samples but 0 tasks: a {campaign.kind} task needs at least 2 samples of the same prompt "
                "(give each prompt several responses, or add tasks explicitly)")
    return f"{n_samples} samples but 0 tasks (add tasks explicitly)"


def list_samples(session: Session, *, campaign: Campaign) -> list[dict[str, Any]]:
    """Every sample of a campaign with its prompt text."""
    rows = session.execute(select(Sample.id, Sample.prompt_id, Prompt.text, Sample.response, Sample.model, Sample.round,
                                  cast(Sample.meta, Text)).join(Prompt, Prompt.id == Sample.prompt_id)
                           .where(Sample.campaign_id == campaign.id).order_by(Sample.id))
    # meta is read as text and parsed here: a row of an older release may be nested too deep to serialize
    return [{"id": sid, "prompt_id": pid, "prompt": prompt, "response": response, "model": model, "round": rnd,
             "meta": load_stored(meta)} for sid, pid, prompt, response, model, rnd, meta in rows]


def list_tasks(session: Session, *, campaign: Campaign) -> list[dict[str, Any]]:
    """Every task of a campaign with its answer count and completion."""
    counts = dict(session.execute(select(Annotation.task_id, func.count()).where(
        Annotation.campaign_id == campaign.id, Annotation.is_skip.is_(False)).group_by(Annotation.task_id)).all())
    tasks = session.scalars(select(Task).where(Task.campaign_id == campaign.id).options(selectinload(Task.items)).order_by(Task.id))
    return [{"id": t.id, "kind": t.kind, "scale": task_scale(t), "sample_ids": [it.sample_id for it in t.items],
             "is_gold": t.is_gold, "gold": t.gold, "n_answers": counts.get(t.id, 0),
             "complete": (not t.is_gold) and counts.get(t.id, 0) >= campaign.redundancy} for t in tasks]


def task_scale(task: Task) -> Optional[list[float]]:
    """The [lo, hi] scale of a rating task (None for other kinds)."""
    return [task.scale_lo, task.scale_hi] if task.kind == "rating" else None


# ---------------------------------------------------------------- annotators

def create_annotator(session: Session, *, name: str, campaign_ids: Sequence[int] = ()) -> tuple[Annotator, str]:
    """Invite an annotator to campaigns; returns the row and the plain token (shown once); commits."""
    if not check_text(name, "name", max_length=200).strip():
        raise InvalidError("name: must not be empty")
    for cid in campaign_ids:
        check_id(cid, "campaign_ids")
        if session.get(Campaign, cid) is None:
            raise InvalidError(f"campaign_ids: campaign {cid} does not exist")
    token = new_token("ann")
    annotator = Annotator(name=name.strip(), token_hash=hash_token(token), active=True)
    session.add(annotator)
    session.flush()
    for cid in dict.fromkeys(campaign_ids):
        session.add(CampaignMember(campaign_id=cid, annotator_id=annotator.id))
    session.commit()
    return annotator, token


def add_member(session: Session, *, campaign: Campaign, annotator_id: int) -> None:
    """Give an existing annotator access to a campaign (idempotent); commits."""
    check_id(annotator_id, "annotator_id")
    if session.get(Annotator, annotator_id) is None:
        raise InvalidError(f"annotator_id: annotator {annotator_id} does not exist")
    if session.get(CampaignMember, (campaign.id, annotator_id)) is None:
        session.add(CampaignMember(campaign_id=campaign.id, annotator_id=annotator_id))
        session.commit()


def list_annotators(session: Session) -> list[dict[str, Any]]:
    """Every annotator with the campaigns they belong to."""
    members: dict[int, list[int]] = defaultdict(list)
    for cid, aid in session.execute(select(CampaignMember.campaign_id, CampaignMember.annotator_id)).all():
        members[aid].append(cid)
    return [{"id": a.id, "name": a.name, "active": a.active, "campaign_ids": sorted(members[a.id]),
             "created_at": a.created_at.isoformat()} for a in session.scalars(select(Annotator).order_by(Annotator.id))]


# ---------------------------------------------------------------- assignment

def next_assignment(session: Session, *, campaign: Campaign, annotator_id: int, timeout_s: float = 1800.0,
                    rng: Optional[random.Random] = None) -> Optional[Assignment]:
    """The caller's open assignment, else a new one on an eligible task (None when nothing is left); commits."""
    assignment = _pick_assignment(session, campaign=campaign, annotator_id=annotator_id, timeout_s=timeout_s, rng=rng)
    _commit_assignment(session)
    return assignment


def next_assignment_view(session: Session, *, campaign: Campaign, annotator_id: int,
                         timeout_s: float = 1800.0) -> Optional[dict[str, Any]]:
    """Like next_assignment, but returns the annotator's view, built in the same (single) transaction."""
    assignment = _pick_assignment(session, campaign=campaign, annotator_id=annotator_id, timeout_s=timeout_s, rng=None)
    view = None if assignment is None else assignment_view(session, assignment=assignment)
    _commit_assignment(session)
    return view


def _commit_assignment(session: Session) -> None:
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ConflictError("another request for this annotator took the task; ask again") from None


def _pick_assignment(session: Session, *, campaign: Campaign, annotator_id: int, timeout_s: float,
                     rng: Optional[random.Random]) -> Optional[Assignment]:
    """Find (or add and flush) the caller's assignment without committing.

    Eligible: never served to this annotator; gold tasks always (mixed in at ``gold_rate``), regular
    tasks while answered + unexpired open assignments < redundancy. Fullest tasks first, so tasks complete.
    """
    rng = rng or random.SystemRandom()
    session.scalar(select(Campaign.id).where(Campaign.id == campaign.id).with_for_update())
    if campaign.status != "open":
        raise ConflictError(f"campaign {campaign.id} is closed")
    current = session.scalar(select(Assignment).where(
        Assignment.campaign_id == campaign.id, Assignment.annotator_id == annotator_id,
        Assignment.status == "open").order_by(Assignment.id).limit(1))
    if current is not None:
        return current
    served = select(Assignment.task_id).where(Assignment.campaign_id == campaign.id, Assignment.annotator_id == annotator_id)
    cutoff = utcnow() - timedelta(seconds=timeout_s)
    holding = or_(Assignment.status == "answered", and_(Assignment.status == "open", Assignment.served_at > cutoff))
    taken = (select(Assignment.task_id, func.count().label("n")).where(Assignment.campaign_id == campaign.id, holding)
             .group_by(Assignment.task_id).subquery())
    n_taken = func.coalesce(taken.c.n, 0)
    unseen = (Task.campaign_id == campaign.id, Task.id.not_in(served))
    gold = session.scalar(select(Task.id).where(*unseen, Task.is_gold.is_(True)).order_by(func.random()).limit(1))
    regular = session.scalar(select(Task.id).outerjoin(taken, taken.c.task_id == Task.id)
                             .where(*unseen, Task.is_gold.is_(False), n_taken < campaign.redundancy)
                             .order_by(n_taken.desc(), func.random()).limit(1))
    if gold is None and regular is None:
        return None
    task_id = gold if gold is not None and (regular is None or rng.random() < campaign.gold_rate) else regular
    sample_ids = list(session.scalars(select(TaskItem.sample_id).where(TaskItem.task_id == task_id).order_by(TaskItem.slot)))
    rng.shuffle(sample_ids)
    assignment = Assignment(campaign_id=campaign.id, task_id=task_id, annotator_id=annotator_id,
                            displayed=sample_ids, status="open")
    session.add(assignment)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise ConflictError("another request for this annotator took the task; ask again") from None
    return assignment


def assignment_view(session: Session, *, assignment: Assignment) -> dict[str, Any]:
    """What an annotator sees: the prompt and the samples in displayed order (gold status hidden)."""
    task = session.get(Task, assignment.task_id)
    campaign = session.get(Campaign, assignment.campaign_id)
    assert task is not None and campaign is not None
    samples = {s.id: s for s in session.scalars(select(Sample).where(Sample.id.in_(assignment.displayed)))}
    names = ("left", "right") if task.kind == "pairwise" else tuple(range(len(assignment.displayed)))
    items = [{"position": names[i], "sample_id": sid, "text": samples[sid].response} for i, sid in enumerate(assignment.displayed)]
    return {"assignment_id": assignment.id, "task_id": task.id, "campaign_id": campaign.id, "kind": task.kind,
            "scale": task_scale(task), "prompt": task.prompt.text, "instructions": campaign.instructions,
            "allow_critique": campaign.allow_critique, "items": items, "served_at": assignment.served_at.isoformat()}


def get_assignment_for(session: Session, *, assignment_id: int, principal: Principal) -> Assignment:
    """The assignment if it belongs to the calling annotator, else NotFoundError."""
    assignment = session.get(Assignment, assignment_id)
    if assignment is None or principal.is_admin or assignment.annotator_id != principal.annotator_id:
        raise NotFoundError(f"assignment {assignment_id} not found")
    return assignment


# ---------------------------------------------------------------- answers

def gold_correct(*, gold: dict[str, Any], resolved: dict[str, Any]) -> Optional[bool]:
    """Whether a resolved answer matches a gold answer (None for skips, which are not scored)."""
    if resolved.get("skip"):
        return None
    if "winner" in gold:
        return resolved.get("winner") == gold["winner"]
    if "rating" in gold:
        return abs(resolved["rating"] - gold["rating"]) <= gold.get("tolerance", 0.0) + 1e-9
    if "order" in gold:
        return resolved.get("order") == gold["order"]
    return resolved.get("label") == gold["label"]


def body_digest(assignment_id: int, answer: Any, critique: Optional[str]) -> str:
    """sha256 of a submission's content: a replayed idempotency key must carry the same body."""
    payload = json.dumps({"a": assignment_id, "answer": answer, "critique": critique}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _replay(session: Session, *, annotator_id: int, key: str, digest: str) -> Optional[Annotation]:
    existing = session.scalar(select(Annotation).where(Annotation.annotator_id == annotator_id, Annotation.idempotency_key == key))
    if existing is None:
        return None
    if existing.body_sha256 != digest:
        raise ConflictError("idempotency_key was already used for a different submission")
    return existing


def submit_annotation(session: Session, *, assignment: Assignment, idempotency_key: str, answer: Any,
                      critique: Optional[str] = None, time_spent_ms: Optional[int] = None,
                      source: str = "api") -> tuple[Annotation, bool]:
    """Store the answer to an assignment exactly once; returns (annotation, replayed); commits."""
    check_text(idempotency_key, "idempotency_key")
    if not 8 <= len(idempotency_key) <= 128:
        raise InvalidError("idempotency_key: must be 8 to 128 characters")
    digest = body_digest(assignment.id, answer, critique)
    existing = _replay(session, annotator_id=assignment.annotator_id, key=idempotency_key, digest=digest)
    if existing is not None:
        return existing, True
    campaign = session.get(Campaign, assignment.campaign_id)
    task = session.get(Task, assignment.task_id)
    assert campaign is not None and task is not None
    if campaign.status != "open":
        raise ConflictError(f"campaign {campaign.id} is closed")
    if assignment.status != "open":
        raise ConflictError(f"assignment {assignment.id} was already answered")
    check_submission(idempotency_key=idempotency_key, critique=critique, time_spent_ms=time_spent_ms,
                     allow_critique=campaign.allow_critique)
    original = None
    if task.kind == "edit":
        sample = session.get(Sample, assignment.displayed[0])
        assert sample is not None
        original = sample.response
    resolved = resolve_answer(kind=task.kind, answer=answer, displayed=assignment.displayed, scale=task_scale(task),
                              original=original)
    skip = bool(resolved.get("skip"))
    annotation = Annotation(assignment_id=assignment.id, campaign_id=campaign.id, task_id=task.id,
                            annotator_id=assignment.annotator_id, idempotency_key=idempotency_key, body_sha256=digest,
                            answer=answer, resolved=resolved, is_skip=skip, critique=critique or None,
                            time_spent_ms=time_spent_ms, source=source)
    assignment.status = "skipped" if skip else "answered"
    session.add(annotation)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = _replay(session, annotator_id=assignment.annotator_id, key=idempotency_key, digest=digest)
        if existing is None:
            raise ConflictError(f"assignment {assignment.id} was already answered") from None
        return existing, True
    return annotation, False


def annotation_view(annotation: Annotation, *, replayed: bool) -> dict[str, Any]:
    """The JSON answer to a submission."""
    return {"annotation_id": annotation.id, "assignment_id": annotation.assignment_id, "task_id": annotation.task_id,
            "answer": annotation.answer, "resolved": annotation.resolved, "replayed": replayed,
            "submitted_at": annotation.submitted_at.isoformat()}
