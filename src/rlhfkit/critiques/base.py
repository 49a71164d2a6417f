"""The critique encoder interface, the critique item it reads, and the critique file format."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol


class CritiqueError(ValueError):
    """A critique file, item or encoder is unusable; the message names the record and field."""


@dataclass(frozen=True)
class Encoded:
    """One encoded critique: score in [-1, 1] (bad to good), confidence in [0, 1], aspect labels."""

    score: float
    confidence: float
    aspects: Mapping[str, float] = field(default_factory=dict)


class CritiqueEncoder(Protocol):
    """Anything that maps critiques of (prompt, response) pairs to :class:`Encoded` values."""

    name: str

    def encode(self, critiques: Sequence[str], prompts: Sequence[str],
               responses: Sequence[str]) -> list[Encoded]: ...


@dataclass(frozen=True)
class CritiqueItem:
    """A critique of one response, with the rating it came with (if any) to train a learned encoder."""

    prompt: str
    response: str
    critique: str
    rating: Optional[float] = None
    scale: Optional[tuple[float, float]] = None
    annotator: Optional[str] = None
    number: int = 0

    @property
    def target(self) -> Optional[float]:
        """The rating mapped linearly onto [-1, 1] by its scale (None without a rating)."""
        if self.rating is None or self.scale is None:
            return None
        low, high = self.scale
        return 2.0 * (self.rating - low) / (high - low) - 1.0


def _text(obj: Mapping[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise CritiqueError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
    return value


def item_from_dict(obj: Mapping[str, Any], where: str, number: int = 0) -> CritiqueItem:
    """Check one critique record (prompt, response, critique[, rating, scale, annotator])."""
    if not isinstance(obj, Mapping):
        raise CritiqueError(f"{where}: a critique record must be a JSON object")
    prompt, response, critique = (_text(obj, n, where) for n in ("prompt", "response", "critique"))
    if not critique.strip():
        raise CritiqueError(f"{where}: field 'critique' is empty")
    if not response:
        raise CritiqueError(f"{where}: field 'response' is empty")
    rating, scale = obj.get("rating"), obj.get("scale")
    if rating is not None:
        if isinstance(rating, bool) or not isinstance(rating, (int, float)) or not math.isfinite(rating):
            raise CritiqueError(f"{where}: field 'rating' must be a finite number, got {rating!r}")
        if not isinstance(scale, (list, tuple)) or len(scale) != 2 or not float(scale[0]) < float(scale[1]):
            raise CritiqueError(f"{where}: field 'scale' must be [low, high] with low < high, got {scale!r}")
        if not float(scale[0]) <= float(rating) <= float(scale[1]):
            raise CritiqueError(f"{where}: field 'rating' {rating} is outside the scale {list(scale)}")
    annotator = obj.get("annotator")
    return CritiqueItem(prompt, response, critique, None if rating is None else float(rating),
                        None if rating is None else (float(scale[0]), float(scale[1])),
                        None if annotator is None else str(annotator), number)


def read_items(path: str | Path) -> list[CritiqueItem]:
    """Critique items of a JSONL file; a bad line raises :class:`CritiqueError` naming file, line and field."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CritiqueError(f"critique file {path}: cannot read ({exc.strerror or exc})") from exc
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} record {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CritiqueError(f"{where}: not JSON ({exc.msg})") from exc
        items.append(item_from_dict(obj, where, number))
    return items


def write_items(items: Iterable[CritiqueItem], path: str | Path) -> Path:
    """Write critique items as JSONL (the format :func:`read_items` reads)."""
    path = Path(path)
    rows = []
    for item in items:
        row: dict[str, Any] = {"prompt": item.prompt, "response": item.response, "critique": item.critique}
        if item.rating is not None:
            row |= {"rating": item.rating, "scale": list(item.scale or ())}
        if item.annotator is not None:
            row["annotator"] = item.annotator
        rows.append(json.dumps(row, ensure_ascii=False) + "\n")
    path.write_text("".join(rows), encoding="utf-8")
    return path


def items_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[CritiqueItem]:
    """Critique items of feedback-store annotation rows (``reports.annotation_rows``).

    Only single-response tasks (rating, binary) name the response a critique is about; a rating
    answer keeps its rating, a binary one becomes 1/0 on [0, 1]; skips and gold tasks are left out.
    """
    items = []
    for row in rows:
        critique, resolved = row.get("critique"), row.get("resolved") or {}
        if not critique or row.get("is_gold") or resolved.get("skip") or len(row["samples"]) != 1:
            continue
        rating, scale = None, None
        if row["kind"] == "rating" and resolved.get("rating") is not None:
            rating, scale = float(resolved["rating"]), tuple(float(v) for v in row["scale"])
        elif resolved.get("label") in ("good", "bad"):
            rating, scale = float(resolved["label"] == "good"), (0.0, 1.0)
        items.append(CritiqueItem(row["prompt"], row["samples"][0]["text"], critique, rating, scale,  # type: ignore[arg-type]
                                  row.get("annotator"), int(row.get("annotation_id") or 0)))
    return items
