"""Quality: with 30% spammers in a panel of 10, reliability-weighted aggregation beats majority vote.

Pure run: simulated answers turned into the rows of `GET /annotations`, aggregated by
`aggregate_records` (the code path of the export endpoint). HTTP run: the same panel works through a
live server and the campaign's export endpoint aggregates.
"""

from __future__ import annotations

import numpy as np
import pytest

from rlhfkit.feedback.aggregate import Vote, aggregate_records, dawid_skene
from rlhfkit.feedback.annotators import TaskItem, TaskView, invite_panel, make_panel, run_panel
from rlhfkit.feedback.client import LocalServer

N_MEMBERS, SPAM_FRACTION, TEMPERATURE = 10, 0.3, 0.2


def hidden_utilities(n_prompts: int, seed: int) -> dict[str, float]:
    """Two responses per prompt with N(0, 1) utilities; response texts are unique keys."""
    rng = np.random.default_rng(seed)
    return {f"answer {side} to question {i}": float(rng.normal()) for i in range(n_prompts) for side in "ab"}


def accuracy(records: list[dict], utilities: dict[str, float]) -> float:
    """Share of pairwise records whose chosen response has the higher hidden utility (ties count 1/2)."""
    scores = [0.5 if r["tie"] else float(utilities[r["chosen"]] > utilities[r["rejected"]]) for r in records]
    return float(np.mean(scores))


def simulate_rows(n_items: int, k: int, seed: int) -> tuple[list[dict], dict[str, float], list]:
    """Each item answered by k random panel members with a random display order, as API annotation rows."""
    utilities = hidden_utilities(n_items, seed)
    panel = make_panel(lambda prompt, response: utilities[response], N_MEMBERS, spammer_fraction=SPAM_FRACTION,
                       temperature=TEMPERATURE, seed=seed)
    rng = np.random.default_rng(seed + 1)
    rows = []
    for i in range(n_items):
        samples = [{"id": 2 * i + j, "text": f"answer {side} to question {i}"} for j, side in enumerate("ab")]
        for m in rng.choice(N_MEMBERS, k, replace=False):
            shown = samples[::-1] if rng.random() < 0.5 else samples
            items = tuple(TaskItem(s["id"], s["text"]) for s in shown)
            view = TaskView(f"task-{i}", "pairwise", f"question {i}", items)
            choice = panel[m].decide(view)["choice"]
            winner = shown[0]["id"] if choice == "left" else shown[1]["id"]
            rows.append({"annotation_id": len(rows), "task_id": i, "kind": "pairwise", "annotator": panel[m].name,
                         "is_gold": False, "gold": None, "prompt": f"question {i}", "samples": samples,
                         "displayed": [s["id"] for s in shown], "resolved": {"winner": winner}})
    return rows, utilities, panel


def test_reliability_beats_majority_pure() -> None:
    rows, utilities, panel = simulate_rows(n_items=400, k=3, seed=0)
    majority = accuracy(aggregate_records(rows, "majority"), utilities)
    reliable = accuracy(aggregate_records(rows, "reliability"), utilities)
    print(f"\nquality (pure, 400 items, k=3, 3/10 spammers): majority {majority:.3f}  reliability {reliable:.3f}")
    assert 0.88 < majority < 0.93
    assert reliable > 0.935
    assert reliable - majority > 0.025

    # the EM also tells the spammers apart
    votes = [Vote(r["task_id"], r["annotator"], [s["id"] for s in r["samples"]].index(r["resolved"]["winner"]),
                  flipped=r["displayed"][0] != r["samples"][0]["id"]) for r in rows]
    fit = dawid_skene(votes, fit_class_prior=False)
    spam = [fit.annotators[m.name].accuracy for m in panel if m.profile.spammer]
    good = [fit.annotators[m.name].accuracy for m in panel if not m.profile.spammer]
    print("estimated accuracy: spammers", np.round(spam, 2), "others", np.round(good, 2))
    assert max(spam) < 0.66 < 0.85 < min(good)


@pytest.mark.slow
def test_reliability_beats_majority_through_http(tmp_path) -> None:
    n_prompts, n_gold = 90, 10
    utilities = hidden_utilities(n_prompts + n_gold, seed=7)
    panel = make_panel(lambda prompt, response: utilities[response], N_MEMBERS, spammer_fraction=SPAM_FRACTION,
                       temperature=TEMPERATURE, seed=7)
    samples = [{"prompt": f"question {i}", "response": f"answer {side} to question {i}", "model": "sim", "round": 0}
               for i in range(n_prompts + n_gold) for side in "ab"]
    with LocalServer(tmp_path, admin_token="admin-token-quality-0123456789") as server:
        admin = server.admin_client()
        campaign = admin.create_campaign("quality", "pairwise", redundancy=3, gold_rate=0.3, build_tasks=False,
                                         samples=samples)
        cid = campaign["id"]
        by_text = {s["response"]: s["id"] for s in admin.samples(cid)}
        tasks = []
        for i in range(n_prompts + n_gold):
            a, b = by_text[f"answer a to question {i}"], by_text[f"answer b to question {i}"]
            task = {"sample_ids": [a, b]}
            if i >= n_prompts:
                better = a if utilities[f"answer a to question {i}"] > utilities[f"answer b to question {i}"] else b
                task["gold"] = {"winner": better}
            tasks.append(task)
        admin.create_tasks(cid, tasks)
        clients = invite_panel(admin, panel, [cid])
        done = run_panel(clients, panel, cid)
        rows = admin.annotations(cid)
        majority = accuracy(admin.export(cid, "majority"), utilities)
        reliable = accuracy(admin.export(cid, "reliability"), utilities)
        for c in clients:
            c.close()
    print(f"\nquality (HTTP, {n_prompts} tasks + {n_gold} gold, k=3): majority {majority:.3f}  reliability "
          f"{reliable:.3f}  ({sum(map(len, done.values()))} submissions)")
    assert len(rows) == sum(map(len, done.values()))
    assert sum(1 for r in rows if not r["is_gold"]) == 3 * n_prompts
    # Which member answers which task depends on thread timing over HTTP: on 90 tasks accuracies were
    # 0.83-0.97 (standard error ~0.03) and the two methods differ by -0.022 to +0.089, so "beats majority"
    # is asserted by the deterministic pure test above (400 items); here both exports must be far above
    # chance (0.5; 0.75 is ~4 standard errors under the typical 0.9) and reliability not clearly worse.
    assert reliable > 0.75 and majority > 0.75
    assert reliable >= majority - 0.07
