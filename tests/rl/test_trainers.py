"""Trainer robustness: metrics, non-finite skipping, negative-KL warning, reward-hacking canaries."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from toy_problem import PROMPT, reward_table, run_config_overrides, table_reward, toy_bundle

from rlhfkit.config import load_config
from rlhfkit.rl.config import PolicyGradientConfig, PPOConfig, RewardConfig
from rlhfkit.rl.guard import SkipGuard, TooManySkipsError
from rlhfkit.rl.onpolicy import OnPolicyTrainer
from rlhfkit.rl.rewards import EnsembleReward, FunctionReward
from rlhfkit.rl.rollout import SamplingParams, make_sampler
from rlhfkit.rl.running_moments import RunningMoments
from rlhfkit.rl.scoring import score_rollout
from rlhfkit.rl.update import OptimizerStep, make_optimizer, make_scheduler
from rlhfkit.utils.tracking import Tracker, read_metrics

EXPECTED_PPO_METRICS = {
    "reward/mean", "reward/std", "kl/mean", "kl/coef", "policy/entropy", "policy/clipfrac", "policy/approx_kl",
    "loss/policy", "loss/value", "val/explained_var", "response/length_mean", "perf/tokens_per_s",
    "time/generation", "time/scoring", "time/reference", "time/values", "time/training", "grad/norm",
}


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_weights(module: torch.nn.Module, saved: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, saved[k]) for k, v in module.state_dict().items())


def test_ppo_logs_every_metric_and_adapts_kl(tmp_path):
    bundle = toy_bundle(value="head")
    overrides = run_config_overrides(tmp_path, 2) + ["num_prompts=8", "epochs=1", "num_minibatches=2", "optim.grad_accum=2",
                                                     "kl.target=0.001", "kl.horizon=10", "optim.lr=1e-2"]
    config = load_config(PPOConfig, None, overrides)
    tracker = Tracker(tmp_path, report_to="none")
    trainer = OnPolicyTrainer(config, bundle, table_reward(reward_table()), [PROMPT], make_sampler("cached"), tracker)
    trainer.train()
    tracker.close()
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2]
    assert EXPECTED_PPO_METRICS <= set(records[-1])
    assert records[-1]["train/updates"] == 2.0
    assert trainer.kl_controller.value != config.kl.coef  # adaptive controller moved
    assert (tmp_path / "checkpoint-2" / "policy.safetensors").is_file()
    assert (tmp_path / "final" / "value_head.safetensors").is_file()


def test_nan_reward_skips_update_and_stops_after_limit(tmp_path, caplog):
    bundle = toy_bundle()
    nan_reward = EnsembleReward([FunctionReward(lambda p, r: [math.nan] * len(r), "nan")])
    config = load_config(PolicyGradientConfig, None, run_config_overrides(tmp_path, 5) + [
        "num_prompts=2", "group_size=2", "run.max_consecutive_skips=2"])
    trainer = OnPolicyTrainer(config, bundle, nan_reward, [PROMPT], make_sampler("cached"))
    before = snapshot(bundle.policy)
    with caplog.at_level(logging.WARNING):
        metrics = trainer.train_step()
    assert trainer.harness.guard.total == 1 and metrics["reward/non_finite"] == 4.0
    assert same_weights(bundle.policy, before)
    assert "a reward is not finite" in caplog.text
    with pytest.raises(TooManySkipsError, match="3 consecutive updates skipped"):
        trainer.train()
    assert same_weights(bundle.policy, before)
    assert not (tmp_path / "final").exists()


def test_non_finite_loss_or_gradient_leaves_parameters_and_optimizer_untouched():
    model = torch.nn.Linear(3, 1)
    config = load_config(PPOConfig, None, []).optim
    optimizer = make_optimizer(model.parameters(), config)
    step = OptimizerStep(list(model.parameters()), optimizer, make_scheduler(optimizer, config, 10), 1.0, SkipGuard(1))
    x = torch.ones(2, 3)
    good = step([torch.arange(2)], lambda idx: (model(x[idx]).sum(), {"n": 1.0}), step=0)
    assert good.applied and good.stats == {"n": 1.0}
    saved, state = snapshot(model), optimizer.state_dict()["state"][0]["exp_avg"].clone()
    bad_loss = step([torch.arange(2)], lambda idx: (model(x[idx]).sum() * math.nan, {}), step=1)
    assert not bad_loss.applied and bad_loss.skip_reason == "the loss is not finite"
    assert same_weights(model, saved) and torch.equal(optimizer.state_dict()["state"][0]["exp_avg"], state)
    with pytest.raises(TooManySkipsError):
        step([torch.arange(2)], lambda idx: ((model.weight * torch.tensor([math.inf, 1.0, 1.0])).sum(), {}), step=2)
    assert same_weights(model, saved)


def test_negative_kl_estimate_is_warned(tmp_path, caplog):
    """top_k=1 samples the mode; against a sharper reference the k1 estimate turns negative."""
    bundle = toy_bundle()
    with torch.no_grad():
        bundle.frozen_reference.lm_head.weight.mul_(4.0)
    config = load_config(PolicyGradientConfig, None, run_config_overrides(tmp_path, 1) + [
        "num_prompts=4", "group_size=2", "generation.top_k=1", "kl.estimator=k1"])
    trainer = OnPolicyTrainer(config, bundle, table_reward(reward_table()), [PROMPT], make_sampler("cached"))
    with caplog.at_level(logging.WARNING):
        metrics = trainer.train_step()
    assert metrics["kl/mean"] < 0 and metrics["kl/negative_warning"] == 1.0
    assert "mean KL estimate" in caplog.text and "is negative" in caplog.text


def hackable_reward(prompts, responses):
    """Over-rates empty and long (truncated) responses, as a flawed reward model might."""
    return [5.0 if len(r.replace(" ", "")) != 1 else (0.5 if r.strip() in "ab" else -0.5) for r in responses]


def test_no_score_is_replaced_by_default_and_opt_in_replacement_is_counted():
    bundle = toy_bundle()
    with torch.no_grad():  # make every response type common: <eos>, x <eos>, and x y (no EOS)
        bundle.policy.lm_head.weight.mul_(0.0)
    generator = torch.Generator().manual_seed(0)
    rollout = make_sampler("cached").sample(bundle.policy, bundle.tokenizer, [PROMPT] * 200,
                                            SamplingParams(max_new_tokens=2), generator=generator)
    reward = EnsembleReward([FunctionReward(hackable_reward, "hackable")])
    default = score_rollout(rollout, reward, RewardConfig(), RunningMoments())
    empty = torch.tensor([not r.strip() for r in rollout.responses])
    truncated = ~rollout.finished
    assert empty.any() and truncated.any()
    assert torch.equal(default.final, default.raw) and not default.replaced.any()
    assert default.metrics()["reward/replaced_frac"] == 0.0
    opted = score_rollout(rollout, reward, RewardConfig(invalid_score=-1.0, penalize_empty=True), RunningMoments())
    baseline = opted.final.mean()
    assert opted.final[empty].max() < baseline and opted.final[truncated].max() < baseline
    assert opted.metrics()["reward/replaced_frac"] == pytest.approx((empty | truncated).float().mean().item())
    penalized = score_rollout(rollout, reward, RewardConfig(missing_eos_penalty=2.0), RunningMoments())
    assert torch.equal(penalized.final[truncated], penalized.raw[truncated] - 2.0)
    assert torch.equal(penalized.replaced, truncated)


def test_ppo_requires_value_model(tmp_path):
    with pytest.raises(ValueError, match="value model"):
        OnPolicyTrainer(load_config(PPOConfig, None, run_config_overrides(tmp_path, 1)), toy_bundle(),
                   table_reward(reward_table()), [PROMPT], make_sampler("cached"))


@pytest.mark.parametrize("scaling,check", [
    ("batch", lambda s, raw: torch.allclose(s, raw / raw.std(), atol=1e-5)),
    ("whiten", lambda s, raw: abs(float(s.mean())) < 1e-5 and abs(float(s.std()) - 1) < 1e-4),
    ("running", lambda s, raw: torch.allclose(s, raw / raw.std(), atol=1e-5)),
    ("none", lambda s, raw: torch.equal(s, raw)),
])
def test_score_scaling_options(scaling, check):
    bundle = toy_bundle()
    rollout = make_sampler("cached").sample(bundle.policy, bundle.tokenizer, [PROMPT] * 16,
                                            SamplingParams(max_new_tokens=2), generator=torch.Generator().manual_seed(1))
    reward = EnsembleReward([FunctionReward(lambda p, r: [3.0 + len(x) for x in r], "len")])
    config = RewardConfig(scaling=scaling, invalid_score=None, penalize_empty=False, clip=4.0)
    scored = score_rollout(rollout, reward, config, RunningMoments())
    raw = scored.raw.clamp(-4.0, 4.0)
    assert check(scored.final, raw)


@pytest.mark.parametrize("trainer_cls,config_cls,extra", [
    (OnPolicyTrainer, PPOConfig, ["num_prompts=8", "value_model=critic"]),
    (OnPolicyTrainer, PolicyGradientConfig, ["num_prompts=4", "group_size=2"]),
])
def test_gradient_accumulation_equals_full_minibatch(tmp_path, trainer_cls, config_cls, extra):
    """One mini-batch of 8 in 1 micro-batch or in 4 micro-batches of 2: the same update.

    Adam with eps=1 makes the first update ~ lr * gradient (linear), so float noise in tiny
    gradient entries is not blown up to +-lr as with the default eps."""
    results = []
    for accum in (1, 4):
        bundle = toy_bundle(value="critic" if config_cls is PPOConfig else "none")
        config = load_config(config_cls, None, run_config_overrides(tmp_path / str(accum), 1) + extra + [
            "epochs=1", "num_minibatches=1", f"optim.grad_accum={accum}", "optim.lr=1.0", "optim.eps=1.0",
            "optim.max_grad_norm=null", "loss_aggregation=token_mean"])
        trainer = trainer_cls(config, bundle, table_reward(reward_table()), [PROMPT], make_sampler("cached"))
        trainer.train_step()
        results.append([p.detach().clone() for p in bundle.trainable_parameters()])
    initial = [p.detach() for p in toy_bundle(value="critic" if config_cls is PPOConfig else "none")
               .trainable_parameters()]
    moved = max(float((full - start).abs().max()) for full, start in zip(results[0], initial))
    assert moved > 1e-3  # the update is not trivially zero
    for full, accumulated in zip(*results):
        assert torch.allclose(full, accumulated, atol=1e-6, rtol=1e-5)
