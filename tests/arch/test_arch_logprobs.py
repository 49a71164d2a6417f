"""The trainers' forward on every architecture: the LM head run only at response rows (a pre-hook on
the output embeddings) gives each row's unpadded log-probs, and the value head on the trunk reads the
same hidden states as an unpacked forward."""

from __future__ import annotations

import pytest
import torch
from arch_zoo import ARCHITECTURES, FAMILIES

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


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_shared_prompts_give_whole_row_logprobs_and_gradients(zoo, arch, monkeypatch) -> None:
    """A group's completions run their prompt once through the KV cache (a 4-position sliding window, as in
    the gemma2, gemma3 and gpt_oss models here, cannot keep it, nor can a recurrent state be handed to several
    rows, so those run whole rows) with the log-probs and gradients of whole rows."""
    import rlhfkit.models.shared_prefix as shared_module
    from rlhfkit.rl.logprobs import prompt_prefix, token_logprobs

    path = str(zoo[arch].policy)
    model = load_causal_lm(path, device="cpu", dtype=torch.float32)
    params = SamplingParams(max_new_tokens=5, do_sample=True, temperature=1.0)
    rollout = make_sampler("hf").sample(model, load_tokenizer(path), [p for p in PROMPTS for _ in range(3)], params,
                                        torch.Generator().manual_seed(0))
    seqs, attn, start = rollout.sequences, rollout.attention_mask, rollout.response_start
    family = FAMILIES[arch]
    assert (prompt_prefix(model, seqs, attn, start) is None) == (family.short_window or family.recurrent)
    weights = torch.randn(seqs.shape[0], seqs.shape[1] - start, generator=torch.Generator().manual_seed(1))

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        logprobs = token_logprobs(model, seqs, attn, start)
        (logprobs * weights).sum().backward()
        return logprobs.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    shared, shared_grads = run()
    monkeypatch.setattr(shared_module, "MIN_SAVED_FRACTION", 2.0)
    whole, whole_grads = run()
    torch.testing.assert_close(shared, whole, atol=2e-5, rtol=0)
    torch.testing.assert_close(shared, rollout.logprobs * rollout.response_mask, atol=1e-4, rtol=0)
    assert len(shared_grads) == len(whole_grads)
    for got, want in zip(shared_grads, whole_grads):  # float32 sums in another order: ~1e-5 of the largest entry
        torch.testing.assert_close(got, want, atol=1e-5 * float(want.abs().max()) + 1e-6, rtol=1e-3)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_frozen_logprobs_run_the_head_themselves_only_where_logits_are_its_output(zoo, arch, monkeypatch) -> None:
    """No-grad log-probs (a reference pass) run the trunk once and the LM head in chunks of positions where the
    model hands back its head's output unchanged; Gemma 2's soft-capped logits keep the model's own head call.
    Either way: the log-probs and entropies of one full forward."""
    import rlhfkit.rl.logprobs as logprobs_module
    from rlhfkit.models.head_rows import logits_are_head_output
    from rlhfkit.models.positions import position_ids_from_mask
    from rlhfkit.rl.logprobs import token_logprobs

    path = str(zoo[arch].policy)
    model = load_causal_lm(path, device="cpu", dtype=torch.float32)
    params = SamplingParams(max_new_tokens=5, do_sample=True, temperature=1.0)
    rollout = make_sampler("hf").sample(model, load_tokenizer(path), PROMPTS, params, torch.Generator().manual_seed(0))
    seqs, attn, start = rollout.sequences, rollout.attention_mask, rollout.response_start
    mask = rollout.response_mask.bool()
    capped = bool(getattr(model.config, "final_logit_softcapping", None))
    assert logits_are_head_output(model, seqs) is not capped
    monkeypatch.setitem(logprobs_module.FROZEN_LOGIT_ELEMENTS, "cpu", 4 * model.config.vocab_size)  # 4 positions
    calls = []
    frozen = logprobs_module.frozen_logprobs
    monkeypatch.setattr(logprobs_module, "frozen_logprobs", lambda *a, **k: calls.append(1) or frozen(*a, **k))
    with torch.no_grad():
        logprobs, entropy = token_logprobs(model, seqs, attn, start, 0.8, with_entropy=True)
        full = model(input_ids=seqs, attention_mask=attn, position_ids=position_ids_from_mask(attn)).logits
    assert len(calls) == (0 if capped else 1)
    logp = torch.log_softmax(full[:, start - 1:-1].float() / 0.8, -1)
    torch.testing.assert_close(logprobs[mask], logp.gather(-1, seqs[:, start:, None]).squeeze(-1)[mask], atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(entropy[mask], -(logp.exp() * logp).sum(-1)[mask], atol=1e-5, rtol=0)
    assert bool((logprobs[~mask] == 0).all()) and bool((entropy[~mask] == 0).all())
