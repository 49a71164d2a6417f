"""Test helper: count the works each call of :func:`rlhfkit.utils.runtime.side_by_side` runs, per module."""

from __future__ import annotations

from types import ModuleType

import pytest

from rlhfkit.utils.runtime import side_by_side


def count_side_by_side(monkeypatch: pytest.MonkeyPatch, *modules: ModuleType) -> list[int]:
    """Replace ``side_by_side`` in each of ``modules`` by one that records how many works it was given, then runs
    them as before; returns the list the calls are appended to."""
    calls: list[int] = []

    def counted(works):
        calls.append(len(works))
        return side_by_side(works)

    for module in modules:
        monkeypatch.setattr(module, "side_by_side", counted)
    return calls
