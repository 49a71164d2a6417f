"""Keep a CPU module's weights in a file between uses, so they take no resident memory in between.

:class:`DiskOffload` writes the module's parameters and buffers once; inside :meth:`DiskOffload.resident`
they are memory-mapped back from that file (no copy: the OS page cache serves them, so reloading costs
page faults, not a read), and on leaving they are dropped again. A reward model that scores once per
PPO step then holds no memory during generation and training. The module must not be changed while
offloaded; in-place writes inside ``resident`` are not saved. :func:`memory_backed` tells whether a directory
is on a RAM file system (tmpfs), where such a file would save no memory.
"""

from __future__ import annotations

import os
import re
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn


#: File systems whose files live in memory: offloading to them saves nothing.
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


def _unescape_mount_point(field: str) -> str:
    """A mount point as /proc/mounts writes it, with its octal escapes (``\\040`` for a space) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def filesystem_type(path: str, mounts: str) -> str | None:
    """The type of the file system holding absolute ``path`` according to ``mounts`` (/proc/mounts text): that of
    the longest mount point containing it (the last one mounted there wins), or None if none does."""
    best: tuple[int, str] | None = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape_mount_point(fields[1]).rstrip("/") or "/"
        inside = path == point or path.startswith(point if point == "/" else point + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), fields[2])
    return None if best is None else best[1]


def memory_backed(directory: str | Path | None = None) -> bool | None:
    """Whether ``directory`` (default: the temporary directory) is on a RAM file system; None where
    /proc/mounts cannot be read (not Linux)."""
    path = os.path.realpath(directory if directory is not None else tempfile.gettempdir())
    try:
        mounts = Path("/proc/mounts").read_text()
    except OSError:
        return None
    kind = filesystem_type(path, mounts)
    return None if kind is None else kind in MEMORY_FILESYSTEMS


def _unique_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers of ``module`` by name, each tensor object once (tied weights share one entry)."""
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            tensors[name] = tensor
    return tensors


class DiskOffload:
    """A CPU ``module`` whose weights live in a file under ``directory`` (a new temporary one by default)
    except inside :meth:`resident`."""

    def __init__(self, module: nn.Module, name: str = "module", directory: str | Path | None = None) -> None:
        self.tensors = _unique_tensors(module)
        devices = {str(t.device) for t in self.tensors.values()}
        if devices - {"cpu"}:
            raise ValueError(f"offloading {name} to disk needs its weights on the CPU, found {sorted(devices)}")
        if directory is None:
            temporary = tempfile.TemporaryDirectory(prefix="rlhfkit-offload-")
            weakref.finalize(self, temporary.cleanup)
            directory = temporary.name
        self.path = Path(directory) / f"{name.replace('/', '_')}.pt"
        torch.save({key: t.detach().contiguous() for key, t in self.tensors.items()}, self.path)
        self.depth = 0
        self.restored = False
        self.release()

    def release(self) -> None:
        """Drop the weights from memory (each tensor becomes empty, keeping its dtype and ``requires_grad``)."""
        for tensor in self.tensors.values():
            tensor.data = torch.empty(0, dtype=tensor.dtype)

    def load(self) -> None:
        """Map the weights back from the file (read-only pages of the page cache until written)."""
        stored = torch.load(self.path, mmap=True, weights_only=True)
        for key, tensor in self.tensors.items():
            tensor.data = stored[key]

    def restore(self) -> None:
        """Map the weights back for good: the module is usable everywhere again (``resident`` then does nothing)."""
        if not self.restored and self.depth == 0:
            self.load()
        self.restored = True

    @contextmanager
    def resident(self) -> Iterator[None]:
        """The module usable inside the block (nested blocks map it once); released on leaving."""
        if self.depth == 0 and not self.restored:
            self.load()
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if self.depth == 0 and not self.restored:
                self.release()
