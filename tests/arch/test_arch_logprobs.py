"""The trainers' forward on every architecture: the LM head run only at response rows (a pre-hook on
the output embeddings) gives each row's unpadded log-probs, and the value head on the trunk reads the
same hidden states as an unpacked forward."""

from __future__ import annotations

import pytest
import torch
from arch_zoo import ARCHITECTURES

from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.models.value import PolicyWithValueHead
from rlhfkit.rl.forward import policy_forward
from rlhfkit.rl.rollout import SamplingParams, make_sampler

pytestmark = pytest.mark.arch

PROMPTS = ["Hi", "The movie was great and the actors were", "The food"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_packed_head_logprobs_and_values_match_an_unpacked_forward(zoo, arch) -> None:
    path = str(zoo[arch].policy)
    torch.manual_seed(0)
    model = PolicyWithValueHead(load_causal_lm(path, device="cpu", dtype=torch.float32))
    params = SamplingParams(max_new_tokens=5, do_sample=True, temperature=1.0)
    rollout = make_sampler("hf").sample(model.policy, load_tokenizer(path), PROMPTS, params,
                                        torch.Generator().manual_seed(0))
    seqs, attn, start = rollout.sequences, rollout.attention_mask, rollout.response_start
    mask = rollout.response_mask.bool()
    with torch.no_grad():
        logprobs, entropy, values = policy_forward(model, seqs, attn, start, 1.0, with_entropy=True)
        full = model(seqs, attn)
    logp = torch.log_softmax(full.logits[:, start - 1:-1].float(), -1)
    expected = logp.gather(-1, seqs[:, start:, None]).squeeze(-1)
    assert values is not None and entropy is not None
    torch.testing.assert_close(logprobs[mask], rollout.logprobs[mask], atol=1e-4, rtol=0)
    torch.testing.assert_close(logprobs[mask], expected[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy[mask], -(logp.exp() * logp).sum(-1)[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(values[mask], full.values[:, start - 1:-1][mask], atol=1e-5, rtol=0)
    assert bool((logprobs[~mask] == 0).all())
