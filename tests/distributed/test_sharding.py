"""The pieces that split a step over processes: each process's rows of a shuffled mini-batch, and
(under 2 real gloo processes) gathering rows, aligning gradients and an optimizer step where one
process holds none of the mini-batch."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rlhfkit.rl.epochs import local_micro_batches
from rlhfkit.rl.guard import SkipGuard
from rlhfkit.rl.update import OptimizerStep


def test_local_micro_batches_partition_the_mini_batch_over_the_processes():
    micro_batches = [torch.tensor([7, 2, 5]), torch.tensor([0, 6, 3])]
    shards = [range(0, 4), range(4, 8)]
    local = [local_micro_batches(micro_batches, rows, grad_accum=2) for rows in shards]
    assert [t.tolist() for t in local[0]] == [[2, 0], [3]]
    assert [t.tolist() for t in local[1]] == [[3, 1], [2]]  # global 7, 5, 6 minus offset 4, in shuffle order
    assert local_micro_batches([torch.tensor([1, 2])], range(4, 8), grad_accum=2) == []


def test_each_of_several_processes_gets_its_share_of_the_cores(monkeypatch):
    from rlhfkit.rl.runner import process_threads

    monkeypatch.delenv("RLHFKIT_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert process_threads(None, 8) == 4  # 4 processes on this node
    assert process_threads(3, 8) == 3  # run.threads wins
    assert process_threads(None, 1) is None  # one process: the usual default
    monkeypatch.setenv("RLHFKIT_THREADS", "2")
    assert process_threads(None, 8) is None  # the environment's choice, applied by configure_threads


def _model() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1)


def _step(model: torch.nn.Linear, inputs: torch.Tensor, micro_batches: list[torch.Tensor], total: int) -> dict:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    step = OptimizerStep(list(model.parameters()), optimizer, scheduler, 1.0, SkipGuard(0))

    def loss(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        value = model(inputs[idx]).pow(2).sum() / total
        return value, {"loss": value.item()}

    result = step(micro_batches, loss, 0)
    return {"norm": result.grad_norm, "stats": result.stats, "weight": model.weight.detach().clone()}


def _worker(rank: int, port: int, inputs: torch.Tensor, queue: mp.Queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from rlhfkit.utils.distributed import all_gather_rows

    rows = torch.arange(3 * (rank + 1), dtype=torch.float32).view(rank + 1, 3)[:, : 2 + rank]
    gathered = all_gather_rows(rows, pad_value=-1)
    flags = all_gather_rows(torch.tensor([rank == 1, False]))
    # rank 0 holds every row of the mini-batch, rank 1 none: it must still join the collectives
    micro_batches = [torch.tensor([0, 1]), torch.tensor([2])] if rank == 0 else []
    out = _step(_model(), inputs, micro_batches, total=3)
    out["weight"] = out["weight"].tolist()  # plain values: shared tensors die with this process
    queue.put((rank, gathered.tolist(), flags.tolist(), out))
    dist.destroy_process_group()


def test_two_gloo_processes_gather_rows_and_step_with_an_empty_shard():
    inputs = torch.randn(3, 3, generator=torch.Generator().manual_seed(1))
    single = _step(_model(), inputs, [torch.tensor([0, 1]), torch.tensor([2])], total=3)
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = 29500 + os.getpid() % 1000
    processes = [context.Process(target=_worker, args=(rank, port, inputs, queue)) for rank in range(2)]
    for process in processes:
        process.start()
    results = dict((item[0], item[1:]) for item in (queue.get(timeout=120) for _ in processes))
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    for rank in range(2):
        gathered, flags, out = results[rank]
        assert gathered == [[0.0, 1.0, -1.0], [0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
        assert flags == [False, False, True, False]
        assert out["norm"] == pytest.approx(single["norm"], rel=1e-6)
        assert out["stats"]["loss"] == pytest.approx(single["stats"]["loss"], rel=1e-6)
        torch.testing.assert_close(torch.tensor(out["weight"]), single["weight"])
