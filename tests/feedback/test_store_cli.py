"""The feedback commands: campaign create/invite/status/close, export, and `rlhfkit serve` as a process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.feedback import crud
from rlhfkit.feedback.store import open_store

runner = CliRunner()


def _samples(path: Path) -> Path:
    lines = [{"prompt": "p", "response": f"r{i}", "tokens": 3} for i in range(3)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_campaign_lifecycle_and_export(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'f.db'}"
    common = ["--db", db, "--state-dir", str(tmp_path / "state")]
    res = runner.invoke(app, ["campaign", "create", "--samples", str(_samples(tmp_path / "s.jsonl")), "--kind", "pairwise",
                              "--name", "cli", "-k", "1", "--model", "policy-r0", "--round", "0", *common])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["n_tasks"] == 3 and summary["n_samples"] == 3
    res = runner.invoke(app, ["campaign", "invite", "--campaign", str(summary["id"]), "--name", "ann", *common])
    invited = json.loads(res.stdout.strip().splitlines()[-1])
    store = open_store(db)
    with store.session() as s:
        principal = crud.authenticate(s, token=invited["token"])
        campaign = crud.get_campaign_for(s, campaign_id=summary["id"], principal=principal)
        for _ in range(3):
            a = crud.next_assignment(s, campaign=campaign, annotator_id=principal.annotator_id)
            crud.submit_annotation(s, assignment=a, idempotency_key=f"key-{a.id:05d}", answer={"choice": "right"})
    with store.read_session() as s:
        samples = crud.list_samples(s, campaign=crud.get_campaign_for(s, campaign_id=summary["id"], principal=crud.Principal(role="admin")))
        assert {x["model"] for x in samples} == {"policy-r0"} and samples[0]["meta"] == {"tokens": 3}
    store.close()
    res = runner.invoke(app, ["campaign", "status", "--campaign", str(summary["id"]), "--json", *common])
    status = json.loads(res.stdout.strip().splitlines()[-1])
    assert status["complete"] == 3 and status["annotators"][0]["annotations"] == 3
    assert runner.invoke(app, ["campaign", "close", "--campaign", str(summary["id"]), *common]).exit_code == 0
    out = tmp_path / "out" / "prefs.jsonl"
    res = runner.invoke(app, ["export", "--campaign", str(summary["id"]), "--out", str(out), *common])
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and all(r["kind"] == "pairwise" and r["annotator"] == "ann" for r in records)
    assert {frozenset((r["chosen"], r["rejected"])) for r in records} == {frozenset(p) for p in (("r0", "r1"), ("r0", "r2"), ("r1", "r2"))}


def _flat(res: object) -> str:
    return " ".join(res.output.split())  # rich wraps long lines


def test_cli_errors_are_one_line_and_name_the_problem(tmp_path: Path) -> None:
    missing = ["--db", f"sqlite:///{tmp_path / 'absent.db'}", "--state-dir", str(tmp_path)]
    res = runner.invoke(app, ["campaign", "status", "--campaign", "1", *missing])
    assert res.exit_code == 2 and "absent.db does not exist" in _flat(res)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "response": "r"}\n{"prompt": "p"}\n')
    res = runner.invoke(app, ["campaign", "create", "--samples", str(bad), "--kind", "pairwise", "--db", f"sqlite:///{tmp_path / 'f.db'}"])
    assert res.exit_code == 2 and "bad.jsonl:2: missing field 'response'; the record has ['prompt']" in _flat(res)
    res = runner.invoke(app, ["campaign", "create", "--samples", str(_samples(tmp_path / "s.jsonl")), "--kind", "essay",
                              "--db", f"sqlite:///{tmp_path / 'f.db'}"])
    assert res.exit_code == 2 and "unknown task kind 'essay'" in _flat(res)
    res = runner.invoke(app, ["export", "--campaign", "42", "--out", str(tmp_path / "x.jsonl"), "--db", f"sqlite:///{tmp_path / 'f.db'}"])
    assert res.exit_code == 2 and "campaign 42 not found" in _flat(res)


def _start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "rlhfkit.cli", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Serving"):
            break
    return proc, lines


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_prints_admin_token_on_first_run_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rlhfkit.feedback.server.main as main

    served: list[tuple[str, int, bool]] = []
    monkeypatch.setattr(main, "run_server",
                        lambda settings, *, store, host, port, access_log: served.append((host, port, access_log)))
    monkeypatch.delenv("RLHFKIT_ADMIN_TOKEN", raising=False)
    args = ["serve", "--state-dir", str(tmp_path / "state"), "--port", "8123"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    token = next(line for line in first.stdout.splitlines() if line.startswith("Admin token")).rsplit(" ", 1)[1]
    second = runner.invoke(app, [*args, "--admin-token", "automation-token-0123456789", "--access-log"])
    assert "Admin token" not in second.stdout and served == [("127.0.0.1", 8123, False), ("127.0.0.1", 8123, True)]
    db = f"sqlite:///{tmp_path / 'state' / 'feedback.db'}"
    store = open_store(db, create=False)
    with store.read_session() as s:  # a new --admin-token replaces the generated one
        assert crud.authenticate(s, token=token) is None
        assert crud.authenticate(s, token="automation-token-0123456789") == crud.Principal(role="admin")
    store.close()
    token_file = tmp_path / "admin.token"
    token_file.write_text("file-token-0123456789abcdef\n")
    kept = runner.invoke(app, [*args, "--admin-token-file", str(token_file), "--keep-admin-tokens"])
    assert kept.exit_code == 0, kept.output
    store = open_store(db, create=False)
    with store.read_session() as s:  # ... unless --keep-admin-tokens says otherwise
        assert crud.authenticate(s, token="automation-token-0123456789") == crud.Principal(role="admin")
        assert crud.authenticate(s, token="file-token-0123456789abcdef") == crud.Principal(role="admin")
    store.close()
    short = runner.invoke(app, [*args, "--admin-token", "short"])
    assert short.exit_code == 2 and "16 characters" in _flat(short)


@pytest.mark.slow
def test_serve_process_answers_http_and_stops_on_sigint(tmp_path: Path) -> None:
    env = {**os.environ, "RLHFKIT_STATE_DIR": str(tmp_path / "state")}
    port = _free_port()
    proc, lines = _start(["--port", str(port), "--admin-token", "automation-token-0123456789"], env)
    try:
        assert any(line.startswith("Serving") for line in lines), lines
        resp = None
        deadline = time.monotonic() + 30
        while resp is None and time.monotonic() < deadline:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/api/v1/me", headers={"Authorization": "Bearer automation-token-0123456789"}, timeout=2)
            except httpx.HTTPError:
                time.sleep(0.1)
        assert resp is not None and resp.json()["role"] == "admin"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    assert oct((tmp_path / "state" / "session.key").stat().st_mode & 0o777) == "0o600"
