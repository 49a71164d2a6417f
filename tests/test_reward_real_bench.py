"""bench/reward_real.py: k-fold splits by question, long documents read whole, and the context a base reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import reward_real  # noqa: E402
from rlhfkit.data.records import Comparison  # noqa: E402


def test_every_pair_is_evaluated_once_by_a_fold_that_never_trained_on_its_question() -> None:
    numbers = [1, 1, 2, 3, 3, 3, 4, 5, 6, 6, 7]
    splits = reward_real.kfold_by_question(numbers, 3, seed=0)
    evaluated = sorted(i for _, held in splits for i in held)
    assert evaluated == list(range(len(numbers)))
    for train, held in splits:
        assert sorted(train + held) == list(range(len(numbers)))
        assert not {numbers[i] for i in train} & {numbers[i] for i in held}
    sizes = sorted(len({numbers[i] for i in held}) for _, held in splits)
    assert sizes == [2, 2, 3]
    assert reward_real.kfold_by_question(numbers, 3, seed=0) == splits
    assert reward_real.kfold_by_question(numbers, 3, seed=1) != splits


def test_fold_counts_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        reward_real.kfold_by_question([1, 2, 3], 1, seed=0)
    with pytest.raises(ValueError, match="4 folds need at least 4 questions, the data has 3"):
        reward_real.kfold_by_question([1, 2, 3, 3], 4, seed=0)


def test_long_documents_are_cut_into_windows_not_truncated() -> None:
    assert reward_real.windows([1, 2, 3, 4, 5, 6, 7], 3) == [[1, 2, 3], [4, 5, 6], [7]]
    assert reward_real.windows([1, 2], 3) == [[1, 2]]
    assert reward_real.windows([], 3) == []


def test_context_texts_read_passages_and_reference_answers_of_the_given_questions(tmp_path: Path) -> None:
    rows = [{"question": "Who?", "passages": [["Title A", "First sentence.", "Second."], ["Title B", "Other."]],
             "gold": "The answer.", "prediction 1": "x", "preference": "[]"},
            {"question": "Held out?", "passages": [["Title C", "Secret."]], "gold": "Hidden.",
             "prediction 1": "y", "preference": "[]"},
            {"question": "No context?", "prediction 1": "z", "preference": "[]"}]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    assert reward_real.context_texts(path, {1, 3}) == ["Title A\nFirst sentence. Second.", "Title B\nOther.",
                                                       "Who?\nThe answer."]


def test_passages_go_before_the_question_and_can_be_cut_to_their_first_words(tmp_path: Path) -> None:
    rows = [{"question": "Who?", "passages": [["Title A", "First sentence.", "Second."], ["Title B", "Other."]],
             "prediction 1": "x", "preference": "[]"},
            {"question": "No context?", "prediction 1": "z", "preference": "[]"}]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    passages = reward_real.passage_texts(path)
    assert passages == {1: "Title A\nFirst sentence. Second.\nTitle B\nOther.", 2: ""}
    records = [Comparison(prompt="Who?\n", chosen="a", rejected="b"),
               Comparison(prompt="No context?\n", chosen="c", rejected="d")]
    whole = reward_real.with_passages(records, [1, 2], passages)
    assert [r.prompt for r in whole] == ["Title A\nFirst sentence. Second.\nTitle B\nOther.\n\nQuestion: Who?\n",
                                         "No context?\n"]
    assert (whole[0].chosen, whole[0].rejected) == ("a", "b")
    cut = reward_real.with_passages(records, [1, 2], passages, words=3)
    assert cut[0].prompt == "Title A\nFirst sentence.\n\nQuestion: Who?\n"


def test_trigram_support_is_the_share_of_the_answers_trigrams_found_in_the_passage() -> None:
    passage = "Bloom was released on 31 August 2018 through EMI."
    assert reward_real.trigram_support("Bloom was released on 31 August", passage) == 1.0
    # trigrams: (bloom was released) (was released in) (released in may): one of three is in the passage
    assert reward_real.trigram_support("BLOOM was released in May", passage) == pytest.approx(1 / 3)
    assert reward_real.trigram_support("Two words", passage) == 0.0
    assert reward_real.trigram_support("", passage) == 0.0


def test_knowledge_base_reads_every_questions_passages_once_and_the_brief_pretraining_starts_from_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from transformers import GPT2LMHeadModel

    rows = [{"question": "Who?", "passages": [["Title A", "Alpha beta gamma delta."]], "prediction 1": "x",
             "preference": "[]"},
            {"question": "Held out?", "passages": [["Title B", "Epsilon zeta eta theta."]], "prediction 1": "y",
             "preference": "[]"}]
    data = tmp_path / "rows.json"
    data.write_text(json.dumps(rows))
    recipe = reward_real.BuiltinRecipe(vocab_size=300, n_positions=16, n_embd=16, n_layer=1, n_head=2, steps=1,
                                       batch_size=2, lr=1e-3, warmup_steps=1, seed=0)
    args = argparse.Namespace(data=str(data), work=str(tmp_path / "work"), knowledge_steps=2)
    read: list[list[str]] = []
    pretrain = reward_real.pretrain_base

    def recording(texts, out, recipe, start=None):  # type: ignore[no-untyped-def]
        read.append(list(texts))
        return pretrain(texts, out, recipe, start)

    monkeypatch.setattr(reward_real, "pretrain_base", recording)
    knowledge = reward_real.knowledge_base(args, recipe)
    assert reward_real.knowledge_base(args, recipe) == knowledge  # cached: pretrained once
    assert read == [["Title A\nAlpha beta gamma delta.", "Title B\nEpsilon zeta eta theta."]]
    assert json.loads((knowledge / "pretrain.json").read_text())["documents"] >= 2

    brief = reward_real.pretrain_base(["Who?\nAlpha beta."], tmp_path / "brief", recipe, start=knowledge)
    assert brief["documents"] == 1
    before = GPT2LMHeadModel.from_pretrained(knowledge).transformer.wte.weight.detach()
    after = GPT2LMHeadModel.from_pretrained(tmp_path / "brief").transformer.wte.weight.detach()
    assert before.shape == after.shape
    assert 0 < float((after - before).norm()) < 0.1 * float(before.norm())  # one step from the knowledge base
    assert (tmp_path / "brief" / "tokenizer.json").read_text() == (knowledge / "tokenizer.json").read_text()


def test_the_base_reads_the_training_answers_and_with_qa_passages_every_questions_passages(tmp_path: Path) -> None:
    import argparse

    rows = [{"question": "Who?", "passages": [["Title A", "Alpha beta."]], "gold": "Alpha.", "prediction 1": "x",
             "preference": "[]"},
            {"question": "Held out?", "passages": [["Title B", "Epsilon zeta."]], "prediction 1": "y",
             "preference": "[]"}]
    data = tmp_path / "rows.json"
    data.write_text(json.dumps(rows))
    train = [Comparison("Who?\n", "Alpha.", "Beta.")]

    def texts(kind: str) -> list[str]:
        return reward_real.base_texts(argparse.Namespace(data=str(data), base_text=kind), train, [1])

    assert texts("qa") == ["Who?\nAlpha.", "Who?\nBeta."]
    assert texts("qa+context") == ["Title A\nAlpha beta.", "Who?\nAlpha.", "Who?\nBeta."]
    assert texts("qa+passages") == ["Title A\nAlpha beta.", "Title B\nEpsilon zeta.", "Who?\nAlpha.", "Who?\nBeta."]


def test_answer_logprob_is_the_mean_over_the_answers_tokens_as_the_models_own_loss_gives(tmp_path: Path) -> None:
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    recipe = reward_real.BuiltinRecipe(vocab_size=300, n_positions=64, n_embd=16, n_layer=1, n_head=2, steps=3,
                                       batch_size=2, lr=1e-2, warmup_steps=1, seed=0)
    reward_real.pretrain_base(["Who is it?\nIt is Alpha.", "Where is it?\nIt is here."], tmp_path, recipe)
    tokenizer, model = AutoTokenizer.from_pretrained(tmp_path), GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    prompts, answers = ["Who is it?\n", "Who is it?\n"], ["It is Alpha.", "Beta gamma delta epsilon."]
    got = reward_real.answer_logprobs(tmp_path, prompts, answers)
    for prompt, answer, value in zip(prompts, answers, got):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = prompt_ids + tokenizer(answer, add_special_tokens=False)["input_ids"]
        labels = [-100] * len(prompt_ids) + ids[len(prompt_ids):]
        with torch.no_grad():
            loss = model(torch.tensor([ids]), labels=torch.tensor([labels])).loss
        assert value == pytest.approx(-float(loss), abs=1e-5)
    long_prompt = "word " * 80
    cut = reward_real.answer_logprobs(tmp_path, [long_prompt], ["It is Alpha."])  # only the last 64 tokens read
    assert np.isfinite(cut).all()


def test_tfidf_with_a_feature_learns_its_weight_where_the_words_cannot_tell_the_answers_apart() -> None:
    train = [Comparison(prompt="q\n", chosen=f"alpha beta {i}", rejected=f"beta alpha {i}") for i in range(20)]
    test = [Comparison(prompt="q\n", chosen="gamma alpha", rejected="alpha gamma")] * 3
    train_gap = np.linspace(0.5, 2.0, 20)  # the chosen answer is always the likelier one
    got = reward_real.tfidf_with_feature(train, test, 1.0, train_gap, np.array([1.0, -0.5, 0.0]))
    assert got.tolist() == [1.0, 0.0, 0.5]  # the words tie every pair; the feature's sign decides
    scaled = reward_real.tfidf_with_feature(train, test, 1.0, 100 * train_gap, np.array([100.0, -50.0, 0.0]))
    assert scaled.tolist() == got.tolist()  # scaled by its training std, so its units do not matter


def test_likelihood_parts_take_the_frozen_term_off_each_pair():
    """A reward model that reads a frozen LM: its pooled part is the margin minus weight x likelihood gap."""
    import torch

    from rlhfkit.models.likelihood import RewardHead

    class Frozen:
        def score(self, prompts, responses):
            return torch.tensor([len(r) / 10 for r in responses])

    head = RewardHead(4, 1, likelihood=True)
    with torch.no_grad():
        head.likelihood_weight.fill_(2.0 / head.likelihood_gain)
    model = type("Model", (), {"frozen_likelihood": Frozen(), "head": head})()
    test = [Comparison("q", "long answer", "short"), Comparison("q", "a", "bbbb")]
    margins = np.array([[0.5], [0.1]])  # gaps 0.6 and -0.3 nats: pooled parts 0.5 - 1.2 and 0.1 + 0.6
    parts = reward_real.likelihood_parts(model, ["q", "q"], test, margins)
    assert parts["weight"] == [2.0]
    assert parts["rm_pooled"].tolist() == [0.0, 1.0] and parts["frozen_likelier"].tolist() == [1.0, 0.0]
    assert np.allclose(parts["gap"], [0.6, -0.3])
    assert reward_real.likelihood_parts(object(), ["q"], test[:1], margins[:1]) == {}
