"""Memory of an on-policy step on a CPU: what the trainer frees between phases (``run.release_memory``) and
the reward models it keeps on disk between scorings (``reward.offload``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from rlhfkit.rl.rewards import EnsembleReward, ModelReward
from rlhfkit.utils.memory import release_cached_memory
from rlhfkit.utils.offload import DiskOffload


def offload_reward_models(reward: EnsembleReward) -> list[DiskOffload]:
    """A :class:`DiskOffload` for every reward model of ``reward`` (its weights leave memory until scoring);
    a clear error for a model that is not a torch module on the CPU."""
    offloads = []
    for index, member in enumerate(reward.members):
        if not isinstance(member, ModelReward):
            continue
        if not isinstance(member.model, nn.Module):
            raise ValueError(f"reward.offload: reward model {member.name} is a {type(member.model).__name__}, "
                             "not a torch module")
        offloads.append(DiskOffload(member.model, name=f"reward-{index}"))
    return offloads


@contextmanager
def resident(offloads: list[DiskOffload]) -> Iterator[None]:
    """Every offloaded model mapped in for the block."""
    with ExitStack() as stack:
        for offload in offloads:
            stack.enter_context(offload.resident())
        yield


def between_phases(device: torch.device, enabled: bool) -> None:
    """When ``enabled`` on a CPU, free the caches the last phase left behind (MKL buffers, free heap pages).

    Bench workload, PPO with LoRA: 5-15 MiB less peak RSS for 5-10% more CPU time (the next phase faults
    the returned pages back in), hence opt-in."""
    if enabled and device.type == "cpu":
        release_cached_memory()
