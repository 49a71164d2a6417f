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


CHOICES = [(1.0, None, 0, 1.0), (0.7, None, 0, 1.0), (1.0, [3, 5], 0, 1.0), (0.7, [5], 0, 1.0), (1.0, None, 7, 1.0),
           (0.8, None, 0, 0.9), (0.9, [3], 20, 0.8)]


@needs_script
@pytest.mark.parametrize("temperature, blocked, top_k, top_p", CHOICES)
def test_the_scripted_pick_is_the_eager_pick_and_the_samplers_general_choice(temperature, blocked, top_k, top_p
                                                                              ) -> None:
    """Temperature, blocked ids (EOS before min_new_tokens), top-k and top-p: the scripted pick draws the tokens
    of the eager one and of the sampler's general choice, with the unfiltered distribution's log-probs."""
    logits, uniform = logits_and_uniforms()
    block = None if blocked is None else torch.tensor(blocked)
    chosen, logprobs = scripted(sampled_pick)(logits, temperature, uniform, CDF_BLOCK, block, top_k, top_p)
    eager_chosen, eager_logprobs = sampled_pick(logits, temperature, uniform, CDF_BLOCK, block, top_k, top_p)
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    general, full = CachedSampler._choose(logits, params, block, None, uniform=uniform)
    assert torch.equal(chosen, eager_chosen) and torch.equal(chosen, general)
    assert torch.equal(logprobs, eager_logprobs)
    assert torch.equal(logprobs, full.gather(-1, general.unsqueeze(-1)).squeeze(-1))
    torch.testing.assert_close(full, torch.log_softmax(logits / temperature, dim=-1))  # unfiltered
    if blocked is not None:
        assert not bool(torch.isin(chosen, block).any())
    if blocked is None or 5 not in blocked:
        assert chosen[0] == 5


@needs_script
def test_the_scripted_draw_is_the_eager_draw() -> None:
    logits, uniform = logits_and_uniforms(vocab=4096 + 17, seed=1)  # the last block part empty
    probs = torch.softmax(logits, dim=-1)
    drawn = scripted(inverse_cdf_draw)(probs, uniform, CDF_BLOCK)
    assert torch.equal(drawn, inverse_cdf_draw(probs, uniform, CDF_BLOCK))
    assert bool((probs.gather(-1, drawn.unsqueeze(-1)) > 0).all())  # never a token without mass


def test_the_samplers_pick_is_scripted_whenever_it_samples_from_drawn_uniforms(monkeypatch) -> None:
    from rlhfkit.rl import rollout

    calls = []
    monkeypatch.setattr(rollout, "scripted", lambda function: lambda *args: calls.append(1) or function(*args))
    logits, uniform = logits_and_uniforms()
    for params, block in ((SamplingParams(temperature=0.8), None), (SamplingParams(top_k=5), None),
                          (SamplingParams(top_p=0.9), None), (SamplingParams(), torch.tensor([3])),
                          (SamplingParams(do_sample=False), None), (SamplingParams(do_sample=False), torch.tensor([3]))):
        chosen, logprobs = CachedSampler._pick(logits, None if not params.do_sample else uniform, params, block)
        expected, full = CachedSampler._choose(logits, params, block, None, uniform=uniform)
        assert torch.equal(chosen, expected)
        assert torch.equal(logprobs, full.gather(-1, expected.unsqueeze(-1)).squeeze(-1))
    assert len(calls) == 4  # every sampling choice; greedy picks eagerly
