"""Writer operations as generators of queries, so that one batch's operations share round trips.

Why: on PostgreSQL every statement is a round trip to another process, and on a busy machine each
one waits to be scheduled; serving a task and storing an answer are a few statements each, so a
batch of them run one after the other spent most of its time waiting. A :class:`StepOp` yields
:class:`Query` objects and receives their rows. Run alone (``op(tx)``, SQLite and fallbacks) each
query is executed as it is yielded. :func:`run_lockstep` instead advances every operation of a
batch together: the current query of each is sent in one psycopg pipeline and all answers come
back in one round trip. Within a step the same statement of several operations is sent once in its
array form (:class:`~rlhfkit.feedback.rawsql.Many`) where it has one, and equal shared reads once,
so that a batch costs a few statements per step however many operations it holds. Operations with
the same ``key`` (one annotator) never share a wave, so each sees the other's writes as it would in
sequence. In lockstep there are no savepoints: an operation that fails after it changed a row
(:class:`LockstepAbandoned`), a database error or any other error of the attempt abandons it, and
the writer reruns the batch one operation at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, Optional, TypeVar

from rlhfkit.feedback.rawsql import Many, RawConnection, Statement

T = TypeVar("T")


class RetryOperation(Exception):
    """Raised by an operation to be rolled back to its savepoint and run once more (e.g. a lost race)."""


class LockstepAbandoned(Exception):
    """An operation failed after changing rows while running in lockstep: rerun the batch in sequence."""


@dataclass(frozen=True)
class Query:
    """One statement an operation wants run: ``rows`` is "one" (a row or None) or "all" (a list);
    ``writes`` marks a statement that changes rows (it does so when it returns a row); ``shared`` marks
    a read that operations asking it with equal (hashable) values may share: run once per step."""

    statement: Statement
    values: dict[str, Any] = field(default_factory=dict)
    rows: str = "one"
    writes: bool = False
    shared: bool = False


Steps = Generator[Query, Any, T]


class StepOp(Generic[T]):
    """A writer operation made of queries; ``key`` groups operations that must not run side by side."""

    def __init__(self, steps: Callable[[Any], Steps[T]], key: Hashable) -> None:
        self.steps = steps
        self.key = key

    def __call__(self, tx: RawConnection) -> T:
        """Run alone: each query is executed as it is yielded."""
        gen = self.steps(tx)
        value: Any = None
        try:
            while True:
                query = gen.send(value)
                value = tx.fetch(query.statement, query.rows, **query.values)
        except StopIteration as stop:
            return stop.value


class _Running:
    __slots__ = ("item", "attempt", "gen", "query", "wrote")

    def __init__(self, item: Any, attempt: int, gen: Steps[Any]) -> None:
        self.item, self.attempt, self.gen = item, attempt, gen
        self.query: Optional[Query] = None
        self.wrote = False


def run_lockstep(tx: RawConnection, batch: list[Any]) -> None:
    """Run the batch's StepOps together in ``tx`` (pipeline mode); sets each item's result or error.

    Raises (:class:`LockstepAbandoned`, the database's error, ...) when the batch must be rerun in sequence.
    """
    waiting = [(item, 1) for item in batch]
    cursors: list[Any] = []  # one per execution of a step, reused: every result is read before the next step
    while waiting:
        wave, later, keys = [], [], set()
        for item, attempt in waiting:
            if item.op.key in keys:
                later.append((item, attempt))
            else:
                keys.add(item.op.key)
                wave.append(_Running(item, attempt, item.op.steps(tx)))
        running = [r for r in wave if _advance(r, None, later)]
        while running:
            answers = _step(tx, running, cursors)
            still = []
            for r in running:
                assert r.query is not None
                rows = answers[id(r)]
                r.wrote = r.wrote or (r.query.writes and bool(rows))
                if _advance(r, rows, later):
                    still.append(r)
            running = still
        waiting = later


def _step(tx: RawConnection, running: list[_Running], cursors: list[Any]) -> dict[int, Any]:
    """Send every running operation's current query in as few statements as allowed, wait for all of them
    at once (one round trip), and return each operation's answer by ``id`` of its :class:`_Running`."""
    calls = _plan(running)
    while len(cursors) < len(calls):
        cursors.append(tx.dbapi_connection.cursor())
    for (many, members), cursor in zip(calls, cursors):
        query = members[0].query
        assert query is not None
        if many is None:
            cursor.execute(query.statement.sql, query.statement.params(query.values))
        else:
            cursor.execute(many.statement.sql, many.params([m.query.values for m in members]))  # type: ignore[union-attr]
    tx.pipeline.sync()
    answers: dict[int, Any] = {}
    for (many, members), cursor in zip(calls, cursors):
        query = members[0].query
        assert query is not None
        if many is None:
            rows = query.statement.fetch(cursor, query.rows)
            for m in members:
                answers[id(m)] = list(rows) if isinstance(rows, list) else rows
        else:
            values = [m.query.values for m in members]  # type: ignore[union-attr]
            for m, own in zip(members, many.split(many.statement.fetch(cursor, "all"), values)):
                answers[id(m)] = own if query.rows == "all" else (own[0] if own else None)
    return answers


def _plan(running: list[_Running]) -> list[tuple[Optional[Many], list[_Running]]]:
    """The step's executions: (array form or None, the operations it answers). Equal shared queries run
    once; the same statement of several operations runs once in its array form where it has one."""
    groups: dict[Any, list[_Running]] = {}
    for r in running:
        query = r.query
        assert query is not None
        key = (id(query.statement), tuple(sorted(query.values.items()))) if query.shared else id(query.statement)
        groups.setdefault(key, []).append(r)
    calls: list[tuple[Optional[Many], list[_Running]]] = []
    for key, members in groups.items():
        many = members[0].query.statement.many  # type: ignore[union-attr]
        if isinstance(key, tuple):
            calls.append((None, members))
        elif many is None or len(members) == 1:
            calls.extend((None, [m]) for m in members)
        else:
            calls.extend((many if len(chunk) > 1 else None, chunk) for chunk in _chunks(members, many))
    return calls


def _chunks(members: list[_Running], many: Many) -> list[list[_Running]]:
    """Split operations so that none shares a tag or a ``distinct`` value with another in its chunk."""
    chunks: list[tuple[set[Any], list[_Running]]] = []
    for r in members:
        values = r.query.values  # type: ignore[union-attr]
        marks = {(name, values[name]) for name in many.distinct}
        if many.tag is not None:
            marks.add((many.tag, values[many.tag]))
        for seen, chunk in chunks:
            if not marks & seen:
                seen |= marks
                chunk.append(r)
                break
        else:
            chunks.append((marks, [r]))
    return [chunk for _, chunk in chunks]


def _advance(r: _Running, value: Any, later: list[Any]) -> bool:
    """Send ``value`` to the operation; True while it has a next query."""
    try:
        r.query = r.gen.send(value)
        return True
    except StopIteration as stop:
        r.item.result = stop.value
    except RetryOperation as exc:
        if r.wrote:
            raise LockstepAbandoned(str(exc)) from exc
        if r.attempt == 1:
            later.append((r.item, 2))
        else:
            r.item.error = exc
    except Exception as exc:  # noqa: BLE001 - handed to the request
        if r.wrote:
            raise LockstepAbandoned(str(exc)) from exc
        r.item.error = exc
    return False
