"""Exactness on the defaults: every on-policy algorithm, configured with nothing but the problem's
own settings (KL coefficient, learning rate, steps, batch and group size, max_new_tokens), reaches
>= 90% of the achievable improvement of E_pi[r] - beta KL(pi || ref) on an enumerable problem
within 4,096 episodes, and the KL it logs is the exact KL of the policy that sampled.

The problem is toy_problem's (4 letters + <eos>, responses of at most 2 tokens, 21 responses,
uniform random rewards): 2-letter responses are cut by max_new_tokens, so any default that rescores
truncated responses, or optimizes another KL, shows up as a share far below 0.9.
No objective setting (estimator, kl_in, scale_by_std, reward scaling, invalid handling, loss
aggregation, epochs, whitening) is set here: those are the defaults under test.
"""

from __future__ import annotations

import functools
import math
import tempfile

import pytest
import torch
from enumerable import (
    ALGORITHMS,
    EnumerableProblem,
    ExactRun,
    k1_variance,
    optimal_logprobs,
    optimum,
    train_exact,
)

PROBLEM = EnumerableProblem(num_letters=4, max_len=2)
EPISODES, STEPS = 4096, 64
# Learning rates are the problem's own setting: PPO's default 4 epochs x 4 mini-batches take 16
# optimizer steps per batch where the group algorithms take one.
LR = {"ppo": 5e-4, "grpo": 5e-3, "rloo": 5e-3, "reinforce": 5e-3}
GROUP = {"ppo": 1, "grpo": 4, "rloo": 4, "reinforce": 4}
# One run's final policy carries its last updates' noise: PPO at beta 0.5 reached 0.87-0.96 on seeds 0-11
# (mean 0.93), and float rounding anywhere upstream (a oneDNN post-op GELU in the sampler, tried; another CPU's
# kernels) moves single seeds by +-0.03: seeds 0 and 1 gave 0.919 and 0.908 on one CPU, 0.892 and 0.900 on an
# AVX2-only AMD EPYC, where seeds 0-3 average 0.924 (0.960 and 0.943 at seeds 2 and 3; the other seven settings
# 0.957-0.992). The share test reads the mean of these seeds' runs.
SHARE_SEEDS = (0, 1, 2, 3)


@functools.cache
def exact_run(algo: str, beta: float, seed: int = 0) -> ExactRun:
    """One 4,096-episode run (cached: the KL test reads the run the share test made)."""
    per_step = EPISODES // STEPS
    with tempfile.TemporaryDirectory() as output_dir:
        return train_exact(PROBLEM, algo, PROBLEM.random_table(0), output_dir, beta=beta, lr=LR[algo], steps=STEPS,
                           num_prompts=per_step // GROUP[algo], group_size=GROUP[algo], seed=seed)


def test_enumerated_logprobs_are_a_distribution_and_match_sampling():
    from rlhfkit.rl.rollout import SamplingParams, make_sampler

    problem = EnumerableProblem(num_letters=3, max_len=3)
    model = problem.policy(1)
    logp = problem.logprobs(model)
    assert len(logp) == 1 + 3 + 9 + 27 and float(logp.exp().sum()) == pytest.approx(1.0, abs=1e-9)
    generator = torch.Generator().manual_seed(0)
    rollout = make_sampler("cached").sample(model, problem.tokenizer(), [problem.prompt] * 32,
                                            SamplingParams(max_new_tokens=3), generator=generator)
    sampled = (rollout.logprobs * rollout.response_mask).sum(1).double()
    enumerated = logp[[problem.index[text.replace(" ", "")] for text in rollout.responses]]
    torch.testing.assert_close(sampled, enumerated, atol=1e-4, rtol=0)


def test_closed_form_optimum_and_k1_variance():
    ref = PROBLEM.logprobs(PROBLEM.policy())
    rewards = PROBLEM.rewards(PROBLEM.random_table(0))
    for beta in (0.1, 0.5):
        tilted = optimal_logprobs(ref, rewards, beta)
        p = tilted.exp()
        best = float((p * rewards).sum() - beta * (p * (tilted - ref)).sum())
        assert best == pytest.approx(optimum(ref, rewards, beta), rel=1e-9)
    other = torch.log_softmax(ref + rewards, 0)
    samples = torch.multinomial(other.exp(), 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert float((other - ref)[samples].var()) == pytest.approx(k1_variance(other, ref), rel=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("beta", [0.1, 0.5])
@pytest.mark.parametrize("algo", ALGORITHMS)
def test_defaults_reach_90_percent_of_the_regularized_optimum(algo, beta):
    runs = [exact_run(algo, beta, seed) for seed in SHARE_SEEDS]
    assert all(len(run.kl_steps) == STEPS for run in runs)
    share = sum(run.share for run in runs) / len(runs)
    assert share >= 0.9, (f"{algo} at beta {beta} with default objective settings reached {share:.3f} of the "
                          f"achievable improvement on average over seeds {SHARE_SEEDS} "
                          f"({', '.join(f'{run.share:.3f}' for run in runs)}; final exact KLs "
                          f"{', '.join(f'{run.kl:.3f}' for run in runs)})")


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGORITHMS)
def test_logged_kl_is_the_exact_kl_of_the_sampling_policy(algo):
    """``kl/mean`` at step t (a sequence-level k1 mean over the step's rollout, logged every step)
    against the exact KL(pi_t || ref) of the policy that sampled it, in units of the exact standard
    error sqrt(Var_pi[log pi - log ref] / n): each step within 5, their sum over the 64 steps within
    4 sqrt(64) (a bias of 0.5 standard errors per step fails). When the trainer logs
    ``kl/mean_sem``, it must match the exact standard error on average."""
    run = exact_run(algo, 0.1)
    logged = torch.tensor([step[0] for step in run.kl_steps], dtype=torch.float64)
    exact = torch.tensor([step[1] for step in run.kl_steps], dtype=torch.float64)
    sem = torch.tensor([step[2] for step in run.kl_steps], dtype=torch.float64)
    assert float(exact[STEPS // 2:].mean()) > 0.5, "the policy barely moved: the KL check would be vacuous"
    z = (logged - exact)[1:] / sem[1:]  # step 0 samples from the reference: exact KL 0, sem 0
    assert abs(float(logged[0])) < 1e-4
    worst = int(z.abs().argmax())
    assert float(z.abs().max()) < 5.0, (f"{algo} step {worst + 1}: logged kl/mean {float(logged[worst + 1]):.4f}, "
                                        f"exact {float(exact[worst + 1]):.4f}, sem {float(sem[worst + 1]):.4f}")
    bias = float(z.mean())
    assert abs(float(z.sum())) < 4.0 * math.sqrt(len(z)), f"{algo}: logged KL biased by {bias:.2f} standard errors"
    logged_sem = [step[3] for step in run.kl_steps[1:]]
    if all(value is not None for value in logged_sem):
        ratio = float(torch.tensor(logged_sem, dtype=torch.float64).mean() / sem[1:].mean())
        assert 0.8 < ratio < 1.25, f"{algo}: logged kl/mean_sem is {ratio:.2f} x the exact standard error"
