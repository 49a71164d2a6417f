"""Numerical edge cases of the KL estimators, the PPO ratio and the DPO/IPO settings (issue 14)."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.config import ConfigError
from rlhfkit.rl.config import DPOConfig
from rlhfkit.rl.kl import kl_k3
from rlhfkit.rl.losses import dpo_loss, ppo_policy_loss


@pytest.mark.parametrize("log_ratio", [25.0, -25.0])
def test_k3_gradient_is_nonzero_beyond_old_clamp(log_ratio):
    logp = torch.tensor([[0.0]], requires_grad=True)
    kl_k3(logp, torch.tensor([[log_ratio]])).sum().backward()
    # d k3 / d logp = 1 - exp(log r): negative for log r = 25, about +1 for log r = -25
    assert logp.grad is not None and logp.grad.item() != 0.0
    assert math.copysign(1.0, logp.grad.item()) == (-1.0 if log_ratio > 0 else 1.0)


def test_k3_exact_for_very_negative_log_ratio():
    out = kl_k3(torch.tensor([[0.0]], dtype=torch.float64), torch.tensor([[-25.0]], dtype=torch.float64))
    assert out.item() == pytest.approx(math.expm1(-25.0) + 25.0, rel=1e-12)


def test_k3_finite_value_and_gradient_at_extreme_inputs():
    logp = torch.tensor([[0.0, 0.0, -1e4, -0.1]], requires_grad=True)
    ref = torch.tensor([[1e4, -1e4, 0.0, -1e4]])
    out = kl_k3(logp, ref)
    out.sum().backward()
    assert torch.isfinite(out).all() and (out >= 0).all()
    assert torch.isfinite(logp.grad).all() and (logp.grad != 0).all()


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_ppo_loss_finite_for_huge_log_ratio(advantage):
    logp = torch.tensor([[200.0, -200.0, 0.1]], requires_grad=True)
    old = torch.zeros(1, 3)
    mask = torch.ones(1, 3)
    out = ppo_policy_loss(logp, old, torch.full((1, 3), advantage), mask)
    out.per_token.sum().backward()
    for value in (out.per_token, out.approx_kl, out.ratio_mean, logp.grad):
        assert torch.isfinite(value).all()
    if advantage < 0:  # the unclipped branch is active: its gradient must push the ratio down
        assert logp.grad[0, 0].item() > 0.0


def test_ppo_ordinary_ratios_unchanged():
    logp = torch.tensor([[0.3, -0.3, 0.05]])
    old = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    out = ppo_policy_loss(logp, old, adv, torch.ones(1, 3))
    ratio = torch.exp(logp)
    expected = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    assert torch.equal(out.per_token, expected)


def test_ipo_refuses_label_smoothing():
    one = torch.zeros(1)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(one, one, one, one, loss_type="ipo", label_smoothing=0.1)


def test_dpo_config_refuses_label_smoothing_under_ipo():
    with pytest.raises(ConfigError, match="label_smoothing"):
        DPOConfig(loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ConfigError, match="label_smoothing"):
        DPOConfig(label_smoothing=0.7)
    assert DPOConfig(loss_type="ipo").label_smoothing == 0.0
    assert DPOConfig(label_smoothing=0.2).loss_type == "sigmoid"


def test_ipo_docstring_attributes_length_averaging_to_us() -> None:
    doc = dpo_loss.__doc__ or ""
    assert "as the IPO paper does" not in doc
    assert "does not length-normalize" in doc and "our choice" in doc
