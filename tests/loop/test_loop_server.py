"""The loop's own feedback server: campaigns reopen idempotently, a judge answers through the API."""

from __future__ import annotations

import pytest

from rlhfkit.loop import collect
from rlhfkit.loop.aggregate import aggregate_feedback
from rlhfkit.loop.candidates import Candidate
from rlhfkit.loop.config import FeedbackConfig
from rlhfkit.loop.selection import Pair
from rlhfkit.loop.server import FeedbackServer
from rlhfkit.tasks import get_task

GOOD = [" The staff were wonderful and the food was excellent.", " I loved the quiet rooms and the kind staff."]
BAD = [" The staff were rude and the food was awful.", " The rooms were dirty and the wifi was terrible."]


@pytest.mark.slow
def test_judge_answers_every_comparison_once_through_the_api(tmp_path):
    task = get_task("sentiment")
    candidates, pairs = [], []
    for p, (good, bad) in enumerate(zip(GOOD, BAD)):
        prompt = f"Review of place {p}:"
        candidates += [Candidate(2 * p, p, prompt, bad, True), Candidate(2 * p + 1, p, prompt, good, True)]
        pairs.append(Pair(p, 2 * p, 2 * p + 1))
    config = FeedbackConfig(source="judge")
    with FeedbackServer(config, tmp_path / "feedback") as server, server.admin() as admin:
        campaign = collect.open_campaign(admin, "run-x round 1", candidates, pairs, config, "be kind", 1)
        assert collect.open_campaign(admin, "run-x round 1", candidates, pairs, config, "be kind", 1) == campaign
        assert len(admin.tasks(campaign)) == len(pairs) and admin.campaign(campaign)["redundancy"] == 1
        judge = [collect.judge_decider(task, config, seed=0)]
        members = collect.join_members(admin, judge, campaign, tmp_path / "feedback")
        again = collect.join_members(admin, judge, campaign, tmp_path / "feedback")
        assert again[0].client.me()["id"] == members[0].client.me()["id"]  # the same account after a restart
        seen = []
        progress = collect.run_members(admin, members, campaign, timeout_s=60,
                                       on_progress=lambda done, total: seen.append((done, total)))
        assert progress["complete"] == progress["tasks"] == 2 and seen[-1] == (2, 2)
        records = aggregate_feedback(admin.annotations(campaign), "reliability")
    assert sorted(r["chosen"] for r in records) == sorted(GOOD)
    assert (tmp_path / "feedback" / "annotators.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "feedback" / "admin_token").stat().st_mode & 0o777 == 0o600
