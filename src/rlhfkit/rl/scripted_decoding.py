"""Decode steps through a TorchScript function, for the steppers of :mod:`rlhfkit.rl.scripted_gpt2` and
:mod:`rlhfkit.rl.scripted_llama`: the cache bookkeeping they share, and the eager step wherever the script does not
apply."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class ScriptedDecoding:
    """Mixed into a stepper class (:class:`rlhfkit.rl.cached_gpt2.GPT2Stepper` or a subclass): each decode step of
    one token runs ``compiled_step()`` on ``step_weights(trunk, lm_head)`` over the in-place cache, which the
    function writes at the filled length; the stepper's own (eager) step runs when either is None, for the prefill,
    and whenever the cache is not in the state the function expects."""

    cache: Any
    bias: torch.Tensor

    def __init__(self, trunk: nn.Module, lm_head: nn.Module, cache: Any, mask: torch.Tensor) -> None:
        super().__init__(trunk, lm_head, cache, mask)  # type: ignore[call-arg]
        # compiled only for a model the script covers: TorchScript costs resident memory once started
        weights = self.step_weights(trunk, lm_head)
        self.script = self.compiled_step() if weights is not None else None
        self.weights = weights if self.script is not None else None

    @property
    def runs_scripted(self) -> bool:
        """Whether the decode steps run the scripted function (TorchScript's interpreter is in use)."""
        return self.weights is not None and self.script is not None

    @staticmethod
    def compiled_step() -> Callable[..., torch.Tensor] | None:
        """The scripted decode step, or None where it does not compile."""
        raise NotImplementedError

    @staticmethod
    def step_weights(trunk: nn.Module, lm_head: nn.Module) -> Any | None:
        """What the scripted step reads of this model, or None where it does not compute the eager step exactly."""
        raise NotImplementedError

    def scripted_logits(self, ids: torch.Tensor, positions: torch.Tensor, bias: torch.Tensor,
                        keys: list[torch.Tensor], values: list[torch.Tensor], at: int) -> torch.Tensor:
        """(b, V) logits of ``self.script`` for ids at positions, writing the cache buffers at column ``at``."""
        raise NotImplementedError

    def __call__(self, ids: torch.Tensor, positions: torch.Tensor, length: int) -> torch.Tensor:
        layers = self.cache.layers
        at = layers[0].length
        ready = all(layer.is_initialized and not layer.unchecked and layer.length == at
                    and layer.key_buffer.dtype == torch.float32 for layer in layers)
        if self.weights is None or self.script is None or not ready or at + 1 != length \
                or length > layers[0].capacity or ids.shape[1] != 1:
            return super().__call__(ids, positions, length)  # type: ignore[misc]
        logits = self.scripted_logits(ids, positions, self.bias[..., :length], [layer.key_buffer for layer in layers],
                                      [layer.value_buffer for layer in layers], at)
        for layer in layers:
            layer.set_length(length)
        return logits
