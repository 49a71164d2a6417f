"""RewardModel: last non-pad token, padding invariance, save/load, normalization, heads and ensembles."""

from __future__ import annotations

import json

import pytest
import torch
from helpers_models import tiny_gpt2, tiny_tokenizer
from transformers import GPT2Config, GPT2ForSequenceClassification

from rlhfkit.models.reward_model import (RewardEnsemble, RewardModel, RewardModelError, RewardModelSettings,
                                         last_token_index, load_reward_model, pad_batch, truncate_pair)

PROMPTS = ["The movie was", "The food was", "Please explain why", "What a lovely"]
RESPONSES = [" great and the actors were wonderful.", " bad.", " the sky is blue in one short sentence.", " day!"]


def _model(num_heads: int = 1, seed: int = 0) -> RewardModel:
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    trunk = tiny_gpt2(tokenizer, seed=seed).transformer
    return RewardModel(trunk, tokenizer, RewardModelSettings(num_heads=num_heads, max_length=64)).eval()


def test_last_token_index_left_and_right_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [2, 4, 4]


def test_truncate_pair_keeps_response_and_eos_first():
    assert truncate_pair([1, 2], [3, 4], 10, 0) == ([1, 2, 3, 4, 0], False)
    # prompt loses its start first (down to min_prompt_tokens), then the response its end
    assert truncate_pair([1, 2, 3, 4], [5, 6], 5, 0, min_prompt_tokens=1) == ([3, 4, 5, 6, 0], True)
    assert truncate_pair([1, 2, 3, 4], [5, 6, 7, 8, 9], 5, 0, min_prompt_tokens=1) == ([4, 5, 6, 7, 0], True)
    assert truncate_pair([1, 2], [5, 6, 7], 4, None, min_prompt_tokens=0) == ([2, 5, 6, 7], True)


def test_score_ignores_padding_and_batch_composition():
    model = _model()
    sequences, _ = model.encode(PROMPTS, RESPONSES)
    ids, mask = pad_batch(sequences, model.pad_id)
    batched = model.score(ids, mask)
    alone = torch.cat([model.score(*pad_batch([s], model.pad_id)) for s in sequences])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.score_texts(PROMPTS, RESPONSES, batch_size=3), batched, atol=1e-5, rtol=1e-5)
    assert all(seq[-1] == model.tokenizer.eos_token_id for seq in sequences)


def test_save_load_round_trip_with_normalization(tmp_path):
    model = _model()
    raw = model.score_texts(PROMPTS, RESPONSES)
    mean, std = model.set_normalization(raw)
    normalized = model.score_texts(PROMPTS, RESPONSES, normalized=True)
    assert normalized.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert normalized.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    model.save_pretrained(tmp_path / "rm")
    assert (tmp_path / "rm" / "model.safetensors").is_file() and (tmp_path / "rm" / "reward_head.safetensors").is_file()
    assert json.loads((tmp_path / "rm" / "reward_config.json").read_text())["mean"] == pytest.approx(mean)
    loaded = load_reward_model(tmp_path / "rm")
    assert isinstance(loaded, RewardModel) and loaded.settings.std == pytest.approx(std)
    torch.testing.assert_close(loaded.score_texts(PROMPTS, RESPONSES), raw, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(loaded.score_texts(PROMPTS, RESPONSES, normalized=True), normalized, atol=1e-5, rtol=1e-5)


def test_heads_and_ensembles_report_mean_and_spread(tmp_path):
    heads = _model(num_heads=3)
    mean, std = heads.score_texts(PROMPTS, RESPONSES, with_uncertainty=True)
    assert mean.shape == (4,) and (std > 0).all()
    ids, mask = pad_batch(heads.encode(PROMPTS, RESPONSES)[0], heads.pad_id)
    torch.testing.assert_close(heads(ids, mask).mean(-1), heads.score(ids, mask))
    members = [_model(seed=s) for s in (1, 2)]
    ensemble = RewardEnsemble(members)
    per_member = torch.stack([m.score_texts(PROMPTS, RESPONSES) for m in members], dim=-1)
    e_mean, e_std = ensemble.score_texts(PROMPTS, RESPONSES, with_uncertainty=True)
    torch.testing.assert_close(e_mean, per_member.mean(-1))
    torch.testing.assert_close(e_std, per_member.std(-1, unbiased=False))
    ensemble.save_pretrained(tmp_path / "ens")
    loaded = load_reward_model(tmp_path / "ens")
    assert isinstance(loaded, RewardEnsemble) and len(loaded.members) == 2
    torch.testing.assert_close(loaded.score_texts(PROMPTS, RESPONSES), e_mean, atol=1e-6, rtol=1e-6)


def test_per_head_scores_are_each_heads_reward_at_the_last_token():
    heads = _model(num_heads=3)
    ids, mask = pad_batch(heads.encode(PROMPTS, RESPONSES)[0], heads.pad_id)
    forward = heads(ids, mask)
    per_head = heads.score_texts(PROMPTS, RESPONSES, per_head=True, batch_size=3)
    assert per_head.shape == (4, 3)
    torch.testing.assert_close(per_head, forward, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_head.mean(-1), heads.score_texts(PROMPTS, RESPONSES), atol=1e-6, rtol=1e-6)
    heads.settings.mean, heads.settings.std = 1.0, 2.0
    torch.testing.assert_close(heads.score_texts(PROMPTS, RESPONSES, normalized=True, per_head=True),
                               (forward - 1.0) / 2.0, atol=1e-5, rtol=1e-5)
    single = _model(seed=4)
    ensemble = RewardEnsemble([heads, single])
    both = ensemble.score_texts(PROMPTS, RESPONSES, per_head=True)
    assert both.shape == (4, 4)
    torch.testing.assert_close(both[:, 3], single.score_texts(PROMPTS, RESPONSES), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="not both"):
        heads.score_texts(PROMPTS, RESPONSES, per_head=True, with_uncertainty=True)


def test_sequence_classifier_with_one_label_is_a_reward_model(tmp_path):
    tokenizer = tiny_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2, num_labels=1,
                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                        bos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    classifier = GPT2ForSequenceClassification(config).eval()
    classifier.save_pretrained(tmp_path / "cls")
    tokenizer.save_pretrained(tmp_path / "cls")
    model = load_reward_model(tmp_path / "cls")
    assert model.settings.architecture == "sequence_classification"
    expected = []
    for prompt, response in zip(PROMPTS, RESPONSES):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] + tokenizer(response, add_special_tokens=False)["input_ids"]
        expected.append(classifier(input_ids=torch.tensor([ids])).logits[0, 0])
    expected = torch.stack(expected)
    torch.testing.assert_close(model.score_texts(PROMPTS, RESPONSES), expected, atol=1e-5, rtol=1e-5)


def test_loading_something_else_fails_clearly(tmp_path):
    with pytest.raises(RewardModelError, match="not a directory"):
        load_reward_model(tmp_path / "nothing")
    tokenizer = tiny_tokenizer()
    tiny_gpt2(tokenizer).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    with pytest.raises(RewardModelError, match="neither an rlhfkit reward model"):
        load_reward_model(tmp_path / "lm")
