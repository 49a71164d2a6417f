"""Every trainer on every architecture, loaded by path: a two-step run with finite losses, on
conversational data where the trainer takes it; saved models reload and give the same outputs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from arch_data import preference_file, prompts_file, sft_file
from arch_zoo import ARCHITECTURES

from rlhfkit.config import load_config
from rlhfkit.models.loading import load_policy_bundle
from rlhfkit.models.reward_model import load_reward_model
from rlhfkit.rl.config import DPOConfig, PolicyGradientConfig, PPOConfig
from rlhfkit.rl.onpolicy import OnPolicyTrainer
from rlhfkit.rl.prompts import read_prompts
from rlhfkit.rl.rewards import build_reward
from rlhfkit.rl.rollout import make_sampler
from rlhfkit.rl.runner import train_dpo

pytestmark = pytest.mark.arch

RUN = ["run.steps=2", "run.save_every=0", "run.progress=false", "run.device=cpu", "run.dtype=float32", "optim.lr=1e-3"]
ON_POLICY = [*RUN, "generation.max_new_tokens=4"]


def finite_losses(metrics: dict[str, float]) -> dict[str, float]:
    """The loss entries of ``metrics``, asserting there is one and all are finite."""
    losses = {k: v for k, v in metrics.items() if k.startswith("loss/")}
    assert losses and all(math.isfinite(v) for v in losses.values()), metrics
    return losses


def assert_same_policy_outputs(trained, reloaded, batch: dict[str, torch.Tensor]) -> None:
    """Policy logits (and values of a head or critic) of two bundles agree."""
    with torch.no_grad():
        torch.testing.assert_close(reloaded.policy(**batch).logits, trained.policy(**batch).logits, atol=1e-5, rtol=0)
        if trained.value_model is not None:
            def values(model: torch.nn.Module) -> torch.Tensor:
                out = model(**batch)
                return out if isinstance(out, torch.Tensor) else out.values
            torch.testing.assert_close(values(reloaded.value_model), values(trained.value_model), atol=1e-5, rtol=0)


@pytest.mark.parametrize("value", ["head", "critic"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_ppo_runs_and_the_saved_policy_and_value_model_reload(zoo, arch, value, tmp_path: Path) -> None:
    config = load_config(PPOConfig, None, ON_POLICY + [f"run.output_dir={tmp_path}", "num_prompts=3", "epochs=1",
                                                 "num_minibatches=1", f"value_model={value}"])
    bundle = load_policy_bundle(zoo[arch].policy, value=value, device="cpu", dtype=torch.float32)
    reward = build_reward([str(zoo.reward_model(arch))], device="cpu")
    trainer = OnPolicyTrainer(config, bundle, reward, read_prompts(prompts_file(tmp_path)), make_sampler("cached"))
    history = trainer.train()
    assert len(history) == 2 and "loss/value" in finite_losses(history[-1])
    reloaded = load_policy_bundle(tmp_path / "final", value=value, device="cpu", dtype=torch.float32)
    batch = bundle.tokenizer(["Why is the sky blue?", "Hi"], return_tensors="pt", padding=True)
    assert_same_policy_outputs(bundle, reloaded, dict(batch))


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_group_policy_gradient_runs(zoo, arch, algo, tmp_path: Path) -> None:
    config = load_config(PolicyGradientConfig, None, ON_POLICY + [f"run.output_dir={tmp_path}", f"algo={algo}",
                                                            "num_prompts=2", "group_size=2"])
    bundle = load_policy_bundle(zoo[arch].policy, device="cpu", dtype=torch.float32)
    reward = build_reward([str(zoo.reward_model(arch))], device="cpu")
    history = OnPolicyTrainer(config, bundle, reward, read_prompts(prompts_file(tmp_path)),
                              make_sampler("cached")).train()
    assert len(history) == 2 and "loss/policy" in finite_losses(history[-1])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_dpo_runs_on_conversational_pairs(zoo, arch, tmp_path: Path) -> None:
    config = load_config(DPOConfig, None, RUN + [f"run.output_dir={tmp_path}", f"run.model={zoo[arch].policy}",
                                                 f"data={preference_file(tmp_path)}", "batch_size=2"])
    result = train_dpo(config, report_to="none", quiet=True)
    assert result.steps == 2 and "loss/dpo" in finite_losses(result.last_metrics)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_sft_runs_on_conversations_and_prompt_completion_pairs(zoo, arch, tmp_path: Path) -> None:
    from rlhfkit.sft.config import SFTConfig
    from rlhfkit.sft.trainer import train_sft

    config = SFTConfig(model=str(zoo[arch].policy), data=str(sft_file(tmp_path)), output_dir=str(tmp_path / "sft"),
                       max_steps=2, per_device_batch_size=2, report_to="none", progress=False, save_steps=0, cpu=True)
    try:
        result = train_sft(config)
    finally:
        reset_accelerate()
    assert result.steps == 2 and math.isfinite(result.first_loss) and math.isfinite(result.final_loss)


@pytest.mark.parametrize("form", ["trunk", "classifier"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_reward_model_trains_and_reloads(zoo, arch, form, tmp_path: Path) -> None:
    from rlhfkit.reward.config import RewardTrainConfig
    from rlhfkit.reward.pipeline import load_data, save_model, train_one

    source = zoo[arch].policy if form == "trunk" else zoo[arch].classifier
    if source is None:
        pytest.skip(f"transformers has no sequence-classification class for {arch}")
    config = RewardTrainConfig(model=str(source), data=[str(preference_file(tmp_path))], output_dir=str(tmp_path),
                               eval_fraction=0.0, max_steps=2, batch_size=2, report_to="none", progress=False,
                               save_every=0, normalization_samples=8, device="cpu", log_every=1)
    records, numbers, _, _ = load_data(config)
    model, summary, _ = train_one(config, records, numbers, [], member_seed=0, bootstrap=False)
    assert summary.steps == 2 and finite_losses(summary.last_metrics)
    assert model.settings.architecture == ("trunk_head" if form == "trunk" else "sequence_classification")
    reloaded = load_reward_model(save_model(model, tmp_path / "model"))
    prompts, responses = [r.prompt for r in records], [r.chosen for r in records]
    torch.testing.assert_close(reloaded.score_texts(prompts, responses), model.score_texts(prompts, responses),
                               atol=1e-5, rtol=0)


def reset_accelerate() -> None:
    """Forget accelerate's process-wide state (SFT builds an Accelerator)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
