"""Run a causal LM's output head only at chosen positions, whatever the architecture.

A forward pre-hook on the output embeddings replaces the head's input hidden states (b, K, H) by
the rows a boolean mask selects, (n, H), so the head (and anything the model applies to its logits
afterwards, e.g. Gemma-2's soft-capping) works on n rows instead of b x K: the model then returns
logits (n, V). Trainers need log-probs only at response tokens that exist (mask 1), not at prompt
or padding positions.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from rlhfkit.utils.runtime import this_thread_only


class HeadRows:
    """What :func:`lm_head_rows` kept: the mask (b, K) over the positions the head was called on;
    None while the head has not run (or was not hooked)."""

    def __init__(self, keep: torch.Tensor, defer: bool = False) -> None:
        self.keep_full = keep
        self.keep: torch.Tensor | None = None
        self.defer = defer
        self.hidden: torch.Tensor | None = None

    def select(self, hidden: torch.Tensor) -> torch.Tensor:
        """(b, K, H) -> (n, H): the rows of the last K positions of the mask given at entry."""
        if hidden.dim() != 3 or hidden.shape[0] != self.keep_full.shape[0] or hidden.shape[1] > self.keep_full.shape[1]:
            raise ValueError(f"output head input of shape {tuple(hidden.shape)} does not fit the position mask "
                             f"{tuple(self.keep_full.shape)}")
        self.keep = self.keep_full[:, self.keep_full.shape[1] - hidden.shape[1]:]
        flat = hidden.reshape(-1, hidden.shape[-1])
        # index_select's backward is an index_add, much cheaper than boolean indexing's accumulating index_put
        return flat.index_select(0, self.keep.reshape(-1).nonzero().squeeze(1))


def output_head(model: nn.Module) -> nn.Module | None:
    """The module producing the logits (``get_output_embeddings``), looking through peft wrappers."""
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    return head if isinstance(head, nn.Module) else None


#: Per model: whether its logits are its output head's output unchanged (see :func:`logits_are_head_output`).
_HEAD_IS_LAST: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def logits_are_head_output(model: nn.Module, input_ids: torch.Tensor) -> bool:
    """Whether ``model`` returns its output head's output as its logits, with nothing applied after it
    (Gemma 2's soft-capping, a logit scale): then a caller may run the head itself, in chunks of rows.

    Probed once per model on two tokens of ``input_ids``: the head's output is replaced by known values
    spanning [-60, 60] and the returned logits must be exactly those (a forward hook; no gradients). A model
    whose probe forward fails counts as not (its callers then run it as before)."""
    head = output_head(model)
    if head is None:
        return False
    known = _HEAD_IS_LAST.get(model)
    if known is not None:
        return known
    probes: list[torch.Tensor] = []

    def replace(module: nn.Module, args: Any, output: Any) -> torch.Tensor | None:
        if not isinstance(output, torch.Tensor):
            return None
        probe = torch.linspace(-60.0, 60.0, output.numel(), device=output.device).view(output.shape)
        probes.append(probe.to(output.dtype))
        return probes[-1]

    ids = input_ids[:1, :2]
    handle = head.register_forward_hook(this_thread_only(replace))
    try:
        with torch.no_grad():
            logits = getattr(model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False), "logits", None)
    except (RuntimeError, ValueError, TypeError, IndexError):  # a model that cannot run 2 tokens keeps its own head call
        logits = None
    finally:
        handle.remove()
    verdict = (len(probes) == 1 and isinstance(logits, torch.Tensor) and logits.shape == probes[0].shape
               and torch.equal(logits.to(probes[0].dtype), probes[0]))
    _HEAD_IS_LAST[model] = verdict
    return verdict


@contextmanager
def lm_head_rows(model: nn.Module, keep: torch.Tensor, defer: bool = False) -> Iterator[HeadRows]:
    """Within the block, ``model``'s output head only sees the rows where ``keep`` (b, T) is True.

    ``keep`` is aligned to the model input's T positions; when the head is given only the last K
    of them (``logits_to_keep``), the last K columns of ``keep`` apply. Models without an output
    head module are left alone (``HeadRows.keep`` stays None and the caller selects the rows).
    With ``defer`` the head gets no rows at all and the selected hidden states (n, H) are kept in
    ``HeadRows.hidden`` for the caller to run the head on (only for models whose logits are the head's
    output: :func:`logits_are_head_output`).
    """
    rows = HeadRows(keep.bool(), defer)
    head = output_head(model)
    if head is None:
        yield rows
        return

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args:
            return None
        selected = rows.select(args[0])
        if rows.defer:
            rows.hidden, selected = selected, selected[:0]
        return (selected, *args[1:])

    handle = head.register_forward_pre_hook(this_thread_only(pre_hook))
    try:
        yield rows
    finally:
        handle.remove()
