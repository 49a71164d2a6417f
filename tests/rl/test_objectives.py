"""What each KL placement optimizes (checked against exact gradients on a categorical policy), the refused
combinations, the published GRPO recipe as a named option, and the objective table in docs and --help."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.config import ConfigError, load_config
from rlhfkit.rl.config import PolicyGradientConfig, PPOConfig
from rlhfkit.rl.kl import kl_estimate
from rlhfkit.rl.objectives import KL_PLACEMENTS, check_objective, objective_table_markdown

ROOT = Path(__file__).resolve().parents[2]


def exact_kl(logp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return (logp.exp() * (logp - ref)).sum()


def expected_gradient(theta: torch.Tensor, ref: torch.Tensor, estimator: str, kl_in: str) -> torch.Tensor:
    """E_{y~pi}[gradient the trainer applies for the KL term] over all outcomes y, weights pi(y) not differentiated.

    In the reward the KL value is a fixed number times grad log pi(y) (score function); as a loss it is
    differentiated directly at the sampled y.
    """
    theta = theta.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, 0)
    per_outcome = kl_estimate(logp[None], ref[None], estimator)[0]
    weights = logp.exp().detach()
    if kl_in == "reward":
        surrogate = (weights * per_outcome.detach() * logp).sum()
    else:
        surrogate = (weights * per_outcome).sum()
    (gradient,) = torch.autograd.grad(surrogate, theta)
    return gradient


@pytest.fixture
def categorical():
    generator = torch.Generator().manual_seed(3)
    theta = torch.randn(6, generator=generator, dtype=torch.float64)
    ref = torch.log_softmax(torch.randn(6, generator=generator, dtype=torch.float64), 0)
    return theta, ref


def gradient_of(fn, theta: torch.Tensor) -> torch.Tensor:
    theta = theta.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(fn(torch.log_softmax(theta, 0)), theta)
    return gradient


def test_k1_in_the_reward_is_the_exact_reverse_kl_gradient(categorical):
    theta, ref = categorical
    assert torch.allclose(expected_gradient(theta, ref, "k1", "reward"),
                          gradient_of(lambda logp: exact_kl(logp, ref), theta), atol=1e-12)


def test_k2_as_a_loss_is_the_reverse_kl_gradient_and_k3_as_a_loss_the_forward_kl_gradient(categorical):
    theta, ref = categorical
    reverse = gradient_of(lambda logp: exact_kl(logp, ref), theta)
    forward = gradient_of(lambda logp: exact_kl(ref, logp), theta)
    assert torch.allclose(expected_gradient(theta, ref, "k2", "loss"), reverse, atol=1e-12)
    assert torch.allclose(expected_gradient(theta, ref, "k3", "loss"), forward, atol=1e-12)


def test_refused_placements_have_zero_or_wrong_gradients(categorical):
    theta, ref = categorical
    reverse = gradient_of(lambda logp: exact_kl(logp, ref), theta)
    forward = gradient_of(lambda logp: exact_kl(ref, logp), theta)
    assert torch.allclose(expected_gradient(theta, ref, "k1", "loss"), torch.zeros_like(theta), atol=1e-12)
    assert torch.allclose(expected_gradient(theta, ref, "k3", "reward"), reverse - forward, atol=1e-12)
    refused = {(row.kl_in, row.estimator) for row in KL_PLACEMENTS if row.refused_because}
    assert refused == {("loss", "k1"), ("reward", "k3")}


@pytest.mark.parametrize("overrides,hint", [
    (["kl_in=loss", "kl.estimator=k1"], "kl.estimator=k2 with kl_in=loss"),
    (["kl_in=reward", "kl.estimator=k3"], "use kl.estimator=k1"),
])
def test_refused_combinations_give_one_line_errors(overrides, hint):
    with pytest.raises(ConfigError) as error:
        load_config(PolicyGradientConfig, None, overrides)
    assert hint in str(error.value) and "\n" not in str(error.value)
    result = CliRunner().invoke(app, ["grpo", "--set", overrides[0], "--set", overrides[1], "--report-to", "none"])
    assert result.exit_code != 0 and hint in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_no_kl_term_refuses_nothing():
    assert check_objective("reward", "k3", beta=0.0).estimator == "k3"
    with pytest.raises(ConfigError):
        check_objective("reward", "k3", beta=0.0, adaptive=True)


@pytest.mark.parametrize("cls", [PPOConfig, PolicyGradientConfig])
def test_defaults_are_the_exact_objective(cls):
    config = cls()
    assert (config.kl_in, config.kl.estimator, config.scale_by_std) == ("reward", "k1", False)
    assert config.reward.invalid_score is None and config.reward.missing_eos_penalty is None
    assert not config.reward.penalize_empty and config.reward.scaling == "none" and config.entropy_coef == 0.0
    assert config.objective() == "KL in the reward with k1 (exact)"


def test_published_grpo_recipe_is_a_named_option_that_says_it_follows_the_forward_kl():
    config = load_config(PolicyGradientConfig, None, ["recipe=grpo-paper"])
    assert (config.kl_in, config.kl.estimator, config.scale_by_std, config.loss_aggregation) == (
        "loss", "k3", True, "seq_mean")
    assert "forward KL" in config.objective() and "not exact" in config.objective()


def test_objective_table_is_in_the_docs_and_in_help():
    assert objective_table_markdown() in (ROOT / "docs" / "objectives.md").read_text()
    for command in ("ppo", "grpo", "rloo", "reinforce"):
        text = " ".join(CliRunner().invoke(app, [command, "--help"], terminal_width=200).output.split())
        assert "KL in the reward with k1" in text and "[REFUSED]" in text and "grpo-paper" in text, command


@pytest.mark.parametrize("mode", ["batch", "running", "whiten"])
def test_scaling_by_a_zero_spread_leaves_scores_finite_and_unscaled(mode):
    from rlhfkit.rl.running_moments import RunningMoments
    from rlhfkit.rl.scoring import scale_scores

    scores = torch.full((8,), 0.5)
    scaled = scale_scores(scores, scores, mode, RunningMoments())
    expected = scores - 0.5 if mode == "whiten" else scores
    assert torch.equal(scaled, expected)
