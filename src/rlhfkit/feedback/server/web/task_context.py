"""What the task page shows beside the assignment: the prompt's conversation turns and the annotator's progress."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Optional

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from rlhfkit.feedback.models import Assignment, Campaign, Sample, Task, utcnow
from rlhfkit.feedback.rules import PROMPT_MESSAGES
from rlhfkit.models.chat import ChatError, parse_messages


def prompt_turns(session: Session, sample_ids: Sequence[int]) -> Optional[list[dict[str, str]]]:
    """The conversation turns stored with the task's samples (meta ``prompt_messages``), or None for a plain prompt."""
    for meta in session.scalars(select(Sample.meta).where(Sample.id.in_(list(sample_ids)))):
        value = (meta or {}).get(PROMPT_MESSAGES)
        if value is None:
            continue
        try:
            return [dict(m) for m in parse_messages(value)]
        except ChatError:
            continue
    return None


def annotator_position(session: Session, *, campaign: Campaign, annotator_id: int, timeout_s: float) -> dict[str, int]:
    """``done`` (answered or skipped) of ``total`` = done + open + tasks still eligible for this annotator.

    Eligible follows the server's assignment rule: tasks not yet served to them; gold always, regular
    ones while answers plus unexpired open assignments are below the campaign's redundancy.
    """
    mine = dict(session.execute(select(Assignment.status, func.count()).where(
        Assignment.campaign_id == campaign.id, Assignment.annotator_id == annotator_id).group_by(Assignment.status)).all())
    served = select(Assignment.task_id).where(Assignment.campaign_id == campaign.id, Assignment.annotator_id == annotator_id)
    cutoff = utcnow() - timedelta(seconds=timeout_s)
    holding = or_(Assignment.status == "answered", and_(Assignment.status == "open", Assignment.served_at > cutoff))
    taken = (select(Assignment.task_id, func.count().label("n")).where(Assignment.campaign_id == campaign.id, holding)
             .group_by(Assignment.task_id).subquery())
    eligible = or_(Task.is_gold.is_(True), func.coalesce(taken.c.n, 0) < campaign.redundancy)
    left = session.scalar(select(func.count()).select_from(Task).outerjoin(taken, taken.c.task_id == Task.id)
                          .where(Task.campaign_id == campaign.id, Task.id.not_in(served), eligible)) or 0
    done = int(mine.get("answered", 0)) + int(mine.get("skipped", 0))
    return {"done": done, "total": done + int(mine.get("open", 0)) + int(left)}


def page_extras(session: Session, view: dict[str, Any], campaign: Campaign, annotator_id: Optional[int],
                timeout_s: float) -> dict[str, Any]:
    """Template context for the task page: ``turns`` and ``progress``."""
    progress = None if annotator_id is None else annotator_position(
        session, campaign=campaign, annotator_id=annotator_id, timeout_s=timeout_s)
    return {"turns": prompt_turns(session, [it["sample_id"] for it in view["items"]]), "progress": progress}
