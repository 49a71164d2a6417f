"""A small synchronous client for the feedback JSON API (docs/feedback-api.md), annotator and admin side.

Used by the simulated panel, AI judges and scripts. Every call has bounded timeouts. Requests that are
safe to repeat (GETs, submissions carrying an idempotency key, closing a campaign) are retried on
connection errors, timeouts and 5xx answers with exponential backoff until `retry_for_s` runs out; a
submission is always retried with the SAME idempotency key, so the server stores it at most once.
Requests that create rows without a key are retried only when the connection was never established
or the server answered 503 (its transaction was rolled back), so they are never duplicated.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

RETRY_STATUSES = frozenset({500, 502, 503, 504})


class NoCookies(http.cookiejar.CookieJar):
    """A cookie jar that neither stores nor sends cookies: the JSON API authenticates with Bearer tokens only.

    Why: httpx hands every response to its jar, and the standard jar rebuilds the headers as an
    ``email.message.Message`` to look for Set-Cookie (~10% of a client's CPU per request, profiled).
    Pass it as ``cookies=NoCookies()`` to an httpx client that talks to the API.
    """

    def extract_cookies(self, response: Any, request: Any) -> None:
        """Ignore Set-Cookie: the API never sets one that matters to it."""

    def add_cookie_header(self, request: Any) -> None:
        """Send no Cookie header."""


class FeedbackAPIError(RuntimeError):
    """The server answered with an error status; `status` and `detail` say which and why."""

    def __init__(self, method: str, path: str, status: int, detail: Any) -> None:
        self.method, self.path, self.status, self.detail = method, path, status, detail
        super().__init__(f"{method} {path} -> HTTP {status}: {detail}")


class FeedbackUnavailableError(FeedbackAPIError):
    """The server could not be reached (or kept failing) for the whole retry budget."""


class FeedbackClient:
    """Talks to one annotation server with one bearer token (admin or annotator)."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 2.0,
        retry_for_s: float = 30.0,
        backoff_s: float = 0.05,
        max_backoff_s: float = 1.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.retry_for_s = retry_for_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.retries = 0  # transient failures absorbed so far (for load/crash reports)
        self.failures: Counter[str] = Counter()  # their kinds: "connect", "lost", "HTTP 503", ...
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._settings = {"timeout_s": timeout_s, "connect_timeout_s": connect_timeout_s, "retry_for_s": retry_for_s,
                          "backoff_s": backoff_s, "max_backoff_s": max_backoff_s, "transport": transport}
        self._http = httpx.Client(base_url=f"{self.base_url}/api/v1", headers=headers, timeout=timeout,
                                  transport=transport, cookies=NoCookies())

    def with_token(self, token: str) -> FeedbackClient:
        """A new client for the same server and settings, acting as another caller."""
        return FeedbackClient(self.base_url, token, **self._settings)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FeedbackClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None,
                 safe_to_repeat: bool) -> httpx.Response:
        """Send once, then retry transient failures (see module docstring) until the retry budget is spent."""
        deadline = time.monotonic() + self.retry_for_s
        delay = self.backoff_s
        while True:
            wait: float | None = None
            try:
                response = self._http.request(method, path, json=body, params=params)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing reached the server
                failure, kind = f"cannot connect: {exc!r}", "connect"
            except httpx.TransportError as exc:  # sent, but the answer was lost: only safe calls repeat
                if not safe_to_repeat:
                    raise FeedbackUnavailableError(method, path, 0, f"connection lost, not retried: {exc!r}") from exc
                failure, kind = f"connection lost: {exc!r}", type(exc).__name__
            else:
                status = response.status_code
                if status < 400:
                    return response
                retryable = status == 503 or (safe_to_repeat and status in RETRY_STATUSES)
                if not retryable:
                    raise FeedbackAPIError(method, path, status, _detail(response))
                failure, kind = f"HTTP {status}: {_detail(response)}", f"HTTP {status}"
                retry_after = response.headers.get("Retry-After", "")
                wait = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None
            self.retries += 1
            self.failures[kind] += 1
            pause = min(wait if wait is not None else delay * (0.5 + random.random()), self.max_backoff_s)
            if time.monotonic() + pause > deadline:
                raise FeedbackUnavailableError(method, path, 0, f"gave up after {self.retry_for_s:g} s: {failure}")
            time.sleep(pause)
            delay = min(delay * 2, self.max_backoff_s)

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._request("GET", path, params=params, safe_to_repeat=True).json()

    def _post(self, path: str, body: Any, *, safe_to_repeat: bool = False) -> Any:
        return self._request("POST", path, body=body, safe_to_repeat=safe_to_repeat).json()

    # -- anyone --------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """`GET /health` (no auth needed)."""
        return self._get("/health")

    def me(self) -> dict[str, Any]:
        """Who this token belongs to: {"role", "id", "name"}."""
        return self._get("/me")

    def campaigns(self) -> list[dict[str, Any]]:
        return self._get("/campaigns")

    def campaign(self, campaign_id: int) -> dict[str, Any]:
        return self._get(f"/campaigns/{int(campaign_id)}")

    # -- annotator side ------------------------------------------------------------------------------

    def next_assignment(self, campaign_id: int) -> dict[str, Any] | None:
        """The caller's next assignment in the campaign, or None when nothing is available (204)."""
        response = self._request("GET", f"/campaigns/{int(campaign_id)}/next", safe_to_repeat=True)
        return None if response.status_code == 204 else response.json()

    def submit(self, assignment_id: int, answer: Mapping[str, Any], *, idempotency_key: str | None = None,
               critique: str | None = None, time_spent_ms: int | None = None) -> dict[str, Any]:
        """Submit an answer; retried with one idempotency key, so it is stored exactly once.

        Returns the server's annotation ({"annotation_id", ..., "replayed"}); a replay (200) means an earlier
        attempt with this key was already stored.
        """
        body: dict[str, Any] = {"idempotency_key": idempotency_key or uuid.uuid4().hex, "answer": dict(answer)}
        if critique is not None:
            body["critique"] = critique
        if time_spent_ms is not None:
            body["time_spent_ms"] = int(time_spent_ms)
        return self._post(f"/assignments/{int(assignment_id)}/annotations", body, safe_to_repeat=True)

    def annotator_progress(self, campaign_id: int, annotator_id: int) -> dict[str, Any]:
        return self._get(f"/campaigns/{int(campaign_id)}/annotators/{int(annotator_id)}/progress")

    # -- admin side ----------------------------------------------------------------------------------

    def create_campaign(self, name: str, kind: str, *, samples: Iterable[Mapping[str, Any]] = (),
                        **options: Any) -> dict[str, Any]:
        """Create a campaign (options: redundancy, scale, rank_k, allow_critique, instructions, gold_rate, ...)."""
        return self._post("/campaigns", {"name": name, "kind": kind, "samples": [dict(s) for s in samples], **options})

    def close_campaign(self, campaign_id: int) -> dict[str, Any]:
        return self._post(f"/campaigns/{int(campaign_id)}/close", {}, safe_to_repeat=True)

    def add_samples(self, campaign_id: int, samples: Iterable[Mapping[str, Any]]) -> list[int]:
        body = {"samples": [dict(s) for s in samples]}
        return self._post(f"/campaigns/{int(campaign_id)}/samples", body)["sample_ids"]

    def samples(self, campaign_id: int) -> list[dict[str, Any]]:
        return self._get(f"/campaigns/{int(campaign_id)}/samples")

    def create_tasks(self, campaign_id: int, tasks: Iterable[Mapping[str, Any]]) -> list[int]:
        """Add tasks: each {"sample_ids": [...], "kind"?, "scale"?, "gold"?}."""
        return self._post(f"/campaigns/{int(campaign_id)}/tasks", {"tasks": [dict(t) for t in tasks]})["task_ids"]

    def tasks(self, campaign_id: int) -> list[dict[str, Any]]:
        return self._get(f"/campaigns/{int(campaign_id)}/tasks")

    def create_annotator(self, name: str, campaign_ids: Iterable[int] = ()) -> dict[str, Any]:
        """Invite an annotator; the answer's "token" is shown only this once."""
        return self._post("/annotators", {"name": name, "campaign_ids": [int(c) for c in campaign_ids]})

    def annotators(self) -> list[dict[str, Any]]:
        return self._get("/annotators")

    def add_member(self, campaign_id: int, annotator_id: int) -> dict[str, Any]:
        return self._post(f"/campaigns/{int(campaign_id)}/members", {"annotator_id": int(annotator_id)},
                          safe_to_repeat=True)

    def progress(self, campaign_id: int) -> dict[str, Any]:
        return self._get(f"/campaigns/{int(campaign_id)}/progress")

    def annotations(self, campaign_id: int) -> list[dict[str, Any]]:
        """Raw annotation rows (input of `rlhfkit.feedback.aggregate.aggregate_records`)."""
        return self._get(f"/campaigns/{int(campaign_id)}/annotations")

    def export(self, campaign_id: int, aggregate: str = "none", edits: str = "pairs") -> list[dict[str, Any]]:
        """Feedback records of the campaign (aggregate: none, majority or reliability; edits: pairs, or sft for
        the edits alone as SFT examples)."""
        response = self._request("GET", f"/campaigns/{int(campaign_id)}/export",
                                 params={"aggregate": aggregate, "edits": edits},
                                 safe_to_repeat=True)
        return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def _detail(response: httpx.Response) -> Any:
    """The error's `detail` field when the body is JSON, else the start of the body."""
    try:
        return response.json().get("detail", response.text[:200])
    except (ValueError, AttributeError):
        return response.text[:200]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0 and read what the OS picked)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalServer:
    """The annotation server as a uvicorn subprocess on 127.0.0.1, for tests, demos and simulations.

    Configured through the server's RLHFKIT_* settings (state dir, database URL, admin token); `start`
    waits (bounded) until /health answers; `kill` sends a signal (SIGKILL for crash tests) and `start`
    again restarts on the same port and database. Server output goes to <state_dir>/server.log.
    The server runs in its own session (a terminal's Ctrl-C reaches only the caller) and exits by
    itself when the process that started it is gone, even after a SIGKILL (RLHFKIT_PARENT_PID).
    """

    def __init__(self, state_dir: str | Path, *, admin_token: str, db_url: str | None = None,
                 port: int | None = None, host: str = "127.0.0.1", extra_env: Mapping[str, str] | None = None,
                 app_factory: str = "rlhfkit.feedback.server.app:create_app") -> None:
        self.app_factory = app_factory
        self.state_dir = Path(state_dir)
        self.admin_token = admin_token
        self.db_url = db_url or f"sqlite:///{(self.state_dir / 'feedback.db').resolve()}"
        self.host = host
        self.port = port or free_port(host)
        self.extra_env = dict(extra_env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> LocalServer:
        """Launch the server and wait until it answers /health; raises with the log tail if it does not."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"server on {self.url} is already running (pid {self.process.pid})")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "RLHFKIT_STATE_DIR": str(self.state_dir), "RLHFKIT_DB_URL": self.db_url,
               "RLHFKIT_ADMIN_TOKEN": self.admin_token, "RLHFKIT_PARENT_PID": str(os.getpid()), **self.extra_env}
        log = (self.state_dir / "server.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", self.app_factory,
             "--host", self.host, "--port", str(self.port), "--log-level", "warning", "--no-access-log",
             "--no-server-header", "--ws", "none"],  # as `rlhfkit serve` runs it
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.state_dir, start_new_session=True)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server on {self.url} did not answer /health within {timeout_s:g} s:\n{self.log_tail()}")

    def kill(self, sig: int = signal.SIGKILL, timeout_s: float = 10.0) -> None:
        """Send `sig` to the server's process group (its own session) and wait (bounded) for it to exit."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=timeout_s)

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM, then SIGKILL if it hangs)."""
        self.kill(signal.SIGTERM)

    def log_tail(self, n_chars: int = 3000) -> str:
        path = self.state_dir / "server.log"
        return path.read_text(errors="replace")[-n_chars:] if path.exists() else ""

    def admin_client(self, **kwargs: Any) -> FeedbackClient:
        return FeedbackClient(self.url, self.admin_token, **kwargs)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
