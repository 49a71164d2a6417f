"""Compressed feedback files, whitespace-only responses, and FineGrainedRLHF's qa-feedback format."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path

import pytest

from rlhfkit.data.preference_io import read_feedback, read_feedback_files
from rlhfkit.data.records import EMPTY, IDENTICAL, WHITESPACE_KEPT, Comparison

SAMPLE = Path(__file__).parent / "fine_grained_rlhf" / "qa_feedback_dev_sample.json"
ROWS = [{"prompt": "Q: 2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": "Q: capital of France?", "chosen": "Paris", "rejected": "Lyon"}]


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.mark.parametrize("name, opener", [("data.jsonl.gz", gzip.open), ("data.jsonl.bz2", bz2.open),
                                          ("data.jsonl.xz", lzma.open), ("data.json.gz", gzip.open)])
def test_compressed_files_read_like_plain_ones(tmp_path, name, opener):
    path = tmp_path / name
    text = json.dumps(ROWS) if ".json." in name else _jsonl(ROWS)
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.write(text)
    data = read_feedback(path)
    assert data.report.valid == 2 and data.numbers == [1, 2]
    assert data.records[1] == Comparison("Q: capital of France?", "Paris", "Lyon")


def test_compressed_csv_and_a_clear_error_for_unknown_inner_formats(tmp_path):
    path = tmp_path / "data.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("prompt,chosen,rejected\np,good,bad\n")
    assert read_feedback(path).records == [Comparison("p", "good", "bad")]
    odd = tmp_path / "data.txt.gz"
    odd.write_bytes(gzip.compress(b"x"))
    with pytest.raises(ValueError, match="unknown feedback format '.txt.gz'"):
        read_feedback(odd)


def test_zstd_names_its_package_when_missing(tmp_path):
    path = tmp_path / "data.jsonl.zst"
    try:
        import zstandard
    except ImportError:
        path.write_bytes(b"\x28\xb5\x2f\xfd")
        with pytest.raises(ValueError, match="zstandard"):
            read_feedback(path)
        return
    path.write_bytes(zstandard.ZstdCompressor().compress(_jsonl(ROWS).encode()))
    assert read_feedback(path).report.valid == 2


def test_whitespace_only_responses_are_kept_and_counted(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(_jsonl([{"prompt": "Say nothing.", "chosen": " ", "rejected": "Something."},
                            {"prompt": "p", "chosen": "\n", "rejected": "a"},
                            {"prompt": "p", "chosen": "", "rejected": "a"},
                            {"prompt": "p", "chosen": " ", "rejected": " "},
                            {"kind": "label", "prompt": "p", "response": "  ", "label": False},
                            {"prompt": "p", "chosen": "a", "rejected": "b"}]))
    data = read_feedback(path)
    assert data.numbers == [1, 2, 5, 6] and data.records[0].chosen == " "
    assert data.report.notes == {WHITESPACE_KEPT: 3}
    assert data.report.problems == {EMPTY: [3], IDENTICAL: [4]}
    assert f"note: {WHITESPACE_KEPT}: 3 record(s)" in data.report.summary()


def test_fine_grained_rlhf_sample_becomes_its_strict_preferences():
    rows = json.loads(SAMPLE.read_text(encoding="utf-8"))
    data = read_feedback_files([SAMPLE])
    strict = sum(vote in (1, 2) for row in rows for vote in row["preference"])
    assert len(data.records) == strict == 41 and data.report.dropped == 0
    first = rows[0]
    expected = [(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]
    pairs = [(a, b) if vote == 1 else (b, a) for (a, b), vote in zip(expected, first["preference"]) if vote]
    got = [r for r, n in zip(data.records, data.numbers) if n == 1]
    assert [(r.chosen, r.rejected) for r in got] == [(first[f"prediction {a}"], first[f"prediction {b}"])
                                                      for a, b in pairs]
    assert all(r.prompt == first["question"] + "\n" for r in got)
    assert sorted(set(data.numbers)) == list(range(1, len(rows) + 1))


def test_fine_grained_rlhf_row_with_bad_votes_is_reported(tmp_path):
    path = tmp_path / "fg.json"
    row = {"question": "q", "prediction 1": "a", "prediction 2": "b", "prediction 3": "c", "prediction 4": "d"}
    path.write_text(json.dumps([{**row, "preference": [1, 2]}, {**row, "preference": [2, 0, 0, 0, 0, 0]}]))
    data = read_feedback(path)
    assert [(r.chosen, r.rejected) for r in data.records] == [("b", "a")]
    assert data.report.dropped == 1 and data.numbers == [2]
