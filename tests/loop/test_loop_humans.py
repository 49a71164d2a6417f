"""The loop waiting for people: an existing `rlhfkit serve`, a named annotator answering through the API, GRPO."""

from __future__ import annotations

import json
import threading
import time

import pytest
from loop_helpers import tiny_loop_settings, write_config

from rlhfkit.feedback.annotators import make_panel, run_member
from rlhfkit.feedback.client import LocalServer
from rlhfkit.loop.runner import load_loop_config, run_rlhf_loop
from rlhfkit.loop.state import load_state
from rlhfkit.tasks import get_task

ADMIN = "admin-token-humans-0123456789abcdef"


def _answer_open_campaigns(server: LocalServer, token: str, stop: threading.Event, answered: list[int]) -> None:
    """A person in the web app: answers every task of every open campaign they belong to, until told to stop."""
    task = get_task("sentiment")
    person = make_panel(task.utility, 1, spammer_fraction=0.0, temperature=0.1, seed=5)[0]
    with server.admin_client().with_token(token) as client:
        while not stop.is_set():
            for campaign in client.campaigns():
                if campaign["status"] == "open":
                    answered.extend(a.task_id for a in run_member(client, person, int(campaign["id"]), stop=stop))
            time.sleep(0.2)


@pytest.mark.slow
def test_loop_waits_for_human_answers_on_a_running_server(tmp_path, monkeypatch) -> None:
    server = LocalServer(tmp_path / "server", admin_token=ADMIN).start()
    stop = threading.Event()
    answered: list[int] = []
    try:
        with server.admin_client() as admin:
            alice = admin.create_annotator("alice")
        person = threading.Thread(target=_answer_open_campaigns, args=(server, alice["token"], stop, answered),
                                  daemon=True)
        person.start()
        monkeypatch.setenv("RLHFKIT_ADMIN_TOKEN", ADMIN)
        settings = tiny_loop_settings(tmp_path, rounds=1, comparisons=6)
        settings["feedback"] = {"source": "humans", "server_url": server.url, "redundancy": 1,
                                "humans": {"annotators": ["alice"], "quota": 1.0, "deadline_s": 120, "poll_s": 0.2}}
        settings["policy"] = {"algorithm": "grpo", "prompts": 8,
                              "group": {"run": {"steps": 2, "save_every": 1}, "num_prompts": 2, "group_size": 3,
                                        "generation": {"max_new_tokens": 12}}}
        config = load_loop_config(write_config(tmp_path, settings))
        run_rlhf_loop(config, quiet=True)
    finally:
        stop.set()
        server.stop()
    run = tmp_path / "run"
    state = load_state(run)
    assert state.finished and state.global_step == 2
    comparisons = json.loads((run / "rounds" / "round-001" / "comparisons.json").read_text())
    records = (run / "rounds" / "round-001" / "feedback.jsonl").read_text().splitlines()
    # the loop waited until alice had answered every comparison (quota 1.0), and trained on exactly those
    assert len(answered) == len(comparisons["pairs"]) == len(records)
    metrics = json.loads((run / "rounds" / "round-001" / "metrics.json").read_text())
    assert "eval/gold_reward" in metrics and "rm/accuracy" in metrics
