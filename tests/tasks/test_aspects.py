"""Gold as named aspects (issue 17): presets declare them, the gold combines them, annotators see the same."""

from __future__ import annotations

import pytest

from rlhfkit.tasks import TASKS, Task, TaskError
from rlhfkit.tasks.aspects import Aspect, mentions_prompt, original, weighted_mean

CAFE, HOTEL, LAMP = "Review of the Blue Fork cafe:", "Review of the Garden Palace hotel:", "Review of the Pico desk lamp:"
GENERIC = " What a great find."
SPECIFIC = " The coffee was excellent because the beans were roasted in house. I loved this place."


@pytest.mark.parametrize("name", ["sentiment", "explain", "summary"])
def test_presets_declare_aspects_and_the_gold_combines_them(name: str) -> None:
    task = TASKS[name]
    assert len(task.aspects) >= 2 and task.combination and task.has_rubric
    prompts = task.prompts(6, seed=1, split="eval")
    responses = [" It was good because the staff were kind.", "", " Because air scatters blue light.",
                 " The town council met on Monday.", " great great great great", GENERIC]
    table = task.aspect_scores(prompts, responses)
    assert list(table) == [a.name for a in task.aspects]
    assert all(0.0 <= v <= 1.0 for scores in table.values() for v in scores)
    combined = [task.combine({n: s[i] for n, s in table.items()}) for i in range(6)]  # type: ignore[misc]
    assert task.gold_reward(prompts, responses) == pytest.approx(combined)
    assert len(task.rubric(prompts, responses)) == 6


def test_sentiment_aspects_measure_what_a_reader_values() -> None:
    task = TASKS["sentiment"]
    table = task.aspect_scores([CAFE, CAFE, CAFE, HOTEL], [SPECIFIC, GENERIC, " great great find find.", SPECIFIC])
    assert table["on_topic"] == [1.0, 0.0, 0.0, 0.0]  # coffee is an aspect of a cafe, not of a hotel
    assert table["reason"][:2] == [1.0, 0.0]
    assert table["corpus_like"][0] == 1.0 and table["corpus_like"][2] < 0.9
    assert table["original"] == [0.5, 1.0, 1.0, 0.5]  # SPECIFIC went to two prompts
    assert task.mentions_subject([LAMP, LAMP], [" The Pico lamp works.", " It works."]) == [True, False]


def test_a_phrase_reused_across_prompts_loses_gold_and_the_strict_rubric() -> None:
    task = TASKS["sentiment"]
    prompts = [CAFE, HOTEL, LAMP]
    reused = task.gold_reward(prompts, [GENERIC] * 3) or []
    alone = task.gold_reward([CAFE], [GENERIC]) or []
    specific = task.gold_reward([CAFE], [SPECIFIC]) or []
    assert reused[0] < alone[0] < specific[0]
    assert original(prompts, [GENERIC] * 3) == pytest.approx([1 / 3] * 3)
    assert original([CAFE, CAFE], [GENERIC, GENERIC]) == [1.0, 1.0]  # the same prompt twice is no reuse
    assert task.rubric(prompts, [GENERIC] * 3) == [0.0, 0.0, 0.0]
    assert task.rubric([CAFE], [SPECIFIC]) == [1.0]


def test_simulated_annotators_see_reuse_in_their_campaign() -> None:
    task = TASKS["sentiment"]
    context = [(HOTEL, GENERIC), (LAMP, GENERIC), (CAFE, SPECIFIC)]
    utility = task.utility_with(context)
    assert utility(CAFE, GENERIC) < task.utility(CAFE, GENERIC)
    assert utility(CAFE, SPECIFIC) == pytest.approx(task.utility(CAFE, SPECIFIC))
    assert utility(CAFE, GENERIC) == pytest.approx((task.gold_reward([CAFE, HOTEL, LAMP], [GENERIC] * 3) or [])[0])


def test_user_task_with_aspects_gets_gold_and_a_weakest_aspect_rubric() -> None:
    def prompts(n: int, seed: int, split: str) -> list[str]:
        return [f"Say hello to Ada #{i}:" for i in range(n)]

    aspects = (Aspect("hello", "says hello", lambda p, r: [float("hello" in x.lower()) for x in r]),
               Aspect("named", "names Ada", lambda p, r: [float("ada" in x.lower()) for x in r]))
    task = Task(name="hello", description="Greet.", prompt_fn=prompts, judge_instructions="Greet Ada.",
                aspects=aspects, combine=lambda s: weighted_mean(s, {"hello": 2.0, "named": 1.0}))
    got = task.gold_reward(["p", "p"], ["Hello Ada.", "Hello."])
    assert got == pytest.approx([1.0, 2 / 3])
    assert task.rubric(["p", "p"], ["Hello Ada.", "Hello."]) == [1.0, 0.0]
    assert task.mentions_subject(task.prompts(2), ["Hi Ada.", "Hi."]) == [True, False]
    with pytest.raises(TaskError, match="combine"):
        Task(name="x", description="x", prompt_fn=prompts, judge_instructions="x", aspects=aspects)
    with pytest.raises(TaskError, match="repeat"):
        Task(name="x", description="x", prompt_fn=prompts, judge_instructions="x", aspects=aspects * 2,
             combine=lambda s: 0.0)
    with pytest.raises(ValueError, match="identifier"):
        Aspect("not a name", "x", lambda p, r: [])
    assert mentions_prompt(["Q: Why do cats purr?\nA:"], [" Because they are content."]) == [False]
