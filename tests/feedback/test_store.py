"""Store: SQLite pragmas and IMMEDIATE transactions, lock and missing-file errors, schema versions, security helpers."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, inspect, select, text

from rlhfkit.feedback import crud, reports
from rlhfkit.feedback.models import AdminToken, Annotation, Annotator, Base, SchemaVersion
from rlhfkit.feedback.security import (csrf_matches, hash_token, load_or_create_secret_key, new_token,
                                       token_matches)
from rlhfkit.feedback.schema import HEAD_REVISION
from rlhfkit.feedback.store import (SCHEMA_VERSION, DatabaseBusyError, DatabaseMissingError, StoreError,
                                    make_engine, normalize_url, open_store)


def _sqlite(tmp_path: Path, name: str = "f.db") -> str:
    return f"sqlite:///{tmp_path / name}"


def _pairwise_campaign(session, n_prompts: int = 2, redundancy: int = 1):
    samples = [crud.SampleSpec(prompt=f"p{p}", response=f"r{p}.{r}") for p in range(n_prompts) for r in range(2)]
    return crud.create_campaign(session, name="c", kind="pairwise", redundancy=redundancy, samples=samples)


def test_sqlite_connections_use_wal_full_sync_and_busy_timeout(tmp_path: Path) -> None:
    store = open_store(_sqlite(tmp_path), busy_timeout_ms=7000)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 7000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.close()
    with pytest.raises(ValueError, match="5000"):
        make_engine(_sqlite(tmp_path), busy_timeout_ms=1000)


def test_transactions_begin_immediate_so_writers_queue(tmp_path: Path) -> None:
    """A transaction holds the write lock from its first statement; a second writer waits, then succeeds."""
    url = _sqlite(tmp_path)
    first, second = open_store(url), open_store(url)
    with first.session() as s:
        crud.create_annotator(s, name="x")
    done: dict[str, float] = {}

    def writer() -> None:
        start = time.monotonic()
        with second.session() as s:
            crud.create_annotator(s, name="y")
        done["waited"] = time.monotonic() - start

    with first.session() as s:
        s.scalar(select(func.count()).select_from(Annotator))  # a read is enough to take the lock
        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(0.6)
        assert thread.is_alive(), "second writer did not wait for the first transaction"
        s.commit()
    thread.join(timeout=10)
    assert done["waited"] >= 0.5
    with second.session() as s:
        assert s.scalar(select(func.count()).select_from(Annotator)) == 2
    first.close()
    second.close()


def test_read_sessions_neither_block_nor_wait_for_writers(tmp_path: Path) -> None:
    store = open_store(_sqlite(tmp_path))
    with store.session() as writer:
        crud.create_annotator(writer, name="before")
        writer.scalar(select(func.count()).select_from(Annotator))  # holds the write lock again
        start = time.monotonic()
        with store.read_session() as reader:
            assert reader.scalar(select(func.count()).select_from(Annotator)) == 1
        assert time.monotonic() - start < 1.0
        writer.commit()
    with store.read_session() as reader:
        reader.scalar(select(func.count()).select_from(Annotator))  # snapshot taken
        with store.session() as writer:
            crud.create_annotator(writer, name="during")
        assert reader.scalar(select(func.count()).select_from(Annotator)) == 1, "a read session sees one snapshot"
    with store.read_session() as reader:
        assert reader.scalar(select(func.count()).select_from(Annotator)) == 2
    store.close()


@pytest.mark.slow
def test_lock_held_beyond_timeout_gives_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    store = open_store(_sqlite(tmp_path), busy_timeout_ms=5000)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        start = time.monotonic()
        with pytest.raises(DatabaseBusyError, match=r"stayed locked for more than 5\.0 s") as info:
            with store.session() as s:
                crud.create_annotator(s, name="z")
        assert time.monotonic() - start >= 4.5
        assert str(path) in str(info.value)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        store.close()


def test_missing_or_deleted_database_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DatabaseMissingError, match="does not exist"):
        open_store(_sqlite(tmp_path, "absent.db"), create=False)
    with pytest.raises(DatabaseMissingError, match="directory"):
        open_store(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    store = open_store(_sqlite(tmp_path))
    store.engine.dispose()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp_path / 'f.db'}{suffix}").unlink(missing_ok=True)
    with pytest.raises(DatabaseMissingError, match="is gone"):
        with store.session() as s:
            s.scalar(select(func.count()).select_from(Annotator))
    assert not (tmp_path / "f.db").exists(), "a deleted database must not be silently re-created"


def test_fresh_schema_and_reopen(db_url: str) -> None:
    store = open_store(db_url)
    assert store.schema_version == SCHEMA_VERSION
    tables = set(inspect(store.engine).get_table_names())
    assert {"campaigns", "prompts", "samples", "tasks", "task_items", "assignments", "annotations", "annotators",
            "campaign_members", "admin_tokens", "schema_version"} <= tables
    with store.session() as s:
        _pairwise_campaign(s)
    store.close()
    again = open_store(db_url)
    with again.session() as s:
        assert s.scalar(select(SchemaVersion.version)) == SCHEMA_VERSION
        assert len(crud.list_campaigns(s, principal=crud.Principal(role="admin"))) == 1
    again.close()


@pytest.mark.parametrize("old_version", [1, 2, 3])
def test_upgrade_from_a_released_version_adds_columns_and_keeps_rows(db_url: str, old_version: int) -> None:
    store = open_store(db_url)
    with store.session() as s:
        campaign = _pairwise_campaign(s)
        annotator, _ = crud.create_annotator(s, name="a", campaign_ids=[campaign.id])
        assignment = crud.next_assignment(s, campaign=campaign, annotator_id=annotator.id)
        crud.submit_annotation(s, assignment=assignment, idempotency_key="k" * 8, answer={"choice": "left"})
    with store.engine.begin() as conn:  # turn the database back into one of that release (before Alembic)
        if old_version < 3:
            for table, column in (("admin_tokens", "label"), ("admin_tokens", "expires_at"),
                                  ("admin_tokens", "revoked_at"), ("annotators", "token_expires_at")):
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
            conn.execute(text("DROP TABLE web_sessions"))
        conn.execute(text("DROP TABLE alembic_version"))
        if old_version == 1:
            conn.execute(text("ALTER TABLE annotations DROP COLUMN source"))
        conn.execute(text(f"UPDATE schema_version SET version = {old_version}"))
    store.close()
    upgraded = open_store(db_url)
    assert upgraded.schema_version == SCHEMA_VERSION
    assert "source" in {c["name"] for c in inspect(upgraded.engine).get_columns("annotations")}
    assert {"label", "expires_at", "revoked_at"} <= {c["name"] for c in inspect(upgraded.engine).get_columns("admin_tokens")}
    assert "web_sessions" in inspect(upgraded.engine).get_table_names()
    with upgraded.session() as s:
        row = s.scalars(select(Annotation)).one()
        assert row.source == "api" and row.answer == {"choice": "left"}
        assert s.scalar(select(SchemaVersion.version)) == SCHEMA_VERSION
        assert s.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION
        assert crud.authenticate(s, token="nope") is None
    upgraded.close()


def test_migrations_build_the_schema_the_models_declare(db_url: str) -> None:
    """Upgrading a release-1 database yields what the models create (Alembic's autogenerate finds nothing)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = open_store(db_url)
    with store.engine.begin() as conn:
        for table, column in (("admin_tokens", "label"), ("admin_tokens", "expires_at"), ("admin_tokens", "revoked_at"),
                              ("annotators", "token_expires_at"), ("annotations", "source")):
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        conn.execute(text("DROP TABLE web_sessions"))
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("UPDATE schema_version SET version = 1"))
    store.close()
    upgraded = open_store(db_url)
    with upgraded.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    upgraded.close()
    assert [d for d in diff if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "alembic_version")] == []


def test_two_processes_opening_a_new_database_at_once_create_it_once(tmp_path: Path) -> None:
    import concurrent.futures

    url = _sqlite(tmp_path)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: open_store(url), range(4)))
    with stores[0].read_session() as s:
        assert s.scalar(select(SchemaVersion.version)) == SCHEMA_VERSION
        assert s.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    for store in stores:
        store.close()


def test_newer_schema_and_foreign_database_are_refused(tmp_path: Path) -> None:
    url = _sqlite(tmp_path)
    store = open_store(url)
    with store.engine.begin() as conn:
        conn.execute(text(f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}"))
    store.close()
    with pytest.raises(StoreError, match="newer than this rlhfkit"):
        open_store(url)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE unrelated (x INTEGER)")
    with pytest.raises(StoreError, match="not an rlhfkit feedback store"):
        open_store(f"sqlite:///{other}")


def test_concurrent_writers_from_separate_engines_never_fail(tmp_path: Path) -> None:
    """8 threads, each with its own engine (like separate processes), submit 15 answers each."""
    url = _sqlite(tmp_path)
    setup = open_store(url)
    with setup.session() as s:
        samples = [crud.SampleSpec(prompt=f"p{i}", response=f"r{i}") for i in range(15)]
        campaign = crud.create_campaign(s, name="c", kind="binary", redundancy=8, samples=samples, gold_rate=0.0)
        annotators = [crud.create_annotator(s, name=f"a{i}", campaign_ids=[campaign.id])[0].id for i in range(8)]
        cid = campaign.id
    errors: list[BaseException] = []

    def work(annotator_id: int) -> None:
        store = open_store(url)
        try:
            for _ in range(15):
                with store.session() as s:
                    c = crud.get_campaign_for(s, campaign_id=cid, principal=crud.Principal(role="admin"))
                    a = crud.next_assignment(s, campaign=c, annotator_id=annotator_id)
                    crud.submit_annotation(s, assignment=a, idempotency_key=uuid.uuid4().hex, answer={"label": "good"})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=work, args=(aid,)) for aid in annotators]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    with setup.session() as s:
        assert s.scalar(select(func.count()).select_from(Annotation)) == 8 * 15
        progress = reports.campaign_progress(s, campaign=crud.get_campaign_for(s, campaign_id=cid, principal=crud.Principal(role="admin")))
        assert progress["complete"] == 15
    setup.close()


def test_url_normalization() -> None:
    assert normalize_url("postgresql://u@h:5/db") == "postgresql+psycopg://u@h:5/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"
    assert normalize_url("rel/path.db").startswith("sqlite:////")


def test_tokens_are_random_hashed_and_compared_in_constant_time() -> None:
    a, b = new_token("ann"), new_token("ann")
    assert a != b and a.startswith("ann_") and len(a) >= 40
    assert hash_token(a) != a and len(hash_token(a)) == 64
    assert token_matches(a, hash_token(a)) and not token_matches(b, hash_token(a))
    assert csrf_matches("abc", "abc") and not csrf_matches("abc", "abd")
    assert not csrf_matches(None, None) and not csrf_matches("", "")


def test_admin_token_is_created_once_and_stored_hashed(tmp_path: Path) -> None:
    store = open_store(_sqlite(tmp_path))
    with store.session() as s:
        plain = crud.ensure_admin_token(s)
        assert plain is not None and plain.startswith("adm_")
        assert crud.ensure_admin_token(s) is None
        stored = s.scalars(select(AdminToken.token_hash)).all()
        assert stored == [hash_token(plain)]
        assert crud.authenticate(s, token=plain) == crud.Principal(role="admin")
        assert crud.authenticate(s, token=plain + "x") is None
        with pytest.raises(crud.InvalidError, match="16 characters"):
            crud.ensure_admin_token(s, token="short")
    raw = (tmp_path / "f.db").read_bytes() + (tmp_path / "f.db-wal").read_bytes()
    assert plain.encode() not in raw
    store.close()


def test_session_key_created_0600_and_group_readable_key_refused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "session.key"
    key = load_or_create_secret_key(path)
    assert len(key) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret_key(path) == key
    assert load_or_create_secret_key(tmp_path / "other.key") != key
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_or_create_secret_key(path)


def test_parse_samples_jsonl_names_line_and_field() -> None:
    specs = crud.parse_samples_jsonl('{"prompt": "p", "completion": "c", "round": 2, "score": 1}\n\n', source="s.jsonl")
    assert specs == [crud.SampleSpec(prompt="p", response="c", model=None, round=2, meta={"score": 1})]
    with pytest.raises(crud.InvalidError, match=r"s\.jsonl:2: missing field 'response'; the record has \['prompt'\]"):
        crud.parse_samples_jsonl('{"prompt": "p", "response": "r"}\n{"prompt": "p"}', source="s.jsonl")
    with pytest.raises(crud.InvalidError, match=r"missing field 'response'.*one sample per line"):
        crud.parse_samples_jsonl('{"prompt": "p", "responses": ["a", "b"]}', source="s.jsonl")
    with pytest.raises(crud.InvalidError, match=r"s\.jsonl:1: field 'response' must be a string, got list"):
        crud.parse_samples_jsonl('{"prompt": "p", "response": ["a"]}', source="s.jsonl")
    with pytest.raises(crud.InvalidError, match=r"s\.jsonl:1: not valid JSON"):
        crud.parse_samples_jsonl("{oops", source="s.jsonl")
    with pytest.raises(crud.InvalidError, match="'round' must be an integer"):
        crud.parse_samples_jsonl('{"prompt": "p", "response": "r", "round": "x"}', source="s.jsonl")


def test_timestamps_read_back_as_aware_utc(db_url: str) -> None:
    store = open_store(db_url)
    with store.session() as s:
        annotator, _ = crud.create_annotator(s, name="t")
        s.expire_all()
        created = s.get(Annotator, annotator.id).created_at
        assert created.tzinfo is not None and created.utcoffset().total_seconds() == 0
    store.close()


def test_a_database_of_the_previous_release_upgrades_in_place(tmp_path: Path) -> None:
    """data/feedback_schema2_release.sql: a SQLite database written by the release before Alembic (schema 2)."""
    path = tmp_path / "release.db"
    with sqlite3.connect(path) as conn:
        conn.executescript((Path(__file__).parent / "data" / "feedback_schema2_release.sql").read_text())
    store = open_store(f"sqlite:///{path}", create=False)
    assert store.schema_version == SCHEMA_VERSION
    with store.session() as s:
        assert crud.authenticate(s, token="release-admin-token-0123456789") == crud.Principal(role="admin")
        annotator = crud.authenticate(s, token="ann_8c3frD4biju9pwWz6S38cSQcu2PuDK2xQrB_mTT5Ecs")
        assert annotator is not None and annotator.name == "ann"
        row = s.scalars(select(Annotation)).one()
        assert row.resolved["margin"] == 1.5 and row.source == "api"
    store.close()
    again = open_store(f"sqlite:///{path}", create=False)  # at the newest revision: nothing to do
    assert again.schema_version == SCHEMA_VERSION
    again.close()


def _open_and_close(url: str, start: Any) -> None:
    """In a child process: wait for the common start, open (create or upgrade) the store, close it."""
    start.wait(30)
    open_store(url).close()


def test_two_processes_opening_a_fresh_database_at_once_create_it_once(db_url: str) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    children = [ctx.Process(target=_open_and_close, args=(db_url, start)) for _ in range(2)]
    for child in children:
        child.start()
    start.set()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0, 0]
    store = open_store(db_url)
    try:
        with store.read_session() as s:
            assert s.scalar(select(SchemaVersion.version)) == SCHEMA_VERSION
            assert s.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD_REVISION]
    finally:
        store.close()
