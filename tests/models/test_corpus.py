"""The generated corpus: deterministic, diverse, labelled, and consistent with its own lexicon."""

from __future__ import annotations

import statistics

import pytest

from rlhfkit.models import corpus


def test_corpus_is_deterministic_per_seed() -> None:
    first = [doc.text for doc in corpus.build_corpus(300, seed=3)]
    again = [doc.text for doc in corpus.build_corpus(300, seed=3)]
    other = [doc.text for doc in corpus.build_corpus(300, seed=4)]
    assert first == again
    assert first != other


def test_build_corpus_follows_the_mix() -> None:
    docs = corpus.build_corpus(200, seed=0, mix={"review": 0.5, "qa": 0.25, "summary": 0.25})
    counts = {task: sum(doc.task == task for doc in docs) for task in corpus.TASKS}
    assert counts == {"review": 100, "qa": 50, "summary": 50}
    with pytest.raises(ValueError, match="mix"):
        corpus.build_corpus(10, mix={"poetry": 1.0})
    with pytest.raises(ValueError, match="split"):
        corpus.generate_reviews(3, split="validation")


def test_reviews_are_diverse() -> None:
    docs = corpus.generate_reviews(2000, seed=0)
    completions = [doc.completion for doc in docs]
    assert len(set(completions)) / len(completions) > 0.9
    words = " ".join(completions).split()
    bigrams = set(zip(words, words[1:]))
    trigrams = set(zip(words, words[1:], words[2:]))
    assert len(set(words)) > 800
    assert len(bigrams) > 5000
    assert len(trigrams) > 10000
    assert len({doc.prompt for doc in docs}) > 1000
    assert all("{" not in doc.text and "}" not in doc.text for doc in docs)


def test_review_factors_vary_independently() -> None:
    docs = corpus.generate_reviews(3000, seed=1)
    cells = {(d.labels["sentiment"], d.labels["sentences"], d.labels["helpful"]) for d in docs}
    assert len(cells) == 5 * 4 * 2
    for doc in docs[:500]:
        assert corpus.sentence_count(doc.completion) == doc.labels["sentences"], doc.completion
        assert doc.completion.startswith(" ") and doc.prompt.startswith("Review of ") and doc.prompt.endswith(":")


def test_helpful_reviews_and_only_they_give_a_reason() -> None:
    for doc in corpus.generate_reviews(1500, seed=2):
        assert corpus.gives_reason(doc.completion) == doc.labels["helpful"], doc.completion


def test_sentiment_score_recovers_the_sentiment_label() -> None:
    docs = corpus.generate_reviews(3000, seed=5)
    means = {level: statistics.mean(corpus.sentiment_score(d.completion) for d in docs if d.labels["sentiment"] == level)
             for level in corpus.SENTIMENT_LEVELS}
    ordered = [means[level] for level in corpus.SENTIMENT_LEVELS]
    assert ordered == sorted(ordered) and len(set(ordered)) == 5, means
    assert means[2] > 0.35 and means[-2] < -0.35 and abs(means[0]) < 0.08, means
    overall = statistics.mean(corpus.sentiment_score(d.completion) for d in docs)
    assert abs(overall) < 0.06


@pytest.mark.parametrize(("text", "low", "high"), [
    ("The soup was great because the broth was rich.", 0.5, 0.7),   # (1 + 0.5) / 3
    ("The soup was not great.", -0.26, -0.24),                      # -0.5 * 1 / 2
    ("Terrible service and awful food.", -0.68, -0.66),             # -2 / 3
    ("It was fine.", 0.0, 0.0),
    ("We went there on a Tuesday.", 0.0, 0.0),
    ("", 0.0, 0.0),
    ("The staff were friendly, but the room was dirty.", -0.01, 0.01),
    ("It wasn't bad at all.", 0.12, 0.13),                          # n't flips "bad": +0.25 / 2
])
def test_sentiment_score_on_hand_examples(text: str, low: float, high: float) -> None:
    assert low <= corpus.sentiment_score(text) <= high


def test_sentiment_score_stays_inside_the_unit_interval() -> None:
    assert 0.9 < corpus.sentiment_score("great " * 40) < 1.0
    assert -1.0 < corpus.sentiment_score("awful " * 40) < -0.9


def test_gives_reason_and_sentence_count_on_hand_examples() -> None:
    assert corpus.gives_reason("The pasta was good because it was fresh.")
    assert corpus.gives_reason("Since the room was cold, we left.")
    assert not corpus.gives_reason("The pasta was good. Because.".replace("Because", "Indeed"))
    assert not corpus.gives_reason("It was fine.")
    assert corpus.sentence_count("One. Two! Three?") == 3
    assert corpus.sentence_count("One. Two without an end") == 2
    assert corpus.sentence_count("  ") == 0


def test_every_reason_and_adjective_reads_with_its_polarity() -> None:
    data = corpus._data("reviews.yaml")
    forms = {"it": "it", "was": "was", "has": "has", "does": "does"}
    checked = 0
    for domain in data["domains"].values():
        reasons = [(spec, side) for spec in domain["aspects"].values() for side in ("pos", "neg")]
        reasons += [(generic, side) for generic in domain.get("generic", {}).values() for side in ("pos", "neg")]
        for spec, side in reasons:
            for reason in spec[side]:
                score = corpus.sentiment_score(reason.format(**forms))
                assert (score >= 0) if side == "pos" else (score <= 0), (side, reason, score)
                checked += 1
    for scale in corpus._data("lexicon.yaml")["scales"].values():
        for level, words in scale.items():
            for word in words:
                assert corpus.sentiment_score(f"It was {word}.") * level >= 0, (word, level)
    assert checked > 250


def test_subject_names_carry_no_sentiment() -> None:
    weights = corpus.lexicon().weights
    for subject in corpus.review_subjects():
        assert not any(word.lower() in weights for word in subject.name.split()), subject.name


def test_lexicon_rejects_a_word_with_two_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {"scales": {"food": {2: ["tasty"], -1: ["tasty"]}}, "extra": {}, "negations": ["not"], "reason_markers": ["because"]}
    monkeypatch.setattr(corpus, "_data", lambda name: fake)
    corpus.lexicon.cache_clear()
    try:
        with pytest.raises(ValueError, match="tasty"):
            corpus.lexicon()
    finally:
        corpus.lexicon.cache_clear()


def test_demo_prompts_use_held_out_subjects_with_few_repeats() -> None:
    prompts = corpus.demo_prompts(60, seed=0)
    assert prompts == corpus.demo_prompts(60, seed=0)
    assert len(set(prompts)) >= 58
    train_prompts = {doc.prompt for doc in corpus.generate_reviews(4000, seed=0)}
    assert not set(prompts) & train_prompts
    assert not set(corpus.demo_prompts(40, seed=1, split="heldout")) & set(corpus.demo_prompts(400, seed=1, split="train"))


def test_qa_answers_vary_in_helpfulness() -> None:
    docs = corpus.generate_qa(600, seed=0)
    assert all(doc.prompt.startswith("Q: ") and doc.prompt.endswith("\nA:") for doc in docs)
    forms = {doc.labels["form"] for doc in docs}
    assert forms == {"concise", "padded", "vague", "rambling", "circular"}
    for doc in docs:
        if doc.labels["helpful"]:
            assert corpus.gives_reason(doc.completion)
        if doc.labels["form"] in ("vague", "rambling"):
            assert not corpus.gives_reason(doc.completion)
    concise = corpus.qa_examples(50, seed=0)
    assert all(doc.labels["form"] == "concise" for doc in concise)
    assert statistics.mean(len(d.completion.split()) for d in concise) < 20


def test_summaries_have_references_from_the_passage() -> None:
    docs = corpus.summary_examples(100, seed=0)
    for doc in docs:
        passage = doc.prompt.removeprefix("Passage: ").removesuffix("\nSummary:")
        reference = doc.completion.strip()
        assert doc.labels["quality"] == "reference" and reference == doc.labels["reference"]
        assert corpus.sentence_count(reference) == 1
        assert len(reference.split()) < len(passage.split())
        town_words = [w for w in reference.replace(",", "").split() if w[:1].isupper()]
        assert any(w in passage for w in town_words), (reference, passage)
    mixed = corpus.generate_summaries(400, seed=0)
    assert {doc.labels["quality"] for doc in mixed} == {"reference", "lead", "vague"}
    train = {doc.prompt for doc in corpus.generate_summaries(400, seed=0, split="train")}
    assert not train & {doc.prompt for doc in docs}
