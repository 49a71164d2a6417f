"""``train-rm`` with critiques: encoded critiques appended to the other feedback records."""

from __future__ import annotations

from typing import Optional

from rlhfkit.critiques.base import CritiqueError
from rlhfkit.critiques.records import encode_files
from rlhfkit.data.preference_io import FeedbackData
from rlhfkit.data.records import ValidationReport


def with_critiques(data: Optional[FeedbackData], critiques: list[str], encoder: str, min_confidence: float,
                   seed: int = 0) -> FeedbackData:
    """``data`` plus the encoded ``critiques`` as weighted ratings (``data`` may be None: critiques only)."""
    if not critiques:
        if data is None:
            raise ValueError("no training data: pass --data FILE or --critiques FILE")
        return data
    from rlhfkit.utils.progress import console

    try:
        outcome = encode_files(critiques, encoder, min_confidence, seed)
    except CritiqueError as exc:
        raise ValueError(str(exc)) from exc
    if outcome.fit_line:
        console.print(outcome.fit_line)
    if data is None:
        return FeedbackData(outcome.records, outcome.numbers, outcome.report)
    report: ValidationReport = data.report.merge(outcome.report)
    return FeedbackData(data.records + outcome.records, data.numbers + outcome.numbers, report)
