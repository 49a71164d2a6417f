"""The loop's connection to the feedback server: its own (uvicorn in a thread) or an external one.

The loop's own server listens on 127.0.0.1 and stores feedback in the run's database (SQLite
by default), so every answer is committed before it is acknowledged and survives a kill of the
loop; running it in a thread of the loop's process means it also dies with the loop (no orphan
server after a SIGKILL). Simulated annotators, judges and the loop itself all talk to it over
HTTP with :class:`rlhfkit.feedback.client.FeedbackClient`: the same API humans' pages use.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from rlhfkit.feedback.client import FeedbackClient
from rlhfkit.loop.config import FeedbackConfig

ADMIN_TOKEN_FILE = "admin_token"
ADMIN_TOKEN_ENV = "RLHFKIT_ADMIN_TOKEN"


class FeedbackConnectionError(RuntimeError):
    """The feedback server could not be started or reached; the message says which and why."""


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only (0600), atomically (a kill leaves the old file or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_secret_json(path: Path) -> Any:
    """The JSON content of a secret file, or None when it does not exist."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FeedbackConnectionError(f"{path}: unreadable ({exc}); delete it to start the panel afresh") from exc


def _admin_token(directory: Path) -> str:
    """The admin token of the loop's own server: created once per run, kept in a 0600 file."""
    path = directory / ADMIN_TOKEN_FILE
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    token = "loop-admin-" + secrets.token_urlsafe(24)
    write_secret(path, token)
    return token


class FeedbackServer:
    """A running feedback API: ``url``, ``admin_token`` and :meth:`admin` for an admin client."""

    def __init__(self, config: FeedbackConfig, state_dir: Path, assignment_seed: int | None = None) -> None:
        self.config = config
        self.state_dir = state_dir
        self.assignment_seed = assignment_seed
        self.url = ""
        self.admin_token = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 60.0) -> FeedbackServer:
        """Start the loop's own server, or check that the external one answers; bounded by ``timeout_s``."""
        if self.config.server_url:
            token = os.environ.get(ADMIN_TOKEN_ENV)
            if not token:
                raise FeedbackConnectionError("feedback.server_url is set: put the server's admin token in "
                                              f"${ADMIN_TOKEN_ENV}")
            self.url, self.admin_token = self.config.server_url.rstrip("/"), token
        else:
            self._start_own(timeout_s)
        try:
            with self.admin(retry_for_s=timeout_s) as admin:
                me = admin.me()
        except Exception as exc:
            self.stop()
            raise FeedbackConnectionError(f"feedback server {self.url} does not answer: {exc}") from exc
        if me.get("role") != "admin":
            self.stop()
            raise FeedbackConnectionError(f"feedback server {self.url}: the token is not an admin token")
        return self

    def _start_own(self, timeout_s: float) -> None:
        import uvicorn

        from rlhfkit.feedback.server.app import create_app
        from rlhfkit.feedback.settings import FeedbackSettings

        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.admin_token = _admin_token(self.state_dir)
        db_url = self.config.db_url or f"sqlite:///{(self.state_dir / 'feedback.db').resolve()}"
        # Simulated members resume their own open assignments after a restart; people get the default 30 min.
        timeout = 1800.0 if self.config.source == "humans" else 300.0
        settings = FeedbackSettings(state_dir=self.state_dir, db_url=db_url, admin_token=self.admin_token,
                                    assignment_timeout_s=timeout, assignment_seed=self.assignment_seed)
        app = create_app(settings)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.config.port))
        except OSError as exc:
            sock.close()
            raise FeedbackConnectionError(f"cannot listen on 127.0.0.1:{self.config.port}: {exc}") from exc
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="feedback-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise FeedbackConnectionError(f"the feedback server did not start within {timeout_s:g} s "
                                              f"(database {db_url})")
            time.sleep(0.05)
        self._server, self._thread, self.url = server, thread, f"http://127.0.0.1:{port}"

    def admin(self, **kwargs: Any) -> FeedbackClient:
        """A new admin client (close it, or use it in a ``with`` block)."""
        return FeedbackClient(self.url, self.admin_token, **kwargs)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut the loop's own server down (bounded wait); nothing to do for an external one."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._server = self._thread = None

    def __enter__(self) -> FeedbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
