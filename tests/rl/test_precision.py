"""bf16 compute with float32 master weights, and gradient checkpointing: the same code on CPU as on GPU.

Stated tolerance: on a fixed batch, bf16 autocast changes the PPO loss by < 0.02 and the sampled tokens'
log-probs by < 0.05 nats against float32, and the gradient keeps a cosine similarity > 0.99.
"""

from __future__ import annotations

import pytest
import torch
from toy_problem import PROMPT, reward_table, run_config_overrides, table_reward, toy_bundle

from rlhfkit.config import load_config
from rlhfkit.rl.config import PPOConfig
from rlhfkit.rl.epochs import minibatch_denominator
from rlhfkit.rl.onpolicy import OnPolicyTrainer
from rlhfkit.rl.rollout import make_sampler
from rlhfkit.rl.runner import train_on_policy


def loss_and_gradient(tmp_path, dtype: str, checkpointing: bool = False, seed: int = 0, calls: list | None = None):
    """PPO loss, token log-probs and flattened gradient on one fixed rollout (sampled in float32)."""
    bundle = toy_bundle(value="critic")
    if calls is not None:  # counts forwards of the first attention (recomputed in the backward when checkpointed)
        bundle.policy.transformer.h[0].attn.register_forward_hook(lambda *args: calls.append(1))
    config = load_config(PPOConfig, None, run_config_overrides(tmp_path / dtype, 1) + [
        "num_prompts=16", "value_model=critic", f"run.dtype={dtype}",
        f"run.gradient_checkpointing={str(checkpointing).lower()}"])
    trainer = OnPolicyTrainer(config, bundle, table_reward(reward_table()), [PROMPT], make_sampler("cached"))
    rollout = make_sampler("cached").sample(bundle.policy, bundle.tokenizer, [PROMPT] * 16, config.generation,
                                            generator=torch.Generator().manual_seed(seed))
    from rlhfkit.rl.scoring import score_rollout

    batch, _ = trainer.make_batch(rollout, score_rollout(rollout, trainer.reward, config.reward, trainer.moments))
    rows = torch.arange(16)
    denominator, tokens = minibatch_denominator(batch.mask, [rows], "token_mean")
    if calls is not None:
        calls.clear()
    loss, stats = trainer.loss(batch, rows, denominator, tokens)
    loss.backward()
    gradient = torch.cat([p.grad.flatten() for p in bundle.trainable_parameters() if p.grad is not None])
    return loss.item(), batch.old_logprobs, gradient, bundle


def test_bf16_and_fp32_agree_on_a_fixed_batch_within_the_stated_tolerance(tmp_path):
    full_loss, full_logprobs, full_grad, _ = loss_and_gradient(tmp_path, "float32")
    half_loss, half_logprobs, half_grad, bundle = loss_and_gradient(tmp_path, "bfloat16")
    assert half_loss == pytest.approx(full_loss, abs=0.02)
    assert float((half_logprobs - full_logprobs).abs().max()) < 0.05
    assert float(torch.nn.functional.cosine_similarity(half_grad, full_grad, dim=0)) > 0.99
    assert all(p.dtype == torch.float32 for p in bundle.trainable_parameters())  # master weights
    assert torch.isfinite(half_grad).all()


def test_gradient_checkpointing_gives_the_same_gradient(tmp_path):
    plain_calls: list = []
    checkpointed_calls: list = []
    _, _, plain, _ = loss_and_gradient(tmp_path / "plain", "float32", calls=plain_calls)
    _, _, checkpointed, bundle = loss_and_gradient(tmp_path / "ckpt", "float32", checkpointing=True,
                                                   calls=checkpointed_calls)
    assert len(plain_calls) == 1 and len(checkpointed_calls) == 2  # the block ran again in the backward
    assert not bundle.policy.training
    assert torch.allclose(plain, checkpointed, atol=1e-6)


def test_a_bf16_run_keeps_float32_master_weights_and_a_bf16_reference(tmp_path, toy_files, monkeypatch):
    import rlhfkit.rl.onpolicy as onpolicy

    seen = {}
    original = onpolicy.OnPolicyTrainer.__init__

    def spy(self, config, bundle, *args, **kwargs):
        seen["trained"] = {p.dtype for p in bundle.trainable_parameters()}
        seen["reference"] = {p.dtype for p in bundle.frozen_reference.parameters()}
        original(self, config, bundle, *args, **kwargs)

    monkeypatch.setattr(onpolicy.OnPolicyTrainer, "__init__", spy)
    config = load_config(PPOConfig, None, run_config_overrides(tmp_path / "run", 2) + [
        f"run.model={toy_files['model']}", f"run.prompts={toy_files['prompts']}", f"reward.functions=[{toy_files['reward']}:score]", "num_prompts=8",
        "num_minibatches=2", "run.dtype=bfloat16", "run.gradient_checkpointing=true", "run.device=cpu"])
    result = train_on_policy(config, report_to="none")
    assert seen == {"trained": {torch.float32}, "reference": {torch.bfloat16}}
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(v)) for k, v in result.last_metrics.items()
                                     if k.startswith("loss/"))


def test_reward_model_gradient_checkpointing_recomputes_and_keeps_the_gradient(tmp_path):
    from helpers_models import tiny_gpt2, tiny_tokenizer

    from rlhfkit.models.reward_model import RewardModel, RewardModelSettings
    from rlhfkit.reward.config import RewardTrainConfig
    from rlhfkit.reward.pipeline import build_model

    tokenizer = tiny_tokenizer()
    RewardModel(tiny_gpt2(tokenizer, seed=1).transformer, tokenizer,
                RewardModelSettings(max_length=32)).save_pretrained(tmp_path / "rm")
    gradients = []
    for checkpointing in (False, True):
        config = RewardTrainConfig(model=str(tmp_path / "rm"), max_length=32, gradient_checkpointing=checkpointing)
        model = build_model(config, seed=0, device=torch.device("cpu"))
        calls: list = []
        model.backbone.h[0].attn.register_forward_hook(lambda *args: calls.append(1))
        ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
        model.train()
        model(ids, torch.ones_like(ids)).sum().backward()
        assert len(calls) == (2 if checkpointing else 1)
        gradients.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(gradients[0], gradients[1], atol=1e-6)


def test_dpo_under_bf16_precomputes_the_reference_and_trains(tmp_path, two_threads):
    """DPO's reference pass packs its frozen weights for oneDNN in float32 only: packed under a bf16 run, the
    autocast pass handed them bfloat16 inputs and oneDNN failed. Its log-probs stay within bf16 rounding of
    float32's, in two halves of the batches side by side as in one pass."""
    from test_dpo import exact_pairs

    from rlhfkit.rl.config import DPOConfig
    from rlhfkit.rl.dpo import DPOTrainer

    _, _, pairs = exact_pairs()
    references = {}
    for dtype in ("float32", "bfloat16"):
        config = load_config(DPOConfig, None, [f"run.output_dir={tmp_path / dtype}", "run.progress=false",
                                               "run.save_every=0", "run.steps=2", "batch_size=50",
                                               f"run.dtype={dtype}", "run.device=cpu"])
        trainer = DPOTrainer(config, toy_bundle(), pairs)
        history = trainer.train()
        references[dtype] = torch.cat([trainer.reference.chosen, trainer.reference.rejected])
        assert len(history) == 2 and all(torch.isfinite(torch.tensor(h["loss/dpo"])) for h in history)
    assert float((references["bfloat16"] - references["float32"]).abs().max()) < 0.1
