"""Writer operations as generators of queries, so that one batch's operations share round trips.

Why: on PostgreSQL every statement is a round trip to another process, and on a busy machine each
one waits to be scheduled; serving a task and storing an answer are a few statements each, so a
batch of them run one after the other spent most of its time waiting. A :class:`StepOp` yields
:class:`Query` objects and receives their rows. Run alone (``op(tx)``, SQLite and fallbacks) each
query is executed as it is yielded. :func:`run_lockstep` instead advances every operation of a
batch together: the current query of each is sent in one psycopg pipeline and all answers come
back in one round trip. Operations with the same ``key`` (one annotator) never share a wave, so
each sees the other's writes as it would in sequence. In lockstep there are no savepoints: an
operation that fails after it changed a row, or any database error, abandons the lockstep attempt
(:class:`LockstepAbandoned`) and the writer reruns the batch one operation at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, Optional, TypeVar

from rlhfkit.feedback.rawsql import RawConnection, Statement

T = TypeVar("T")


class RetryOperation(Exception):
    """Raised by an operation to be rolled back to its savepoint and run once more (e.g. a lost race)."""


class LockstepAbandoned(Exception):
    """An operation failed after changing rows while running in lockstep: rerun the batch in sequence."""


@dataclass(frozen=True)
class Query:
    """One statement an operation wants run: ``rows`` is "one" (a row or None) or "all" (a list);
    ``writes`` marks a statement that changes rows (it does so when it returns a row)."""

    statement: Statement
    values: dict[str, Any] = field(default_factory=dict)
    rows: str = "one"
    writes: bool = False


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

    Raises :class:`LockstepAbandoned` or the database's error when the batch must be rerun in sequence.
    """
    waiting = [(item, 1) for item in batch]
    cursors: list[Any] = []  # one per running operation, reused: every result is read before the next step
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
            while len(cursors) < len(running):
                cursors.append(tx.dbapi_connection.cursor())
            for r, cursor in zip(running, cursors):
                assert r.query is not None
                cursor.execute(r.query.statement.sql, r.query.statement.params(r.query.values))
            tx.pipeline.sync()
            still = []
            for r, cursor in zip(running, cursors):
                assert r.query is not None
                rows = r.query.statement.fetch(cursor, r.query.rows)
                r.wrote = r.wrote or (r.query.writes and bool(rows))
                if _advance(r, rows, later):
                    still.append(r)
            running = still
        waiting = later


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
