"""Feedback server throughput and crash benchmark: acknowledged submissions/s of `rlhfkit serve`.

Starts `rlhfkit serve` as a user would (default settings, SQLite in a temporary directory or
`--db URL`, 127.0.0.1, a free port), creates a pairwise campaign of `--tasks` tasks through the admin
API and invites `--clients` annotators. Each client is an asyncio task with its own httpx.AsyncClient
(one connection) that does `--per-client` rounds of: GET next task, POST a label with an idempotency
key. The clients are spread over `--client-procs` processes (default 2), each one event loop: on a
2-core machine a single Python process generating the load (~2.5 ms of httpx CPU per next+submit
pair) would cap the measurement below the server's rate. A request that times out, loses its connection or gets a 5xx is retried with the SAME key after a
bounded exponential backoff. `--crash` SIGKILLs the server process (only the one this script started)
once `--crash-at` of the submissions are acknowledged, restarts it on the same database and port, and
reports how long it took to answer /health again.

Afterwards the database itself is read (not the API): every acknowledged annotation must be there once.
The JSON line also gives the CPU the server and the client processes spent per submission, and on a
local PostgreSQL the CPU of the database backends serving the server (`db_cpu_ms_per_submission`;
backends that exit during the run are not counted): on SQLite that work is part of the server's.
`--client-net asyncio` runs the same httpx clients with their connection pool on an asyncio-streams network
backend instead of anyio (~20% less client CPU; the default is stock httpx).

`--compare N --db postgresql://.../postgres` runs SQLite and PostgreSQL alternately N times each (a fresh
PostgreSQL database per run, dropped afterwards) and prints every run's line, then one line with the
PostgreSQL/SQLite ratios of acknowledged submissions/s and p99 submit latency per pair and their medians.

Run: python bench/feedback_server.py [--crash] [--db postgresql://...]     (prints ONE JSON line)
Small version (tests): python bench/feedback_server.py --clients 5 --per-client 10 --crash
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import random  # noqa: E402
import select  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import ssl  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Optional  # noqa: E402

import httpcore  # noqa: E402
import httpx  # noqa: E402
import orjson  # noqa: E402

from rlhfkit.feedback.client import NoCookies  # noqa: E402

ADMIN_TOKEN = "bench-admin-" + uuid.uuid4().hex
RETRY_STATUSES = frozenset({500, 502, 503, 504})


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    with open("/proc/loadavg") as handle:
        return [float(x) for x in handle.read().split()[:3]]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> Optional[float]:
    """The q-quantile (0..1) by nearest rank, in milliseconds rounded to 0.1; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))
    return round(ordered[index] * 1000, 1)


def rlhfkit_command() -> list[str]:
    """The `rlhfkit` entry point installed next to this Python (else `python -m rlhfkit.cli`)."""
    script = Path(sys.executable).with_name("rlhfkit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rlhfkit.cli"]


class Server:
    """`rlhfkit serve` in a subprocess: start, wait for /health, SIGKILL, restart on the same port."""

    def __init__(self, state_dir: Path, db: Optional[str], port: int) -> None:
        self.state_dir, self.db, self.port = state_dir, db, port
        self.url = f"http://127.0.0.1:{port}"
        self.process: Optional[subprocess.Popen[bytes]] = None

    def start(self, timeout_s: float = 60.0) -> float:
        """Launch and wait until /health answers; returns the seconds that took."""
        cmd = [*rlhfkit_command(), "serve", "--state-dir", str(self.state_dir), "--host", "127.0.0.1",
               "--port", str(self.port), "--admin-token", ADMIN_TOKEN]
        if self.db:
            cmd += ["--db", self.db]
        log = (self.state_dir / "server.log").open("ab")
        started = time.perf_counter()
        env = {**os.environ, "RLHFKIT_PARENT_PID": str(os.getpid())}  # the server exits if this script dies
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        log.close()
        deadline = started + timeout_s
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rlhfkit serve exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=0.5).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"rlhfkit serve did not answer within {timeout_s:g} s:\n{self.log_tail()}")

    def cpu_s(self) -> Optional[float]:
        """CPU seconds (user + system) the running server process has used, from /proc (None elsewhere)."""
        try:
            with open(f"/proc/{self.process.pid}/stat") as handle:  # type: ignore[union-attr]
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, AttributeError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def sigkill(self) -> None:
        """SIGKILL the server process this benchmark started (nothing else) and reap it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 10 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self, n_chars: int = 3000) -> str:
        path = self.state_dir / "server.log"
        return path.read_text(errors="replace")[-n_chars:] if path.exists() else ""


def db_backends_cpu(db_url: Optional[str]) -> Optional[dict[int, float]]:
    """CPU seconds of each PostgreSQL backend serving ``db_url``'s database, read from /proc (None for
    SQLite or a server on another machine): the database's share of the work, outside the server process."""
    if not db_url or not db_url.startswith("postgres"):
        return None
    import psycopg

    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity "
                                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")]
    cpu = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        cpu[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu


def setup_campaign(url: str, n_tasks: int, n_clients: int) -> tuple[int, list[str]]:
    """A pairwise campaign of n_tasks tasks (one prompt, two responses each) and n_clients invited annotators."""
    samples = [{"prompt": f"Prompt {i}: describe item {i}.", "response": f"Answer {j} to prompt {i}." + " word" * (j + i % 5),
                "model": "bench", "round": 0} for i in range(n_tasks) for j in range(2)]
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=f"{url}/api/v1", headers=headers, timeout=120) as admin:
        resp = admin.post("/campaigns", json={"name": "bench", "kind": "pairwise", "redundancy": 1, "gold_rate": 0.0,
                                              "samples": samples})
        resp.raise_for_status()
        campaign = resp.json()
        if campaign["n_tasks"] != n_tasks:
            raise RuntimeError(f"campaign has {campaign['n_tasks']} tasks, expected {n_tasks}")
        tokens = []
        for i in range(n_clients):
            resp = admin.post("/annotators", json={"name": f"annotator {i}", "campaign_ids": [campaign["id"]]})
            resp.raise_for_status()
            tokens.append(resp.json()["token"])
    return int(campaign["id"]), tokens


@dataclass
class Tally:
    """What one client process saw: latencies, acknowledgements and failed attempts by kind."""

    fetch_s: list[float] = field(default_factory=list)
    submit_s: list[float] = field(default_factory=list)
    acked: list[dict[str, Any]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    replays: int = 0
    finished_at: float = 0.0
    cpu_s: float = 0.0


async def send_with_retry(client: httpx.AsyncClient, tally: Tally, request: httpx.Request,
                          retry_for_s: float = 120.0) -> httpx.Response:
    """Send; on timeout, connection error or 5xx wait (0.05 s doubling to 1 s, jittered) and resend the same request.

    The backoff is gentle on purpose: during a restart 50 clients retrying every few milliseconds
    would take CPU from the very process that is starting up."""
    deadline = time.perf_counter() + retry_for_s
    delay = 0.05
    while True:
        try:
            response = await client.send(request)
        except httpx.TimeoutException:
            kind = "timeout"
        except httpx.TransportError:
            kind = "connection"
        else:
            if response.status_code not in RETRY_STATUSES:
                return response
            kind = str(response.status_code)
        tally.errors[kind] += 1
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{request.method} {request.url}: still failing ({kind}) after {retry_for_s:g} s")
        await asyncio.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 1.0)


async def annotator(url: str, token: str, campaign_id: int, per_client: int, tally: Tally, timeout_s: float,
                    tls: ssl.SSLContext, acked_total: Any, net: str) -> None:
    """One annotator: per_client x (fetch next, submit a label with an idempotency key), one connection."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    headers = {"Authorization": f"Bearer {token}"}
    transport = asyncio_transport(limits, tls) if net == "asyncio" else None
    async with httpx.AsyncClient(base_url=f"{url}/api/v1", headers=headers, limits=limits, verify=tls,
                                 timeout=httpx.Timeout(timeout_s), cookies=NoCookies(), transport=transport) as client:
        fetch = client.build_request("GET", f"/campaigns/{campaign_id}/next")  # the same request every time
        submit_headers = httpx.Headers({**fetch.headers, "Content-Type": "application/json"})
        submit_headers.pop("content-length", None)
        for n in range(per_client):
            t0 = time.perf_counter()
            resp = await send_with_retry(client, tally, fetch)
            tally.fetch_s.append(time.perf_counter() - t0)
            if resp.status_code == 204:
                tally.errors["204 nothing left"] += 1
                return
            if resp.status_code != 200:
                raise RuntimeError(f"GET next -> {resp.status_code}: {resp.text[:300]}")
            task = orjson.loads(resp.content)
            key = uuid.uuid4().hex
            body = orjson.dumps({"idempotency_key": key, "answer": {"choice": ("left", "right", "tie")[n % 3]}})
            # what client.build_request makes (the client's headers and timeouts), at half its CPU cost
            submit = httpx.Request("POST", f"{url}/api/v1/assignments/{task['assignment_id']}/annotations", content=body,
                                   headers=submit_headers, extensions=fetch.extensions)
            t0 = time.perf_counter()
            resp = await send_with_retry(client, tally, submit)
            tally.submit_s.append(time.perf_counter() - t0)
            if resp.status_code not in (200, 201):
                raise RuntimeError(f"POST annotation -> {resp.status_code}: {resp.text[:300]}")
            ack = orjson.loads(resp.content)
            tally.replays += resp.status_code == 200
            tally.acked.append({"annotation_id": ack["annotation_id"], "key": key,
                                "assignment_id": task["assignment_id"], "task_id": task["task_id"]})
            with acked_total.get_lock():
                acked_total.value += 1


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One TCP connection as asyncio streams, for httpcore (``--client-net asyncio``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read(self, max_bytes: int, timeout: Optional[float] = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self.reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(repr(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(repr(exc)) from exc

    async def write(self, buffer: bytes, timeout: Optional[float] = None) -> None:
        try:
            self.writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self.writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(repr(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(repr(exc)) from exc

    async def aclose(self) -> None:
        self.writer.close()

    def get_extra_info(self, info: str) -> Any:
        sock = self.writer.get_extra_info("socket")
        if info == "is_readable":  # httpcore's check that an idle keep-alive connection was not closed
            return self.reader.at_eof() or bool(select.select([sock], [], [], 0)[0])
        return sock if info == "socket" else None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's public network-backend interface on plain asyncio streams instead of anyio."""

    async def connect_tcp(self, host: str, port: int, timeout: Optional[float] = None,
                          local_address: Optional[str] = None, socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(repr(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(repr(exc)) from exc
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def asyncio_transport(limits: httpx.Limits, tls: ssl.SSLContext) -> httpx.AsyncHTTPTransport:
    """httpx's own transport with its connection pool on AsyncioBackend (same pool settings)."""
    transport = httpx.AsyncHTTPTransport(limits=limits, verify=tls)
    transport._pool = httpcore.AsyncConnectionPool(  # the one attribute httpx offers no argument for
        ssl_context=tls, max_connections=limits.max_connections, keepalive_expiry=limits.keepalive_expiry,
        max_keepalive_connections=limits.max_keepalive_connections, network_backend=AsyncioBackend())
    return transport


async def run_clients(url: str, tokens: list[str], campaign_id: int, per_client: int, timeout_s: float,
                      acked_total: Any, net: str = "anyio") -> Tally:
    """Every client of this process concurrently on one event loop."""
    tally = Tally()
    tls = ssl.create_default_context()  # unused on http://, but httpx builds one per client unless given one
    await asyncio.gather(*(annotator(url, t, campaign_id, per_client, tally, timeout_s, tls, acked_total, net)
                           for t in tokens))
    tally.finished_at = time.monotonic()
    return tally


def client_process(url: str, tokens: list[str], campaign_id: int, per_client: int, timeout_s: float,
                   acked_total: Any, ready: Any, go: Any, results: Any, net: str) -> None:
    """A load-generator process: waits for the start signal, runs its clients, sends back its Tally."""
    ready.release()
    go.wait()
    cpu_start = time.process_time()
    try:
        coroutine = run_clients(url, tokens, campaign_id, per_client, timeout_s, acked_total, net)
        try:
            import uvloop  # the server's event loop too; less client CPU per request
        except ImportError:
            tally = asyncio.run(coroutine)
        else:
            tally = uvloop.run(coroutine)
        tally.cpu_s = time.process_time() - cpu_start
        results.put(("ok", tally))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        results.put(("error", repr(exc)))


def drive(server: Server, campaign_id: int, tokens: list[str], per_client: int, crash_at: Optional[float],
          timeout_s: float, procs: int, net: str = "anyio") -> tuple[Tally, float, dict[str, Any]]:
    """Run the clients (spread over ``procs`` processes) to the end, SIGKILLing and restarting the server
    once ``crash_at`` of the submissions are acknowledged; returns the merged tally and the wall time."""
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    acked_total, ready, go, results = ctx.Value("i", 0), ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    shares = [tokens[i::procs] for i in range(procs) if tokens[i::procs]]
    workers = [ctx.Process(target=client_process, args=(server.url, share, campaign_id, per_client, timeout_s,
                                                         acked_total, ready, go, results, net), daemon=True)
               for share in shares]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.acquire()
    report: dict[str, Any] = {}
    cpu_before, db_before = server.cpu_s(), db_backends_cpu(server.db)
    started = time.monotonic()
    go.set()
    if crash_at is not None:
        kill_after = max(1, int(crash_at * len(tokens) * per_client))
        while acked_total.value < kill_after and any(w.is_alive() for w in workers):
            time.sleep(0.002)
        report["acknowledged_at_kill"] = acked_total.value
        server.sigkill()
        report["restart_to_answer_s"] = round(server.start(), 3)
    merged = Tally()
    for _ in workers:
        status, payload = results.get(timeout=600)
        if status != "ok":
            raise RuntimeError(f"a client process failed: {payload}")
        merged.fetch_s += payload.fetch_s
        merged.submit_s += payload.submit_s
        merged.acked += payload.acked
        merged.errors.update(payload.errors)
        merged.replays += payload.replays
        merged.cpu_s += payload.cpu_s
        merged.finished_at = max(merged.finished_at, payload.finished_at)
    cpu_after, db_after = server.cpu_s(), db_backends_cpu(server.db)
    if crash_at is None and cpu_before is not None and cpu_after is not None and merged.acked:
        report["server_cpu_ms_per_submission"] = round(1000 * (cpu_after - cpu_before) / len(merged.acked), 2)
    if crash_at is None and db_before is not None and db_after is not None and merged.acked:
        db_s = sum(cpu - db_before.get(pid, 0.0) for pid, cpu in db_after.items())
        report["db_cpu_ms_per_submission"] = round(1000 * db_s / len(merged.acked), 2)
    if merged.acked:
        report["client_cpu_ms_per_submission"] = round(1000 * merged.cpu_s / len(merged.acked), 2)
    for worker in workers:
        worker.join(timeout=30)
    return merged, merged.finished_at - started, report


def check_database(db_url: str, campaign_id: int, acked: list[dict[str, Any]]) -> dict[str, int]:
    """Rows stored, acknowledged-but-missing and duplicates, read from the database itself."""
    from sqlalchemy import create_engine, text

    from rlhfkit.feedback.store import normalize_url

    engine = create_engine(normalize_url(db_url))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, annotator_id, idempotency_key, task_id, assignment_id FROM annotations "
                                 "WHERE campaign_id = :c"), {"c": campaign_id}).all()
    engine.dispose()
    ids = {r.id for r in rows}
    keys = Counter((r.annotator_id, r.idempotency_key) for r in rows)
    answered = Counter((r.annotator_id, r.task_id) for r in rows)
    assignments = Counter(r.assignment_id for r in rows)
    duplicates = (sum(n - 1 for n in keys.values()) + sum(n - 1 for n in answered.values())
                  + sum(n - 1 for n in assignments.values()))
    acked_keys = {a["key"] for a in acked}
    return {"rows_stored": len(rows), "acknowledged_but_missing": sum(a["annotation_id"] not in ids for a in acked),
            "duplicates": duplicates, "stored_unacknowledged": sum(r.idempotency_key not in acked_keys for r in rows)}


def run(clients: int = 50, per_client: int = 20, tasks: Optional[int] = None, crash: bool = False,
        crash_at: float = 0.3, db: Optional[str] = None, timeout_s: float = 5.0,
        client_procs: int = 2, client_net: str = "anyio") -> dict[str, Any]:
    """The whole benchmark; returns the result dict (the JSON line)."""
    tasks = tasks or clients * per_client
    load_before = loadavg()
    state_dir = Path(tempfile.mkdtemp(prefix="rlhfkit-bench-"))
    db_url = db or f"sqlite:///{state_dir / 'feedback.db'}"
    server = Server(state_dir, db, free_port())
    try:
        first_start_s = server.start()
        campaign_id, tokens = setup_campaign(server.url, tasks, clients)
        tally, wall, crash_report = drive(server, campaign_id, tokens, per_client, crash_at if crash else None,
                                          timeout_s, client_procs, client_net)
    except BaseException:
        sys.stderr.write(server.log_tail())
        raise
    finally:
        server.stop()
    stored = check_database(db_url, campaign_id, tally.acked)
    result: dict[str, Any] = {
        "bench": "feedback_server", "db": "postgresql" if db and db.startswith("postgres") else "sqlite",
        "clients": clients, "per_client": per_client, "tasks": tasks, "crash": crash, "client_procs": client_procs,
        "client_net": client_net,
        "acknowledged": len(tally.acked), "wall_s": round(wall, 3),
        "acknowledged_per_s": round(len(tally.acked) / wall, 1),
        "submit_ms_p50": percentile(tally.submit_s, 0.50), "submit_ms_p95": percentile(tally.submit_s, 0.95),
        "submit_ms_p99": percentile(tally.submit_s, 0.99), "fetch_ms_p50": percentile(tally.fetch_s, 0.50),
        "errors": dict(tally.errors), "replayed_acks": tally.replays, **stored,
        "first_start_s": round(first_start_s, 3), **crash_report,
        "loadavg_before": load_before, "loadavg_after": loadavg(),
    }
    shutil.rmtree(state_dir, ignore_errors=True)
    return result


def fresh_postgres_database(server_url: str) -> tuple[str, str]:
    """Create an empty database on the PostgreSQL server of ``server_url``; returns (its URL, its name)."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return make_url(server_url).set(database=name).render_as_string(hide_password=False), name


def drop_postgres_database(server_url: str, name: str) -> None:
    """Drop a database :func:`fresh_postgres_database` created."""
    import psycopg

    with psycopg.connect(server_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")


def compare_ratios(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """PostgreSQL/SQLite ratios of throughput and p99 latency for each (sqlite, postgresql) pair, and medians."""
    import statistics

    rate = [round(pg["acknowledged_per_s"] / lite["acknowledged_per_s"], 3) for lite, pg in pairs]
    p99 = [round(pg["submit_ms_p99"] / lite["submit_ms_p99"], 3) for lite, pg in pairs]
    return {"bench": "feedback_server_compare", "pairs": len(pairs), "pg_over_sqlite_per_s": rate,
            "pg_over_sqlite_p99": p99, "median_per_s_ratio": statistics.median(rate),
            "median_p99_ratio": statistics.median(p99),
            "lost_or_duplicated": sum(r["acknowledged_but_missing"] + r["duplicates"] for pair in pairs for r in pair)}


def compare(rounds: int, server_url: str, **kwargs: Any) -> bool:
    """SQLite and PostgreSQL alternately (the order flips every round); prints each run and the ratios."""
    pairs = []
    for i in range(rounds):
        pg_url, name = fresh_postgres_database(server_url)
        try:
            order = ["sqlite", "postgresql"] if i % 2 == 0 else ["postgresql", "sqlite"]
            results = {kind: run(db=pg_url if kind == "postgresql" else None, **kwargs) for kind in order}
        finally:
            drop_postgres_database(server_url, name)
        for kind in order:
            print(json.dumps(results[kind]), flush=True)
        pairs.append((results["sqlite"], results["postgresql"]))
    summary = compare_ratios(pairs)
    print(json.dumps(summary), flush=True)
    return summary["lost_or_duplicated"] == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent annotator clients (default 50)")
    parser.add_argument("--per-client", type=int, default=20, help="submissions per client (default 20)")
    parser.add_argument("--tasks", type=int, default=None, help="tasks in the campaign (default clients x per-client)")
    parser.add_argument("--crash", action="store_true", help="SIGKILL and restart the server mid-run")
    parser.add_argument("--crash-at", type=float, default=0.3, help="share of submissions acknowledged before the kill")
    parser.add_argument("--db", default=None, help="database URL (default: SQLite in a temporary directory)")
    parser.add_argument("--timeout", type=float, default=5.0, help="client request timeout in seconds")
    parser.add_argument("--client-procs", type=int, default=2,
                        help="processes the clients are spread over (default 2: the load generator's own Python "
                             "would otherwise cap the figure on a 2-core machine)")
    parser.add_argument("--client-net", choices=("anyio", "asyncio"), default="anyio",
                        help="the clients' network layer under httpx: anyio (httpx's default) or plain asyncio "
                             "streams (httpcore's network-backend interface; a cheaper load generator)")
    parser.add_argument("--compare", type=int, default=0, metavar="N",
                        help="run SQLite and PostgreSQL alternately N times each and print the ratios; --db is then "
                             "the PostgreSQL server (any database on it) where a fresh database is made per run")
    args = parser.parse_args()
    if args.compare:
        if not args.db or not args.db.startswith("postgres"):
            parser.error("--compare needs --db postgresql://user@host:port/postgres")
        ok = compare(args.compare, args.db, clients=args.clients, per_client=args.per_client, tasks=args.tasks,
                     crash=args.crash, crash_at=args.crash_at, timeout_s=args.timeout, client_procs=args.client_procs,
                     client_net=args.client_net)
        sys.exit(0 if ok else 1)
    result = run(clients=args.clients, per_client=args.per_client, tasks=args.tasks, crash=args.crash,
                 crash_at=args.crash_at, db=args.db, timeout_s=args.timeout, client_procs=args.client_procs,
                 client_net=args.client_net)
    print(json.dumps(result), flush=True)
    ok = result["acknowledged_but_missing"] == 0 and result["duplicates"] == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
