"""Numbers that reach training: record readers, campaign create and export refuse or skip what float32 cannot hold;
export writes strict JSON through a private temporary file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sqlalchemy import update
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.data.preference_io import read_feedback
from rlhfkit.data.records import NOT_FINITE, OUT_OF_RANGE
from rlhfkit.feedback import crud
from rlhfkit.feedback.models import Annotation
from rlhfkit.feedback.store import open_store

runner = CliRunner()


def _flat(res: object) -> str:
    return " ".join((getattr(res, "output", "") or "").split())


def test_readers_report_and_skip_records_that_overflow_float32(tmp_path: Path) -> None:
    rows = [{"kind": "pairwise", "prompt": "p", "chosen": "a", "rejected": "b", "margin": 1e308},
            {"kind": "pairwise", "prompt": "p", "chosen": "a", "rejected": "b", "weight": 1e308},
            {"kind": "pairwise", "prompt": "p", "chosen": "a", "rejected": "b", "margin": 0.5}]
    path = tmp_path / "f.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"kind": "rating", "prompt": "p", "response": "r", "rating": 1, "scale": [0, Infinity]}\n')
    data = read_feedback(path)
    assert len(data.records) == 1 and data.records[0].margin == 0.5
    assert data.report.problems[OUT_OF_RANGE] == [1, 2] and data.report.problems[NOT_FINITE] == [4]


def _campaign_with_answers(tmp_path: Path) -> tuple[str, list[str], int]:
    db = f"sqlite:///{tmp_path / 'f.db'}"
    common = ["--db", db, "--state-dir", str(tmp_path / "state")]
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps({"prompt": "p", "response": f"r{i}"}) + "\n" for i in range(3)))
    res = runner.invoke(app, ["campaign", "create", "--samples", str(samples), "--kind", "pairwise", *common])
    cid = json.loads(res.stdout.strip().splitlines()[-1])["id"]
    store = open_store(db)
    with store.session() as s:
        campaign = crud.get_campaign_for(s, campaign_id=cid, principal=crud.Principal(role="admin"))
        annotator, _ = crud.create_annotator(s, name="ann", campaign_ids=[cid])
        for _ in range(3):
            a = crud.next_assignment(s, campaign=campaign, annotator_id=annotator.id)
            crud.submit_annotation(s, assignment=a, idempotency_key=f"key-{a.id:05d}", answer={"choice": "left", "margin": 1.0})
        # Stored before numbers were checked: one infinite and one float32-overflowing margin.
        for ann_id, margin in ((1, float("inf")), (2, 1e308)):
            resolved = {**s.get(Annotation, ann_id).resolved, "margin": margin}
            s.execute(update(Annotation).where(Annotation.id == ann_id).values(resolved=resolved))
        s.commit()
    store.close()
    return db, common, cid


def test_export_skips_stored_bad_records_by_number_and_writes_strict_json(tmp_path: Path) -> None:
    _, common, cid = _campaign_with_answers(tmp_path)
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["export", "--campaign", str(cid), "--out", str(out), *common])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "Infinity" not in text and "NaN" not in text
    records = [json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))) for line in text.splitlines()]
    assert len(records) == 1 and records[0]["margin"] == 1.0
    assert "annotation 1" in _flat(res) and "annotation 2" in _flat(res) and "2 skipped" in _flat(res)


def test_export_does_not_follow_a_planted_tmp_symlink(tmp_path: Path) -> None:
    _, common, cid = _campaign_with_answers(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out.jsonl"
    os.symlink(victim, tmp_path / "out.jsonl.tmp")
    assert runner.invoke(app, ["export", "--campaign", str(cid), "--out", str(out), *common]).exit_code == 0
    assert victim.read_text() == "keep me" and out.is_file() and not out.is_symlink()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.jsonl")] == []


def test_campaign_create_refuses_non_finite_scale_and_samples(tmp_path: Path) -> None:
    common = ["--db", f"sqlite:///{tmp_path / 'f.db'}", "--state-dir", str(tmp_path / "state")]
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    for scale in ("1,inf", "nan,5", "1,1e308"):
        res = runner.invoke(app, ["campaign", "create", "--samples", str(samples), "--kind", "rating", "--scale", scale, *common])
        assert res.exit_code == 2 and "scale" in _flat(res), res.output
    samples.write_text('{"prompt": "p", "response": "r", "score": NaN}\n')
    res = runner.invoke(app, ["campaign", "create", "--samples", str(samples), "--kind", "rating", *common])
    assert res.exit_code == 2 and "s.jsonl:1" in _flat(res) and "NaN" in _flat(res)
    samples.write_bytes(b'{"prompt": "p", "response": "\xff"}\n')
    res = runner.invoke(app, ["campaign", "create", "--samples", str(samples), "--kind", "rating", *common])
    assert res.exit_code == 2 and "s.jsonl" in _flat(res) and "UTF-8" in _flat(res)
    res = runner.invoke(app, ["campaign", "status", "--campaign", str(2**63 + 5), *common])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_pairwise_campaign_without_pairs_warns(tmp_path: Path) -> None:
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps({"prompt": f"p{i}", "response": "r"}) + "\n" for i in range(3)))
    res = runner.invoke(app, ["campaign", "create", "--samples", str(samples), "--kind", "pairwise",
                              "--db", f"sqlite:///{tmp_path / 'f.db'}", "--state-dir", str(tmp_path / "state")])
    assert res.exit_code == 0 and "0 tasks" in _flat(res) and "same prompt" in _flat(res)


def test_export_writes_encoded_critiques_as_weighted_ratings(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    common = ["--db", db, "--state-dir", str(tmp_path / "state")]
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps({"prompt": "Review of the Blue Fork cafe:", "response": f"r{i}"}) + "\n"
                               for i in range(2)))
    res = runner.invoke(app, ["campaign", "create", "--samples", str(samples), "--kind", "rating", "--critique", *common])
    cid = json.loads(res.stdout.strip().splitlines()[-1])["id"]
    critiques = {"r0": "good reason given, names the cafe", "r1": "too generic, doesn't name the product"}
    store = open_store(db)
    with store.session() as s:
        campaign = crud.get_campaign_for(s, campaign_id=cid, principal=crud.Principal(role="admin"))
        annotator, _ = crud.create_annotator(s, name="ann", campaign_ids=[cid])
        for _ in range(2):
            a = crud.next_assignment(s, campaign=campaign, annotator_id=annotator.id)
            response = a.task.items[0].sample.response
            crud.submit_annotation(s, assignment=a, idempotency_key=f"key-{a.id:05d}", answer={"rating": 3},
                                   critique=critiques[response])
    store.close()
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["export", "--campaign", str(cid), "--out", str(out), "--critiques", "rules", *common])
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    encoded = [r for r in records if r["kind"] == "rating" and r.get("scale") == [-1.0, 1.0]]
    assert len(records) == 4 and len(encoded) == 2
    assert all(0 < r["weight"] <= 1 for r in encoded)
    assert sorted(r["rating"] for r in encoded)[0] < 0 < sorted(r["rating"] for r in encoded)[1]
