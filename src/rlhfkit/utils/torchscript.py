"""Functions compiled by TorchScript, whose interpreter runs them without holding Python's GIL."""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger(__name__)


@functools.cache
def scripted(function: Callable[..., Any]) -> Callable[..., Any] | None:
    """``function`` compiled by TorchScript once per process (with the functions it calls), or None where that
    fails (a torch without TorchScript, or one that no longer compiles it): callers then run it eagerly."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated in favour of compile
            return torch.jit.script(function)
    except Exception as error:  # noqa: BLE001 (any failure to compile means: run eagerly)
        logger.info("TorchScript unavailable for %s (%s); it runs eagerly", getattr(function, "__name__", function),
                    error)
        return None
