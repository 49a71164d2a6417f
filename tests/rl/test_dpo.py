"""DPO/IPO: pair extraction, encoding, reference log-probs once, implied-reward ordering, resume."""

from __future__ import annotations

import itertools

import pytest
import torch
from toy_problem import PROMPT, reward_table, toy_bundle

from rlhfkit.config import load_config
from rlhfkit.data.records import Comparison, Ranking, Rating
from rlhfkit.rl.config import DPOConfig
from rlhfkit.rl.dpo import DPOTrainer, sequence_logprobs
from rlhfkit.rl.preference_pairs import Pair, encode_pairs, pairs_from_records


def exact_pairs() -> tuple[list[str], list[float], list[Pair]]:
    """Every pair of the 21 toy responses, the higher table reward chosen."""
    table = reward_table(0)
    texts = [" ".join(t) for t in table]
    scores = [table[t.replace(" ", "")] for t in texts]
    pairs = [Pair(PROMPT, a if sa > sb else b, b if sa > sb else a)
             for (a, sa), (b, sb) in itertools.combinations(zip(texts, scores), 2)]
    return texts, scores, pairs


def implied_reward_accuracy(bundle, texts: list[str], scores: list[float]) -> float:
    """Fraction of response pairs whose implied rewards log pi/pi_ref are ordered like the scores."""
    data = encode_pairs([Pair(PROMPT, t, t) for t in texts], bundle.tokenizer, 8, 8)
    idx = torch.arange(len(texts))
    with torch.no_grad():
        implied = sequence_logprobs(bundle.policy, data, idx, False)[0] - sequence_logprobs(
            bundle.frozen_reference, data, idx, False)[0]
    pairs = list(itertools.combinations(range(len(texts)), 2))
    return sum(bool((implied[i] > implied[j]) == (scores[i] > scores[j])) and bool(implied[i] != implied[j])
               for i, j in pairs) / len(pairs)


def overrides(tmp_path, *extra: str) -> list[str]:
    return [f"run.output_dir={tmp_path}", "run.progress=false", "run.save_every=0", *extra]


def test_pairs_from_records_expands_rankings_and_skips_ties():
    records = [Comparison("p", "good", "bad"), Comparison("p", "x", "y", tie=True),
               Ranking("q", ("r1", "r2", "r3"), (2, 1, 2)), Rating("p", "r", 3.0, (1.0, 5.0))]
    pairs, unused = pairs_from_records(records)
    assert [(p.chosen, p.rejected) for p in pairs] == [("good", "bad"), ("r2", "r1"), ("r2", "r3")]
    assert unused == 2


def test_encode_pairs_layout_and_truncation():
    bundle = toy_bundle()
    data = encode_pairs([Pair("a b c", "d", "a b c d"), Pair("", "b", "c")], bundle.tokenizer,
                        max_prompt_tokens=2, max_response_tokens=3)
    assert data.prompt_ids.tolist() == [[2, 3], [0, 0]] and data.prompt_mask.tolist() == [[1, 1], [0, 1]]
    assert data.chosen_ids.tolist() == [[4, 0, 0, 0], [2, 0, 0, 0]]
    assert data.rejected_ids.tolist() == [[1, 2, 3, 0], [3, 0, 0, 0]]
    assert data.rejected_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    ids, mask, response_mask, start = data.stacked(torch.tensor([1]))
    assert start == 1 and ids.tolist() == [[0, 2, 0], [0, 3, 0]] and mask.tolist() == [[1, 1, 1], [1, 1, 1]]


@pytest.mark.slow
def test_dpo_on_exact_preferences_orders_implied_rewards(tmp_path):
    texts, scores, pairs = exact_pairs()
    bundle = toy_bundle()
    config = load_config(DPOConfig, None, overrides(tmp_path, "beta=0.5", "optim.lr=3e-2", "epochs=40",
                                                    f"batch_size={len(pairs)}", "optim.max_grad_norm=null"))
    assert implied_reward_accuracy(bundle, texts, scores) == 0.0  # policy == reference: all ties
    calls = []
    bundle.frozen_reference.register_forward_hook(lambda *args: calls.append(1))
    history = DPOTrainer(config, bundle, pairs).train()
    assert len(calls) == 1, "reference log-probs must be computed once"
    assert history[-1]["loss/dpo"] < history[0]["loss/dpo"]
    accuracy = implied_reward_accuracy(bundle, texts, scores)
    assert accuracy >= 0.95, f"implied rewards order only {accuracy:.3f} of pairs correctly"


def test_ipo_and_cdpo_reduce_their_loss(tmp_path):
    _, _, pairs = exact_pairs()
    for extra in (["loss_type=ipo"], ["label_smoothing=0.1"]):
        bundle = toy_bundle()
        config = load_config(DPOConfig, None, overrides(tmp_path, "optim.lr=3e-2", "run.steps=6",
                                                        f"batch_size={len(pairs)}", *extra))
        history = DPOTrainer(config, bundle, pairs).train()
        assert history[-1]["loss/dpo"] < history[0]["loss/dpo"]


def test_dpo_resume_is_bitwise_identical(tmp_path):
    _, _, pairs = exact_pairs()
    common = ["optim.lr=1e-2", "run.steps=4", "batch_size=50", "optim.grad_accum=2"]
    straight = toy_bundle()
    DPOTrainer(load_config(DPOConfig, None, overrides(tmp_path / "a", *common)), straight, pairs).train()
    first = toy_bundle()
    half = load_config(DPOConfig, None, overrides(tmp_path / "b", *common, "run.save_every=2"))
    trainer = DPOTrainer(half, first, pairs)
    trainer.precompute_reference()
    for _ in range(2):
        trainer.train_step()
        trainer.harness.step += 1
    trainer.harness.save()
    resumed_bundle = toy_bundle(seed=5)  # different initial weights: everything must come from the checkpoint
    resumed = DPOTrainer(half, resumed_bundle, pairs)
    resumed.harness.resume(tmp_path / "b" / "checkpoint-2")
    resumed.train()
    for (name, a), b in zip(straight.policy.state_dict().items(), resumed_bundle.policy.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("loss_type,label", [("sigmoid", "dpo"), ("ipo", "ipo")])
def test_progress_bar_names_the_method_not_the_loss_function(tmp_path, monkeypatch, loss_type, label):
    # the bar of `rlhfkit dpo` read "sigmoid"
    import rlhfkit.rl.dpo as dpo_module

    seen: list[str] = []
    monkeypatch.setattr(dpo_module, "run_loop", lambda harness, step, description, on_step=None: seen.append(description) or [])
    _, _, pairs = exact_pairs()
    config = load_config(DPOConfig, None, overrides(tmp_path, "run.steps=1", f"loss_type={loss_type}"))
    DPOTrainer(config, toy_bundle(), pairs[:4]).train()
    assert seen == [label]
