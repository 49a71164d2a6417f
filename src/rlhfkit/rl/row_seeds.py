"""Counter-based random numbers per sampled row, so a row's draws do not depend on its batch.

Several processes each sample a shard of the global batch; for them to draw the same responses as
one process, a row's uniforms must be a function of (row seed, decoding step) only, not of a
generator shared by whatever rows happen to be in the batch. The hash is splitmix64 (Steele,
Lea & Flood 2014), computed in wrapping int64 torch ops so that it runs vectorised on any device.
"""

from __future__ import annotations

import torch

_GAMMA = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB


def _signed(value: int) -> int:
    """A 64-bit unsigned constant as the int64 with the same bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical (zero-filling) right shift of int64 bits; torch's ``>>`` is arithmetic."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(state: torch.Tensor) -> torch.Tensor:
    """The splitmix64 output for int64 ``state`` (the state is advanced by the golden gamma first)."""
    z = state.to(torch.int64) + _signed(_GAMMA)
    z = (z ^ _shift_right(z, 30)) * _signed(_MUL1)
    z = (z ^ _shift_right(z, 27)) * _signed(_MUL2)
    return z ^ _shift_right(z, 31)


def row_uniforms(row_seeds: torch.Tensor, counter: int) -> torch.Tensor:
    """(b,) float64 uniforms in [0, 1): the ``counter``-th splitmix64 draw of each row's stream.

    The stream of seed s is splitmix64 from state s, whose k-th state is s + k * gamma; the top
    53 bits become the float.
    """
    state = row_seeds.to(torch.int64) + _signed((counter * _GAMMA) % (1 << 64))
    return _shift_right(splitmix64(state), 11).to(torch.float64) * 2.0**-53


def combine_seeds(*parts: torch.Tensor | int) -> torch.Tensor:
    """One int64 seed per element from several integer keys, hashed in turn (order matters)."""
    seed = torch.zeros((), dtype=torch.int64)
    for part in parts:
        value = torch.as_tensor(part, dtype=torch.int64)
        seed = splitmix64(seed.to(value.device) ^ value)
    return seed


def rollout_row_seeds(seed: int, step: int, prompt_indices: torch.Tensor, group_size: int) -> torch.Tensor:
    """Row seeds of one rollout: f(run seed, training step, global prompt index, group member).

    ``prompt_indices`` (p,) are positions in the step's global prompt batch; rows are the
    ``group_size`` members of each prompt in turn, (p * group_size,).
    """
    prompts = prompt_indices.to(torch.int64).repeat_interleave(group_size)
    members = torch.arange(group_size, dtype=torch.int64).repeat(prompt_indices.numel())
    return combine_seeds(seed, step, prompts, members)
