"""Load: 50 concurrent simulated annotators x 20 submissions against a live uvicorn on 127.0.0.1.

Every acknowledged submission must be stored exactly once: no lost acknowledgement, no duplicate row,
and replays (a resend or a concurrent double click with the same idempotency key) never add a row.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from rlhfkit.feedback.annotators import Acknowledged, invite_panel, make_panel, run_member
from rlhfkit.feedback.client import FeedbackClient, LocalServer

N_ANNOTATORS, PER_ANNOTATOR = 50, 20


def utility(prompt: str, response: str) -> float:
    return float(len(set(response.split())))


def campaign_samples(n_prompts: int) -> list[dict]:
    return [{"prompt": f"prompt {i}", "response": f"response {j} " + "word " * (i % 7 + j), "model": "sim", "round": 0}
            for i in range(n_prompts) for j in range(2)]


def check_stored_exactly_once(admin: FeedbackClient, cid: int, acks: list[Acknowledged]) -> list[dict]:
    """Every acknowledged submission is a stored row with its answer; nothing stored twice or unacknowledged."""
    rows = admin.annotations(cid)
    by_id = {r["annotation_id"]: r for r in rows}
    assert len(by_id) == len(rows)
    acked = {a.annotation_id: a for a in acks}
    missing = [a for a in acked.values() if a.annotation_id not in by_id]
    assert not missing, f"{len(missing)} acknowledged submissions are missing, e.g. {missing[:3]}"
    for ann_id, ack in acked.items():
        assert by_id[ann_id]["answer"] == ack.answer and by_id[ann_id]["task_id"] == ack.task_id
    assert set(by_id) == set(acked), "rows that no client was acknowledged for"
    pairs = [(r["task_id"], r["annotator_id"]) for r in rows]
    assert len(pairs) == len(set(pairs)), "an annotator answered the same task twice"
    assert len({a.assignment_id for a in acked.values()}) == len(acked)
    return rows


@pytest.mark.slow
def test_fifty_concurrent_annotators(tmp_path) -> None:
    t0 = time.perf_counter()
    with LocalServer(tmp_path, admin_token="admin-token-load-0123456789") as server:
        admin = server.admin_client(timeout_s=60.0, retry_for_s=120.0)  # generous: CI boxes are shared
        cid = admin.create_campaign("load", "pairwise", redundancy=5, gold_rate=0.0,
                                    samples=campaign_samples(250))["id"]
        panel = make_panel(utility, N_ANNOTATORS, spammer_fraction=0.2, temperature=0.5, seed=1)
        clients = invite_panel(admin, panel, [cid])
        replays: list[tuple[Acknowledged, dict]] = []
        lock = threading.Lock()

        def resend_some(client: FeedbackClient):
            def on_ack(ack: Acknowledged) -> None:
                if ack.task_id % 10 == 0:  # a retry / double click after the answer was stored
                    again = client.submit(ack.assignment_id, ack.answer, idempotency_key=ack.idempotency_key,
                                          time_spent_ms=1000)
                    with lock:
                        replays.append((ack, again))
            return on_ack

        start = time.perf_counter()
        setup = start - t0
        with ThreadPoolExecutor(max_workers=N_ANNOTATORS) as pool:
            futures = [pool.submit(run_member, c, m, cid, max_tasks=PER_ANNOTATOR, on_ack=resend_some(c))
                       for c, m in zip(clients, panel)]
            results = [f.result(timeout=120) for f in futures]
        elapsed = time.perf_counter() - start
        acks = [a for member_acks in results for a in member_acks]

        # a concurrent double click: the same key and body from two threads at once
        extra = admin.create_annotator("double-clicker", [cid])
        clicker = admin.with_token(extra["token"])
        assignment = clicker.next_assignment(cid)
        with ThreadPoolExecutor(max_workers=2) as pool:
            twins = list(pool.map(lambda _: clicker.submit(assignment["assignment_id"], {"choice": "left"},
                                                           idempotency_key="double-click-key-1"), range(2)))

        clicked = Acknowledged("double-clicker", assignment["assignment_id"], assignment["task_id"],
                               twins[0]["annotation_id"], "double-click-key-1", {"choice": "left"}, False)
        rows = check_stored_exactly_once(admin, cid, acks + [clicked])
        progress = admin.progress(cid)
        for c in clients + [clicker, admin]:
            c.close()
    retries = sum(c.retries for c in clients)
    kinds = dict(sum((c.failures for c in clients), Counter()))
    print(f"\nload: {len(acks)} submissions by {N_ANNOTATORS} concurrent annotators in {elapsed:.1f} s = "
          f"{len(acks) / elapsed:.0f} submissions/s ({2 * len(acks) / elapsed:.0f} API calls/s incl. next; "
          f"{len(replays)} replays checked, {retries} client retries {kinds}; setup {setup:.1f} s)")
    assert all(len(r) == PER_ANNOTATOR for r in results)
    assert len(acks) == N_ANNOTATORS * PER_ANNOTATOR
    assert not any(a.replayed for a in acks)
    assert replays and all(again["replayed"] and again["annotation_id"] == ack.annotation_id for ack, again in replays)
    assert twins[0]["annotation_id"] == twins[1]["annotation_id"]
    assert sorted(t["replayed"] for t in twins) == [False, True]
    assert len(rows) == N_ANNOTATORS * PER_ANNOTATOR + 1 == progress["annotations"]
