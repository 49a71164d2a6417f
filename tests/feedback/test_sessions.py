"""Ending access: logout, token revocation and rotation, campaign close, a new session key and a new
admin token end the sessions and tokens they should (the access matrix's logout/revoke/rotate/close rows)."""

from __future__ import annotations

import os
import re
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from typer.testing import CliRunner

from rlhfkit.cli import app as cli
from rlhfkit.feedback import access
from rlhfkit.feedback.models import Annotator, utcnow
from rlhfkit.feedback.server.app import create_app
from rlhfkit.feedback.settings import FeedbackSettings

ADMIN_TOKEN = "admin-test-token-0123456789abcdef"  # as in conftest.py

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
runner = CliRunner()


def _browser(app: Any, cookies: Any = None) -> TestClient:
    client = TestClient(app, base_url="http://testserver", follow_redirects=False)
    if cookies:
        client.cookies.update(cookies)
    return client


def _sign_in(app: Any, token: str) -> TestClient:
    client = _browser(app)
    csrf = CSRF.search(client.get("/login").text).group(1)
    assert client.post("/login", data={"token": token, "csrf_token": csrf}).status_code == 303
    return client


def _signed_in(client: TestClient, page: str) -> bool:
    return client.get(page).status_code == 200


def test_logout_ends_the_session_for_every_copy_of_the_cookie(sqlite_api: Any) -> None:
    app = sqlite_api.client.app
    admin = _sign_in(app, ADMIN_TOKEN)
    saved = dict(admin.cookies)
    assert _signed_in(admin, "/admin")
    csrf = CSRF.search(admin.get("/admin").text).group(1)
    assert admin.post("/logout", data={"csrf_token": csrf}).status_code == 303
    replay = _browser(app, saved)
    assert replay.get("/admin").headers.get("location") == "/login"
    assert replay.post("/admin/campaigns/1/invite", data={"name": "x", "csrf_token": csrf}).status_code in (303, 403)


def test_revoking_or_rotating_an_annotator_ends_api_access_and_sessions(sqlite_api: Any) -> None:
    app = sqlite_api.client.app
    c = sqlite_api.campaign()
    aid, token = sqlite_api.invite("a", [c["id"]])
    assert sqlite_api.next(c["id"], token).status_code == 200
    assert sqlite_api.next(c["id"], token).status_code == 200  # now cached: the fast path
    web = _sign_in(app, token)
    assert _signed_in(web, "/tasks")
    resp = sqlite_api.client.post(f"/api/v1/annotators/{aid}/rotate", headers=sqlite_api.admin())
    assert resp.status_code == 200
    new_token = resp.json()["token"]
    assert sqlite_api.next(c["id"], token).status_code == 401
    assert not _signed_in(web, "/tasks")
    assert sqlite_api.next(c["id"], new_token).status_code == 200
    web = _sign_in(app, new_token)
    assert sqlite_api.client.post(f"/api/v1/annotators/{aid}/revoke", headers=sqlite_api.admin()).json()["active"] is False
    assert sqlite_api.next(c["id"], new_token).status_code == 401
    assert not _signed_in(web, "/tasks")
    assert sqlite_api.client.post(f"/api/v1/annotators/{aid}/revoke", headers=sqlite_api.as_(new_token)).status_code == 401


def test_expired_annotator_token_is_refused(sqlite_api: Any) -> None:
    c = sqlite_api.campaign()
    aid, token = sqlite_api.invite("a", [c["id"]])
    sqlite_api.client.app.state.tokens.ttl_s = 0
    with sqlite_api.store.session() as s:
        s.execute(update(Annotator).where(Annotator.id == aid).values(token_expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()
    assert sqlite_api.next(c["id"], token).status_code == 401


def test_closing_a_campaign_can_revoke_members_left_without_an_open_campaign(sqlite_api: Any) -> None:
    c1, c2 = sqlite_api.campaign(), sqlite_api.campaign()
    _, only_c1 = sqlite_api.invite("only-c1", [c1["id"]])
    _, both = sqlite_api.invite("both", [c1["id"], c2["id"]])
    web = _sign_in(sqlite_api.client.app, only_c1)
    resp = sqlite_api.client.post(f"/api/v1/campaigns/{c1['id']}/close?revoke_tokens=true", headers=sqlite_api.admin())
    assert resp.status_code == 200 and len(resp.json()["revoked_annotator_ids"]) == 1
    assert sqlite_api.client.get("/api/v1/me", headers=sqlite_api.as_(only_c1)).status_code == 401
    assert not _signed_in(web, "/tasks")
    assert sqlite_api.next(c2["id"], both).status_code == 200


def test_admin_session_is_tied_to_its_token_and_a_new_admin_token_replaces_the_old(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'f.db'}"
    first = create_app(FeedbackSettings(state_dir=tmp_path / "state", db_url=db, admin_token=ADMIN_TOKEN))
    with TestClient(first):
        admin = _sign_in(first, ADMIN_TOKEN)
        saved = dict(admin.cookies)
        assert _signed_in(admin, "/admin")
    second = create_app(FeedbackSettings(state_dir=tmp_path / "state", db_url=db, admin_token="another-admin-token-0123456789"))
    with TestClient(second) as api:
        assert api.get("/api/v1/me", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 401
        assert api.get("/api/v1/me", headers={"authorization": "bearer another-admin-token-0123456789"}).status_code == 200
        assert _browser(second, saved).get("/admin").headers.get("location") == "/login"
        admin = _sign_in(second, "another-admin-token-0123456789")
        with second.state.store.session() as s:
            token_id = access.list_tokens(s)["admin_tokens"][-1]["id"]
            access.revoke_admin_token(s, token_id=token_id)
        assert not _signed_in(admin, "/admin")


def test_token_commands_list_rotate_revoke_and_rotate_the_session_key(tmp_path: Path) -> None:
    state = tmp_path / "state"
    common = ["--db", f"sqlite:///{tmp_path / 'f.db'}", "--state-dir", str(state)]
    app = create_app(FeedbackSettings(state_dir=state, db_url=f"sqlite:///{tmp_path / 'f.db'}", admin_token=ADMIN_TOKEN))
    with TestClient(app) as api:
        admin = _sign_in(app, ADMIN_TOKEN)
        res = runner.invoke(cli, ["token", "create-admin", "--label", "ci", "--expires-in-days", "1", *common])
        assert res.exit_code == 0, res.output
        listed = runner.invoke(cli, ["token", "list", *common])
        assert '"label": "ci"' in listed.stdout and "token_hash" not in listed.stdout
        key_before = (state / "session.key").read_text()
        res = runner.invoke(cli, ["token", "rotate-session-key", *common])
        assert res.exit_code == 0 and "1 web session(s) ended" in res.stdout
        assert (state / "session.key").read_text() != key_before
        assert stat.S_IMODE((state / "session.key").stat().st_mode) == 0o600
        assert not _signed_in(admin, "/admin")
        res = runner.invoke(cli, ["token", "rotate", "--admin", "1", *common])
        assert res.exit_code == 0, res.output
        app.state.tokens.clear()
        assert api.get("/api/v1/me", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 401
        res = runner.invoke(cli, ["token", "revoke", "--annotator", "99", *common])
        assert res.exit_code == 2 and "annotator 99 not found" in " ".join(res.output.split())
        res = runner.invoke(cli, ["token", "revoke", *common])
        assert res.exit_code == 2 and "exactly one" in res.output


def test_database_file_is_private(tmp_path: Path) -> None:
    app = create_app(FeedbackSettings(state_dir=tmp_path / "state", admin_token=ADMIN_TOKEN))
    app.state.store.close()
    assert stat.S_IMODE((tmp_path / "state" / "feedback.db").stat().st_mode) == 0o600


@pytest.mark.parametrize("case", ["port", "read-only", "key-mode"])
def test_serve_refuses_bad_setups_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    import rlhfkit.feedback.server.main as main

    monkeypatch.setattr(main, "run_server", lambda *a, **k: None)
    state = tmp_path / "state"
    args = ["serve", "--state-dir", str(state), "--admin-token", ADMIN_TOKEN]
    if case == "port":
        args += ["--port", "99999"]
    elif case == "read-only":
        if os.geteuid() == 0:
            state = Path("/proc/rlhfkit-state")  # not writable even for root
            args[2] = str(state)
        else:
            tmp_path.chmod(0o500)
    else:
        state.mkdir()
        (state / "session.key").write_text("k" * 64)
        (state / "session.key").chmod(0o644)
    res = runner.invoke(cli, args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "Serving" not in res.output
    assert {"port": "65535", "read-only": "state", "key-mode": "chmod 600"}[case] in " ".join(res.output.split())
