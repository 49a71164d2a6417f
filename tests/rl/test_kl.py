"""KL estimators (exact expectations on enumerable distributions) and controllers."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.rl.kl import AdaptiveKLController, FixedKLController, kl_estimate, kl_k1, kl_k2, kl_k3, make_kl_controller


def test_estimators_by_hand():
    logp = torch.tensor([[-1.0]])
    ref = torch.tensor([[-2.0]])
    assert kl_k1(logp, ref).item() == pytest.approx(1.0)
    assert kl_k2(logp, ref).item() == pytest.approx(0.5)
    assert kl_k3(logp, ref).item() == pytest.approx(math.exp(-1.0))
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(math.exp(-1.0))
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(logp, ref, "k4")  # type: ignore[arg-type]


def test_k1_and_k3_are_unbiased_k2_is_not():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(7, generator=g, dtype=torch.float64), 0)
    q = torch.softmax(torch.randn(7, generator=g, dtype=torch.float64), 0)
    exact = float((p * (p.log() - q.log())).sum())
    logp, logq = p.log()[None], q.log()[None]
    assert float((p * kl_k1(logp, logq)[0]).sum()) == pytest.approx(exact, rel=1e-10)
    assert float((p * kl_k3(logp, logq)[0]).sum()) == pytest.approx(exact, rel=1e-10)
    assert float((p * kl_k2(logp, logq)[0]).sum()) != pytest.approx(exact, rel=1e-3)
    assert (kl_k3(logp, logq) >= 0).all() and (kl_k2(logp, logq) >= 0).all()
    assert (kl_k1(logp, logq) < 0).any()


def test_k3_does_not_overflow_for_impossible_reference_tokens():
    out = kl_k3(torch.tensor([[-0.1]]), torch.tensor([[-1e4]]))
    assert torch.isfinite(out).all()


def test_adaptive_controller_by_hand_and_state():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(12.0, n_steps=256)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 256 / 10000))
    before = ctl.value
    ctl.update(6.0, n_steps=256)
    assert ctl.value == pytest.approx(before)
    ctl.update(5.4, n_steps=100)  # error -0.1
    assert ctl.value == pytest.approx(before * (1 - 0.1 * 100 / 10000))
    other = AdaptiveKLController(1.0, target=1.0, horizon=1.0)
    other.load_state_dict(ctl.state_dict())
    assert other.state_dict() == ctl.state_dict()
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, target=0.0, horizon=1.0)


def test_fixed_controller_and_factory():
    ctl = FixedKLController(0.05)
    assert ctl.update(100.0, 64) == 0.05
    assert isinstance(make_kl_controller(0.05, None, 10000), FixedKLController)
    assert isinstance(make_kl_controller(0.05, 6.0, 10000), AdaptiveKLController)
    restored = FixedKLController(0.0)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == 0.05
