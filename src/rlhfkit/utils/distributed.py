"""Several processes under ``torchrun``: who this process is, sums across processes, one writer.

Every trainer (reward model, DPO, the on-policy trainer) uses the same few calls so that one
process and N processes with the same global batch take the same optimizer steps:

- each rank works on its shard of the global batch (:func:`shard_range`);
- losses are normalised by *global* counts (:func:`all_reduce_sum` on the counts before the
  backward), and gradients are summed across ranks (:func:`all_reduce_gradients`) before clipping;
- statistics (whitening moments, KL, logged metrics) are summed, then divided;
- only the main process writes files (:attr:`World.is_main`), the others wait at a barrier.

One process needs no process group: every call is then the identity, so single-process code
paths pay nothing. CPU runs use the gloo backend, CUDA runs NCCL.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place among the processes of one job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, logs and the final model."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1


def world_from_env() -> World:
    """The world that ``torchrun`` (or ``accelerate launch``) described in the environment."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if not 0 <= rank < max(size, 1):
        raise RuntimeError(f"RANK={rank} is outside WORLD_SIZE={size}")
    return World(rank=rank, world_size=max(size, 1), local_rank=local)


def init_world(device: torch.device | str | None = None, timeout_s: float = 600.0) -> World:
    """Join the process group the environment describes (gloo on CPU, NCCL on CUDA); idempotent.

    With one process nothing is initialised. Under several processes on a CUDA device, each
    process uses GPU ``LOCAL_RANK``.
    """
    world = world_from_env()
    if not world.distributed or dist.is_initialized():
        return world
    device = torch.device(device) if device is not None else torch.device("cpu")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return world


def current_world() -> World:
    """The world of the initialised process group, or a single process when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(rank=dist.get_rank(), world_size=dist.get_world_size(),
                 local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over all processes, in place and returned."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum of ``tensor`` over all processes, in place and returned."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def sum_floats(values: dict[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """Each value summed over all processes, in one collective (float64 so counts stay exact)."""
    if not _active() or not values:
        return dict(values)
    keys = sorted(values)
    packed = torch.tensor([float(values[key]) for key in keys], dtype=torch.float64, device=device)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return dict(zip(keys, packed.tolist()))


def all_reduce_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Sum the gradients of ``parameters`` over all processes, flattened into one collective.

    Losses must already be normalised by global counts, so the sum is the single-process
    gradient. Parameters without a gradient on every rank are skipped in the same order on all.
    """
    if not _active():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for grad in grads:
        count = grad.numel()
        grad.copy_(flat[offset: offset + count].view_as(grad))
        offset += count


def broadcast_parameters(parameters: Iterable[torch.Tensor], src: int = 0) -> None:
    """Copy process ``src``'s values of ``parameters`` to every process, in one flattened collective."""
    if not _active():
        return
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for tensor in parameters:
        groups.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    with torch.no_grad():
        for key in sorted(groups, key=str):
            tensors = groups[key]
            flat = torch.cat([t.detach().reshape(-1) for t in tensors])
            dist.broadcast(flat, src=src)
            offset = 0
            for tensor in tensors:
                count = tensor.numel()
                tensor.copy_(flat[offset: offset + count].view_as(tensor))
                offset += count


def split_range(total: int, world: World) -> range:
    """The contiguous near-equal part of ``range(total)`` that ``world.rank`` handles (any ``total``).

    Part sizes differ by at most one; a rank may get nothing when ``total < world_size``.
    """
    return range(world.rank * total // world.world_size, (world.rank + 1) * total // world.world_size)


def align_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Give a zero gradient to every parameter that has one on some other process.

    A process whose shard of a mini-batch is empty (or skips a module) would otherwise hold no
    gradient where the others do, and :func:`all_reduce_gradients` needs the same set everywhere.
    Parameters without a gradient on every process keep none (AdamW then leaves them alone).
    """
    if not _active():
        return
    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    has = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
    all_reduce_max(has)
    for param, anywhere in zip(params, has.tolist()):
        if anywhere and param.grad is None:
            param.grad = torch.zeros_like(param)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as process ``src`` has it, on every process (picklable objects only)."""
    if not _active():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process."""
    if not _active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def all_gather_rows(tensor: torch.Tensor, pad_value: float = 0) -> torch.Tensor:
    """Every process's ``tensor`` concatenated along dim 0 in rank order, on every process.

    Row counts may differ; later dimensions are padded with ``pad_value`` at the end to the widest
    process's shape (responses of different lengths), so rank shards line up like one batch.
    """
    if not _active():
        return tensor
    if tensor.dtype == torch.bool:  # gloo has no bool collectives
        return all_gather_rows(tensor.to(torch.uint8), int(pad_value)).bool()
    shape = torch.tensor(tensor.shape, dtype=torch.long, device=tensor.device)
    shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    widest = torch.stack(shapes).max(dim=0).values.tolist()
    padded = tensor.new_full(widest, pad_value)
    padded[tuple(slice(0, n) for n in tensor.shape)] = tensor
    pieces = [torch.empty_like(padded) for _ in shapes]
    dist.all_gather(pieces, padded.contiguous())
    return torch.cat([piece[: int(size[0])] for piece, size in zip(pieces, shapes)], dim=0)


def barrier() -> None:
    """Wait until every process reaches this point."""
    if _active():
        dist.barrier()


def shard_range(total: int, world: World) -> range:
    """The contiguous indices of ``range(total)`` that ``world.rank`` handles.

    ``total`` must divide evenly: uneven shards would change the global batch and with it the
    step, so the caller chooses sizes that divide (and says so in its error).
    """
    if total % world.world_size:
        raise ValueError(f"{total} items do not split evenly over {world.world_size} processes")
    per = total // world.world_size
    return range(world.rank * per, (world.rank + 1) * per)


SHARDING_ENGINES = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}


def refuse_sharding_engines(command: str) -> None:
    """Raise when ``accelerate launch`` asked for FSDP or DeepSpeed for a trainer that only does data parallel.

    Such trainers sum gradients themselves (DDP-like, full model on every process); running them
    silently unsharded would hide that the requested memory saving does not happen.
    """
    asked = [name for key, name in SHARDING_ENGINES.items() if os.environ.get(key, "").lower() in ("1", "true", "yes")]
    if asked:
        raise ValueError(f"{command} does not support {' or '.join(asked)}: it runs data parallel (a full copy per "
                         "process, gradients summed); launch it with torchrun or an accelerate config without "
                         "fsdp/deepspeed (see docs/distributed.md)")


def finish_world() -> None:
    """Leave the process group (at the end of a job), if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
