"""PostgreSQL: a batch of API operations runs in lockstep (one round trip per step for the whole batch)
with the answers it would get in sequence, each step's statements merged into their array forms, and
falls back to one savepoint per operation on a database error."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime
from typing import Any

import pytest
from conftest import new_postgres_database
from sqlalchemy import bindparam, func, insert, literal, select

from rlhfkit.feedback import crud, steps
from rlhfkit.feedback.batched import array_form, records
from rlhfkit.feedback.models import Annotation, Annotator, Assignment, utcnow
from rlhfkit.feedback.rawsql import Many, Statement
from rlhfkit.feedback.serving import AnnotationService
from rlhfkit.feedback.steps import Query, StepOp
from rlhfkit.feedback.store import open_store


def _held(store: Any) -> tuple[threading.Event, Any]:
    """Hold the writer busy so that what is queued next forms one batch; returns (gate, its future)."""
    started, gate = threading.Event(), threading.Event()
    future = store.writer.submit(lambda tx: started.set() or gate.wait(10))
    assert started.wait(10)
    return gate, future


@pytest.mark.postgres
def test_a_batch_runs_in_lockstep_with_the_answers_of_a_sequence(postgres_server: str) -> None:
    store = open_store(new_postgres_database(postgres_server))
    try:
        specs = [crud.SampleSpec(prompt=f"p{i}", response=f"r{j}") for i in range(4) for j in range(2)]
        with store.session() as s:
            cid = crud.create_campaign(s, name="c", kind="pairwise", redundancy=1, gold_rate=0.0, samples=specs).id
            a1, a2, a3 = (crud.create_annotator(s, name=n, campaign_ids=[cid])[0].id for n in ("a1", "a2", "a3"))
        service = AnnotationService(store)

        def nxt(aid: int) -> StepOp[Any]:
            return StepOp(lambda tx: service._next(tx, cid, aid), aid)

        gate, held = _held(store)
        futures = [store.writer.submit(nxt(a)) for a in (a1, a2, a3, a1)]  # a1 twice: a double click
        gate.set()
        held.result(timeout=10)
        views = [f.result(timeout=30) for f in futures]
        assert store.writer.lockstep_batches == 1
        assert views[0]["assignment_id"] == views[3]["assignment_id"], "a1's second request got its open assignment"
        assert len({v["task_id"] for v in views[:3]}) == 3, "redundancy 1: three annotators, three tasks"

        key = uuid.uuid4().hex
        gate, held = _held(store)
        ops = [service._submit_op(views[0]["assignment_id"], a1, key, {"choice": "left"}, None, None, "api"),
               service._submit_op(views[0]["assignment_id"], a1, key, {"choice": "left"}, None, None, "api"),
               service._submit_op(views[1]["assignment_id"], a2, uuid.uuid4().hex, {"choice": "up"}, None, None, "api"),
               service._submit_op(views[2]["assignment_id"], a3, uuid.uuid4().hex, {"choice": "skip"}, None, None, "api")]
        futures = [store.writer.submit(op) for op in ops]
        gate.set()
        held.result(timeout=10)
        first, replay = futures[0].result(timeout=30), futures[1].result(timeout=30)
        assert store.writer.lockstep_batches == 2
        assert (first[1], replay[1]) == (False, True) and first[0]["annotation_id"] == replay[0]["annotation_id"]
        with pytest.raises(crud.InvalidError):
            futures[2].result(timeout=30)
        assert futures[3].result(timeout=30)[0]["resolved"]["skip"] is True
        with store.read_session() as s:
            assert s.scalar(select(func.count()).select_from(Annotation)) == 2
    finally:
        store.close()


@pytest.mark.postgres
def test_a_database_error_in_lockstep_reruns_the_batch_in_sequence(postgres_server: str) -> None:
    store = open_store(new_postgres_database(postgres_server))
    try:
        table = Annotator.__table__
        add = Statement(insert(table).values(name="x", token_hash="same-hash", active=True, created_at=utcnow())
                        .returning(table.c.id), store.engine.dialect)

        def adding(tx: Any) -> Any:
            row = yield Query(add, writes=True)
            return row[0]

        gate, held = _held(store)
        futures = [store.writer.submit(StepOp(adding, key)) for key in (1, 2)]  # the second breaks the unique hash
        gate.set()
        held.result(timeout=10)
        assert isinstance(futures[0].result(timeout=30), int)
        with pytest.raises(Exception, match="(?i)unique|duplicate"):
            futures[1].result(timeout=30)
        assert store.writer.lockstep_batches == 0, "abandoned, then run one savepoint at a time"
        with store.read_session() as s:
            assert s.scalar(select(func.count()).select_from(Annotator)) == 1
    finally:
        store.close()


def _spy_plans(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[bool, str, int]]]:
    """Record every lockstep step's executions as (array form?, SQL, how many operations it answers)."""
    plans: list[list[tuple[bool, str, int]]] = []
    real = steps._plan

    def plan(running: list[Any]) -> Any:
        calls = real(running)
        plans.append([(many is not None, (many.statement if many else members[0].query.statement).sql, len(members))
                      for many, members in calls])
        return calls

    monkeypatch.setattr(steps, "_plan", plan)
    return plans


@pytest.mark.postgres
def test_each_step_of_a_batch_is_one_statement_and_answers_reach_their_own_request(
        postgres_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(new_postgres_database(postgres_server))
    try:
        specs = [crud.SampleSpec(prompt=f"p{i}", response=f"r{j}") for i in range(8) for j in range(2)]
        with store.session() as s:
            cid = crud.create_campaign(s, name="c", kind="pairwise", redundancy=1, gold_rate=0.0, samples=specs).id
            annotators = [crud.create_annotator(s, name=f"a{i}", campaign_ids=[cid])[0].id for i in range(5)]
        service = AnnotationService(store)
        plans = _spy_plans(monkeypatch)

        gate, held = _held(store)
        futures = [store.writer.submit(StepOp(lambda tx, a=a: service._next(tx, cid, a), a)) for a in annotators]
        gate.set()
        held.result(timeout=10)
        views = [f.result(timeout=30) for f in futures]
        assert store.writer.lockstep_batches == 1
        # campaign, the pool's two shared reads, what each was served, task contents, INSERTs: once for all five
        assert [[(many, n) for many, _, n in plan] for plan in plans] == [
            [(True, 5)], [(False, 5)], [(False, 5)], [(True, 5)], [(True, 5)], [(True, 5)]]
        assert len({v["task_id"] for v in views}) == 5
        with store.read_session() as s:
            stored = {a.id: (a.annotator_id, a.task_id, a.displayed) for a in s.scalars(select(Assignment))}
        assert {v["assignment_id"]: (a, v["task_id"], [i["sample_id"] for i in v["items"]])
                for a, v in zip(annotators, views)} == stored

        plans.clear()
        answers = [{"choice": ("left", "right", "tie", "left", "skip")[i]} for i in range(5)]
        gate, held = _held(store)
        futures = [store.writer.submit(service._submit_op(v["assignment_id"], a, uuid.uuid4().hex, answer, None, None,
                                                          "api"))
                   for a, v, answer in zip(annotators, views, answers)]
        gate.set()
        held.result(timeout=10)
        results = [f.result(timeout=30)[0] for f in futures]
        assert [[(many, n) for many, _, n in plan] for plan in plans] == [[(True, 5)], [(True, 5)]]
        with store.read_session() as s:
            stored = {n.id: (n.assignment_id, n.annotator_id, n.answer) for n in s.scalars(select(Annotation))}
        assert {r["annotation_id"]: (v["assignment_id"], a, answer)
                for r, a, v, answer in zip(results, annotators, views, answers)} == stored
    finally:
        store.close()


@pytest.mark.postgres
def test_two_requests_for_the_same_task_never_share_a_statement(postgres_server: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows of one INSERT do not see each other: with a pool that undercounts (another process served the
    task), a merged INSERT would let both pass the redundancy check; run apart, the second sees the first."""
    store = open_store(new_postgres_database(postgres_server))
    try:
        specs = [crud.SampleSpec(prompt="p", response=f"r{j}") for j in range(2)]
        with store.session() as s:
            cid = crud.create_campaign(s, name="c", kind="pairwise", redundancy=3, gold_rate=0.0, samples=specs).id
            a1, a2, a3, a4 = (crud.create_annotator(s, name=n, campaign_ids=[cid])[0].id for n in ("a1", "a2", "a3", "a4"))
        service, other_process = AnnotationService(store), AnnotationService(store)
        task = service.next_blocking(campaign_id=cid, annotator_id=a3)["task_id"]
        assert other_process.next_blocking(campaign_id=cid, annotator_id=a4)["task_id"] == task
        plans = _spy_plans(monkeypatch)

        gate, held = _held(store)
        futures = [store.writer.submit(StepOp(lambda tx, a=a: service._next(tx, cid, a), a)) for a in (a1, a2)]
        gate.set()
        held.result(timeout=10)
        views = [f.result(timeout=30) for f in futures]
        inserts = [plan for plan in plans if any(sql.startswith("INSERT INTO assignments") for _, sql, _ in plan)]
        assert [n for _, _, n in inserts[0]] == [1, 1], "the two INSERTs on one task ran as two statements"
        assert sum(v is not None for v in views) == 1
        with store.read_session() as s:
            assert s.scalar(select(func.count()).select_from(Assignment).where(Assignment.task_id == task)) == 3
    finally:
        store.close()


def _annotator_many(dialect: Any) -> Statement:
    """INSERT an annotator (name, token hash), with its array form returning (name, id)."""
    table = Annotator.__table__
    single = Statement(insert(table).values(name=bindparam("name"), token_hash=bindparam("hash"), active=True,
                                            created_at=bindparam("at", type_=table.c.created_at.type))
                       .returning(table.c.id), dialect)
    v = records(name=table.c.name.type, hash=table.c.token_hash.type, at=table.c.created_at.type)
    single.many = array_form(insert(table).from_select(["name", "token_hash", "active", "created_at"],
                                                       select(v.c.name, v.c.hash, literal(True), v.c.at))
                             .returning(table.c.name, table.c.id), v, dialect, tag="name")
    return single


@pytest.mark.postgres
def test_an_array_form_maps_rows_back_by_tag_and_a_failing_one_reruns_the_batch_in_sequence(
        postgres_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(new_postgres_database(postgres_server))
    try:
        add = _annotator_many(store.engine.dialect)

        def adding(name: str, token_hash: str, at: Any = None) -> StepOp[Any]:
            def run(tx: Any) -> Any:
                row = yield Query(add, {"name": name, "hash": token_hash, "at": at or utcnow()}, writes=True)
                return row[0]
            return StepOp(run, name)

        plans = _spy_plans(monkeypatch)
        gate, held = _held(store)
        futures = [store.writer.submit(adding(n, f"hash-{n}")) for n in ("x", "y", "z")]
        gate.set()
        held.result(timeout=10)
        ids = [f.result(timeout=30) for f in futures]
        assert [[(many, n) for many, _, n in plan] for plan in plans] == [[(True, 3)]]
        with store.read_session() as s:
            assert {a.name: a.id for a in s.scalars(select(Annotator))} == dict(zip("xyz", ids))

        gate, held = _held(store)
        futures = [store.writer.submit(adding(n, "same-hash")) for n in ("u", "w")]  # one statement breaks unique
        gate.set()
        held.result(timeout=10)
        assert isinstance(futures[0].result(timeout=30), int)
        with pytest.raises(Exception, match="(?i)unique|duplicate"):
            futures[1].result(timeout=30)
        assert store.writer.lockstep_batches == 1, "the second batch was abandoned and run in sequence"

        gate, held = _held(store)  # a value the array form cannot encode: in sequence, only its request fails
        futures = [store.writer.submit(adding("p", "hash-p")),
                   store.writer.submit(adding("q", "hash-q", at=datetime(2026, 1, 1)))]
        gate.set()
        held.result(timeout=10)
        assert isinstance(futures[0].result(timeout=30), int)
        with pytest.raises(ValueError, match="naive datetime"):
            futures[1].result(timeout=30)
        assert store.writer.lockstep_batches == 1
        with store.read_session() as s:
            assert sorted(a.name for a in s.scalars(select(Annotator))) == ["p", "u", "x", "y", "z"]
    finally:
        store.close()


class _Op:
    def __init__(self, values: dict[str, Any]) -> None:
        self.query = Query(Statement(select(literal(1)), _dialect()), values)


def _dialect() -> Any:
    from sqlalchemy.dialects import postgresql

    return postgresql.psycopg.dialect()


def test_operations_sharing_a_tag_or_a_distinct_value_go_to_different_statements() -> None:
    many = Many(Statement(select(literal(1)), _dialect()), ("tid", "aid"), tag="aid", distinct=("tid",))
    ops = [_Op({"tid": 1, "aid": 10}), _Op({"tid": 1, "aid": 11}), _Op({"tid": 2, "aid": 10}),
           _Op({"tid": 3, "aid": 12})]
    chunks = steps._chunks(ops, many)  # type: ignore[arg-type]
    assert [[ops.index(o) for o in chunk] for chunk in chunks] == [[0, 3], [1, 2]]


def test_array_rows_are_split_by_position_or_by_tag() -> None:
    by_position = Many(Statement(select(literal(1)), _dialect()), ("tid",))
    values = [{"tid": 7}, {"tid": 8}, {"tid": 9}]
    assert by_position.split([(1, "a"), (1, "b"), (3, "c")], values) == [[("a",), ("b",)], [], [("c",)]]
    by_tag = Many(Statement(select(literal(1)), _dialect()), ("aid",), tag="aid")
    assert by_tag.split([(12, 5), (10, 4)], [{"aid": 10}, {"aid": 11}, {"aid": 12}]) == [[(4,)], [], [(5,)]]
