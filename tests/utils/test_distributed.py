"""The process-group helpers: identities with one process, sums with two (torchrun, gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from rlhfkit.utils.distributed import (World, all_reduce_gradients, all_reduce_sum, broadcast_object,
                                       gather_objects, shard_range, sum_floats, world_from_env)


def test_single_process_calls_are_identities(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert world_from_env() == World()
    tensor = torch.tensor([1.5, 2.0])
    assert all_reduce_sum(tensor).tolist() == [1.5, 2.0]
    param = torch.nn.Parameter(torch.zeros(2))
    param.grad = torch.tensor([3.0, 4.0])
    all_reduce_gradients([param])
    assert param.grad.tolist() == [3.0, 4.0]
    assert sum_floats({"a": 2.0}) == {"a": 2.0}
    assert broadcast_object({"x": 1}) == {"x": 1}
    assert gather_objects(7) == [7]


def test_shard_range_splits_evenly_and_refuses_uneven() -> None:
    assert list(shard_range(8, World(rank=1, world_size=2))) == [4, 5, 6, 7]
    assert list(shard_range(6, World(rank=0, world_size=3))) == [0, 1]
    with pytest.raises(ValueError, match="do not split evenly over 2"):
        shard_range(5, World(rank=0, world_size=2))


def test_env_rank_outside_world_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(RuntimeError, match="outside WORLD_SIZE=2"):
        world_from_env()


SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from rlhfkit.utils.distributed import (all_reduce_gradients, all_reduce_sum, broadcast_object, finish_world,
                                           gather_objects, init_world, sum_floats)
    world = init_world()
    total = all_reduce_sum(torch.tensor([float(world.rank + 1)])).item()
    param = torch.nn.Parameter(torch.zeros(3))
    param.grad = torch.full((3,), float(world.rank + 1))
    all_reduce_gradients([param])
    floats = sum_floats({"n": 1.0, "x": 0.25 * world.rank})
    shared = broadcast_object({"from": world.rank})
    line = f"{world.rank} {total} {param.grad.tolist()} {floats} {shared} {gather_objects(world.rank)}"
    with open(f"{sys.argv[1]}/rank{world.rank}.txt", "w") as out:
        out.write(line)
    finish_world()
""")


def test_two_processes_sum_and_broadcast(tmp_path) -> None:
    script = tmp_path / "two.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    for rank in (0, 1):  # each process writes its own file: their stdout lines may interleave
        line = (tmp_path / f"rank{rank}.txt").read_text()
        assert line == f"{rank} 3.0 [3.0, 3.0, 3.0] {{'n': 2.0, 'x': 0.25}} {{'from': 0}} [0, 1]"
