"""The token draw as TorchScript: the same tokens and log-probs as the eager functions, and as the sampler's general
choice (temperature, top-k/top-p, blocked tokens), bit for bit."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.rl.rollout import CachedSampler, SamplingParams
from rlhfkit.rl.token_draw import CDF_BLOCK, inverse_cdf_draw, sampled_pick
from rlhfkit.utils.torchscript import scripted

needs_script = pytest.mark.skipif(scripted(sampled_pick) is None, reason="no TorchScript in this PyTorch")


def logits_and_uniforms(rows: int = 37, vocab: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=generator) * 3
    logits[0, :] = -torch.inf
    logits[0, 5] = 0.0  # one token with all the mass
    uniform = torch.rand(rows, 1, generator=generator, dtype=torch.float64)
    uniform[1] = 1.0 - 1e-17  # the end of the CDF
    return logits, uniform


@needs_script
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_the_scripted_pick_is_the_eager_pick_and_the_samplers_general_choice(temperature: float) -> None:
    logits, uniform = logits_and_uniforms()
    chosen, logprobs = scripted(sampled_pick)(logits, temperature, uniform, CDF_BLOCK)
    eager_chosen, eager_logprobs = sampled_pick(logits, temperature, uniform, CDF_BLOCK)
    general, full = CachedSampler._choose(logits, SamplingParams(temperature=temperature), None, None, uniform=uniform)
    assert torch.equal(chosen, eager_chosen) and torch.equal(chosen, general)
    assert torch.equal(logprobs, eager_logprobs)
    assert torch.equal(logprobs, full.gather(-1, general.unsqueeze(-1)).squeeze(-1))
    assert chosen[0] == 5


@needs_script
def test_the_scripted_draw_is_the_eager_draw() -> None:
    logits, uniform = logits_and_uniforms(vocab=4096 + 17, seed=1)  # the last block part empty
    probs = torch.softmax(logits, dim=-1)
    drawn = scripted(inverse_cdf_draw)(probs, uniform, CDF_BLOCK)
    assert torch.equal(drawn, inverse_cdf_draw(probs, uniform, CDF_BLOCK))
    assert bool((probs.gather(-1, drawn.unsqueeze(-1)) > 0).all())  # never a token without mass


def test_the_samplers_pick_uses_the_plain_path_only_for_plain_sampling(monkeypatch) -> None:
    from rlhfkit.rl import rollout

    calls = []
    monkeypatch.setattr(rollout, "scripted", lambda function: lambda *args: calls.append(1) or function(*args))
    logits, uniform = logits_and_uniforms()
    CachedSampler._pick(logits, uniform, SamplingParams(temperature=0.8), None)
    assert len(calls) == 1
    for params, block in ((SamplingParams(top_k=5), None), (SamplingParams(top_p=0.9), None),
                          (SamplingParams(), torch.tensor([3])), (SamplingParams(do_sample=False), None)):
        chosen, logprobs = CachedSampler._pick(logits, None if not params.do_sample else uniform, params, block)
        expected, full = CachedSampler._choose(logits, params, block, None, uniform=uniform)
        assert torch.equal(chosen, expected)
        assert torch.equal(logprobs, full.gather(-1, expected.unsqueeze(-1)).squeeze(-1))
    assert len(calls) == 1
