"""Task presets: deterministic prompts, bounded gold rewards that rank good over bad, user task files."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from rlhfkit.models import corpus
from rlhfkit.tasks import TASKS, Task, TaskError, get_task, load_task_file
from rlhfkit.tasks.quality import degeneracy

DEGENERATE = ["", "   ", "great great great great great great", "because because because because",
              "the the the the the the the the the the the the",
              "delicious amazing superb wonderful outstanding excellent fantastic perfect.",
              "The food was great. The food was great. The food was great. The food was great.",
              "\x00\x01 \ufffd", "." * 50]


def test_registry_has_the_presets() -> None:
    assert set(TASKS) >= {"sentiment", "explain", "summary"}
    for name, task in TASKS.items():
        assert get_task(name) is task and task.name == name
        assert task.description and task.judge_instructions and task.has_gold
        assert task.max_new_tokens > 0
    with pytest.raises(TaskError, match="unknown task 'nope'"):
        get_task("nope")


@pytest.mark.parametrize("name", ["sentiment", "explain", "summary"])
def test_prompts_are_deterministic_and_split(name: str) -> None:
    task = TASKS[name]
    first = task.prompts(12, seed=3, split="train")
    assert first == task.prompts(12, seed=3, split="train")
    assert len(first) == 12 and all(isinstance(p, str) and p for p in first)
    assert task.prompts(12, seed=4, split="train") != first
    evals = task.prompts(12, seed=3, split="eval")
    assert set(evals).isdisjoint(task.prompts(200, seed=0, split="train"))
    assert task.prompts(0) == []
    with pytest.raises(TaskError, match="split"):
        task.prompts(2, split="validation")


@pytest.mark.parametrize("name", ["sentiment", "explain", "summary"])
def test_gold_is_bounded_finite_and_degenerate_is_lowest(name: str) -> None:
    task = TASKS[name]
    prompts = task.prompts(len(DEGENERATE), seed=1, split="eval")
    low, high = task.gold_range
    bad = task.gold_reward(prompts, DEGENERATE)
    assert bad is not None and len(bad) == len(DEGENERATE)
    assert all(math.isfinite(x) and low <= x <= high for x in bad)
    assert bad[0] == bad[1] == low  # empty text scores the bottom of the range
    typical = statistics.mean(task.gold_reward(*_typical_texts(name, task)) or [])
    assert max(bad) < typical, (name, bad, typical)


def _typical_texts(name: str, task: Task) -> tuple[list[str], list[str]]:
    """Corpus documents of every quality level: what the built-in base model learned to write."""
    if name == "sentiment":
        docs = corpus.generate_reviews(200, seed=5)
        return [d.prompt for d in docs], [d.completion for d in docs]
    if name == "explain":
        docs = corpus.generate_qa(200, seed=5)
        return [d.prompt for d in docs], [d.completion for d in docs]
    prompts = task.prompts(100, seed=5, split="train")
    refs = task.references(prompts) or []
    passages = [p.split("Passage: ", 1)[1].split("\nSummary:")[0] for p in prompts]
    leads = [p.split(". ")[0] + "." for p in passages]
    return prompts + prompts, refs + leads


def test_sentiment_ranks_positive_over_negative() -> None:
    task = TASKS["sentiment"]
    docs = corpus.generate_reviews(300, seed=2)
    scores = task.gold_reward([d.prompt for d in docs], [d.completion for d in docs]) or []
    by_level: dict[int, list[float]] = {}
    for doc, score in zip(docs, scores):
        by_level.setdefault(doc.labels["sentiment"], []).append(score)
    means = [statistics.mean(by_level[level]) for level in (-2, -1, 0, 1, 2)]
    assert means == sorted(means) and means[-1] - means[0] > 0.6
    good, cut, salad = task.gold_reward(["Review of the Blue Fork cafe:"] * 3, [
        " The coffee was excellent because the beans were roasted in house. I loved this place.",
        " The coffee was excellent because the beans were roasted in",
        " excellent wonderful superb amazing fantastic delicious."]) or []
    assert good > cut > salad


def test_explain_prefers_concise_reasons() -> None:
    task = TASKS["explain"]
    docs = corpus.generate_qa(400, seed=2)
    scores = task.gold_reward([d.prompt for d in docs], [d.completion for d in docs]) or []
    by_form: dict[str, list[float]] = {}
    for doc, score in zip(docs, scores):
        by_form.setdefault(doc.labels["form"], []).append(score)
    mean = {form: statistics.mean(v) for form, v in by_form.items()}
    assert mean["concise"] > mean["padded"] > max(mean["vague"], mean["circular"], mean["rambling"])
    q = "Q: Why is the sky blue?\nA:"
    concise, padded, circular, none = task.gold_reward([q] * 4, [
        " Because air scatters blue sunlight more than red sunlight.",
        " That is a great question, thank you so much for asking it. It is because air scatters blue "
        "sunlight more than red sunlight. I really hope this helps you today.",
        " Because it just is.",
        " The sky is blue."]) or []
    assert concise == 1.0 and concise > padded > circular > none > 0.0


def test_summary_gold_is_rouge_l_against_reference() -> None:
    task = TASKS["summary"]
    prompts = task.prompts(3, seed=0, split="eval")
    refs = task.references(prompts) or []
    assert len(refs) == 3 and all(r.endswith(".") for r in refs)
    perfect = task.gold_reward(prompts, refs) or []
    assert perfect == pytest.approx([1.0, 1.0, 1.0])
    half = task.gold_reward(prompts[:1], [" ".join(refs[0].split()[: len(refs[0].split()) // 2]) + "."]) or []
    assert 0.3 < half[0] < 0.9
    with pytest.raises(TaskError, match="no reference"):
        task.references(["Passage: not from this task\nSummary:"])


def test_degeneracy_terms() -> None:
    assert degeneracy("", min_words=3, max_words=10) == 1.0
    assert degeneracy("The soup was hot and tasty.", min_words=3, max_words=10) == 0.0
    assert degeneracy("The soup was hot and tasty", min_words=3, max_words=10) == pytest.approx(0.2)
    assert degeneracy("Hot soup.", min_words=4, max_words=10) == pytest.approx(0.5)
    long_text = " ".join(f"w{i} the" for i in range(10)) + "."  # 20 words, budget 10
    assert degeneracy(long_text, min_words=1, max_words=10) == pytest.approx(1.0)
    # trigrams: (the b c) (b c the) (c the b) (the b c) -> 1 repeat of 4 -> 2 * 0.25
    assert degeneracy("the b c the b c.", min_words=1, max_words=10) == pytest.approx(0.5)
    # no function word among 5 words: keyword salad, full penalty
    assert degeneracy("superb tasty fresh nice good.", min_words=1, max_words=10) == 1.0


def test_task_wrapper_guards_gold_and_prompts() -> None:
    def prompts(n: int, seed: int, split: str) -> list[str]:
        return [f"{split}-{seed}-{i}" for i in range(n)]

    task = Task(name="guarded", description="d", prompt_fn=prompts, judge_instructions="j",
                gold_fn=lambda p, r: [float("nan"), 5.0, -5.0, 0.5][: len(r)], gold_range=(0.0, 1.0))
    assert task.gold_reward(["a"] * 4, ["w", "x", "y", "z"]) == [0.0, 1.0, 0.0, 0.5]
    assert task.utility("a", "w") == 0.0
    with pytest.raises(TaskError, match="1 prompts but 2 responses"):
        task.gold_reward(["a"], ["x", "y"])
    with pytest.raises(TaskError, match="returned 4 scores for 5"):
        task.gold_reward(["a"] * 5, ["x"] * 5)
    assert task.references(["a"]) is None and not task.has_references
    no_gold = Task(name="no_gold", description="d", prompt_fn=prompts, judge_instructions="j")
    assert no_gold.gold_reward(["a"], ["b"]) is None
    with pytest.raises(TaskError, match="no gold reward"):
        no_gold.utility("a", "b")
    bad_prompts = Task(name="bad", description="d", prompt_fn=lambda n, s, sp: ["x"], judge_instructions="j")
    with pytest.raises(TaskError, match="returned 1 items for n=3"):
        bad_prompts.prompts(3)
    with pytest.raises(TaskError, match="gold_range"):
        Task(name="r", description="d", prompt_fn=prompts, judge_instructions="j", gold_range=(1.0, 1.0))
    with pytest.raises(TaskError, match="identifier"):
        Task(name="has space", description="d", prompt_fn=prompts, judge_instructions="j")


USER_TASK = '''
from rlhfkit.tasks.base import Task

def prompts(n, seed, split):
    return [f"Say hello ({split} {seed}.{i}):" for i in range(n)]

def gold(prompts, responses):
    return [1.0 if "hello" in r.lower() else 0.0 for r in responses]

TASK = Task(name="hello", description="Greet the user.", prompt_fn=prompts, gold_fn=gold,
            judge_instructions="Prefer the response that says hello.", max_new_tokens=8)
'''


def test_user_task_file(tmp_path: Path) -> None:
    path = tmp_path / "hello_task.py"
    path.write_text(USER_TASK)
    task = load_task_file(path)
    assert task.name == "hello" and task.max_new_tokens == 8
    assert task.prompts(2, seed=1, split="eval") == ["Say hello (eval 1.0):", "Say hello (eval 1.1):"]
    assert task.gold_reward(["p", "p"], ["Hello there.", "Bye."]) == [1.0, 0.0]
    assert get_task(str(path)).name == "hello"

    (tmp_path / "no_task.py").write_text("X = 1\n")
    with pytest.raises(TaskError, match="no_task.py: defines no TASK"):
        load_task_file(tmp_path / "no_task.py")
    (tmp_path / "wrong.py").write_text("TASK = 'sentiment'\n")
    with pytest.raises(TaskError, match="TASK is a str"):
        load_task_file(tmp_path / "wrong.py")
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(TaskError, match="broken.py: importing it failed: RuntimeError: boom"):
        load_task_file(tmp_path / "broken.py")
    with pytest.raises(FileNotFoundError, match="missing.py"):
        get_task(str(tmp_path / "missing.py"))
