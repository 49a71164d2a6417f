"""The two hot operations of the annotation API, as group-committed writer operations on lean SQL.

``next_assignment``: the caller's open assignment, else a new one on a task proposed by the
campaign's in-memory :class:`~rlhfkit.feedback.pool.TaskPool` and checked in the database.
``submit``: store an answer exactly once per (annotator, idempotency key). Both run in the
writer thread (one transaction per batch, a savepoint per operation) and answer only after COMMIT,
so an assignment id a client holds and every acknowledged answer survive a SIGKILL. The rules are
those of :mod:`rlhfkit.feedback.crud` (which the web pages still use): same errors, same views.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Optional

from sqlalchemy import and_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.engine import Dialect

from rlhfkit.feedback import crud, rules
from rlhfkit.feedback.crud import ConflictError, InvalidError, NotFoundError
from rlhfkit.feedback.models import (Annotation, Assignment, Campaign, CampaignMember, Prompt, Sample, Task,
                                     TaskItem, utcnow)
from rlhfkit.feedback.pool import TaskPool
from rlhfkit.feedback.rawsql import Statement
from rlhfkit.feedback.store import Store
from rlhfkit.feedback.writer import RetryOperation, Tx

A, N, C, M = Assignment.__table__, Annotation.__table__, Campaign.__table__, CampaignMember.__table__
T, TI, S, P = Task.__table__, TaskItem.__table__, Sample.__table__, Prompt.__table__
MAX_CANDIDATES = 64       # candidates checked in the database per request before the pool is rebuilt
POOL_MAX_AGE_S = 60.0     # rebuild at least this often (picks up expiries and other processes' writes)
POOL_MIN_REBUILD_S = 1.0  # a dry pool is rebuilt at most this often before answering "nothing left"
CONTENT_CACHE_SIZE = 50_000


def _holding(cutoff: Any) -> Any:
    """Assignments that hold a task's slot: answered, or open and served after ``cutoff``."""
    return or_(A.c.status == "answered", and_(A.c.status == "open", A.c.served_at > cutoff))


class Statements:
    """Every statement of the hot path, compiled once for the store's dialect."""

    def __init__(self, dialect: Dialect) -> None:
        aid, cid, tid = bindparam("aid"), bindparam("cid"), bindparam("tid")
        cutoff = bindparam("cutoff", type_=A.c.served_at.type)

        def compiled(statement: Any) -> Statement:
            return Statement(statement, dialect)

        self.campaign = compiled(
            select(C.c.status, C.c.redundancy, C.c.gold_rate, M.c.annotator_id)
            .select_from(C.outerjoin(M, and_(M.c.campaign_id == C.c.id, M.c.annotator_id == aid)))
            .where(C.c.id == cid).with_for_update(of=C))
        self.open_assignment = compiled(
            select(A.c.id, A.c.task_id, A.c.displayed, A.c.served_at)
            .where(A.c.campaign_id == cid, A.c.annotator_id == aid, A.c.status == "open").order_by(A.c.id).limit(1))
        self.pool_tasks = compiled(select(T.c.id, T.c.is_gold).where(T.c.campaign_id == cid))
        self.pool_taken = compiled(select(A.c.task_id, func.count()).where(A.c.campaign_id == cid, _holding(cutoff))
                                   .group_by(A.c.task_id))
        self.served = compiled(select(A.c.task_id).where(A.c.campaign_id == cid, A.c.annotator_id == aid))
        self.task_check = compiled(
            select(func.coalesce(func.sum(case((A.c.annotator_id == aid, 1), else_=0)), 0),
                   func.coalesce(func.sum(case((_holding(cutoff), 1), else_=0)), 0))
            .where(A.c.task_id == tid))
        self.insert_assignment = compiled(insert(A).values(
            campaign_id=cid, task_id=tid, annotator_id=aid, displayed=bindparam("displayed", type_=A.c.displayed.type),
            status="open", served_at=bindparam("served_at", type_=A.c.served_at.type)).returning(A.c.id))
        self.task = compiled(select(T.c.kind, T.c.scale_lo, T.c.scale_hi, T.c.campaign_id, P.c.text)
                             .select_from(T.join(P, P.c.id == T.c.prompt_id)).where(T.c.id == tid))
        self.task_samples = compiled(select(S.c.id, S.c.response).select_from(TI.join(S, S.c.id == TI.c.sample_id))
                                     .where(TI.c.task_id == tid).order_by(TI.c.slot))
        self.campaign_text = compiled(select(C.c.instructions, C.c.allow_critique).where(C.c.id == cid))
        self.assignment = compiled(
            select(A.c.annotator_id, A.c.campaign_id, A.c.task_id, A.c.displayed, A.c.status, C.c.status,
                   C.c.allow_critique, T.c.kind, T.c.scale_lo, T.c.scale_hi)
            .select_from(A.join(C, C.c.id == A.c.campaign_id).join(T, T.c.id == A.c.task_id))
            .where(A.c.id == bindparam("id")))
        self.by_key = compiled(
            select(N.c.id, N.c.assignment_id, N.c.task_id, N.c.answer, N.c.resolved, N.c.body_sha256, N.c.submitted_at)
            .where(N.c.annotator_id == aid, N.c.idempotency_key == bindparam("key")))
        self.insert_annotation = compiled(insert(N).values(
            assignment_id=bindparam("id", type_=N.c.assignment_id.type), campaign_id=cid, task_id=tid, annotator_id=aid,
            idempotency_key=bindparam("key", type_=N.c.idempotency_key.type),
            body_sha256=bindparam("digest", type_=N.c.body_sha256.type),
            answer=bindparam("answer", type_=N.c.answer.type), resolved=bindparam("resolved", type_=N.c.resolved.type),
            is_skip=bindparam("skip", type_=N.c.is_skip.type), critique=bindparam("critique", type_=N.c.critique.type),
            time_spent_ms=bindparam("time_ms", type_=N.c.time_spent_ms.type), source=bindparam("source", type_=N.c.source.type),
            submitted_at=bindparam("at", type_=N.c.submitted_at.type)).returning(N.c.id))
        self.answer_assignment = compiled(update(A).where(A.c.id == bindparam("id"), A.c.status == "open")
                                          .values(status=bindparam("new_status", type_=A.c.status.type)))


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
        return await self.store.writer.run(lambda tx: self._next(tx, campaign_id, annotator_id))

    async def submit(self, *, assignment_id: int, annotator_id: int, idempotency_key: str, answer: Any,
                     critique: Optional[str] = None, time_spent_ms: Optional[int] = None,
                     source: str = "api") -> tuple[dict[str, Any], bool]:
        """Store an answer once; returns (annotation view, replayed); committed before it returns."""
        return await self.store.writer.run(self._submit_op(assignment_id, annotator_id, idempotency_key, answer,
                                                           critique, time_spent_ms, source))

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

    def _pool(self, tx: Tx, campaign_id: int, redundancy: int, gold_rate: float, *, rebuild: bool = False) -> TaskPool:
        pool = self.pools.get(campaign_id)
        if (rebuild or pool is None or pool.redundancy != redundancy or pool.gold_rate != gold_rate
                or pool.built_at + POOL_MAX_AGE_S < time.monotonic()):
            cutoff = utcnow() - self.timeout
            tasks = [(r[0], bool(r[1])) for r in tx.all(self.sql.pool_tasks, cid=campaign_id)]
            taken = {r[0]: r[1] for r in tx.all(self.sql.pool_taken, cid=campaign_id, cutoff=cutoff)}
            pool = TaskPool(redundancy=redundancy, gold_rate=gold_rate, tasks=tasks, taken=taken)
            self.pools[campaign_id] = pool
            tx.on_rollback.append(lambda: self.forget(campaign_id))
        return pool

    def _served(self, tx: Tx, pool: TaskPool, campaign_id: int, annotator_id: int) -> set[int]:
        served = pool.served.get(annotator_id)
        if served is None:
            served = {r[0] for r in tx.all(self.sql.served, cid=campaign_id, aid=annotator_id)}
            pool.served[annotator_id] = served
        return served

    def _next(self, tx: Tx, campaign_id: int, annotator_id: int) -> Optional[dict[str, Any]]:
        row = tx.one(self.sql.campaign, cid=campaign_id, aid=annotator_id)
        if row is None or row[3] is None:
            raise NotFoundError(f"campaign {campaign_id} not found")
        status, redundancy, gold_rate, _ = row
        if status != "open":
            raise ConflictError(f"campaign {campaign_id} is closed")
        current = tx.one(self.sql.open_assignment, cid=campaign_id, aid=annotator_id)
        if current is not None:
            assignment_id, task_id, displayed, served_at = current
            return self._view(tx, assignment_id, task_id, displayed, served_at)
        pool = self._pool(tx, campaign_id, redundancy, gold_rate)
        rng = self._rng_for(tx, pool, campaign_id, annotator_id)
        task_id = self._choose(tx, pool, campaign_id, annotator_id, rng)
        if task_id is None and pool.built_at + POOL_MIN_REBUILD_S < time.monotonic():
            pool = self._pool(tx, campaign_id, redundancy, gold_rate, rebuild=True)
            task_id = self._choose(tx, pool, campaign_id, annotator_id, rng)
        if task_id is None:
            return None
        content = self._task_content(tx, task_id)
        displayed = list(content.sample_ids)
        rng.shuffle(displayed)
        served_at = utcnow()
        new_id = tx.one(self.sql.insert_assignment, cid=campaign_id, tid=task_id, aid=annotator_id,
                        displayed=displayed, served_at=served_at)
        assert new_id is not None
        pool.record(task_id, annotator_id)
        tx.on_rollback.append(lambda: self.forget(campaign_id))
        return self._view(tx, new_id[0], task_id, displayed, served_at)

    def _rng_for(self, tx: Tx, pool: TaskPool, campaign_id: int, annotator_id: int) -> random.Random:
        """Unpredictable choices by default; with a seed, a generator fixed by (seed, campaign, annotator,
        how many tasks this annotator was served), so the same sequence of requests gets the same answers."""
        if self._seed is None:
            return self._rng
        served = len(self._served(tx, pool, campaign_id, annotator_id))
        return random.Random(f"{self._seed}:{campaign_id}:{annotator_id}:{served}")

    def _choose(self, tx: Tx, pool: TaskPool, campaign_id: int, annotator_id: int,
                rng: random.Random) -> Optional[int]:
        """The first candidate of the pool that the database confirms is eligible for this annotator."""
        served = self._served(tx, pool, campaign_id, annotator_id)
        cutoff = utcnow() - self.timeout
        for tried, task_id in enumerate(pool.candidates(annotator_id, rng)):
            if tried >= MAX_CANDIDATES:
                return None
            mine, holding = tx.one(self.sql.task_check, tid=task_id, aid=annotator_id, cutoff=cutoff)  # type: ignore[misc]
            if mine:
                served.add(task_id)
                continue
            if task_id in pool.count:
                if holding >= pool.redundancy:
                    pool.set_taken(task_id, holding)
                    continue
            return task_id
        return None

    def _task_content(self, tx: Tx, task_id: int) -> TaskContent:
        content = self._content.get(task_id)
        if content is not None:
            self._content.move_to_end(task_id)
            return content
        row = tx.one(self.sql.task, tid=task_id)
        if row is None:
            raise NotFoundError(f"task {task_id} not found")
        kind, lo, hi, campaign_id, prompt = row
        samples = tx.all(self.sql.task_samples, tid=task_id)
        instructions, allow_critique = tx.one(self.sql.campaign_text, cid=campaign_id)  # type: ignore[misc]
        content = TaskContent(campaign_id=campaign_id, kind=kind, scale=[lo, hi] if kind == "rating" else None,
                              prompt=prompt, samples={sid: text for sid, text in samples},
                              sample_ids=tuple(sid for sid, _ in samples), instructions=instructions,
                              allow_critique=bool(allow_critique))
        self._content[task_id] = content
        if len(self._content) > CONTENT_CACHE_SIZE:
            self._content.popitem(last=False)
        return content

    def _view(self, tx: Tx, assignment_id: int, task_id: int, displayed: list[int], served_at: Any) -> dict[str, Any]:
        """What an annotator sees (as crud.assignment_view): prompt and samples in displayed order."""
        content = self._task_content(tx, task_id)
        names: tuple[Any, ...] = ("left", "right") if content.kind == "pairwise" else tuple(range(len(displayed)))
        items = [{"position": names[i], "sample_id": sid, "text": content.samples[sid]} for i, sid in enumerate(displayed)]
        return {"assignment_id": assignment_id, "task_id": task_id, "campaign_id": content.campaign_id,
                "kind": content.kind, "scale": content.scale, "prompt": content.prompt,
                "instructions": content.instructions, "allow_critique": content.allow_critique, "items": items,
                "served_at": served_at.isoformat()}

    # ------------------------------------------------------------------ storing an answer

    def _submit_op(self, assignment_id: int, annotator_id: int, key: str, answer: Any, critique: Optional[str],
                   time_spent_ms: Optional[int], source: str) -> Any:
        rules.check_text(key, "idempotency_key")
        if not rules.KEY_LENGTH[0] <= len(key) <= rules.KEY_LENGTH[1]:
            raise InvalidError("idempotency_key: must be 8 to 128 characters")
        digest = crud.body_digest(assignment_id, answer, critique)

        def op(tx: Tx) -> tuple[dict[str, Any], bool]:
            return self._submit(tx, assignment_id, annotator_id, key, digest, answer, critique, time_spent_ms, source)

        return op

    def _submit(self, tx: Tx, assignment_id: int, annotator_id: int, key: str, digest: str, answer: Any,
                critique: Optional[str], time_spent_ms: Optional[int], source: str) -> tuple[dict[str, Any], bool]:
        row = tx.one(self.sql.assignment, id=assignment_id)
        if row is None or row[0] != annotator_id:
            raise NotFoundError(f"assignment {assignment_id} not found")
        _, campaign_id, task_id, displayed, status, campaign_status, allow_critique, kind, lo, hi = row
        existing = tx.one(self.sql.by_key, aid=annotator_id, key=key)
        if existing is not None:
            ann_id, ann_assignment, ann_task, ann_answer, ann_resolved, ann_digest, submitted_at = existing
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
        original = self._task_content(tx, task_id).samples[displayed[0]] if kind == "edit" else None
        resolved = rules.resolve_answer(kind=kind, answer=answer, displayed=displayed,
                                       scale=[lo, hi] if kind == "rating" else None, original=original)
        skip = bool(resolved.get("skip"))
        at = utcnow()
        new = tx.one(self.sql.insert_annotation, id=assignment_id, cid=campaign_id, tid=task_id, aid=annotator_id,
                     key=key, digest=digest, answer=answer, resolved=resolved, skip=skip, critique=critique or None,
                     time_ms=time_spent_ms, source=source, at=at)
        assert new is not None
        if tx.run(self.sql.answer_assignment, id=assignment_id, new_status="skipped" if skip else "answered") != 1:
            raise RetryOperation(f"assignment {assignment_id} was answered concurrently")
        if skip:
            pool = self.pools.get(campaign_id)
            if pool is not None:
                pool.release(task_id)
                tx.on_rollback.append(lambda: self.forget(campaign_id))
        return {"annotation_id": new[0], "assignment_id": assignment_id, "task_id": task_id, "answer": answer,
                "resolved": resolved, "replayed": False, "submitted_at": at.isoformat()}, False
