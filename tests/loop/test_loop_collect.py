"""Collection helpers that need no server: waiting for humans, the AI judge, campaign names."""

from __future__ import annotations

import pytest

from rlhfkit.feedback.annotators import TaskItem, TaskView
from rlhfkit.loop.collect import CollectionError, campaign_name, judge_decider, panel_deciders, wait_for_humans
from rlhfkit.loop.config import FeedbackConfig, JudgeConfig
from rlhfkit.tasks import get_task
from rlhfkit.tasks.base import Task


class FakeAdmin:
    """Progress that grows by ``per_poll`` complete tasks each time it is read."""

    def __init__(self, tasks: int, per_poll: int) -> None:
        self.tasks, self.per_poll, self.polls = tasks, per_poll, 0

    def progress(self, campaign_id: int) -> dict:
        complete = min(self.tasks, self.polls * self.per_poll)
        self.polls += 1
        return {"tasks": self.tasks, "complete": complete, "annotations": complete}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_waiting_for_humans_stops_at_the_quota():
    admin, clock, seen = FakeAdmin(tasks=10, per_poll=3), FakeClock(), []
    progress = wait_for_humans(admin, 1, quota=0.8, deadline_s=1e6, poll_s=5, opened_at=clock(),
                               on_progress=lambda done, total: seen.append(done), sleep=clock.sleep, clock=clock)
    assert progress["complete"] == 9 and seen == [0, 3, 6, 9] and clock.now == 1015.0


def test_waiting_for_humans_stops_at_the_deadline_measured_from_the_opening():
    admin, clock = FakeAdmin(tasks=10, per_poll=0), FakeClock()
    progress = wait_for_humans(admin, 1, quota=1.0, deadline_s=12, poll_s=5, opened_at=clock.now - 4,
                               sleep=clock.sleep, clock=clock)
    assert progress["complete"] == 0 and clock.now == 1008.0  # 4 s had passed before the restart


def _view(prompt: str, first: str, second: str) -> TaskView:
    return TaskView(key="task-1", kind="pairwise", prompt=prompt, items=(TaskItem(1, first), TaskItem(2, second)))


def test_gold_judge_picks_the_response_with_the_higher_gold_reward():
    task = get_task("sentiment")
    judge = judge_decider(task, FeedbackConfig(source="judge", judge=JudgeConfig(scorer="gold")), seed=0)
    good, bad = " The food was wonderful and the staff were kind.", " The food was awful and the staff were rude."
    assert judge.decide(_view("Review of the Blue Fork cafe:", good, bad)) == {"choice": "left"}
    assert judge.decide(_view("Review of the Blue Fork cafe:", bad, good)) == {"choice": "right"}


def test_function_judge_and_missing_gold(tmp_path):
    module = tmp_path / "scorer.py"
    module.write_text("def longer(prompts, responses):\n    return [len(r) for r in responses]\n")
    judge = judge_decider(get_task("sentiment"), FeedbackConfig(judge=JudgeConfig(scorer=f"{module}:longer")), seed=0)
    assert judge.decide(_view("q", "short", "much longer")) == {"choice": "right"}
    no_gold = Task(name="free", description="d", prompt_fn=lambda n, s, split: ["q"] * n, judge_instructions="j")
    with pytest.raises(CollectionError, match="no gold reward"):
        panel_deciders(no_gold, FeedbackConfig(), seed=0)
    with pytest.raises(CollectionError, match="no gold reward"):
        judge_decider(no_gold, FeedbackConfig(), seed=0)


def test_campaign_names_are_unique_per_run_and_round():
    assert campaign_name("demo-ab12", 2) != campaign_name("demo-ab12", 3) != campaign_name("demo-cd34", 3)


def test_campaign_opening_time_without_a_zone_is_utc():
    from rlhfkit.loop.phases import opened_at

    assert opened_at("1970-01-01T00:01:00") == 60.0 == opened_at("1970-01-01T01:01:00+01:00")
