"""Independent models side by side on one intra-op thread each: the threads, the gradients, the PPO update."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import rlhfkit.rl.onpolicy as onpolicy
import rlhfkit.rl.update as update
from rlhfkit.config import load_config
from rlhfkit.models.reward_model import RewardModel, RewardModelSettings
from rlhfkit.rl.config import PolicyGradientConfig, PPOConfig
from rlhfkit.rl.onpolicy import OnPolicyTrainer
from rlhfkit.rl.rollout import make_sampler
from rlhfkit.rl.update import SeparateLosses
from rlhfkit.rl.rewards import EnsembleReward, ModelReward
from rlhfkit.utils.runtime import across_threads, beside_each_other, side_by_side

from helpers_threads import count_side_by_side
from toy_problem import PROMPT, reward_table, run_config_overrides, table_reward, toy_bundle, toy_tokenizer
from transformers import GPT2Model


def test_side_by_side_runs_each_work_on_its_own_thread_with_one_intra_op_thread(two_threads):
    seen: list[tuple[int, int, bool]] = []
    barrier = threading.Barrier(2, timeout=10)  # both works must be running at once to pass it

    def work(index: int):
        def run() -> int:
            barrier.wait()
            seen.append((threading.get_ident(), torch.get_num_threads(), torch.is_grad_enabled()))
            return index
        return run

    assert side_by_side([work(0), work(1)]) == [0, 1]
    assert len({ident for ident, _, _ in seen}) == 2
    assert all(threads == 1 and grad for _, threads, grad in seen)
    assert torch.get_num_threads() == 2  # the caller's count is restored
    with torch.no_grad():
        seen.clear()
        side_by_side([work(0), work(1)])
    assert not any(grad for _, _, grad in seen)  # the caller's gradient mode, in every thread


def test_the_callers_cpu_autocast_reaches_every_thread(two_threads):
    """Autocast is per-thread state: a pool thread runs a work in the caller's CPU autocast dtype, or in none."""
    def precision() -> torch.dtype | None:
        return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None

    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert across_threads([precision, precision]) == [torch.bfloat16, torch.bfloat16]
        assert side_by_side([precision, precision]) == [torch.bfloat16, torch.bfloat16]
        assert torch.matmul(*side_by_side([lambda: torch.ones(2, 2)] * 2)).dtype == torch.bfloat16
    assert across_threads([precision, precision]) == [None, None]


def test_side_by_side_gives_each_work_an_equal_share_of_the_threads():
    """On more cores each work gets its share of them, not one thread (two works on 4 threads: 2 each; 3 on 4: 1
    each), and the caller's count comes back after."""
    previous = torch.get_num_threads()
    try:
        for threads, works, share in ((4, 2, 2), (4, 3, 1), (5, 2, 2)):
            torch.set_num_threads(threads)
            assert side_by_side([torch.get_num_threads] * works) == [share] * works
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(previous)


def test_work_split_inside_a_share_runs_in_place(two_threads):
    """A share that splits its own work (packing weights across threads) runs it on its one core: the pool's
    workers are busy with the other shares."""
    threads: list[set[int]] = []

    def splitting() -> None:
        threads.append(set(across_threads([threading.get_ident, threading.get_ident])))

    side_by_side([splitting, lambda: None])
    assert threads == [{threading.get_ident()}]
    assert len(set(across_threads([threading.get_ident, threading.get_ident]))) == 2  # outside: two threads


def test_side_by_side_raises_a_work_failure_after_every_work_finished(two_threads):
    finished = threading.Event()

    def slow() -> None:
        finished.wait(0.05)
        finished.set()

    def fails() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        side_by_side([fails, slow])
    assert finished.is_set()
    assert torch.get_num_threads() == 2


def test_separate_losses_give_the_gradients_of_their_sum(two_threads):
    torch.manual_seed(0)
    first, second = nn.Linear(8, 4), nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    x = torch.randn(32, 8)

    def terms() -> tuple[torch.Tensor, torch.Tensor]:
        return first(x).pow(2).mean(), 0.5 * second(x).abs().mean()

    a, b = terms()
    (a + b).backward()
    expected = [p.grad.clone() for p in [*first.parameters(), *second.parameters()]]
    for p in [*first.parameters(), *second.parameters()]:
        p.grad = None
    losses = SeparateLosses(terms())
    assert torch.allclose(losses.detach(), (a + b).detach())
    losses.backward()
    for want, p in zip(expected, [*first.parameters(), *second.parameters()]):
        assert torch.allclose(p.grad, want, atol=1e-7, rtol=1e-6)


def test_beside_each_other_needs_two_models_sharing_no_parameter():
    first, second = nn.Linear(2, 2), nn.Linear(2, 2)
    assert beside_each_other(first, second)
    assert not beside_each_other(first, None)
    assert not beside_each_other(first)
    assert not beside_each_other(first, nn.Sequential(first, second))  # a shared module


def test_ppo_critic_beside_the_policy_makes_the_update_of_one_after_the_other(tmp_path, two_threads, monkeypatch):
    """A separate critic's values beside the reference pass, and its forward and backward beside the policy's: the
    same parameters after a step, and the concurrent paths really ran. Adam with eps=1 makes each update
    ~ lr * gradient, so float noise in tiny gradient entries is not blown up to +-lr."""
    calls = count_side_by_side(monkeypatch, onpolicy, update)
    results = []
    for beside in (True, False):
        bundle = toy_bundle(value="critic")
        config = load_config(PPOConfig, None, run_config_overrides(tmp_path / str(beside), 1) + [
            "num_prompts=8", "value_model=critic", "epochs=2", "num_minibatches=2", "optim.lr=1.0", "optim.eps=1.0",
            "optim.max_grad_norm=null", "approx_kl_stop=null", f"run.side_by_side={str(beside).lower()}",
            "run.row_halves=never"])
        trainer = OnPolicyTrainer(config, bundle, table_reward(reward_table()), [PROMPT], make_sampler("cached"))
        metrics = trainer.train_step()
        metrics.update(trainer.harness.timer.pop())
        results.append(([p.detach().clone() for p in bundle.trainable_parameters()], metrics))
        if beside:
            assert calls == [2] * 9, metrics  # values beside the reference, then per mini-batch (4): forward, backward
    assert len(calls) == 9  # none when off
    # passes that ran side by side are timed as one phase, so the phases still add up to the step
    assert "time/values+reference" in results[0][1] and "time/reference" not in results[0][1]
    assert {"time/values", "time/reference"} <= set(results[1][1])
    (side, side_metrics), (serial, serial_metrics) = results
    moved = max(float((a - b).abs().max()) for a, b in zip(side, [p.detach() for p in
                                                                  toy_bundle(value="critic").trainable_parameters()]))
    assert moved > 1e-3
    for a, b in zip(side, serial):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), float((a - b).abs().max())
    for key in ("loss/total", "loss/value", "loss/policy", "policy/entropy", "val/mean", "kl/mean"):
        assert side_metrics[key] == pytest.approx(serial_metrics[key], rel=1e-5, abs=1e-6), key


def torch_reward() -> EnsembleReward:
    """A tiny GPT-2 reward model over the toy vocabulary, scored from text."""
    torch.manual_seed(3)
    trunk = GPT2Model(toy_bundle().policy.config).eval()
    return EnsembleReward([ModelReward(RewardModel(trunk, toy_tokenizer(), RewardModelSettings(max_length=8)).eval(),
                                       "rm", normalized=False)])


@pytest.mark.parametrize("reward_kind,dtype", [("model", "float32"), ("model", "bfloat16"), ("function", "float32")])
def test_grpo_scores_beside_the_reference_pass_with_the_results_of_one_after_the_other(tmp_path, two_threads,
                                                                                       monkeypatch, reward_kind, dtype):
    """A torch reward model scores beside the reference pass: the same scores, reference log-probs and update as
    one after the other (under bf16 autocast too: the reference then runs unpacked, in its own thread's autocast);
    a Python reward function (which could call any model) scores alone."""
    calls = count_side_by_side(monkeypatch, onpolicy)
    results = []
    for beside in (True, False):
        bundle = toy_bundle()
        config = load_config(PolicyGradientConfig, None, run_config_overrides(tmp_path / str(beside), 1) + [
            "algo=grpo", "recipe=grpo-paper", "num_prompts=4", "group_size=4", "kl.coef=0.1", "optim.lr=1.0",
            "optim.eps=1.0", "optim.max_grad_norm=null", f"run.side_by_side={str(beside).lower()}",
            f"run.dtype={dtype}"])
        reward = torch_reward() if reward_kind == "model" else table_reward(reward_table())
        trainer = OnPolicyTrainer(config, bundle, reward, [PROMPT], make_sampler("cached"))
        metrics = trainer.train_step()
        metrics.update(trainer.harness.timer.pop())
        results.append(([p.detach().clone() for p in bundle.trainable_parameters()], metrics))
    assert calls == ([2] if reward_kind == "model" else [])
    assert ("time/scoring+reference" in results[0][1]) == (reward_kind == "model")
    (side, side_metrics), (serial, serial_metrics) = results
    tolerance = 1e-6 if dtype == "float32" else 1e-4
    for a, b in zip(side, serial):
        assert torch.allclose(a, b, atol=tolerance, rtol=10 * tolerance)
    for key in ("reward/raw_mean", "reward/raw_std", "kl/mean", "kl/k3_mean", "loss/policy", "loss/kl"):
        assert side_metrics[key] == pytest.approx(serial_metrics[key], rel=10 * tolerance, abs=tolerance), key
    assert side_metrics["reward/raw_std"] > 0  # the reward model tells the responses apart
