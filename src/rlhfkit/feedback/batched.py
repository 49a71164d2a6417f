"""PostgreSQL array forms of the hot statements: one statement answers the same step of a whole batch.

Why: in lockstep (:func:`~rlhfkit.feedback.steps.run_lockstep`) a batch of N requests still cost N
statements per step, and on PostgreSQL each statement costs the server process tens of microseconds
of psycopg and the database backend its own bind and execute. Each form here reads the operations'
values from ONE parameter, a JSON array of one object per operation expanded by
``json_to_recordset`` (one text to dump, where psycopg dumps an array parameter element by element in
Python, ~10 us per array even in binary), so a step costs one statement per kind of query. The rows a
form returns start with the operation's number ``n``, or with the value that identifies it where an
INSERT can only return its own columns. The planner cannot see how many records the JSON holds (it
assumes 100), so each lookup is a LATERAL subquery fenced with ``OFFSET 0`` or a scalar subquery:
an index probe per record, never a hash join over a whole table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

from sqlalchemy import (JSON, DateTime, Integer, Text, TypeDecorator, and_, any_, bindparam, cast, column, func,
                        insert, literal, or_, select, true, update)
from sqlalchemy.engine import Dialect

from rlhfkit.feedback.models import (Annotation, Assignment, Campaign, CampaignMember, Prompt, Sample, Task,
                                     TaskItem)
from rlhfkit.feedback.rawsql import Many, Statement

if TYPE_CHECKING:
    from rlhfkit.feedback.serving import Statements

A, N, C, M = Assignment.__table__, Annotation.__table__, Campaign.__table__, CampaignMember.__table__
T, TI, S, P = Task.__table__, TaskItem.__table__, Sample.__table__, Prompt.__table__


class JSONText(TypeDecorator[Any]):
    """A value bound as its JSON text (``json.dumps``, as SQLAlchemy's JSON type writes it)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Optional[str]:
        return None if value is None else json.dumps(value)


def records(**columns: Any) -> Any:
    """``json_to_recordset(:rows) AS v(n INTEGER, a ..., b ...)``: one row per operation, typed as ``columns``."""
    rows = cast(bindparam("rows", type_=JSONText()), JSON)
    return (func.json_to_recordset(rows).table_valued(column("n", Integer()),
                                                       *(column(name, kind) for name, kind in columns.items()))
            .render_derived(name="v", with_types=True))


def _encoder(kind: Any) -> Optional[Callable[[Any], Any]]:
    """How a value of column type ``kind`` goes into the JSON records (datetimes: bound, then ISO 8601)."""
    decorated = isinstance(kind, TypeDecorator)
    if not isinstance(kind.impl if decorated else kind, DateTime):
        return None
    bind = kind.process_bind_param if decorated else (lambda value, dialect: value)
    return lambda value: bind(value, None).isoformat()


def array_form(statement: Any, v: Any, dialect: Dialect, **kw: Any) -> Many:
    """The :class:`Many` of ``statement``, which reads the operations' values from :func:`records` ``v``."""
    columns = [c for c in v.c if c.name != "n"]
    encoders = {c.name: encode for c in columns if (encode := _encoder(c.type)) is not None}
    return Many(Statement(statement, dialect), tuple(c.name for c in columns), encoders=encoders, **kw)


def add_array_forms(sql: Statements, dialect: Dialect) -> None:
    """Give the hot statements of ``sql`` their array forms (``Statement.many``) for ``dialect`` (PostgreSQL)."""

    v = records(cid=C.c.id.type, aid=A.c.annotator_id.type)
    opened = (select(A.c.id, A.c.task_id, A.c.displayed, A.c.served_at)
              .where(A.c.campaign_id == v.c.cid, A.c.annotator_id == v.c.aid, A.c.status == "open")
              .order_by(A.c.id).limit(1).lateral("opened"))
    sql.campaign.many = array_form(
        select(v.c.n, C.c.status, C.c.redundancy, C.c.gold_rate, M.c.annotator_id,
               opened.c.id, opened.c.task_id, opened.c.displayed, opened.c.served_at)
        .select_from(v.join(C, C.c.id == v.c.cid)
                     .outerjoin(M, and_(M.c.campaign_id == C.c.id, M.c.annotator_id == v.c.aid))
                     .outerjoin(opened, true()))
        .with_for_update(of=C), v, dialect)

    v = records(cid=A.c.campaign_id.type, aid=A.c.annotator_id.type)
    mine = select(A.c.task_id).where(A.c.campaign_id == v.c.cid, A.c.annotator_id == v.c.aid).offset(0).lateral("mine")
    sql.served.many = array_form(select(v.c.n, mine.c.task_id).select_from(v.join(mine, true())), v, dialect)

    v = records(tid=T.c.id.type)
    task = (select(T.c.kind, T.c.scale_lo, T.c.scale_hi, T.c.campaign_id, P.c.text, C.c.instructions, C.c.allow_critique)
            .select_from(T.join(P, P.c.id == T.c.prompt_id).join(C, C.c.id == T.c.campaign_id))
            .where(T.c.id == v.c.tid).offset(0).lateral("task"))
    items = select(TI.c.slot, TI.c.sample_id).where(TI.c.task_id == v.c.tid).offset(0).lateral("items")
    sample = select(S.c.id, S.c.response).where(S.c.id == items.c.sample_id).offset(0).lateral("sample")
    sql.content.many = array_form(
        select(v.c.n, task.c.kind, task.c.scale_lo, task.c.scale_hi, task.c.campaign_id, task.c.text,
               task.c.instructions, task.c.allow_critique, sample.c.id, sample.c.response)
        .select_from(v.join(task, true()).outerjoin(items, true()).outerjoin(sample, true()))
        .order_by(v.c.n, items.c.slot), v, dialect)

    v = records(cid=A.c.campaign_id.type, tid=A.c.task_id.type, aid=A.c.annotator_id.type,
                displayed=A.c.displayed.type, served_at=A.c.served_at.type, cutoff=A.c.served_at.type,
                limit=A.c.id.type)
    mine_count = select(func.count()).where(A.c.task_id == v.c.tid, A.c.annotator_id == v.c.aid).scalar_subquery()
    holding = (select(func.count()).where(A.c.task_id == v.c.tid, or_(
        A.c.status == "answered", and_(A.c.status == "open", A.c.served_at > v.c.cutoff))).scalar_subquery())
    sql.pick.many = array_form(
        insert(A).from_select(["campaign_id", "task_id", "annotator_id", "displayed", "status", "served_at"],
                              select(v.c.cid, v.c.tid, v.c.aid, v.c.displayed, literal("open", A.c.status.type),
                                     v.c.served_at).where(mine_count == 0, holding < v.c.limit))
        .returning(A.c.annotator_id, A.c.id),
        v, dialect, tag="aid", distinct=("tid",))

    v = records(id=A.c.id.type, aid=A.c.annotator_id.type, key=N.c.idempotency_key.type)
    found = (select(A.c.annotator_id, A.c.campaign_id, A.c.task_id, A.c.displayed, A.c.status,
                    C.c.status.label("campaign_status"), C.c.allow_critique, T.c.kind, T.c.scale_lo, T.c.scale_hi)
             .select_from(A.join(C, C.c.id == A.c.campaign_id).join(T, T.c.id == A.c.task_id))
             .where(A.c.id == v.c.id).offset(0).lateral("found"))
    earlier = (select(N.c.id, N.c.assignment_id, N.c.task_id, N.c.answer, N.c.resolved, N.c.body_sha256,
                      N.c.submitted_at).where(N.c.annotator_id == v.c.aid, N.c.idempotency_key == v.c.key)
               .offset(0).lateral("earlier"))
    sql.assignment.many = array_form(
        select(v.c.n, *found.c, *earlier.c).select_from(v.join(found, true()).outerjoin(earlier, true())), v, dialect)

    values = {"id": N.c.assignment_id, "new_status": A.c.status, "cid": N.c.campaign_id, "tid": N.c.task_id,
              "aid": N.c.annotator_id, "key": N.c.idempotency_key, "digest": N.c.body_sha256, "answer": N.c.answer,
              "resolved": N.c.resolved, "skip": N.c.is_skip, "critique": N.c.critique, "time_ms": N.c.time_spent_ms,
              "source": N.c.source, "at": N.c.submitted_at}
    v = records(**{name: col.type for name, col in values.items()})
    rows = select(v).cte("v")
    new_status = select(rows.c.new_status).where(rows.c.id == A.c.id).scalar_subquery()
    done = (update(A).where(A.c.id == any_(func.array(select(rows.c.id).scalar_subquery())), A.c.status == "open")
            .values(status=new_status).returning(A.c.id).cte("answered"))
    assert sql.store_answer is not None
    sql.store_answer.many = array_form(
        insert(N).from_select(
            ["assignment_id", "campaign_id", "task_id", "annotator_id", "idempotency_key", "body_sha256", "answer",
             "resolved", "is_skip", "critique", "time_spent_ms", "source", "submitted_at"],
            select(rows.c.id, rows.c.cid, rows.c.tid, rows.c.aid, rows.c.key, rows.c.digest, rows.c.answer,
                   rows.c.resolved, rows.c.skip, rows.c.critique, rows.c.time_ms, rows.c.source, rows.c.at)
            .select_from(rows.join(done, done.c.id == rows.c.id)))
        .returning(N.c.assignment_id, N.c.id),
        v, dialect, tag="id")
