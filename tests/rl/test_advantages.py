"""Advantage estimators: hand-computed values and slow per-element reference loops."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.rl.advantages import (
    discounted_cumsum,
    discounted_returns,
    gae,
    gae_loop,
    group_normalized_advantages,
    leave_one_out_advantages,
    masked_mean,
    masked_var,
    masked_whiten,
)


def random_prefix_mask(b: int, t: int, generator: torch.Generator) -> torch.Tensor:
    lengths = torch.randint(0, t + 1, (b,), generator=generator)
    return (torch.arange(t)[None, :] < lengths[:, None]).double()


def reference_gae(rewards, values, mask, gamma, lam):
    """Per-row, per-element GAE from the definition A_t = sum_l (gamma lam)^l delta_{t+l}."""
    b, t = rewards.shape
    adv = torch.zeros(b, t, dtype=torch.float64)
    for i in range(b):
        n = int(mask[i].sum())
        v = [float(values[i, k]) for k in range(n)] + [0.0]
        deltas = [float(rewards[i, k]) + gamma * v[k + 1] - v[k] for k in range(n)]
        for s in range(n):
            adv[i, s] = sum((gamma * lam) ** k * deltas[s + k] for k in range(n - s))
    return adv


def test_masked_mean_and_var_by_hand():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert masked_mean(values, mask).item() == pytest.approx(7 / 3)
    assert masked_var(values, mask).item() == pytest.approx(7 / 3)
    assert masked_var(values, mask, unbiased=False).item() == pytest.approx(14 / 9)
    assert torch.allclose(masked_mean(values, mask, dim=1), torch.tensor([1.5, 4.0]))
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0


def test_masked_whiten_has_zero_mean_unit_var_and_zero_padding():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(4, 7, generator=g, dtype=torch.float64) * 3 + 2
    mask = random_prefix_mask(4, 7, g)
    mask[0, :3] = 1
    out = masked_whiten(values, mask)
    assert masked_mean(out, mask).item() == pytest.approx(0.0, abs=1e-9)
    assert masked_var(out, mask).item() == pytest.approx(1.0, rel=1e-6)
    assert torch.all(out[mask == 0] == 0)
    kept = masked_whiten(values, mask, shift_mean=False)
    assert masked_mean(kept, mask).item() == pytest.approx(masked_mean(values, mask).item())


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 9.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 1.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    for fn in (gae, gae_loop):
        adv, ret = fn(rewards, values, mask, gamma=1.0, lam=1.0)
        assert torch.allclose(adv[0], torch.tensor([0.5, 0.4, 0.3]))
        assert torch.allclose(ret[0], torch.tensor([1.0, 1.0, 1.0]))
        # row 2 ends after two tokens: delta_1 = 2 - 1, delta_0 = 0 + 1 - 1
        assert torch.allclose(adv[1], torch.tensor([1.0, 1.0, 0.0]))
        adv, _ = fn(rewards, values, mask, gamma=0.9, lam=0.5)
        assert torch.allclose(adv[0], torch.tensor([0.11425, 0.165, 0.3]), atol=1e-6)


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (1.0, 0.95), (0.99, 0.95), (0.5, 0.0), (0.0, 1.0)])
def test_gae_vectorised_matches_loop_and_definition(gamma, lam):
    g = torch.Generator().manual_seed(int(gamma * 100 + lam * 10))
    rewards = torch.randn(6, 9, generator=g, dtype=torch.float64)
    values = torch.randn(6, 9, generator=g, dtype=torch.float64)
    mask = random_prefix_mask(6, 9, g)
    fast_adv, fast_ret = gae(rewards, values, mask, gamma, lam)
    loop_adv, loop_ret = gae_loop(rewards, values, mask, gamma, lam)
    ref = reference_gae(rewards, values, mask, gamma, lam)
    assert torch.allclose(fast_adv, loop_adv, atol=1e-10)
    assert torch.allclose(fast_ret, loop_ret, atol=1e-10)
    assert torch.allclose(loop_adv, ref, atol=1e-10)
    assert torch.allclose(fast_ret, (ref + values) * mask, atol=1e-10)


def test_discounted_returns_by_hand_and_cumsum():
    rewards = torch.tensor([[1.0, 0.0, 2.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    out = discounted_returns(rewards, mask, gamma=0.5)
    assert torch.allclose(out, torch.tensor([[1.5, 1.0, 2.0, 0.0]]))
    assert torch.allclose(discounted_cumsum(torch.tensor([[1.0, 1.0, 1.0]]), 1.0),
                          torch.tensor([[3.0, 2.0, 1.0]]))


def test_group_normalized_by_hand_and_loop():
    scores = torch.tensor([1.0, 2.0, 3.0, 7.0, 5.0, 5.0])
    out = group_normalized_advantages(scores, group_size=2, eps=0.0).tolist()
    s = 1 / math.sqrt(2)
    expected = [-s, s, -s, s, 0.0, 0.0]
    assert out == pytest.approx(expected, abs=1e-6)
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(12, generator=g, dtype=torch.float64)
    fast = group_normalized_advantages(scores, group_size=4, eps=1e-4)
    for k in range(3):
        chunk = scores[4 * k: 4 * k + 4].tolist()
        mean = sum(chunk) / 4
        std = math.sqrt(sum((x - mean) ** 2 for x in chunk) / 3)
        for j in range(4):
            assert fast[4 * k + j].item() == pytest.approx((chunk[j] - mean) / (std + 1e-4))
    unscaled = group_normalized_advantages(scores, group_size=4, scale_by_std=False)
    assert torch.allclose(unscaled.view(3, 4).sum(1), torch.zeros(3, dtype=torch.float64), atol=1e-12)


def test_leave_one_out_by_hand_and_identity():
    out = leave_one_out_advantages(torch.tensor([1.0, 2.0, 4.0]), group_size=3)
    assert out.tolist() == pytest.approx([-2.0, -0.5, 2.5])
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(8, generator=g, dtype=torch.float64)
    k = 4
    centered = group_normalized_advantages(scores, k, scale_by_std=False)
    assert torch.allclose(leave_one_out_advantages(scores, k), centered * k / (k - 1))


def test_group_errors_are_clear():
    with pytest.raises(ValueError, match="groups of 3"):
        group_normalized_advantages(torch.zeros(4), 3)
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out_advantages(torch.zeros(4), 1)
