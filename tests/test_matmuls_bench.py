"""bench/matmuls.py (used by bench/ceiling.py) records exactly the matrix products a computation runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import matmuls  # noqa: E402


def test_records_products_with_shapes_and_counts_their_flops() -> None:
    a, b, bias = torch.randn(3, 4), torch.randn(5, 4), torch.randn(5)
    batched, other = torch.randn(2, 3, 4), torch.randn(2, 4, 6)

    def work() -> None:
        torch.nn.functional.linear(a, b, bias)  # addmm with a transposed weight
        torch.matmul(batched, other)  # bmm
        torch.relu(a)  # not a product

    calls = matmuls.record(work)
    assert [call[0] for call in calls] == [torch.ops.aten.addmm.default, torch.ops.aten.bmm.default]
    assert [spec[0] for spec in calls[0][1]] == [(5,), (3, 4), (4, 5)]
    assert calls[0][1][2][1] == (1, 4)  # the weight's transpose keeps its strides
    assert matmuls.flops(calls) == 2 * 3 * 4 * 5 + 2 * 2 * 3 * 4 * 6
    wall, cpu = matmuls.replay_seconds(calls, repeats=2)
    assert wall > 0 and cpu >= 0


def test_records_and_replays_products_with_weights_packed_for_onednn() -> None:
    from rlhfkit.rl.packed_linear import PackedLinear, onednn_linear_available

    if not onednn_linear_available():
        pytest.skip("this PyTorch build has no oneDNN packed linear")
    layer = torch.nn.Linear(8, 6)
    inputs = torch.randn(2, 3, 8)
    calls = matmuls.record(lambda: PackedLinear(layer)(inputs))
    assert [call[0] for call in calls] == [matmuls.PACKED_LINEAR]
    assert calls[0][1][0][0] == (2, 3, 8) and dict(calls[0][2]) == {"bias": True, "out_features": 6}
    assert matmuls.flops(calls) == 2 * 2 * 3 * 8 * 6
    wall, cpu = matmuls.replay_seconds(calls + calls, repeats=2)
    assert wall > 0 and cpu >= 0
