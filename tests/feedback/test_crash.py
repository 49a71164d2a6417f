"""Crash: the server is killed with SIGKILL in the middle of the 50-annotator load and restarted on the
same SQLite database; clients retry (same idempotency keys, bounded) until it is back. No acknowledged
submission may be missing afterwards, none may be stored twice, and nothing is stored unacknowledged.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_load import N_ANNOTATORS, PER_ANNOTATOR, campaign_samples, check_stored_exactly_once, utility

from rlhfkit.feedback.annotators import Acknowledged, invite_panel, make_panel, run_member
from rlhfkit.feedback.client import LocalServer

KILL_AFTER = 300  # acknowledged submissions before the kill


@pytest.mark.slow
def test_sigkill_during_load_loses_no_acknowledged_submission(tmp_path) -> None:
    server = LocalServer(tmp_path, admin_token="admin-token-crash-0123456789").start()
    try:
        admin = server.admin_client(timeout_s=60.0, retry_for_s=180.0)
        cid = admin.create_campaign("crash", "pairwise", redundancy=5, gold_rate=0.0,
                                    samples=campaign_samples(250))["id"]
        panel = make_panel(utility, N_ANNOTATORS, spammer_fraction=0.2, temperature=0.5, seed=2)
        clients = invite_panel(admin, panel, [cid])
        acked: list[Acknowledged] = []
        lock = threading.Lock()
        enough = threading.Event()

        def on_ack(ack: Acknowledged) -> None:
            with lock:
                acked.append(ack)
                if len(acked) >= KILL_AFTER:
                    enough.set()

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=N_ANNOTATORS) as pool:
            futures = [pool.submit(run_member, c, m, cid, max_tasks=PER_ANNOTATOR, on_ack=on_ack)
                       for c, m in zip(clients, panel)]
            assert enough.wait(timeout=240), f"only {len(acked)} submissions before the deadline"
            server.kill(signal.SIGKILL)
            with lock:
                acked_before_kill = list(acked)
            retries_before = sum(c.retries for c in clients)
            down_at = time.perf_counter()
            time.sleep(0.5)  # clients now hit a dead port and back off
            server.start(timeout_s=60)
            downtime = time.perf_counter() - down_at
            results = [f.result(timeout=300) for f in futures]
        elapsed = time.perf_counter() - start
        acks = [a for member_acks in results for a in member_acks]
        rows = check_stored_exactly_once(admin, cid, acks)
        still_there = {r["annotation_id"] for r in rows}
        retries = sum(c.retries for c in clients) - retries_before
        kinds = dict(sum((c.failures for c in clients), Counter()))
        replayed = sum(a.replayed for a in acks)
        for c in clients + [admin]:
            c.close()
    finally:
        server.stop()
    print(f"\ncrash: killed after {len(acked_before_kill)} acknowledged submissions, down {downtime:.1f} s; "
          f"{len(acks)} acknowledged in all ({elapsed:.1f} s), {len(rows)} rows stored, {retries} client retries "
          f"after the kill (whole run: {kinds}), {replayed} acknowledged as replays "
          "(stored before the kill, answer lost)")
    assert server.starts == 2
    assert {a.annotation_id for a in acked_before_kill} <= still_there
    assert len(acks) == N_ANNOTATORS * PER_ANNOTATOR == len(rows)
    assert retries > 0
