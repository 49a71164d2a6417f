"""Losses and reward shaping: hand-computed values, gradients, and reference loops."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.rl.losses import (
    aggregate,
    clip_scores,
    clipped_value_loss,
    dpo_loss,
    entropy_from_logits,
    explained_variance,
    last_token_index,
    ppo_policy_loss,
    replace_invalid_scores,
    shape_token_rewards,
)
from rlhfkit.rl.running_moments import RunningMoments


def test_ppo_policy_loss_by_hand():
    logp = torch.log(torch.tensor([[1.5, 1.5, 0.5, 0.5]])).requires_grad_()
    old = torch.zeros(1, 4)
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    mask = torch.ones(1, 4)
    out = ppo_policy_loss(logp, old, adv, mask, clip_low=0.2)
    assert out.per_token.detach()[0].tolist() == pytest.approx([-1.2, 1.5, -0.5, 0.8])
    assert out.clipfrac.item() == pytest.approx(0.5)
    assert out.ratio_mean.item() == pytest.approx(1.0)
    k3 = [(r - 1) - math.log(r) for r in (1.5, 1.5, 0.5, 0.5)]
    assert out.approx_kl.item() == pytest.approx(sum(k3) / 4)
    out.per_token.sum().backward()
    # clipped tokens carry no gradient; unclipped ones d(-A r)/dlogp = -A r
    assert logp.grad[0].tolist() == pytest.approx([0.0, 1.5, -0.5, 0.0])


def test_ppo_clip_higher_and_masking():
    logp = torch.log(torch.tensor([[1.25, 9.0]]))
    out = ppo_policy_loss(logp, torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([[1.0, 0.0]]),
                          clip_low=0.2, clip_high=0.28)
    assert out.per_token[0, 0].item() == pytest.approx(-1.25)
    assert out.clipfrac.item() == 0.0


def test_ppo_matches_elementwise_reference():
    g = torch.Generator().manual_seed(1)
    logp = torch.randn(3, 5, generator=g, dtype=torch.float64) * 0.3
    old = torch.randn(3, 5, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(3, 5, generator=g, dtype=torch.float64)
    out = ppo_policy_loss(logp, old, adv, torch.ones(3, 5), clip_low=0.1)
    for i in range(3):
        for j in range(5):
            r = math.exp(logp[i, j] - old[i, j])
            ref = max(-adv[i, j].item() * r, -adv[i, j].item() * min(max(r, 0.9), 1.1))
            assert out.per_token[i, j].item() == pytest.approx(ref)


def test_clipped_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.5, 0.5]])
    returns = torch.tensor([[2.0, 0.0]])
    mask = torch.ones(1, 2)
    loss, frac = clipped_value_loss(values, old, returns, mask, clip_range=0.2)
    # token 0: unclipped (1-2)^2=1, clipped V=0.7 -> 1.69; token 1: 0 vs (0.3)^2 = 0.09
    assert loss[0].tolist() == pytest.approx([0.845, 0.045])
    assert frac.item() == 1.0
    plain, _ = clipped_value_loss(values, old, returns, mask, clip_range=None)
    assert plain[0].tolist() == pytest.approx([0.5, 0.0])


def test_entropy_and_explained_variance():
    assert entropy_from_logits(torch.zeros(2, 3, 4)).flatten().tolist() == pytest.approx([math.log(4)] * 6)
    peaked = torch.tensor([[[100.0, 0.0, 0.0]]])
    assert entropy_from_logits(peaked).item() == pytest.approx(0.0, abs=1e-6)
    target = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones(1, 4)
    assert explained_variance(target, target, mask).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(target, 2.5), target, mask).item() == pytest.approx(0.0)


def test_dpo_ipo_cdpo_by_hand():
    pc, pr = torch.tensor([-1.0]), torch.tensor([-3.0])
    rc, rr = torch.tensor([-2.0]), torch.tensor([-2.0])
    out = dpo_loss(pc, pr, rc, rr, beta=0.1)  # h = 2, beta h = 0.2
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(-0.2)))
    assert out.chosen_rewards.item() == pytest.approx(0.1)
    assert out.rejected_rewards.item() == pytest.approx(-0.1)
    ipo = dpo_loss(pc, pr, rc, rr, beta=0.1, loss_type="ipo")
    assert ipo.losses.item() == pytest.approx((2 - 5) ** 2)
    cdpo = dpo_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=0.1)
    assert cdpo.losses.item() == pytest.approx(0.9 * math.log1p(math.exp(-0.2)) + 0.1 * math.log1p(math.exp(0.2)))
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(pc, pr, rc, rr, label_smoothing=0.7)


def test_dpo_gradient_raises_chosen_lowers_rejected():
    pc = torch.tensor([-2.0], requires_grad=True)
    pr = torch.tensor([-2.0], requires_grad=True)
    dpo_loss(pc, pr, torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5).losses.sum().backward()
    assert pc.grad.item() == pytest.approx(-0.25) and pr.grad.item() == pytest.approx(0.25)


def test_shape_token_rewards_by_hand():
    scores = torch.tensor([2.0, -1.0, 5.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    rewards, penalty = shape_token_rewards(scores, kl, mask, kl_coef=0.5)
    assert rewards[0].tolist() == pytest.approx([-0.05, -0.1, 1.85])
    assert rewards[1].tolist() == pytest.approx([-1.25, 0.0, 0.0])
    assert rewards[2].tolist() == [0.0, 0.0, 0.0]
    assert penalty[0].tolist() == pytest.approx([-0.05, -0.1, -0.15])
    assert last_token_index(mask).tolist() == [2, 0, 0]


def test_invalid_scores_and_clipping():
    scores = torch.tensor([3.0, 3.0])
    invalid = torch.tensor([True, False])
    assert replace_invalid_scores(scores, invalid, replacement=-1.0).tolist() == [-1.0, 3.0]
    assert replace_invalid_scores(scores, invalid, penalty=2.0).tolist() == [1.0, 3.0]
    assert replace_invalid_scores(scores, invalid).tolist() == [3.0, 3.0]
    assert clip_scores(torch.tensor([-9.0, 0.5, 9.0]), 2.0).tolist() == [-2.0, 0.5, 2.0]


def test_aggregate_accumulation_equals_full_batch():
    g = torch.Generator().manual_seed(2)
    loss = torch.randn(4, 6, generator=g, dtype=torch.float64)
    mask = torch.ones(4, 6, dtype=torch.float64)
    mask[1, 3:] = 0
    mask[3, 1:] = 0
    for mode, denom in (("token_mean", mask.sum().item()), ("seq_mean", 4.0)):
        full = aggregate(loss, mask, mode)
        parts = aggregate(loss[:2], mask[:2], mode, denom) + aggregate(loss[2:], mask[2:], mode, denom)
        assert parts.item() == pytest.approx(full.item())
    seq = sum((loss[i] * mask[i]).sum() / mask[i].sum() for i in range(4)) / 4
    assert aggregate(loss, mask, "seq_mean").item() == pytest.approx(seq.item())


def test_running_moments_match_full_data():
    g = torch.Generator().manual_seed(4)
    data = torch.randn(50, generator=g, dtype=torch.float64) * 2 + 1
    rm = RunningMoments()
    for chunk in data.split(7):
        rm.update(chunk)
    assert rm.mean == pytest.approx(data.mean().item())
    assert rm.std == pytest.approx(data.std().item())
    other = RunningMoments()
    other.load_state_dict(rm.state_dict())
    assert other.std == rm.std
