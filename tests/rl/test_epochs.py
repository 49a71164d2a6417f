"""run_epochs: mini-batch denominators, averaging over applied steps, skipped steps, early stop."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.rl.epochs import micro_batch, minibatch_denominator, run_epochs
from rlhfkit.rl.update import StepResult


class FakeStep:
    """Records each mini-batch; step k (from 0) reports stats {"x": k} and grad norm 2k; ``skip`` steps fail."""

    def __init__(self, skip=()):
        self.calls, self.skip = [], set(skip)

    def __call__(self, micro_batches, loss_fn, step):
        k = len(self.calls)
        self.calls.append([loss_fn(idx)[1] for idx in micro_batches])
        if k in self.skip:
            return StepResult(False, math.nan, {}, "test")
        return StepResult(True, 2.0 * k, {"x": float(k)})


def _loss(idx, denominator, tokens):
    return torch.zeros(()), {"rows": float(len(idx)), "denominator": denominator, "tokens": tokens}


def test_denominators_count_tokens_or_rows():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.float32)
    micro = [torch.tensor([0, 1]), torch.tensor([2])]
    assert minibatch_denominator(mask, micro, "token_mean") == (6.0, 6.0)
    assert minibatch_denominator(mask, micro, "seq_mean_token_sum") == (3.0, 6.0)


def test_every_epoch_covers_the_batch_and_stats_average_over_applied_steps():
    mask = torch.ones(8, 3)
    step = FakeStep(skip={1})
    metrics, stopped = run_epochs(step, mask, _loss, epochs=2, num_minibatches=2, grad_accum=2,
                                  aggregation="token_mean", generator=torch.Generator().manual_seed(0), step=0)
    assert len(step.calls) == 4 and not stopped
    assert all(len(call) == 2 and all(s["rows"] == 2 and s["denominator"] == 12.0 for s in call) for call in step.calls)
    # applied steps 0, 2, 3: x = (0 + 2 + 3) / 3, grad norm = (0 + 4 + 6) / 3
    assert metrics == pytest.approx({"x": 5 / 3, "grad/norm": 10 / 3, "train/updates": 3.0})


def test_stop_ends_all_epochs_after_the_step_that_trips_it():
    step = FakeStep()
    metrics, stopped = run_epochs(step, torch.ones(4, 2), _loss, epochs=3, num_minibatches=2, grad_accum=1,
                                  aggregation="token_mean", generator=torch.Generator().manual_seed(0), step=0,
                                  stop=lambda stats: stats["x"] >= 1)
    assert stopped and len(step.calls) == 2 and metrics["train/updates"] == 2.0


def test_micro_batch_keeps_only_used_columns():
    class Batch:
        sequences = torch.tensor([[0, 0, 5, 6, 7, 0], [0, 4, 5, 6, 0, 0]])
        attention_mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 0, 0]])
        response_start = 3
        mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])

    part = micro_batch(Batch(), torch.tensor([0]))
    assert part.ids.tolist() == [[5, 6, 7]] and part.response_start == 1
    assert part.mask.tolist() == [[1.0, 1.0]] and part.rcols == slice(0, 2)
