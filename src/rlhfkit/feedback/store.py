"""Open the feedback database: engine setup (SQLite WAL / PostgreSQL), schema creation and upgrades.

SQLite runs in WAL mode with synchronous=FULL (an acknowledged commit survives power loss), a busy
timeout, and every transaction begun IMMEDIATE so that concurrent writers queue on the lock instead
of failing mid-transaction (SQLAlchemy docs, "Enabling Non-Legacy SQLite Transactional Modes").
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from rlhfkit.feedback.schema import SCHEMA_VERSION, SchemaError, upgrade_schema

__all__ = ["SCHEMA_VERSION", "upgrade_schema"]

if TYPE_CHECKING:
    from rlhfkit.feedback.writer import GroupCommitWriter



class StoreError(RuntimeError):
    """The feedback database cannot be used; the message says why and what to do."""


class DatabaseBusyError(StoreError):
    """SQLite stayed locked by another writer for longer than the busy timeout."""


class DatabaseMissingError(StoreError):
    """The SQLite database file does not exist (never created, or deleted while in use)."""


def normalize_url(url: str) -> str:
    """Map plain ``postgresql://`` to the psycopg 3 driver and bare paths to ``sqlite:///path``."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other backends and in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


_WRITE_LOCKS: dict[str, threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def write_lock_for(path: Path | None) -> threading.Lock:
    """One in-process lock per database file, shared by every engine of this process on that file."""
    key = str(path.resolve()) if path is not None else f"memory-{uuid.uuid4()}"
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(key, threading.Lock())


class _QueuedWriterConnection(sqlite3.Connection):
    """A sqlite3 connection that releases this process's write lock once COMMIT/ROLLBACK has finished.

    Why: SQLite's busy handler polls with sleeps of up to 100 ms, so threads of one server contending
    for the write lock leave it idle most of the time; queueing them on a Python lock hands it over at
    once. Other processes still queue through the busy timeout.
    """

    held_lock: Optional[threading.Lock] = None

    def release_write_lock(self) -> None:
        lock, self.held_lock = self.held_lock, None
        if lock is not None:
            lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.release_write_lock()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.release_write_lock()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.release_write_lock()


def _use_wal(cursor: sqlite3.Cursor, timeout_s: float) -> None:
    """Switch the file to WAL (it stays WAL); retried while another process holds the lock.

    SQLite answers a journal-mode change that races another connection with an immediate "database
    is locked" rather than waiting on busy_timeout, so two processes opening a fresh file at once
    would fail without the retry.
    """
    if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _install_sqlite_hooks(engine: Engine, path: Path | None, busy_timeout_ms: int) -> None:
    """PRAGMAs per connection, our own BEGIN IMMEDIATE, and clear errors for lock and missing file.

    Once the database file has existed, it must keep existing: a file deleted under a running server
    is reported instead of silently re-created empty.
    """
    seen = {"file": path is not None and path.exists()}

    def _require_file() -> None:
        if path is not None and seen["file"] and not path.exists():
            raise DatabaseMissingError(f"feedback database file {path} is gone (deleted or moved)")

    @event.listens_for(engine, "do_connect")
    def _check_file(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        _require_file()
        cparams["timeout"] = busy_timeout_ms / 1000.0
        cparams["factory"] = _QueuedWriterConnection

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: sqlite3.Connection, conn_rec: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if path is not None:
            _use_wal(cur, busy_timeout_ms / 1000.0)
        cur.execute("PRAGMA synchronous = FULL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()
        seen["file"] = path is not None

    @event.listens_for(engine, "checkout")
    def _still_there(dbapi_conn: Any, conn_rec: Any, conn_proxy: Any) -> None:
        _require_file()

    write_lock = write_lock_for(path)

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Connection) -> None:
        if conn.get_execution_options().get("rlhfkit_read_only", False):
            conn.exec_driver_sql("BEGIN")
            return
        dbapi_conn = conn.connection.dbapi_connection
        if not write_lock.acquire(timeout=busy_timeout_ms / 1000.0):
            raise DatabaseBusyError(
                f"feedback database {path or ':memory:'} stayed locked for more than {busy_timeout_ms / 1000:.1f} s "
                "(a write transaction of this process did not finish)")
        dbapi_conn.held_lock = write_lock
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            dbapi_conn.release_write_lock()
            raise

    @event.listens_for(engine, "handle_error")
    def _locked(ctx: Any) -> None:
        orig = ctx.original_exception
        if isinstance(orig, sqlite3.OperationalError) and "locked" in str(orig):
            raise DatabaseBusyError(
                f"feedback database {path or ':memory:'} stayed locked for more than "
                f"{busy_timeout_ms / 1000:.1f} s (another process holds a long write transaction)"
            ) from orig


def _create_private(path: Path) -> None:
    """Create a new SQLite file with mode 0600 (SQLite gives its -wal and -shm files the same mode):
    the database holds token hashes and every answer, and only its owner should read it."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot create feedback database {path}: {exc.strerror or exc}") from exc


def make_engine(url: str, *, busy_timeout_ms: int = 10_000, create: bool = True) -> Engine:
    """Create an engine for ``url``; with ``create=False`` a missing SQLite file is an error."""
    if busy_timeout_ms < 5000:
        raise ValueError(f"busy_timeout_ms={busy_timeout_ms} is below the 5000 ms minimum")
    url = normalize_url(url)
    path = sqlite_path(url)
    if path is not None:
        if not create and not path.exists():
            raise DatabaseMissingError(f"feedback database file {path} does not exist (create a campaign or run `rlhfkit serve` first)")
        if not path.parent.exists():
            raise DatabaseMissingError(f"directory {path.parent} of the feedback database does not exist")
        _create_private(path)
        engine = create_engine(url, pool_size=8, max_overflow=16, pool_timeout=60)
        _install_sqlite_hooks(engine, path, busy_timeout_ms)
    elif url.startswith("sqlite"):
        engine = create_engine(url)
        _install_sqlite_hooks(engine, None, busy_timeout_ms)
    else:
        try:
            engine = create_engine(url, pool_size=8, max_overflow=16, pool_pre_ping=True)
        except Exception as exc:
            raise StoreError(f"cannot use database URL {make_url(url).render_as_string(hide_password=True)}: {exc}") from exc
    return engine


@dataclass
class Store:
    """An opened, upgraded feedback database: its engine, session factories and (on first use) its writer."""

    engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    schema_version: int
    busy_timeout_ms: int = 10_000
    _writer: Optional[GroupCommitWriter] = field(default=None, repr=False)
    _writer_guard: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def writer(self) -> GroupCommitWriter:
        """The group-commit writer of this store (one thread and connection, started on first use)."""
        with self._writer_guard:
            if self._writer is None:
                from rlhfkit.feedback.writer import GroupCommitWriter

                self._writer = GroupCommitWriter(self.engine, busy_timeout_ms=self.busy_timeout_ms)
            return self._writer

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for writing: on SQLite it holds the write lock from its first statement
        (BEGIN IMMEDIATE) until commit/rollback, so do not open a second one in the same thread."""
        with self.sessions() as session:
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reading only (deferred BEGIN): a consistent snapshot that never blocks writers."""
        with self.read_sessions() as session:
            yield session

    def close(self) -> None:
        """Finish queued writes, stop the writer and release every pooled connection."""
        with self._writer_guard:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        self.engine.dispose()


def open_store(url: str, *, create: bool = True, busy_timeout_ms: int = 10_000) -> Store:
    """Open (and create or upgrade) the feedback database at ``url``."""
    engine = make_engine(url, busy_timeout_ms=busy_timeout_ms, create=create)
    try:
        version = upgrade_schema(engine)
    except StoreError:
        engine.dispose()
        raise
    except SchemaError as exc:
        engine.dispose()
        raise StoreError(str(exc)) from None
    except Exception as exc:
        engine.dispose()
        raise StoreError(f"cannot open feedback database {engine.url.render_as_string(hide_password=True)}: {exc}") from exc
    reader = engine.execution_options(rlhfkit_read_only=True)
    return Store(engine=engine, sessions=sessionmaker(engine, expire_on_commit=False),
                 read_sessions=sessionmaker(reader, expire_on_commit=False), schema_version=version,
                 busy_timeout_ms=busy_timeout_ms)
