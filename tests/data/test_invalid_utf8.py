"""Invalid UTF-8 in a data file names the file and the line; the valid records of the file still load."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhfkit.data.preference_io import read_feedback
from rlhfkit.data.sft import SFTDataError, read_sft_records


def test_a_line_that_is_not_utf8_is_reported_by_number_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(b'{"prompt": "a", "chosen": "good", "rejected": "bad"}\n'
                     b'{"prompt": "a", "chosen": "b\xff", "rejected": "c"}\n')
    result = read_feedback(path)
    assert len(result.records) == 1
    text = " ".join(result.report.lines())
    assert "UTF-8" in text and "2" in text


@pytest.mark.parametrize("suffix,content", [(".csv", b"prompt,chosen,rejected\na,b\xff,c\n"),
                                            (".json", b'[{"prompt": "a", "chosen": "b\xff", "rejected": "c"}]')])
def test_whole_file_formats_name_the_file(tmp_path: Path, suffix: str, content: bytes) -> None:
    path = tmp_path / f"prefs{suffix}"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"{path.name}: not valid UTF-8"):
        read_feedback(path)


def test_sft_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "sft.jsonl"
    path.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": "b\xff"}\n')
    with pytest.raises(SFTDataError, match=r"sft.jsonl line 2: not valid UTF-8"):
        read_sft_records(path)
