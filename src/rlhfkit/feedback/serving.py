"""The two hot operations of the annotation API, as group-committed writer operations on lean SQL.

``next_assignment``: the caller's open assignment, else a new one on a task proposed by the
campaign's in-memory :class:`~rlhfkit.feedback.pool.TaskPool` and checked in the database.
``submit``: store an answer exactly once per (annotator, idempotency key). Both run in the
writer thread (one transaction per batch, a savepoint per operation) and answer only after COMMIT,
so an assignment id a client holds and every acknowledged answer survive a SIGKILL. The rules are
those of :mod:`rlhfkit.feedback.crud` (which the web pages still use): same errors, same views.
Both are written as :class:`~rlhfkit.feedback.steps.StepOp` generators of queries, so that on
PostgreSQL a batch of them shares its round trips (:func:`~rlhfkit.feedback.steps.run_lockstep`).
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Optional

from sqlalchemy import and_, bindparam, case, cast, func, insert, literal, or_, select, type_coerce, update
from sqlalchemy.engine import Dialect

from rlhfkit.feedback import crud, rules
from rlhfkit.feedback.batched import add_array_forms
from rlhfkit.feedback.crud import ConflictError, InvalidError, NotFoundError
from rlhfkit.feedback.models import (Annotation, Assignment, Campaign, CampaignMember, Prompt, Sample, Task,
                                     TaskItem, utcnow)
from rlhfkit.feedback.pool import TaskPool
from rlhfkit.feedback.rawsql import Statement
from rlhfkit.feedback.store import Store
from rlhfkit.feedback.steps import Query, RetryOperation, StepOp, Steps
from rlhfkit.feedback.writer import Tx

A, N, C, M = Assignment.__table__, Annotation.__table__, Campaign.__table__, CampaignMember.__table__
T, TI, S, P = Task.__table__, TaskItem.__table__, Sample.__table__, Prompt.__table__
MAX_CANDIDATES = 64       # candidates checked in the database per request before the pool is rebuilt
POOL_MAX_AGE_S = 60.0     # rebuild at least this often (picks up expiries and other processes' writes)
POOL_MIN_REBUILD_S = 1.0  # a dry pool is rebuilt at most this often before answering "nothing left"
CONTENT_CACHE_SIZE = 50_000
NO_LIMIT = 2**31 - 1      # holding assignments allowed on a gold task (any number)


def _holding(cutoff: Any) -> Any:
    """Assignments that hold a task's slot: answered, or open and served after ``cutoff``."""
    return or_(A.c.status == "answered", and_(A.c.status == "open", A.c.served_at > cutoff))


class Statements:
    """Every statement of the hot path, compiled once for the store's dialect.

    Each is one round trip, so they are few: serving an open assignment is one query, a new one
    usually one conditional INSERT (plus one query for a task not yet cached); storing an answer is
    one lookup (assignment and key) and, on PostgreSQL, one statement that marks the assignment
    answered and inserts the annotation. On PostgreSQL the hot ones also have an array form
    (:mod:`rlhfkit.feedback.batched`), so that a lockstep step runs each once for the whole batch.
    """

    def __init__(self, dialect: Dialect) -> None:
        aid, cid, tid = bindparam("aid"), bindparam("cid"), bindparam("tid")
        cutoff = bindparam("cutoff", type_=A.c.served_at.type)
        postgres = dialect.name == "postgresql"

        def compiled(statement: Any) -> Statement:
            return Statement(statement, dialect)

        def value(name: str, column: Any) -> Any:
            """A bound value in a SELECT list feeding an INSERT: PostgreSQL needs its type spelled out."""
            return (cast if postgres else type_coerce)(bindparam(name, type_=column.type), column.type)

        self.campaign = compiled(
            select(C.c.status, C.c.redundancy, C.c.gold_rate, M.c.annotator_id,
                   A.c.id, A.c.task_id, A.c.displayed, A.c.served_at)
            .select_from(C.outerjoin(M, and_(M.c.campaign_id == C.c.id, M.c.annotator_id == aid))
                         .outerjoin(A, and_(A.c.campaign_id == C.c.id, A.c.annotator_id == aid, A.c.status == "open")))
            .where(C.c.id == cid).order_by(A.c.id).limit(1).with_for_update(of=C))
        self.pool_tasks = compiled(select(T.c.id, T.c.is_gold).where(T.c.campaign_id == cid))
        self.pool_taken = compiled(select(A.c.task_id, func.count()).where(A.c.campaign_id == cid, _holding(cutoff))
                                   .group_by(A.c.task_id))
        self.served = compiled(select(A.c.task_id).where(A.c.campaign_id == cid, A.c.annotator_id == aid))
        self.task_check = compiled(
            select(func.coalesce(func.sum(case((A.c.annotator_id == aid, 1), else_=0)), 0),
                   func.coalesce(func.sum(case((_holding(cutoff), 1), else_=0)), 0))
            .where(A.c.task_id == tid))
        mine = select(A.c.id).where(A.c.task_id == tid, A.c.annotator_id == aid).exists()
        holding = select(func.count()).where(A.c.task_id == tid, _holding(cutoff)).scalar_subquery()
        self.pick = compiled(insert(A).from_select(
            ["campaign_id", "task_id", "annotator_id", "displayed", "status", "served_at"],
            select(value("cid", A.c.campaign_id), value("tid", A.c.task_id), value("aid", A.c.annotator_id),
                   value("displayed", A.c.displayed), literal("open", A.c.status.type), value("served_at", A.c.served_at))
            .where(~mine, holding < bindparam("limit"))).returning(A.c.id))
        self.content = compiled(  # a task, its campaign's texts and one row per sample in canonical order
            select(T.c.kind, T.c.scale_lo, T.c.scale_hi, T.c.campaign_id, P.c.text, C.c.instructions,
                   C.c.allow_critique, S.c.id, S.c.response)
            .select_from(T.join(P, P.c.id == T.c.prompt_id).join(C, C.c.id == T.c.campaign_id)
                         .outerjoin(TI, TI.c.task_id == T.c.id).outerjoin(S, S.c.id == TI.c.sample_id))
            .where(T.c.id == tid).order_by(TI.c.slot))
        self.assignment = compiled(
            select(A.c.annotator_id, A.c.campaign_id, A.c.task_id, A.c.displayed, A.c.status, C.c.status,
                   C.c.allow_critique, T.c.kind, T.c.scale_lo, T.c.scale_hi,
                   N.c.id, N.c.assignment_id, N.c.task_id, N.c.answer, N.c.resolved, N.c.body_sha256, N.c.submitted_at)
            .select_from(A.join(C, C.c.id == A.c.campaign_id).join(T, T.c.id == A.c.task_id)
                         .outerjoin(N, and_(N.c.annotator_id == aid, N.c.idempotency_key == bindparam("key"))))
            .where(A.c.id == bindparam("id")))
        def answered() -> Any:
            return (update(A).where(A.c.id == bindparam("id"), A.c.status == "open")
                    .values(status=bindparam("new_status", type_=A.c.status.type)))

        annotation = {"campaign_id": value("cid", N.c.campaign_id), "task_id": value("tid", N.c.task_id),
                      "annotator_id": value("aid", N.c.annotator_id), "idempotency_key": value("key", N.c.idempotency_key),
                      "body_sha256": value("digest", N.c.body_sha256), "answer": value("answer", N.c.answer),
                      "resolved": value("resolved", N.c.resolved), "is_skip": value("skip", N.c.is_skip),
                      "critique": value("critique", N.c.critique), "time_spent_ms": value("time_ms", N.c.time_spent_ms),
                      "source": value("source", N.c.source), "submitted_at": value("at", N.c.submitted_at)}
        self.insert_annotation = compiled(insert(N).from_select(
            ["assignment_id", *annotation], select(value("id", N.c.assignment_id), *annotation.values())).returning(N.c.id))
        self.answer_assignment = compiled(answered().returning(A.c.id))
        self.store_answer: Optional[Statement] = None
        if postgres:  # one statement: the UPDATE as a CTE feeding the INSERT (no row: answered concurrently)
            done = answered().returning(A.c.id).cte("answered")
            self.store_answer = compiled(insert(N).from_select(
                ["assignment_id", *annotation], select(done.c.id, *annotation.values())).returning(N.c.id))
            add_array_forms(self, dialect)


@dataclass(frozen=True)
class TaskContent:
    """What never changes about a task: kind, scale, prompt and its samples in canonical order."""

    campaign_id: int
    kind: str
    scale: Optional[list[float]]
    prompt: str
    samples: dict[int, str]
    sample_ids: tuple[int, ...]
    instructions: str
    allow_critique: bool


class AnnotationService:
    """Serves tasks and stores answers through the store's group-commit writer (shared by all requests)."""

    def __init__(self, store: Store, *, assignment_timeout_s: float = 1800.0, seed: Optional[int] = None) -> None:
        self.store = store
        self.timeout = timedelta(seconds=assignment_timeout_s)
        self.sql = Statements(store.engine.dialect)
        self.pools: dict[int, TaskPool] = {}
        self._content: OrderedDict[int, TaskContent] = OrderedDict()
        self._rng = random.SystemRandom()
        self._seed = seed

    # ------------------------------------------------------------------ public (awaitable and blocking)

    async def next_assignment(self, *, campaign_id: int, annotator_id: int) -> Optional[dict[str, Any]]:
        """The annotator's view of their open or new assignment (None: nothing left for them); committed."""
        return await self.store.writer.run(StepOp(lambda tx: self._next(tx, campaign_id, annotator_id), annotator_id))

    async def submit(self, *, assignment_id: int, annotator_id: int, idempotency_key: str, answer: Any,
                     critique: Optional[str] = None, time_spent_ms: Optional[int] = None,
                     source: str = "api") -> tuple[dict[str, Any], bool]:
        """Store an answer once; returns (annotation view, replayed); committed before it returns."""
        return await self.store.writer.run(self._submit_op(assignment_id, annotator_id, idempotency_key, answer,
                                                           critique, time_spent_ms, source))

    def next_blocking(self, *, campaign_id: int, annotator_id: int, timeout_s: float = 60.0) -> Optional[dict[str, Any]]:
        """:meth:`next_assignment` for threads (tests, scripts)."""
        op = StepOp(lambda tx: self._next(tx, campaign_id, annotator_id), annotator_id)
        return self.store.writer.submit(op).result(timeout=timeout_s)

    def submit_blocking(self, *, assignment_id: int, annotator_id: int, idempotency_key: str, answer: Any,
                        critique: Optional[str] = None, time_spent_ms: Optional[int] = None,
                        source: str = "api", timeout_s: float = 60.0) -> tuple[dict[str, Any], bool]:
        """:meth:`submit` for threads (tests, scripts)."""
        op = self._submit_op(assignment_id, annotator_id, idempotency_key, answer, critique, time_spent_ms, source)
        return self.store.writer.submit(op).result(timeout=timeout_s)

    def forget(self, campaign_id: int) -> None:
        """Drop the campaign's pool (tasks added, campaign closed): rebuilt from the database on next use."""
        self.pools.pop(campaign_id, None)

    # ------------------------------------------------------------------ serving a task

    def _pool(self, tx: Tx, campaign_id: int, redundancy: int, gold_rate: float, *,
              rebuild: bool = False) -> Steps[TaskPool]:
        """The campaign's pool, rebuilt when missing, stale or dry. Its two reads are shared (a cutoff in
        whole seconds), so operations of one lockstep step that all find it stale read it once, and the
        first to get the rows builds the pool the others then take."""
        pool = self.pools.get(campaign_id)
        if (rebuild or pool is None or pool.redundancy != redundancy or pool.gold_rate != gold_rate
                or pool.built_at + POOL_MAX_AGE_S < time.monotonic()):
            before = pool
            cutoff = (utcnow() - self.timeout).replace(microsecond=0)
            tasks = yield Query(self.sql.pool_tasks, {"cid": campaign_id}, "all", shared=True)
            taken = yield Query(self.sql.pool_taken, {"cid": campaign_id, "cutoff": cutoff}, "all", shared=True)
            pool = self.pools.get(campaign_id)
            if pool is None or pool is before or pool.redundancy != redundancy or pool.gold_rate != gold_rate:
                pool = TaskPool(redundancy=redundancy, gold_rate=gold_rate, tasks=[(r[0], bool(r[1])) for r in tasks],
                                taken={r[0]: r[1] for r in taken})
                self.pools[campaign_id] = pool
                tx.on_rollback.append(lambda: self.forget(campaign_id))
        return pool

    def _served(self, pool: TaskPool, campaign_id: int, annotator_id: int) -> Steps[set[int]]:
        served = pool.served.get(annotator_id)
        if served is None:
            served = {r[0] for r in (yield Query(self.sql.served, {"cid": campaign_id, "aid": annotator_id}, "all"))}
            pool.served[annotator_id] = served
        return served

    def _next(self, tx: Tx, campaign_id: int, annotator_id: int) -> Steps[Optional[dict[str, Any]]]:
        row = yield Query(self.sql.campaign, {"cid": campaign_id, "aid": annotator_id})
        if row is None or row[3] is None:
            raise NotFoundError(f"campaign {campaign_id} not found")
        status, redundancy, gold_rate, _, open_id, open_task, open_displayed, open_served_at = row
        if status != "open":
            raise ConflictError(f"campaign {campaign_id} is closed")
        if open_id is not None:
            content = yield from self._task_content(open_task)
            return self._view(content, open_id, open_task, open_displayed, open_served_at)
        pool = yield from self._pool(tx, campaign_id, redundancy, gold_rate)
        rng = yield from self._rng_for(pool, campaign_id, annotator_id)
        picked = yield from self._pick(tx, pool, campaign_id, annotator_id, rng)
        if picked is None and pool.built_at + POOL_MIN_REBUILD_S < time.monotonic():
            pool = yield from self._pool(tx, campaign_id, redundancy, gold_rate, rebuild=True)
            picked = yield from self._pick(tx, pool, campaign_id, annotator_id, rng)
        if picked is None:
            return None
        new_id, task_id, displayed, served_at = picked
        content = yield from self._task_content(task_id)
        return self._view(content, new_id, task_id, displayed, served_at)

    def _rng_for(self, pool: TaskPool, campaign_id: int, annotator_id: int) -> Steps[random.Random]:
        """Unpredictable choices by default; with a seed, a generator fixed by (seed, campaign, annotator,
        how many tasks this annotator was served), so the same sequence of requests gets the same answers."""
        if self._seed is None:
            return self._rng
        served = len((yield from self._served(pool, campaign_id, annotator_id)))
        return random.Random(f"{self._seed}:{campaign_id}:{annotator_id}:{served}")

    def _pick(self, tx: Tx, pool: TaskPool, campaign_id: int, annotator_id: int,
              rng: random.Random) -> Steps[Optional[tuple[int, int, list[int], Any]]]:
        """Insert an assignment on the first candidate of the pool that the database confirms is eligible
        (one conditional INSERT per candidate); returns (assignment id, task id, displayed, served_at).
        The pool records the candidate before its first query (content, INSERT) is answered, so that
        operations running alongside this one (another annotator, same batch) are offered other tasks first."""
        served = yield from self._served(pool, campaign_id, annotator_id)
        for tried, task_id in enumerate(pool.candidates(annotator_id, rng)):
            if tried >= MAX_CANDIDATES:
                return None
            limit = pool.redundancy if task_id in pool.count else NO_LIMIT
            pool.record(task_id, annotator_id)
            tx.on_rollback.append(lambda: self.forget(campaign_id))
            try:
                displayed = list((yield from self._task_content(task_id)).sample_ids)
            except Exception:
                pool.unrecord(task_id, annotator_id)
                raise
            rng.shuffle(displayed)
            served_at = utcnow()
            cutoff = served_at - self.timeout
            row = yield Query(self.sql.pick, {"cid": campaign_id, "tid": task_id, "aid": annotator_id,
                                              "displayed": displayed, "served_at": served_at, "cutoff": cutoff,
                                              "limit": limit}, writes=True)
            if row is not None:
                return row[0], task_id, displayed, served_at
            pool.unrecord(task_id, annotator_id)
            mine, holding = yield Query(self.sql.task_check, {"tid": task_id, "aid": annotator_id, "cutoff": cutoff})
            if mine:
                served.add(task_id)
            else:
                pool.set_taken(task_id, holding)
        return None

    def _task_content(self, task_id: int) -> Steps[TaskContent]:
        content = self._content.get(task_id)
        if content is not None:
            self._content.move_to_end(task_id)
            return content
        rows = yield Query(self.sql.content, {"tid": task_id}, "all")
        if not rows:
            raise NotFoundError(f"task {task_id} not found")
        kind, lo, hi, campaign_id, prompt, instructions, allow_critique = rows[0][:7]
        samples = [(r[7], r[8]) for r in rows if r[7] is not None]
        content = TaskContent(campaign_id=campaign_id, kind=kind, scale=[lo, hi] if kind == "rating" else None,
                              prompt=prompt, samples={sid: text for sid, text in samples},
                              sample_ids=tuple(sid for sid, _ in samples), instructions=instructions,
                              allow_critique=bool(allow_critique))
        self._content[task_id] = content
        if len(self._content) > CONTENT_CACHE_SIZE:
            self._content.popitem(last=False)
        return content

    def _view(self, content: TaskContent, assignment_id: int, task_id: int, displayed: list[int],
              served_at: Any) -> dict[str, Any]:
        """What an annotator sees (as crud.assignment_view): prompt and samples in displayed order."""
        names: tuple[Any, ...] = ("left", "right") if content.kind == "pairwise" else tuple(range(len(displayed)))
        items = [{"position": names[i], "sample_id": sid, "text": content.samples[sid]} for i, sid in enumerate(displayed)]
        return {"assignment_id": assignment_id, "task_id": task_id, "campaign_id": content.campaign_id,
                "kind": content.kind, "scale": content.scale, "prompt": content.prompt,
                "instructions": content.instructions, "allow_critique": content.allow_critique, "items": items,
                "served_at": served_at.isoformat()}

    # ------------------------------------------------------------------ storing an answer

    def _submit_op(self, assignment_id: int, annotator_id: int, key: str, answer: Any, critique: Optional[str],
                   time_spent_ms: Optional[int], source: str) -> StepOp[tuple[dict[str, Any], bool]]:
        rules.check_text(key, "idempotency_key")
        if not rules.KEY_LENGTH[0] <= len(key) <= rules.KEY_LENGTH[1]:
            raise InvalidError("idempotency_key: must be 8 to 128 characters")
        digest = crud.body_digest(assignment_id, answer, critique)

        return StepOp(lambda tx: self._submit(tx, assignment_id, annotator_id, key, digest, answer, critique,
                                              time_spent_ms, source), annotator_id)

    def _submit(self, tx: Tx, assignment_id: int, annotator_id: int, key: str, digest: str, answer: Any,
                critique: Optional[str], time_spent_ms: Optional[int], source: str) -> Steps[tuple[dict[str, Any], bool]]:
        row = yield Query(self.sql.assignment, {"id": assignment_id, "aid": annotator_id, "key": key})
        if row is None or row[0] != annotator_id:
            raise NotFoundError(f"assignment {assignment_id} not found")
        (_, campaign_id, task_id, displayed, status, campaign_status, allow_critique, kind, lo, hi,
         ann_id, ann_assignment, ann_task, ann_answer, ann_resolved, ann_digest, submitted_at) = row
        if ann_id is not None:
            if ann_digest != digest:
                raise ConflictError("idempotency_key was already used for a different submission")
            return {"annotation_id": ann_id, "assignment_id": ann_assignment, "task_id": ann_task, "answer": ann_answer,
                    "resolved": ann_resolved, "replayed": True, "submitted_at": submitted_at.isoformat()}, True
        if campaign_status != "open":
            raise ConflictError(f"campaign {campaign_id} is closed")
        if status != "open":
            raise ConflictError(f"assignment {assignment_id} was already answered")
        rules.check_submission(idempotency_key=key, critique=critique, time_spent_ms=time_spent_ms,
                               allow_critique=bool(allow_critique))
        original = (yield from self._task_content(task_id)).samples[displayed[0]] if kind == "edit" else None
        resolved = rules.resolve_answer(kind=kind, answer=answer, displayed=displayed,
                                       scale=[lo, hi] if kind == "rating" else None, original=original)
        skip = bool(resolved.get("skip"))
        at = utcnow()
        values = dict(id=assignment_id, cid=campaign_id, tid=task_id, aid=annotator_id, key=key, digest=digest,
                      answer=answer, resolved=resolved, skip=skip, critique=critique or None, time_ms=time_spent_ms,
                      source=source, at=at)
        new_status = "skipped" if skip else "answered"
        if self.sql.store_answer is not None:
            new = yield Query(self.sql.store_answer, {"new_status": new_status, **values}, writes=True)
        else:
            new = yield Query(self.sql.insert_annotation, values, writes=True)
            if (yield Query(self.sql.answer_assignment, {"id": assignment_id, "new_status": new_status},
                            writes=True)) is None:
                raise RetryOperation(f"assignment {assignment_id} was answered concurrently")
        if new is None:
            raise RetryOperation(f"assignment {assignment_id} was answered concurrently")
        if skip:
            pool = self.pools.get(campaign_id)
            if pool is not None:
                pool.release(task_id)
                tx.on_rollback.append(lambda: self.forget(campaign_id))
        return {"annotation_id": new[0], "assignment_id": assignment_id, "task_id": task_id, "answer": answer,
                "resolved": resolved, "replayed": False, "submitted_at": at.isoformat()}, False
