"""Typed human-feedback records (comparison, ranking, rating, label) and their validation.

One schema serves every stage: the feedback store exports it, readers in
:mod:`rlhfkit.data.preference_io` produce it, and the reward trainer consumes it. Validation never
stops at the first bad record: :func:`parse_records` sorts problems by reason, keeps example record
numbers for each, and returns the valid rest (a :class:`ValidationReport` says what was dropped).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, Union

from rlhfkit.models.chat import ChatError, Conversation, is_messages

Kind = Literal["pairwise", "ranking", "rating", "label"]
KINDS: tuple[str, ...] = ("pairwise", "ranking", "rating", "label")

# Problem reasons, spelled once so reports, tests and docs agree.
IDENTICAL = "identical chosen/rejected"
DUPLICATE_RESPONSES = "duplicate responses in ranking"
EMPTY = "empty response"
WHITESPACE_KEPT = "whitespace-only response kept"
MISSING = "missing field"
OUT_OF_SCALE = "rating outside the declared scale"
NOT_FINITE = "NaN or infinite value"
OUT_OF_RANGE = "number out of range for float32 training"
INVALID = "invalid value"
UNKNOWN_KIND = "unknown record kind"

# Largest magnitude accepted for any number of a record (margin, weight, rating, scale, rank): far
# inside float32 (3.4e38), so a value, and sums and products of such values over a batch, stay finite
# after the cast to the precision training runs in.
MAX_ABS = 1e6


@dataclass(frozen=True)
class Comparison:
    """``chosen`` was preferred to ``rejected`` (or equal when ``tie``), optionally by ``margin``."""

    prompt: str
    chosen: str
    rejected: str
    margin: float | None = None
    tie: bool = False
    annotator: str | None = None
    timestamp: str | None = None
    weight: float = 1.0
    kind: ClassVar[str] = "pairwise"


@dataclass(frozen=True)
class Ranking:
    """``responses`` ordered by ``ranks`` (1 = best); equal ranks are ties."""

    prompt: str
    responses: tuple[str, ...]
    ranks: tuple[int, ...]
    annotator: str | None = None
    timestamp: str | None = None
    weight: float = 1.0
    kind: ClassVar[str] = "ranking"


@dataclass(frozen=True)
class Rating:
    """An absolute ``rating`` of ``response`` on the closed scale ``scale = (low, high)``."""

    prompt: str
    response: str
    rating: float
    scale: tuple[float, float]
    annotator: str | None = None
    timestamp: str | None = None
    weight: float = 1.0
    kind: ClassVar[str] = "rating"

    @property
    def normalized(self) -> float:
        """The rating mapped linearly onto [0, 1] by its declared scale."""
        low, high = self.scale
        return (self.rating - low) / (high - low)


@dataclass(frozen=True)
class Label:
    """A good (True) / bad (False) judgement of one response."""

    prompt: str
    response: str
    label: bool
    annotator: str | None = None
    timestamp: str | None = None
    weight: float = 1.0
    kind: ClassVar[str] = "label"


FeedbackRecord = Union[Comparison, Ranking, Rating, Label]


class RecordError(ValueError):
    """One record is unusable; ``reason`` is one of the module's reason constants."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class ValidationReport:
    """Counts of dropped records per reason, with example record numbers and one detail each."""

    source: str = "<records>"
    total: int = 0
    valid: int = 0
    problems: dict[str, list[int]] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    max_examples: int = 5

    def add(self, reason: str, record_number: int, detail: str = "") -> None:
        """Count one dropped record (``record_number`` is 1-based within ``source``)."""
        self.problems.setdefault(reason, []).append(record_number)
        self.details.setdefault(reason, detail)

    @property
    def dropped(self) -> int:
        """Number of records dropped for any reason."""
        return sum(len(v) for v in self.problems.values())

    def merge(self, other: ValidationReport) -> ValidationReport:
        """Combine reports of several sources (record numbers are prefixed by their source)."""
        merged = ValidationReport(source=f"{self.source}, {other.source}", total=self.total + other.total,
                                  valid=self.valid + other.valid, max_examples=self.max_examples)
        for report in (self, other):
            for reason, numbers in report.problems.items():
                merged.problems.setdefault(reason, []).extend(numbers)
                merged.details.setdefault(reason, report.details.get(reason, ""))
            for note, count in report.notes.items():
                merged.notes[note] = merged.notes.get(note, 0) + count
        return merged

    def lines(self) -> list[str]:
        """Human-readable lines: one per reason with its count and example record numbers."""
        out = [f"{self.source}: {self.valid} of {self.total} records valid"]
        for reason, numbers in sorted(self.problems.items(), key=lambda kv: -len(kv[1])):
            examples = ", ".join(str(n) for n in numbers[: self.max_examples])
            more = ", ..." if len(numbers) > self.max_examples else ""
            detail = f" (e.g. {self.details[reason]})" if self.details.get(reason) else ""
            out.append(f"  {reason}: {len(numbers)} record(s) [{examples}{more}]{detail}")
        out.extend(f"  note: {note}: {count} record(s)" for note, count in self.notes.items() if count)
        return out

    def summary(self) -> str:
        """The report as one multi-line string."""
        return "\n".join(self.lines())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (for run directories and the HTML report)."""
        return {"source": self.source, "total": self.total, "valid": self.valid,
                "problems": {k: {"count": len(v), "examples": v[: self.max_examples],
                                 "detail": self.details.get(k, "")} for k, v in self.problems.items()},
                "notes": dict(self.notes)}


class NoValidRecordsError(ValueError):
    """Every record was invalid: nothing to train or evaluate on."""


def _require(obj: Mapping[str, Any], name: str) -> Any:
    if name not in obj or obj[name] is None:
        raise RecordError(MISSING, f"field '{name}' is missing")
    return obj[name]


def _text(obj: Mapping[str, Any], name: str, *, allow_empty: bool = False) -> str:
    value = _require(obj, name)
    if is_messages(value):  # a conversation, as record_to_dict writes one: text that keeps its messages
        try:
            return Conversation.prompt(value) if name == "prompt" else Conversation(value)
        except ChatError as exc:
            raise RecordError(INVALID, f"field '{name}': {exc}") from None
    if isinstance(value, float) and math.isnan(value):
        raise RecordError(NOT_FINITE, f"field '{name}' is NaN")
    if not isinstance(value, str):
        raise RecordError(INVALID, f"field '{name}' must be a string, got {type(value).__name__}")
    if not allow_empty and not value:
        raise RecordError(EMPTY, f"field '{name}' is empty")
    return value


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise RecordError(INVALID, f"field '{name}' must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RecordError(INVALID, f"field '{name}' must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise RecordError(NOT_FINITE, f"field '{name}' is {value!r}")
    if abs(number) > MAX_ABS:
        raise RecordError(OUT_OF_RANGE, f"field '{name}' is {value!r}, beyond +-{MAX_ABS:g}")
    return number


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and math.isnan(value):
            raise RecordError(NOT_FINITE, f"field '{name}' is NaN")
        if value in (0, 1):
            return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "good"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "bad"):
        return False
    raise RecordError(INVALID, f"field '{name}' must be true/false, got {value!r}")


def _common(obj: Mapping[str, Any]) -> dict[str, Any]:
    weight = 1.0 if obj.get("weight") is None else _number(obj["weight"], "weight")
    if weight < 0:
        raise RecordError(INVALID, f"field 'weight' must be >= 0, got {weight}")
    annotator = obj.get("annotator")
    timestamp = obj.get("timestamp")
    return {"annotator": None if annotator is None else str(annotator),
            "timestamp": None if timestamp is None else str(timestamp), "weight": weight}


def _scale(value: Any) -> tuple[float, float]:
    if isinstance(value, str):
        value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise RecordError(INVALID, f"field 'scale' must be [low, high], got {value!r}")
    low, high = _number(value[0], "scale"), _number(value[1], "scale")
    if not low < high:
        raise RecordError(INVALID, f"field 'scale' must have low < high, got {value!r}")
    return low, high


def record_from_dict(obj: Mapping[str, Any], default_scale: tuple[float, float] | None = None) -> FeedbackRecord:
    """Build and check one record from a mapping in the rlhfkit JSONL schema.

    ``default_scale`` is used for ratings that do not declare their own ``scale``.
    Raises :class:`RecordError` naming the reason and the field.
    """
    kind = obj.get("kind")
    if kind is None:
        raise RecordError(MISSING, "field 'kind' is missing")
    prompt = _text(obj, "prompt", allow_empty=True)
    common = _common(obj)
    if kind == "pairwise":
        chosen, rejected = _text(obj, "chosen"), _text(obj, "rejected")
        if chosen == rejected:
            raise RecordError(IDENTICAL, "chosen and rejected are the same text")
        margin = None if obj.get("margin") is None else _number(obj["margin"], "margin")
        tie = False if obj.get("tie") is None else _flag(obj["tie"], "tie")
        return Comparison(prompt, chosen, rejected, margin=margin, tie=tie, **common)
    if kind == "ranking":
        responses, ranks = _require(obj, "responses"), _require(obj, "ranks")
        if not isinstance(responses, (list, tuple)) or not isinstance(ranks, (list, tuple)):
            raise RecordError(INVALID, "fields 'responses' and 'ranks' must be lists")
        if len(responses) != len(ranks):
            raise RecordError(INVALID, f"{len(responses)} responses but {len(ranks)} ranks")
        if len(responses) < 2:
            raise RecordError(INVALID, "a ranking needs at least 2 responses")
        texts = tuple(_text({"responses": r}, "responses") for r in responses)
        numbers = [_number(r, "ranks") for r in ranks]
        if any(n != int(n) or n < 1 for n in numbers):
            raise RecordError(INVALID, f"field 'ranks' must hold positive integers, got {list(ranks)!r}")
        if len(set(texts)) != len(texts):
            raise RecordError(DUPLICATE_RESPONSES, "the same response appears twice")
        return Ranking(prompt, texts, tuple(int(n) for n in numbers), **common)
    if kind == "rating":
        response = _text(obj, "response")
        rating = _number(_require(obj, "rating"), "rating")
        raw_scale = obj.get("scale")
        if raw_scale is None:
            if default_scale is None:
                raise RecordError(MISSING, "field 'scale' is missing (declare it or pass a default scale)")
            scale = _scale(default_scale)
        else:
            scale = _scale(raw_scale)
        if not scale[0] <= rating <= scale[1]:
            raise RecordError(OUT_OF_SCALE, f"rating {rating:g} outside [{scale[0]:g}, {scale[1]:g}]")
        return Rating(prompt, response, rating, scale, **common)
    if kind == "label":
        return Label(prompt, _text(obj, "response"), _flag(_require(obj, "label"), "label"), **common)
    raise RecordError(UNKNOWN_KIND, f"kind {kind!r} is not one of {list(KINDS)}")


def record_to_dict(record: FeedbackRecord) -> dict[str, Any]:
    """The JSONL form of ``record`` (``kind`` first, tuples as lists, a conversation as its message list,
    so the readers give a chat model its template again instead of the plain ``role: content`` text)."""
    data = asdict(record)
    for key, value in data.items():
        if isinstance(value, Conversation):
            data[key] = [dict(message) for message in value.messages]
        elif isinstance(value, tuple):
            data[key] = [[dict(m) for m in v.messages] if isinstance(v, Conversation) else v for v in value]
    return {"kind": record.kind, **data}


def parse_records(rows: Iterable[tuple[int, Mapping[str, Any] | RecordError]], source: str = "<records>",
                  default_scale: tuple[float, float] | None = None
                  ) -> tuple[list[FeedbackRecord], list[int], ValidationReport]:
    """Validate ``(record_number, mapping)`` pairs; return valid records, their numbers, a report.

    A row may already be a :class:`RecordError` (a reader could not decode it); it is counted too.
    """
    report = ValidationReport(source=source)
    records: list[FeedbackRecord] = []
    numbers: list[int] = []
    for number, row in rows:
        report.total += 1
        try:
            if isinstance(row, RecordError):
                raise row
            record = record_from_dict(row, default_scale=default_scale)
        except RecordError as exc:
            report.add(exc.reason, number, exc.detail)
            continue
        records.append(record)
        numbers.append(number)
        if any(not text.strip() for text in responses_of(record)):
            report.notes[WHITESPACE_KEPT] = report.notes.get(WHITESPACE_KEPT, 0) + 1
    report.valid = len(records)
    return records, numbers, report


def require_valid(records: list[FeedbackRecord], report: ValidationReport) -> list[FeedbackRecord]:
    """Return ``records`` or raise :class:`NoValidRecordsError` with the report when empty."""
    if not records:
        raise NoValidRecordsError("no valid feedback records remain\n" + report.summary())
    return records


def responses_of(record: FeedbackRecord) -> tuple[str, ...]:
    """Every response text a record scores, in the order the reward trainer feeds them."""
    if isinstance(record, Comparison):
        return (record.chosen, record.rejected)
    if isinstance(record, Ranking):
        return record.responses
    return (record.response,)
