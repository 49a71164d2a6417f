"""Group commit: one thread owns the write connection and commits many requests' writes at once.

Requests hand a write operation (a function of a :class:`Tx`) to :meth:`GroupCommitWriter.submit`
or ``await`` :meth:`GroupCommitWriter.run`. The writer thread drains everything queued into one
``BEGIN IMMEDIATE .. COMMIT`` (plain ``BEGIN`` on PostgreSQL), runs each operation inside its own
SAVEPOINT so one failing operation rolls back only its own statements, and resolves every
request only after COMMIT has returned: an acknowledged write is durable (SQLite WAL with
synchronous=FULL, or PostgreSQL's commit). While one batch commits the next one queues, so the
fsync and the lock hand-over are paid once per batch instead of once per request.

On PostgreSQL the batch runs in psycopg 3 pipeline mode: statements whose result nobody reads
(BEGIN, SAVEPOINT, RELEASE) are sent with the next query instead of costing a round trip each, and
COMMIT's outcome is waited for (a pipeline sync) before any request is answered. A batch made only
of :class:`~rlhfkit.feedback.steps.StepOp` operations (the API's hot path) is first run in lockstep
(:func:`~rlhfkit.feedback.steps.run_lockstep`: one round trip and a few statements per step for the whole
batch); if that attempt fails in any way it is rolled back and the batch is run again one savepoint at a
time, where each operation's error is its own.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, Optional, TypeVar

from sqlalchemy import Engine

from rlhfkit.feedback.rawsql import RawConnection
from rlhfkit.feedback.steps import RetryOperation, StepOp, run_lockstep
from rlhfkit.feedback.store import DatabaseBusyError, DatabaseMissingError, StoreError, sqlite_path, write_lock_for

T = TypeVar("T")
MAX_BATCH = 512


class Tx(RawConnection):
    """The writer's connection as an operation sees it, plus ``on_rollback`` hooks: they undo in-memory
    changes an operation made when its savepoint or the whole batch is rolled back."""

    def __init__(self, dbapi_connection: Any, integrity_error: type[BaseException]) -> None:
        super().__init__(dbapi_connection)
        self.integrity_error = integrity_error
        self.on_rollback: list[Callable[[], None]] = []


class _Pending(Generic[T]):
    """One queued operation and where its outcome goes (a concurrent future or an asyncio future)."""

    __slots__ = ("op", "future", "loop", "afuture", "result", "error")

    def __init__(self, op: Callable[[Tx], T], future: Optional[Future[T]] = None,
                 loop: Optional[asyncio.AbstractEventLoop] = None, afuture: Optional[asyncio.Future[T]] = None) -> None:
        self.op, self.future, self.loop, self.afuture = op, future, loop, afuture
        self.result: Any = None
        self.error: Optional[BaseException] = None


def _settle_async(items: list[_Pending[Any]]) -> None:
    """On the event loop: hand each awaiting request its result (skipping ones that were cancelled)."""
    for item in items:
        assert item.afuture is not None
        if item.afuture.done():
            continue
        if item.error is not None:
            item.afuture.set_exception(item.error)
        else:
            item.afuture.set_result(item.result)


class GroupCommitWriter:
    """The single writer of a store: a daemon thread that batches operations into one transaction."""

    def __init__(self, engine: Engine, *, busy_timeout_ms: int = 10_000, name: str = "feedback-writer") -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self.busy_timeout_s = busy_timeout_ms / 1000.0
        self._path = sqlite_path(engine.url.render_as_string(hide_password=False)) if self.sqlite else None
        self._lock = write_lock_for(self._path) if self.sqlite else None
        self._queue: queue.SimpleQueue[Optional[_Pending[Any]]] = queue.SimpleQueue()
        self._closed = False
        self._conn: Any = None
        self.batches = 0
        self.operations = 0
        self.lockstep_batches = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ callers

    def submit(self, op: Callable[[Tx], T]) -> Future[T]:
        """Queue ``op``; the future resolves after the transaction holding it has committed."""
        if self._closed:
            raise StoreError("the feedback store's writer is closed")
        future: Future[T] = Future()
        self._queue.put(_Pending(op, future=future))
        return future

    async def run(self, op: Callable[[Tx], T]) -> T:
        """Queue ``op`` from a coroutine and wait (without a thread) for its committed result."""
        if self._closed:
            raise StoreError("the feedback store's writer is closed")
        loop = asyncio.get_running_loop()
        afuture: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Pending(op, loop=loop, afuture=afuture))
        return await afuture

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish what is queued, then stop the thread and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    # ------------------------------------------------------------------ writer thread

    def _connection(self) -> Any:
        if self._conn is None:
            fairy = self.engine.raw_connection()
            dbapi = fairy.dbapi_connection
            if not self.sqlite:
                dbapi.autocommit = True  # BEGIN/COMMIT are issued explicitly
            self._conn = (fairy, dbapi)
        return self._conn[1]

    def _drop_connection(self) -> None:
        if self._conn is not None:
            fairy, _ = self._conn
            self._conn = None
            try:
                fairy.invalidate()
            except Exception:  # noqa: BLE001 - the connection is broken anyway
                pass

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._run_batch(batch)
        self._drop_connection()

    def _run_batch(self, batch: list[_Pending[Any]]) -> None:
        tx: Optional[Tx] = None
        locked = False
        try:
            if self._lock is not None:
                if not self._lock.acquire(timeout=self.busy_timeout_s):
                    raise DatabaseBusyError(f"feedback database stayed locked for more than {self.busy_timeout_s:.1f} s "
                                            "(a write transaction of this process did not finish)")
                locked = True
            if self._path is not None and not self._path.exists():
                raise DatabaseMissingError(f"feedback database file {self._path} is gone (deleted or moved)")
            dbapi = self._connection()
            tx = Tx(dbapi, self.engine.dialect.loaded_dbapi.IntegrityError)
            if self.sqlite:
                self._transaction(tx, batch)
            elif not (len(batch) > 1 and all(isinstance(item.op, StepOp) for item in batch)
                      and self._lockstep(dbapi, tx, batch)):
                with dbapi.pipeline() as pipeline:
                    tx.pipeline = pipeline
                    self._transaction(tx, batch)
                    pipeline.sync()  # raises here, before anyone is answered, if COMMIT failed
                tx.pipeline = None
        except BaseException as exc:  # noqa: BLE001 - every waiting request must hear about it
            error = self._store_error(exc)
            if tx is not None:
                tx.pipeline = None
                try:
                    tx.execute("ROLLBACK")
                except Exception:  # noqa: BLE001
                    self._drop_connection()
                for hook in tx.on_rollback:
                    hook()
            elif not isinstance(exc, DatabaseBusyError):
                self._drop_connection()
            for item in batch:
                item.result, item.error = None, error
        finally:
            if locked:
                assert self._lock is not None
                self._lock.release()
        self.batches += 1
        self.operations += len(batch)
        self._settle(batch)

    def _lockstep(self, dbapi: Any, tx: Tx, batch: list[_Pending[Any]]) -> bool:
        """Run and commit the batch in lockstep; False (rolled back, nothing answered) to run it in sequence."""
        try:
            with dbapi.pipeline() as pipeline:
                tx.pipeline = pipeline
                tx.execute("BEGIN")
                run_lockstep(tx, batch)
                tx.execute("COMMIT")
                pipeline.sync()
            tx.pipeline = None
            self.lockstep_batches += 1
            return True
        except Exception:  # noqa: BLE001 - abandoned, a database error, or values an array form could not encode
            tx.pipeline = None
            tx.execute("ROLLBACK")  # a broken connection raises here and fails the batch as usual
            for hook in tx.on_rollback:
                hook()
            tx.on_rollback.clear()
            for item in batch:
                item.result, item.error = None, None
            return False

    def _transaction(self, tx: Tx, batch: list[_Pending[Any]]) -> None:
        """BEGIN, every operation in its savepoint, COMMIT."""
        tx.execute("BEGIN IMMEDIATE" if self.sqlite else "BEGIN")
        for item in batch:
            self._run_one(tx, item)
        tx.execute("COMMIT")

    def _run_one(self, tx: Tx, item: _Pending[Any]) -> None:
        """Run one operation in its own savepoint; its own error rolls back only its statements."""
        for attempt in (1, 2):
            tx.execute("SAVEPOINT op")
            rollback_hooks = len(tx.on_rollback)
            try:
                item.result = item.op(tx)
            except Exception as exc:  # noqa: BLE001 - handed to the request
                tx.clear_pipeline_error()
                tx.execute("ROLLBACK TO SAVEPOINT op")
                tx.execute("RELEASE SAVEPOINT op")
                for hook in tx.on_rollback[rollback_hooks:]:
                    hook()
                del tx.on_rollback[rollback_hooks:]
                if attempt == 1 and isinstance(exc, (RetryOperation, tx.integrity_error)):
                    continue
                item.error = exc
                return
            tx.execute("RELEASE SAVEPOINT op")
            return

    def _store_error(self, exc: BaseException) -> BaseException:
        """Map a failed batch to the store's errors (503 for the API)."""
        if isinstance(exc, StoreError):
            return exc
        if self.sqlite and "locked" in str(exc):
            return DatabaseBusyError(f"feedback database stayed locked for more than {self.busy_timeout_s:.1f} s "
                                     f"(another process holds a long write transaction): {exc}")
        return StoreError(f"feedback database write failed, nothing of this request was stored: {exc}")

    def _settle(self, batch: list[_Pending[Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Pending[Any]]] = {}
        for item in batch:
            if item.future is not None:
                if not item.future.set_running_or_notify_cancel():
                    continue  # the caller cancelled it while it was queued
                if item.error is not None:
                    item.future.set_exception(item.error)
                else:
                    item.future.set_result(item.result)
            else:
                assert item.loop is not None
                by_loop.setdefault(item.loop, []).append(item)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_async, items)
            except RuntimeError:  # the loop was closed: nobody is waiting any more
                pass
