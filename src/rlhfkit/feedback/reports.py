"""Progress, gold accuracy and export of a campaign: read-only reports over the feedback store.

``annotation_rows`` is the one flat view of the answers (task, texts, displayed order, resolved
answer) that the JSON API, the exports and aggregation (rlhfkit.feedback.aggregate) all read.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from typing import Any, Optional

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from rlhfkit.data.records import RecordError, record_from_dict, record_to_dict
from rlhfkit.feedback.crud import InvalidError, NotFoundError, gold_correct, task_scale
from rlhfkit.feedback.edits import EDIT_FORMS, edit_pair, edit_records
from rlhfkit.feedback.models import Annotation, Annotator, Assignment, Campaign, CampaignMember, Sample, Task, TaskItem
from rlhfkit.feedback.rules import PROMPT_MESSAGES
from rlhfkit.models.chat import ChatError, Conversation


def _annotator_stats(aid: int, name: str, rows: list[tuple[Annotation, Task]]) -> dict[str, Any]:
    done = [a for a, t in rows if not t.is_gold]
    graded = [gold_correct(gold=t.gold or {}, resolved=a.resolved) for a, t in rows if t.is_gold]
    graded = [g for g in graded if g is not None]
    times = [a.time_spent_ms for a, _ in rows if a.time_spent_ms is not None]
    return {"annotator_id": aid, "name": name, "annotations": sum(not a.is_skip for a in done),
            "skips": sum(a.is_skip for a in done), "gold_answered": len(graded), "gold_correct": sum(graded),
            "gold_accuracy": (sum(graded) / len(graded)) if graded else None,
            "median_time_ms": float(statistics.median(times)) if times else None,
            "last_submitted_at": max(a.submitted_at for a, _ in rows).isoformat() if rows else None}


def _annotations_with_tasks(session: Session, campaign: Campaign, annotator_id: Optional[int] = None) -> list[tuple[Annotation, Task]]:
    query = select(Annotation, Task).join(Task, Task.id == Annotation.task_id).where(Annotation.campaign_id == campaign.id)
    if annotator_id is not None:
        query = query.where(Annotation.annotator_id == annotator_id)
    return [(a, t) for a, t in session.execute(query.order_by(Annotation.id)).all()]


def annotator_progress(session: Session, *, campaign: Campaign, annotator_id: int) -> dict[str, Any]:
    """One annotator's counts, gold accuracy and median time in a campaign."""
    annotator = session.get(Annotator, annotator_id)
    if annotator is None:
        raise NotFoundError(f"annotator {annotator_id} not found")
    return _annotator_stats(annotator_id, annotator.name, _annotations_with_tasks(session, campaign, annotator_id))


def campaign_progress(session: Session, *, campaign: Campaign) -> dict[str, Any]:
    """Task completion, counts and per-annotator statistics of a campaign."""
    rows = _annotations_with_tasks(session, campaign)
    per: dict[int, list[tuple[Annotation, Task]]] = defaultdict(list)
    answers: dict[int, int] = defaultdict(int)
    for a, t in rows:
        per[a.annotator_id].append((a, t))
        if not a.is_skip:
            answers[t.id] += 1
    member_ids = set(session.scalars(select(CampaignMember.annotator_id).where(CampaignMember.campaign_id == campaign.id)))
    names = dict(session.execute(select(Annotator.id, Annotator.name).where(Annotator.id.in_(member_ids | set(per)))).all())
    tasks = session.execute(select(Task.id, Task.is_gold).where(Task.campaign_id == campaign.id)).all()
    regular = [tid for tid, g in tasks if not g]
    open_count = session.scalar(select(func.count()).select_from(Assignment).where(
        Assignment.campaign_id == campaign.id, Assignment.status == "open"))
    return {"campaign_id": campaign.id, "tasks": len(regular), "gold_tasks": len(tasks) - len(regular),
            "complete": sum(answers[t] >= campaign.redundancy for t in regular),
            "annotations": sum(not a.is_skip for a, t in rows if not t.is_gold),
            "skips": sum(a.is_skip for a, _ in rows), "open_assignments": open_count,
            "annotators": [_annotator_stats(aid, names[aid], per[aid]) for aid in sorted(names)]}


def _prompt(sample: Sample) -> str:
    """The sample's prompt text, as a Conversation (the same text, keeping its turns) when it came as messages,
    so exported records carry the turns and reward/DPO training renders them through the chat template."""
    turns = (sample.meta or {}).get(PROMPT_MESSAGES)
    if turns:
        try:
            return Conversation.prompt(turns)
        except ChatError:
            pass
    return sample.prompt.text


def annotation_rows(session: Session, *, campaign: Campaign) -> list[dict[str, Any]]:
    """Every annotation with its task, texts and displayed order: the input of aggregation."""
    rows = _annotations_with_tasks(session, campaign)
    task_ids = {t.id for _, t in rows}
    items: dict[int, list[int]] = defaultdict(list)
    for tid, sid in session.execute(select(TaskItem.task_id, TaskItem.sample_id).where(TaskItem.task_id.in_(task_ids)).order_by(TaskItem.task_id, TaskItem.slot)):
        items[tid].append(sid)
    samples = {s.id: s for s in session.scalars(select(Sample).where(Sample.campaign_id == campaign.id).options(selectinload(Sample.prompt)))}
    names = dict(session.execute(select(Annotator.id, Annotator.name)).all())
    served = dict(session.execute(select(Assignment.id, Assignment.served_at).where(Assignment.campaign_id == campaign.id)).all())
    displayed = dict(session.execute(select(Assignment.id, Assignment.displayed).where(Assignment.campaign_id == campaign.id)).all())
    out = []
    for a, t in rows:
        task_samples = [samples[sid] for sid in items[t.id]]
        out.append({"annotation_id": a.id, "task_id": t.id, "kind": t.kind, "scale": task_scale(t), "annotator_id": a.annotator_id,
                    "annotator": names.get(a.annotator_id), "is_gold": t.is_gold, "gold": t.gold,
                    "prompt": _prompt(task_samples[0]),
                    "samples": [{"id": s.id, "text": s.response, "model": s.model, "round": s.round} for s in task_samples],
                    "displayed": displayed[a.assignment_id], "answer": a.answer, "resolved": a.resolved,
                    "critique": a.critique, "time_spent_ms": a.time_spent_ms,
                    "served_at": served[a.assignment_id].isoformat(), "submitted_at": a.submitted_at.isoformat()})
    return out


def row_to_record(row: dict[str, Any]) -> Optional[dict[str, Any]]:
    """One raw annotation row as a feedback record dict, checked by :mod:`rlhfkit.data.records` (None for
    skips); raises RecordError for a stored answer that breaks the record rules (say a margin stored
    before numbers were range-checked)."""
    record = _row_to_dict(row)
    return None if record is None else record_to_dict(record_from_dict(record))


def _row_to_dict(row: dict[str, Any]) -> Optional[dict[str, Any]]:
    resolved = row["resolved"]
    if resolved.get("skip"):
        return None
    common = {"annotator": row["annotator"], "timestamp": row["submitted_at"], "weight": 1.0}
    texts = {s["id"]: s["text"] for s in row["samples"]}
    ids = [s["id"] for s in row["samples"]]
    if row["kind"] == "edit":
        return edit_pair(row)
    if row["kind"] == "pairwise":
        tie = resolved["winner"] == "tie"
        chosen = ids[0] if tie else resolved["winner"]
        rejected = ids[1] if chosen == ids[0] else ids[0]
        margin = resolved.get("margin")
        return {"kind": "pairwise", "prompt": row["prompt"], "chosen": texts[chosen], "rejected": texts[rejected],
                "margin": None if margin is None else float(margin), "tie": tie, **common}
    if row["kind"] == "ranking":
        rank = {sid: i + 1 for i, sid in enumerate(resolved["order"])}
        return {"kind": "ranking", "prompt": row["prompt"], "responses": [texts[i] for i in ids],
                "ranks": [rank[i] for i in ids], **common}
    if row["kind"] == "rating":
        return {"kind": "rating", "prompt": row["prompt"], "response": texts[ids[0]], "rating": resolved["rating"],
                "scale": row["scale"], **common}
    return {"kind": "label", "prompt": row["prompt"], "response": texts[ids[0]], "label": resolved["label"] == "good", **common}


def export_records(session: Session, *, campaign: Campaign, aggregate: str = "none",
                   skipped: Optional[list[str]] = None, edits: str = "pairs") -> list[dict[str, Any]]:
    """Feedback records of a campaign: raw per annotation, or aggregated by rlhfkit.feedback.aggregate.

    A stored answer that breaks the record rules (non-finite or out-of-range numbers) is left out and
    described in ``skipped`` ("annotation N: reason"), so one bad row never poisons training. Edits
    become pairwise records (rewrite over original) among the others; with ``edits="sft"`` the export
    is the edits alone as SFT examples ``{"prompt", "completion"}`` instead.
    """
    skipped = [] if skipped is None else skipped
    if edits not in EDIT_FORMS:
        raise InvalidError(f"edits: unknown form {edits!r}; use {' or '.join(EDIT_FORMS)}")
    rows = annotation_rows(session, campaign=campaign)
    if edits == "sft":
        return edit_records(rows, form="sft", skipped=skipped)
    if aggregate == "none":
        records = []
        for row in rows:
            if row["is_gold"]:
                continue
            try:
                record = row_to_record(row)
            except RecordError as exc:
                skipped.append(f"annotation {row['annotation_id']}: {exc}")
                continue
            if record is not None:
                records.append(record)
        return records
    if aggregate not in ("majority", "reliability"):
        raise InvalidError(f"aggregate: unknown method {aggregate!r}; use none, majority or reliability")
    from rlhfkit.feedback import aggregate as agg

    if not hasattr(agg, "aggregate_records"):
        raise NotImplementedError("rlhfkit.feedback.aggregate.aggregate_records is not available in this build")
    usable = usable_rows(rows, skipped)
    records = []
    for n, record in enumerate(agg.aggregate_records(usable, method=aggregate), start=1):
        try:
            records.append(record_to_dict(record_from_dict(record)))
        except RecordError as exc:
            skipped.append(f"aggregated record {n}: {exc}")
    return records


def usable_rows(rows: list[dict[str, Any]], skipped: list[str]) -> list[dict[str, Any]]:
    """The annotation rows whose answer makes a valid record; each other one is described in ``skipped``.

    Aggregation (the export's and the loop's) calls this first, so a stored answer with a non-finite or
    out-of-range number never reaches a reward model.
    """
    usable = []
    for row in rows:
        try:
            row_to_record(row)
        except RecordError as exc:
            skipped.append(f"annotation {row['annotation_id']}: {exc}")
            continue
        usable.append(row)
    return usable


def records_jsonl(records: list[dict[str, Any]]) -> str:
    """Records as strict JSON lines (never a bare NaN or Infinity, which strict parsers reject)."""
    return "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records)
