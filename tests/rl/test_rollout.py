"""Rollouts: sampling log-probs agree with a later forward pass, EOS/stop masking, greedy HF == cached."""

from __future__ import annotations

import pytest
import torch
from helpers_models import tiny_gpt2

from rlhfkit.rl.logprobs import token_logprobs
from rlhfkit.rl.rollout import CachedSampler, PromptTooLongError, Rollout, SamplingParams, make_sampler, sample_from_probs
from rlhfkit.rl.token_draw import filter_logits

PROMPTS = ["The movie was great", "Hi", "What a lovely day! The sun is", "Stop.", "Please explain why", "I"]
SAMPLERS = ["hf", "cached", "cached-static"]


def _sample(name: str, model, tokenizer, params: SamplingParams, seed: int = 0, prompts=PROMPTS) -> Rollout:
    return make_sampler(name).sample(model, tokenizer, list(prompts), params, generator=torch.Generator().manual_seed(seed))


def _check_masking(rollout: Rollout, tokenizer) -> None:
    """Mask is a prefix of ones ending at EOS/stop for finished rows; the rest is pad with log-prob 0."""
    mask = rollout.response_mask
    lengths = mask.sum(-1)
    positions = torch.arange(mask.shape[1]).expand_as(mask)
    assert torch.equal(mask, (positions < lengths.unsqueeze(1)).long())
    assert torch.all(rollout.response_ids[mask == 0] == tokenizer.pad_token_id)
    assert torch.all(rollout.logprobs[mask == 0] == 0)
    assert torch.all(rollout.logprobs[mask == 1] < 0)
    assert torch.all(lengths[~rollout.finished] == mask.shape[1])


@pytest.mark.parametrize("name", SAMPLERS)
def test_sampling_logprobs_agree_with_forward_pass(name: str, eos_model, tokenizer) -> None:
    """The issue's acceptance test: sampler log-probs == a later forward pass, within 1e-4 in float32."""
    params = SamplingParams(max_new_tokens=16, temperature=0.7, top_k=50, top_p=0.9)
    rollout = _sample(name, eos_model, tokenizer, params)
    lengths = rollout.response_mask.sum(-1)
    assert rollout.prompt_mask.sum(-1).unique().numel() > 1, "prompts should have mixed lengths"
    assert rollout.finished.any() and lengths.min() < lengths.max(), "want EOS at different steps"
    _check_masking(rollout, tokenizer)
    with torch.no_grad():
        recomputed = token_logprobs(eos_model, rollout.sequences, rollout.attention_mask, rollout.response_start,
                                    temperature=params.temperature)
    assert rollout.logprobs.dtype == torch.float32
    difference = ((recomputed - rollout.logprobs) * rollout.response_mask).abs().max().item()
    assert difference < 1e-4
    finished_rows = rollout.finished.nonzero().flatten()
    last = rollout.response_ids[finished_rows, lengths[finished_rows] - 1]
    assert torch.all(last == tokenizer.eos_token_id)
    assert rollout.prompts == PROMPTS and len(rollout.responses) == len(PROMPTS)


@pytest.mark.parametrize("name", ["cached", "cached-static"])
def test_greedy_tokens_identical_to_hf_generate(name: str, peaky_model, tokenizer) -> None:
    params = SamplingParams(max_new_tokens=24, do_sample=False, temperature=0.5)
    reference = _sample("hf", peaky_model, tokenizer, params)
    ours = _sample(name, peaky_model, tokenizer, params)
    assert reference.response_ids.shape == (len(PROMPTS), 24)
    assert len({tuple(row) for row in reference.response_ids.tolist()}) == len(PROMPTS)
    assert torch.equal(ours.response_ids, reference.response_ids)
    assert torch.equal(ours.response_mask, reference.response_mask)
    torch.testing.assert_close(ours.logprobs, reference.logprobs, atol=1e-5, rtol=0)
    assert ours.responses == reference.responses


def test_greedy_identical_when_rows_finish_early_and_are_compacted(tokenizer) -> None:
    """Rows ending at EOS at different steps are dropped from the batch; the rest must not change."""
    model = tiny_gpt2(tokenizer, initializer_range=0.2, eos_boost=3.0)
    prompts = PROMPTS + ["The food was bad", "This product is terrible"]
    params = SamplingParams(max_new_tokens=24, do_sample=False)
    reference = _sample("hf", model, tokenizer, params, prompts=prompts)
    lengths = reference.response_mask.sum(-1)
    assert (lengths == 1).sum() >= 2 and (lengths == 24).sum() >= 2 and ((lengths > 1) & (lengths < 24)).any()
    for sampler in (CachedSampler(compact=True), CachedSampler(compact=False), CachedSampler(cache="static")):
        ours = sampler.sample(model, tokenizer, prompts, params)
        assert torch.equal(ours.response_ids, reference.response_ids), sampler
        assert torch.equal(ours.finished, reference.finished)
        torch.testing.assert_close(ours.logprobs, reference.logprobs, atol=1e-5, rtol=0)


def test_greedy_equal_without_padding(peaky_model, tokenizer) -> None:
    """Equal-length prompts take generate's no-attention-mask path; ours must follow it."""
    prompts = ["The movie was great", "The movie was great"]
    params = SamplingParams(max_new_tokens=12, do_sample=False)
    reference = _sample("hf", peaky_model, tokenizer, params, prompts=prompts)
    assert reference.prompt_mask.all()
    assert torch.equal(_sample("cached", peaky_model, tokenizer, params, prompts=prompts).response_ids, reference.response_ids)


@pytest.mark.parametrize("name", SAMPLERS)
def test_same_generator_seed_same_rollout(name: str, eos_model, tokenizer) -> None:
    params = SamplingParams(max_new_tokens=10, temperature=1.2)
    first, second = _sample(name, eos_model, tokenizer, params, seed=3), _sample(name, eos_model, tokenizer, params, seed=3)
    other = _sample(name, eos_model, tokenizer, params, seed=4)
    assert torch.equal(first.response_ids, second.response_ids)
    assert not torch.equal(first.response_ids, other.response_ids)


@pytest.mark.parametrize("name", SAMPLERS)
def test_stop_strings_truncate_text_and_mask(name: str, peaky_model, tokenizer) -> None:
    params = SamplingParams(max_new_tokens=16, temperature=1.0)
    free = _sample(name, peaky_model, tokenizer, params, seed=5)
    row = max(range(len(PROMPTS)), key=lambda i: len(free.responses[i]))
    text = free.responses[row]
    stop = text[len(text) // 2: len(text) // 2 + 2]
    cut_at = text.find(stop)
    params = SamplingParams(max_new_tokens=16, temperature=1.0, stop_strings=[stop])
    stopped = _sample(name, peaky_model, tokenizer, params, seed=5)
    assert stopped.finished[row]
    assert stopped.responses[row] == text[:cut_at]
    length = int(stopped.response_mask[row].sum())
    # The last kept token completes the stop string; one token fewer does not contain it.
    kept = stopped.response_ids[row, :length].tolist()
    assert stop in tokenizer.decode(kept, skip_special_tokens=True)
    assert stop not in tokenizer.decode(kept[:-1], skip_special_tokens=True)
    assert kept == free.response_ids[row, :length].tolist()
    _check_masking(stopped, tokenizer)
    for i, response in enumerate(stopped.responses):
        assert stop not in response, f"row {i} kept its stop string"


@pytest.mark.parametrize("name", SAMPLERS)
def test_min_new_tokens_blocks_eos(name: str, tokenizer) -> None:
    always_eos = tiny_gpt2(tokenizer, eos_boost=50.0)
    greedy = _sample(name, always_eos, tokenizer, SamplingParams(max_new_tokens=8, do_sample=False))
    assert torch.all(greedy.response_mask.sum(-1) == 1)
    rollout = _sample(name, always_eos, tokenizer, SamplingParams(max_new_tokens=8, min_new_tokens=3, temperature=0.9))
    assert torch.all(rollout.response_mask.sum(-1) == 4) and rollout.finished.all()
    assert torch.all(rollout.response_ids[:, 3] == tokenizer.eos_token_id)
    assert not torch.isin(rollout.response_ids[:, :3], torch.tensor([tokenizer.eos_token_id])).any()


@pytest.mark.parametrize("name", SAMPLERS)
def test_unfinished_rows_and_train_mode_restored(name: str, peaky_model, tokenizer) -> None:
    peaky_model.train()
    try:
        rollout = _sample(name, peaky_model, tokenizer, SamplingParams(max_new_tokens=5))
        assert peaky_model.training
    finally:
        peaky_model.eval()
    assert not rollout.finished.any() and torch.all(rollout.response_mask == 1)
    assert rollout.sequences.shape == (len(PROMPTS), rollout.response_start + 5)
    assert torch.equal(rollout.response_lengths, torch.full((len(PROMPTS),), 5))


@pytest.mark.parametrize("name", SAMPLERS)
def test_prompt_longer_than_context_names_the_prompt(name: str, peaky_model, tokenizer) -> None:
    long_prompt = "the sky is blue " * 30
    with pytest.raises(PromptTooLongError, match="prompt 1 has .* context of 64"):
        _sample(name, peaky_model, tokenizer, SamplingParams(max_new_tokens=8), prompts=["Hi", long_prompt])


def test_empty_prompt_starts_from_bos(peaky_model, tokenizer) -> None:
    rollout = _sample("cached", peaky_model, tokenizer, SamplingParams(max_new_tokens=4), prompts=["", "Hi"])
    assert rollout.prompt_ids[0, -1] == tokenizer.bos_token_id and rollout.prompt_mask[0].sum() == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"temperature": 0.0}, "temperature"), ({"top_k": -1}, "top_k"),
    ({"top_p": 0.0}, "top_p"), ({"min_new_tokens": 9, "max_new_tokens": 8}, "min_new_tokens"),
    ({"stop_strings": [""]}, "stop_strings"),
])
def test_sampling_params_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_unknown_sampler() -> None:
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("vllm-please")


@pytest.mark.parametrize("top_k, top_p", [(5, 1.0), (0, 0.8), (7, 0.5), (0, 0.05)])
def test_filter_logits_matches_transformers_warpers(top_k: int, top_p: float) -> None:
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    scores = torch.randn(4, 40, generator=torch.Generator().manual_seed(top_k))
    expected = scores.clone()
    if top_k:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p < 1:
        expected = TopPLogitsWarper(top_p)(None, expected)
    assert torch.equal(filter_logits(scores, top_k, top_p), expected)


def test_inverse_cdf_sampling_follows_the_distribution() -> None:
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2], [0.0, 0.0, 0.0, 1.0], [0.25, 0.25, 0.25, 0.25]])
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_from_probs(probs, generator) for _ in range(4000)])  # (n, 3)
    for row in range(3):
        frequencies = torch.bincount(draws[:, row], minlength=4).float() / draws.shape[0]
        torch.testing.assert_close(frequencies, probs[row], atol=0.03, rtol=0)
        assert torch.all(frequencies[probs[row] == 0] == 0), "zero-probability tokens are never drawn"


def test_hf_sampler_hides_transformers_false_padding_warning(tokenizer) -> None:
    """Equal prompts: generate drops the all-ones mask, then finished rows feed <pad> and transformers
    warned "We strongly recommend passing in an `attention_mask`" on `rlhfkit generate --num 4`."""
    import logging

    from transformers.utils import logging as hf_logging

    model = tiny_gpt2(tokenizer, eos_boost=3.0)
    records: list[logging.LogRecord] = []
    collect = logging.Handler()
    collect.emit = records.append  # type: ignore[method-assign]
    source = hf_logging.get_logger("transformers.modeling_utils")
    logging.Logger.warning_once.cache_clear()  # transformers warns once per process
    source.addHandler(collect)
    try:
        rollout = _sample("hf", model, tokenizer, SamplingParams(max_new_tokens=12), prompts=["The movie was"] * 4)
        assert rollout.finished.any() and not rollout.finished.all()  # a finished row fed <pad> while others ran
        assert not [r for r in records if "attention_mask" in r.getMessage()]
        logging.Logger.warning_once.cache_clear()
        model(torch.tensor([[5, tokenizer.pad_token_id]]))  # outside sampling, transformers still warns
        assert [r for r in records if "attention_mask" in r.getMessage()]
    finally:
        source.removeHandler(collect)
