"""Read a run directory (layout in run_layout.md) into plain data for the report.

Reading never raises on a missing or malformed file: each problem becomes a note naming the file
and the reason, which the report shows in place of the section.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ROUND_DIR = re.compile(r"^round-(\d+)$")


@dataclass
class RoundData:
    """Everything one ``rounds/round-XXX`` folder holds (None where absent)."""

    index: int
    path: Path
    metrics: dict[str, float] = field(default_factory=dict)
    rm_eval: dict[str, Any] | None = None
    reliability: list[dict[str, Any]] | None = None
    samples_before: list[dict[str, Any]] | None = None
    samples_after: list[dict[str, Any]] | None = None


@dataclass
class RunData:
    """A loaded run directory plus the problems met while reading it."""

    run_dir: Path
    config: dict[str, Any] | None = None
    summary: list[dict[str, Any]] | None = None
    timeline: list[dict[str, Any]] = field(default_factory=list)
    watch: dict[str, Any] | None = None
    rounds: list[RoundData] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)


def to_number(value: Any) -> float | None:
    """A float from a JSON value (numbers, Tracker's "nan"/"inf" strings), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def finite(value: Any) -> float | None:
    """Like :func:`to_number` but None for NaN/inf, for plotting and ranking."""
    number = to_number(value)
    return number if number is not None and math.isfinite(number) else None


class _Reader:
    """Reads files relative to a run dir, recording why a file could not be used."""

    def __init__(self, run_dir: Path, notes: dict[str, str]) -> None:
        self.run_dir = run_dir
        self.notes = notes

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.run_dir))

    def json(self, path: Path, kind: type) -> Any:
        """Parsed JSON of the expected top-level type, or None (with a note) when unusable."""
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.notes[self._rel(path)] = f"unreadable: {exc}"
            return None
        if not isinstance(data, kind):
            self.notes[self._rel(path)] = (f"expected a JSON {kind.__name__}, "
                                           f"got {type(data).__name__}")
            return None
        return data

    def jsonl(self, path: Path) -> list[dict[str, Any]] | None:
        """The JSON objects of a JSONL file, skipping (and noting) bad lines; None if absent."""
        if not path.is_file():
            return None
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            self.notes[self._rel(path)] = f"unreadable: {exc}"
            return None
        records, bad = [], []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                bad.append(number)
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                bad.append(number)
        if bad:
            self.notes[self._rel(path)] = f"skipped malformed line(s) {bad[:5]}"
        return records


def _flat_numbers(data: dict[str, Any]) -> dict[str, float]:
    """Keep the numeric entries of a flat metrics object."""
    out = {}
    for key, value in data.items():
        number = to_number(value)
        if number is not None:
            out[str(key)] = number
    return out


def _list_of_objects(data: list[Any] | None) -> list[dict[str, Any]] | None:
    """Only the dict entries of a JSON list."""
    return None if data is None else [d for d in data if isinstance(d, dict)]


def load_run(run_dir: str | Path) -> RunData:
    """Load every piece of the run directory that exists; problems go to ``RunData.notes``."""
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"run directory {root} does not exist")
    run = RunData(run_dir=root)
    read = _Reader(root, run.notes)
    run.config = read.json(root / "config.json", dict)
    run.summary = _list_of_objects(read.json(root / "summary.json", list))
    run.timeline = read.jsonl(root / "metrics.jsonl") or []
    run.watch = read.json(root / "watch.json", dict)
    rounds_dir = root / "rounds"
    folders = []
    if rounds_dir.is_dir():
        for child in rounds_dir.iterdir():
            match = _ROUND_DIR.match(child.name)
            if match and child.is_dir():
                folders.append((int(match.group(1)), child))
    for index, folder in sorted(folders):
        run.rounds.append(RoundData(
            index=index, path=folder,
            metrics=_flat_numbers(read.json(folder / "metrics.json", dict) or {}),
            rm_eval=read.json(folder / "rm_eval.json", dict),
            reliability=_list_of_objects(read.json(folder / "annotator_reliability.json", list)),
            samples_before=read.jsonl(folder / "samples_before.jsonl"),
            samples_after=read.jsonl(folder / "samples_after.jsonl"),
        ))
    return run
