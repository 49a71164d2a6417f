"""Fixtures for the feedback tests: SQLite and PostgreSQL stores, API clients, a live server, Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage",
                 "--disable-extensions", "--no-first-run", "--disable-sync"]
ADMIN_TOKEN = "admin-test-token-0123456789abcdef"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as_postgres(cmd: str) -> subprocess.CompletedProcess[str]:
    prefix = ["su", "postgres", "-c"] if os.geteuid() == 0 else ["bash", "-c"]
    return subprocess.run([*prefix, cmd], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL 15 on 127.0.0.1 (initdb + pg_ctl); its base URL without database name."""
    initdb = PG_BIN / "initdb"
    if not initdb.exists():
        pytest.skip(f"PostgreSQL not installed ({initdb} absent): apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg (PostgreSQL driver) not installed: pip install 'psycopg[binary]'")
    root = Path(tempfile.mkdtemp(prefix="rlhfkit-pg-"))
    os.chmod(root, 0o777)
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres")
    port = free_port()
    init = _run_as_postgres(f"{initdb} -D {root}/data -A trust -U postgres")
    if init.returncode != 0:
        pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
    start = _run_as_postgres(f"{PG_BIN}/pg_ctl -D {root}/data -l {root}/log -w -t 30 "
                             f"-o '-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off' start")
    if start.returncode != 0:
        pytest.skip(f"pg_ctl start failed: {start.stderr.strip()[-300:]}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        _run_as_postgres(f"{PG_BIN}/pg_ctl -D {root}/data -m fast -w -t 30 stop")
        shutil.rmtree(root, ignore_errors=True)


def new_postgres_database(base_url: str) -> str:
    """Create an empty database on the test server and return its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{base_url}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{base_url}/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database URL: a SQLite file, then a PostgreSQL database (skipped without a server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback.db'}"
    return new_postgres_database(request.getfixturevalue("postgres_server"))


@dataclass
class Api:
    """A TestClient bound to the app, with helpers for the common calls."""

    client: Any
    store: Any

    def as_(self, token: Optional[str]) -> dict[str, str]:
        """Authorization header for a token (empty for None)."""
        return {"Authorization": f"Bearer {token}"} if token else {}

    def admin(self) -> dict[str, str]:
        return self.as_(ADMIN_TOKEN)

    def campaign(self, **body: Any) -> dict[str, Any]:
        """Create a campaign as admin (defaults: pairwise, 3 prompts x 3 samples)."""
        body.setdefault("name", "test campaign")
        body.setdefault("kind", "pairwise")
        body.setdefault("samples", [{"prompt": f"prompt {p}", "response": f"response {p}.{r}", "model": "m", "round": 0}
                                    for p in range(3) for r in range(3)])
        resp = self.client.post("/api/v1/campaigns", json=body, headers=self.admin())
        assert resp.status_code == 201, resp.text
        return resp.json()

    def invite(self, name: str, campaign_ids: list[int]) -> tuple[int, str]:
        """Invite an annotator; returns (id, token)."""
        resp = self.client.post("/api/v1/annotators", json={"name": name, "campaign_ids": campaign_ids}, headers=self.admin())
        assert resp.status_code == 201, resp.text
        return resp.json()["id"], resp.json()["token"]

    def next(self, cid: int, token: str) -> Any:
        return self.client.get(f"/api/v1/campaigns/{cid}/next", headers=self.as_(token))

    def submit(self, aid: int, token: str, answer: dict[str, Any], key: Optional[str] = None, **extra: Any) -> Any:
        body = {"idempotency_key": key or uuid.uuid4().hex, "answer": answer, **extra}
        return self.client.post(f"/api/v1/assignments/{aid}/annotations", json=body, headers=self.as_(token))


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[Api]:
    """The app on a fresh database (SQLite and PostgreSQL), driven through FastAPI's TestClient."""
    from fastapi.testclient import TestClient

    from rlhfkit.feedback.server.app import create_app
    from rlhfkit.feedback.settings import FeedbackSettings

    settings = FeedbackSettings(state_dir=tmp_path / "state", db_url=db_url, admin_token=ADMIN_TOKEN)
    app = create_app(settings)
    with TestClient(app, base_url="http://testserver") as client:
        yield Api(client=client, store=app.state.store)


@pytest.fixture
def sqlite_api(tmp_path: Path) -> Iterator[Api]:
    """The app on a fresh SQLite file only (for tests that are about the web pages, not the backend)."""
    from fastapi.testclient import TestClient

    from rlhfkit.feedback.server.app import create_app
    from rlhfkit.feedback.settings import FeedbackSettings

    settings = FeedbackSettings(state_dir=tmp_path / "state", db_url=f"sqlite:///{tmp_path / 'f.db'}", admin_token=ADMIN_TOKEN)
    app = create_app(settings)
    with TestClient(app, base_url="http://testserver") as client:
        yield Api(client=client, store=app.state.store)


@dataclass
class LiveServer:
    """A uvicorn server on 127.0.0.1 running in a thread of the test process."""

    url: str
    store: Any


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """The app served by uvicorn on 127.0.0.1:<free port> (SQLite file), stopped after the test."""
    import httpx
    import uvicorn

    from rlhfkit.feedback.server.app import create_app
    from rlhfkit.feedback.settings import FeedbackSettings

    settings = FeedbackSettings(state_dir=tmp_path / "state", db_url=f"sqlite:///{tmp_path / 'live.db'}", admin_token=ADMIN_TOKEN)
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    else:
        server.should_exit = True
        pytest.fail("uvicorn did not start within 20 s")
    try:
        yield LiveServer(url=url, store=app.state.store)
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright (skipped when either is missing)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} absent: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright not installed: pip install playwright")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
