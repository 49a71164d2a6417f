"""FineGrainedRLHF qa-feedback corrections as training records: the human edit over the answer it edits.

Each qa-feedback row holds one annotator's ``feedback['corrected-prediction']``, a rewrite of
``prediction 1``: the row's error spans (``feedback['errors']`` start/end) index that prediction, and
on the dev set all 1,373 of them fall on its word boundaries. A usable correction becomes a
:class:`Comparison` (corrected over original, the question as prompt, as the preference reader writes
it) and an SFT example (question -> corrected answer). Corrections that are empty, or equal to the
original up to whitespace, are skipped and counted; the correction's outer whitespace (an artifact
of the annotation tool) is stripped so that it cannot serve as a cue.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.data.preference_io import is_fine_grained_row, iter_rows
from rlhfkit.data.records import INVALID, Comparison, RecordError
from rlhfkit.data.sft import SFTRecord

EDITED_PREDICTION = "prediction 1"
EDIT_ANNOTATOR = "fine-grained-rlhf-correction"
SKIP_NO_CORRECTION = "no corrected-prediction"
SKIP_EMPTY = "empty correction"
SKIP_IDENTICAL = "correction identical to the prediction"


@dataclass
class EditData:
    """Edit pairs and SFT examples of the chosen rows, their row numbers, and skipped rows per reason."""

    comparisons: list[Comparison] = field(default_factory=list)
    sft: list[SFTRecord] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """One line: how many edits were kept and why the others were skipped."""
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.skipped.items())) or "none"
        return f"{len(self.comparisons)} edit pair(s) kept; skipped {sum(self.skipped.values())} ({reasons})"


def correction_of(row: Mapping[str, Any]) -> tuple[str, str, str] | str:
    """``(prompt, corrected, original)`` of one qa-feedback row, or the reason it has no usable edit.

    Raises :class:`RecordError` when the fields an edit needs are malformed (not text).
    """
    feedback = row.get("feedback")
    corrected = feedback.get("corrected-prediction") if isinstance(feedback, Mapping) else None
    if corrected is None:
        return SKIP_NO_CORRECTION
    original, question = row.get(EDITED_PREDICTION), row.get("question")
    for name, value in (("feedback.corrected-prediction", corrected), (EDITED_PREDICTION, original),
                        ("question", question)):
        if not isinstance(value, str):
            raise RecordError(INVALID, f"field '{name}' must be text, got {type(value).__name__}")
    corrected = corrected.strip()
    if not corrected:
        return SKIP_EMPTY
    if corrected.split() == original.split():
        return SKIP_IDENTICAL
    return f"{question}\n", corrected, original


def read_fine_grained_edits(spec: str | Path, questions: Collection[int] | None = None,
                            weight: float = 1.0) -> EditData:
    """The corrections of a qa-feedback file (rows numbered from 1, as :func:`read_feedback` numbers them).

    Only rows whose number is in ``questions`` are read when it is given, so that a caller can keep the
    edits of its evaluation questions out of training; ``weight`` is each edit pair's record weight.
    """
    if weight < 0:
        raise ValueError(f"edit pair weight must be >= 0, got {weight}")
    wanted = None if questions is None else set(questions)
    out = EditData()
    for number, row in iter_rows(spec):
        if wanted is not None and number not in wanted:
            continue
        if isinstance(row, RecordError) or not is_fine_grained_row(row):
            raise ValueError(f"{spec}: record {number} is not a FineGrainedRLHF qa-feedback row "
                             "(question, prediction 1..4, preference, feedback)")
        try:
            edit = correction_of(row)
        except RecordError as exc:
            raise ValueError(f"{spec}: record {number}: {exc}") from None
        if isinstance(edit, str):
            out.skipped[edit] += 1
            continue
        prompt, corrected, original = edit
        out.comparisons.append(Comparison(prompt=prompt, chosen=corrected, rejected=original,
                                          annotator=EDIT_ANNOTATOR, weight=weight))
        out.sft.append(SFTRecord(where=f"{spec}:{number}", prompt=prompt, completion=corrected))
        out.numbers.append(number)
    return out
