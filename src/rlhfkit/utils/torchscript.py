"""Functions compiled by TorchScript, whose interpreter runs them without holding Python's GIL."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger(__name__)

_compiled: dict[Callable[..., Any], Callable[..., Any] | None] = {}
_compiling = threading.Lock()


def scripted(function: Callable[..., Any]) -> Callable[..., Any] | None:
    """``function`` compiled by TorchScript once per process (with the functions it calls), or None where that
    fails (a torch without TorchScript, or one that no longer compiles it): callers then run it eagerly. Safe to
    call from several threads at once (row shards ask on their first pick): one of them compiles."""
    if function in _compiled:
        return _compiled[function]
    with _compiling:
        if function not in _compiled:
            _compiled[function] = _compile(function)
        return _compiled[function]


def forget_compiled() -> None:
    """Drop every compiled function (tests that make compilation fail, then restore it)."""
    with _compiling:
        _compiled.clear()


def _compile(function: Callable[..., Any]) -> Callable[..., Any] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated in favour of compile
            return torch.jit.script(function)
    except Exception as error:  # noqa: BLE001 (any failure to compile means: run eagerly)
        logger.info("TorchScript unavailable for %s (%s); it runs eagerly", getattr(function, "__name__", function),
                    error)
        return None
