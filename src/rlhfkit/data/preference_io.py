"""Read and write feedback records: rlhfkit JSONL/CSV, HF datasets on disk, and TRL's formats.

TRL preference data loads unchanged: explicit ``prompt``/``chosen``/``rejected``; implicit prompt
(``chosen``/``rejected`` only, the prompt is their shared prefix, as in Anthropic HH); and
conversational rows where those fields are lists of ``{"role", "content"}`` messages. TRL's
unpaired format (``prompt``/``completion``/``label``) becomes a :class:`Label`. A FineGrainedRLHF
qa-feedback row (``question``, ``prediction 1..4``, six ``preference`` votes) becomes one
:class:`Comparison` per strict preference, all numbered by the row. Text files may be compressed
(``.gz``, ``.bz2``, ``.xz``, and ``.zst``/``.lz4`` when ``zstandard``/``lz4`` are installed), as
``datasets`` reads them.
Conversations become plain text, one ``role: content`` line per message, the prompt ending with a
newline so that ``prompt + response`` reads as the whole dialogue; the texts are
:class:`~rlhfkit.models.chat.Conversation` strings that keep their messages, so DPO and reward models
render them with the model's chat template when its tokenizer has one.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import importlib
import io
import json
import lzma
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rlhfkit.data.records import (INVALID, MISSING, FeedbackRecord, RecordError, ValidationReport,
                                  parse_records, record_to_dict)
from rlhfkit.models.chat import Conversation

Row = Mapping[str, Any]
TEXT_FIELDS = ("prompt", "chosen", "rejected", "response", "completion")
JSON_CELLS = ("responses", "ranks", "scale", "prompt", "chosen", "rejected", "completion", "messages")
COMPRESSIONS = (".gz", ".gzip", ".bz2", ".xz", ".lzma", ".zst", ".zstd", ".lz4")
TEXT_FORMATS = (".jsonl", ".ndjson", ".json", ".csv")
FINE_GRAINED_PAIRS = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))


@dataclass
class FeedbackData:
    """Valid records of one or more sources, each with its source record number, plus the report."""

    records: list[FeedbackRecord]
    numbers: list[int]
    report: ValidationReport


def is_conversation(value: Any) -> bool:
    """True for a list of ``{"role", "content"}`` messages (TRL's conversational format)."""
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(m, Mapping) and "role" in m and "content" in m for m in value)


def render_messages(messages: Sequence[Mapping[str, Any]]) -> str:
    """Plain-text rendering of a conversation: ``role: content`` per message, joined by newlines."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def shared_text_prefix(first: str, second: str) -> str:
    """The longest common prefix of two texts, cut back to a whitespace boundary.

    Cutting at whitespace keeps a word that only starts alike (``"Paris"``/``"Pari"``) whole in both
    responses; the prefix keeps its trailing space, as TRL's ``extract_prompt`` does.
    """
    limit = min(len(first), len(second))
    index = 0
    while index < limit and first[index] == second[index]:
        index += 1
    if index == limit and len(first) == len(second):
        return first
    while index > 0 and not first[index - 1].isspace():
        index -= 1
    return first[:index]


def _split_implicit(chosen: Any, rejected: Any) -> tuple[Any, Any, Any]:
    if chosen == rejected:
        return "", chosen, rejected
    if is_conversation(chosen) and is_conversation(rejected):
        shared = 0
        while (shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]):
            shared += 1
        return list(chosen[:shared]), list(chosen[shared:]), list(rejected[shared:])
    if isinstance(chosen, str) and isinstance(rejected, str):
        prefix = shared_text_prefix(chosen, rejected)
        return prefix, chosen[len(prefix):], rejected[len(prefix):]
    raise RecordError(INVALID, "fields 'chosen' and 'rejected' must both be texts or both be message lists")


def _as_prompt(value: Any) -> Any:
    if is_conversation(value):
        return Conversation(value, render_messages(value) + "\n")
    return value


def _as_response(value: Any) -> Any:
    return Conversation(value, render_messages(value)) if is_conversation(value) else value


def normalize_row(row: Row) -> dict[str, Any]:
    """Map a row in any supported format onto the rlhfkit schema (a ``kind`` field and texts).

    Raises :class:`RecordError` when no format matches.
    """
    data = {k: v for k, v in row.items() if v is not None}
    kind = data.get("kind")
    if kind is None:
        if "chosen" in data and "rejected" in data:
            kind = "pairwise"
            if "prompt" not in data:
                data["prompt"], data["chosen"], data["rejected"] = _split_implicit(data["chosen"], data["rejected"])
        elif "responses" in data and "ranks" in data:
            kind = "ranking"
        elif "rating" in data:
            kind = "rating"
        elif "label" in data:
            kind = "label"
        elif "messages" in data:
            raise RecordError(MISSING, "a 'messages' row needs 'chosen'/'rejected', 'rating' or 'label'")
        else:
            raise RecordError(MISSING, "cannot tell the record kind: give 'kind', or TRL fields "
                                       "prompt/chosen/rejected, or responses/ranks, rating, label")
        data["kind"] = kind
    if "response" not in data and "completion" in data:
        data["response"] = data.pop("completion")
    if "prompt" not in data and "messages" in data:
        data["prompt"] = data.pop("messages")
    if "prompt" in data:
        data["prompt"] = _as_prompt(data["prompt"])
    for name in ("chosen", "rejected", "response"):
        if name in data:
            data[name] = _as_response(data[name])
    if isinstance(data.get("responses"), (list, tuple)):
        data["responses"] = [_as_response(r) for r in data["responses"]]
    return data


def is_fine_grained_row(row: Row) -> bool:
    """True for a FineGrainedRLHF qa-feedback row: ``question``, ``prediction 1``.. and ``preference``."""
    return "question" in row and "preference" in row and "prediction 1" in row and "kind" not in row


def fine_grained_pairs(row: Row) -> list[dict[str, Any]] | RecordError:
    """The strict preferences of a FineGrainedRLHF row as pairwise rows (votes of 0, no preference, are left out).

    Votes follow the pairs 1-2, 1-3, 1-4, 2-3, 2-4, 3-4: 1 prefers the first, 2 the second. The
    prompt is the question and a newline, so that ``prompt + response`` reads as question and answer.
    """
    votes = row["preference"]
    if not isinstance(votes, (list, tuple)) or len(votes) != len(FINE_GRAINED_PAIRS):
        return RecordError(INVALID, f"field 'preference' must hold {len(FINE_GRAINED_PAIRS)} votes, got {votes!r}")
    question = row["question"]
    prompt = f"{question}\n" if isinstance(question, str) else question
    pairs = []
    for (first, second), vote in zip(FINE_GRAINED_PAIRS, votes):
        if vote not in (1, 2):
            continue
        better, worse = (first, second) if vote == 1 else (second, first)
        pairs.append({"kind": "pairwise", "prompt": prompt, "chosen": row.get(f"prediction {better}"),
                      "rejected": row.get(f"prediction {worse}")})
    return pairs


def _normalized(rows: Iterable[tuple[int, Row | RecordError]]) -> Iterator[tuple[int, Row | RecordError]]:
    for number, row in rows:
        if isinstance(row, RecordError):
            yield number, row
            continue
        expanded = fine_grained_pairs(row) if is_fine_grained_row(row) else [row]
        if isinstance(expanded, RecordError):
            yield number, expanded
            continue
        for item in expanded:
            try:
                yield number, normalize_row(item)
            except RecordError as exc:
                yield number, exc


def compression_of(path: Path) -> str | None:
    """The compression suffix of ``path`` (``.gz``, ``.bz2``, ...), or None for a plain file."""
    suffix = path.suffix.lower()
    return suffix if suffix in COMPRESSIONS else None


def format_of(path: Path) -> str:
    """The data format suffix of ``path``, looking through a compression suffix (``a.jsonl.gz`` -> ``.jsonl``)."""
    inner = path.with_suffix("") if compression_of(path) else path
    return inner.suffix.lower()


def open_binary(path: Path) -> IO[bytes]:
    """Open ``path`` for reading bytes, decompressing by its suffix (zstd and lz4 need their packages)."""
    compression = compression_of(path)
    if compression is None:
        return open(path, "rb")
    if compression in (".gz", ".gzip"):
        return gzip.open(path, "rb")
    if compression == ".bz2":
        return bz2.open(path, "rb")
    if compression in (".xz", ".lzma"):
        return lzma.open(path, "rb")
    package, module_name = ("zstandard", "zstandard") if compression in (".zst", ".zstd") else ("lz4", "lz4.frame")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ValueError(f"{path}: reading {compression} files needs the '{package}' package "
                         f"(pip install {package})") from None
    return module.open(path, "rb")


def read_text(path: Path) -> str:
    """The whole (decompressed) file as UTF-8 text; invalid UTF-8 is an error naming the file and the byte."""
    with open_binary(path) as handle:
        data = handle.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid UTF-8 (byte {exc.start}); save the file as UTF-8") from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, Row | RecordError]]:
    """``(line_number, object)`` for each non-blank line; lines that are not UTF-8 or not JSON become errors."""
    with open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, RecordError(INVALID, f"line is not valid UTF-8 (byte {exc.start} of the line)")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, RecordError(INVALID, f"line is not valid JSON ({exc.msg})")
                continue
            if not isinstance(obj, dict):
                yield number, RecordError(INVALID, "line is not a JSON object")
                continue
            yield number, obj


def iter_json(path: Path) -> Iterator[tuple[int, Row | RecordError]]:
    """Records of a ``.json`` file holding one array of objects (record numbers from 1)."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON array of records")
    for number, obj in enumerate(data, start=1):
        yield number, obj if isinstance(obj, dict) else RecordError(INVALID, "element is not a JSON object")


def _csv_cell(name: str, value: str) -> Any:
    if value == "":
        return None
    stripped = value.strip()
    if name in JSON_CELLS and stripped[:1] in "[{":
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            if name in ("responses", "ranks", "messages"):
                return RecordError(INVALID, f"field '{name}' is not valid JSON")
    return value


def iter_csv(path: Path) -> Iterator[tuple[int, Row | RecordError]]:
    """CSV rows (header = field names; lists as JSON cells); record number = data row from 1."""
    for number, row in enumerate(csv.DictReader(io.StringIO(read_text(path), newline="")), start=1):
        cells = {k: _csv_cell(k, v or "") for k, v in row.items() if k is not None}
        bad = next((v for v in cells.values() if isinstance(v, RecordError)), None)
        yield number, bad if bad is not None else cells


def iter_hf_dataset(path: Path, split: str | None = None) -> Iterator[tuple[int, Row | RecordError]]:
    """Rows of a dataset saved with ``save_to_disk`` (a ``DatasetDict`` needs ``split``, default train)."""
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded.keys())
        chosen = split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
        if chosen not in loaded:
            raise ValueError(f"{path}: choose a split with {path}:<split>; available: {names}")
        loaded = loaded[chosen]
    for number, row in enumerate(loaded, start=1):
        yield number, row


def iter_parquet(path: Path) -> Iterator[tuple[int, Row | RecordError]]:
    """Rows of a Parquet file (as written by ``datasets`` or pandas)."""
    import datasets

    for number, row in enumerate(datasets.Dataset.from_parquet(str(path)), start=1):
        yield number, row


def _split_spec(spec: str | Path) -> tuple[Path, str | None]:
    text = str(spec)
    path = Path(text)
    if not path.exists() and ":" in text:
        base, _, split = text.rpartition(":")
        if Path(base).is_dir():
            return Path(base), split
    return path, None


def iter_rows(spec: str | Path) -> Iterator[tuple[int, Row | RecordError]]:
    """Raw rows of one source, by extension: .jsonl, .json, .csv (each maybe compressed), .parquet, or a dataset dir."""
    path, split = _split_spec(spec)
    if not path.exists():
        raise FileNotFoundError(f"feedback data {spec} does not exist")
    if path.is_dir():
        return iter_hf_dataset(path, split)
    suffix = format_of(path)
    readers = {".jsonl": iter_jsonl, ".ndjson": iter_jsonl, ".json": iter_json, ".csv": iter_csv,
               ".parquet": iter_parquet}
    if suffix not in readers or (compression_of(path) and suffix not in TEXT_FORMATS):
        raise ValueError(f"{path}: unknown feedback format {''.join(path.suffixes[-2:]).lower()!r}; use .jsonl, "
                         ".json, .csv (plain or .gz/.bz2/.xz/.zst/.lz4), .parquet or a directory written by "
                         "datasets' save_to_disk")
    return readers[suffix](path)


def read_feedback(spec: str | Path, default_scale: tuple[float, float] | None = None) -> FeedbackData:
    """Read, normalize and validate one source; bad records are counted in the report, not raised."""
    records, numbers, report = parse_records(_normalized(iter_rows(spec)), source=str(spec),
                                             default_scale=default_scale)
    return FeedbackData(records, numbers, report)


def read_feedback_files(specs: Sequence[str | Path],
                        default_scale: tuple[float, float] | None = None) -> FeedbackData:
    """Read several sources into one :class:`FeedbackData` (the report merges all sources)."""
    if not specs:
        raise ValueError("no feedback data given")
    parts = [read_feedback(spec, default_scale) for spec in specs]
    report = parts[0].report
    for part in parts[1:]:
        report = report.merge(part.report)
    return FeedbackData([r for p in parts for r in p.records], [n for p in parts for n in p.numbers], report)


def records_from_rows(rows: Iterable[Row], source: str = "<rows>",
                      default_scale: tuple[float, float] | None = None) -> FeedbackData:
    """Validate in-memory rows in any supported format (record numbers count from 1)."""
    records, numbers, report = parse_records(_normalized(enumerate(rows, start=1)), source=source,
                                             default_scale=default_scale)
    return FeedbackData(records, numbers, report)


def write_jsonl(records: Iterable[FeedbackRecord], path: str | Path) -> Path:
    """Write records in the rlhfkit JSONL schema (one object a line, UTF-8, atomic replace)."""
    from rlhfkit.utils.checkpoint import atomic_write_text

    path = Path(path)
    atomic_write_text(path, "".join(json.dumps(record_to_dict(r), ensure_ascii=False) + "\n" for r in records))
    return path
