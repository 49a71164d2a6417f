"""Edits as training data: a rewrite becomes a preference pair (rewrite over original) and an SFT example.

The rewrite takes the original's leading whitespace (:func:`with_lead`): edit boxes trim it, and after a
prompt " The" and "The" are different tokens, so untouched every rewrite would carry a mark of its own that
a reward model learns in place of the content (held-out accuracy 1.00, chance on the policy's answers).

Pure functions over the annotation rows of :func:`rlhfkit.feedback.reports.annotation_rows` (or the
``GET /campaigns/{cid}/annotations`` JSON), so the exports, aggregation and the loop share one
definition without touching the database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

from rlhfkit.data.records import MISSING, RecordError, record_from_dict, record_to_dict

EDIT_FORMS = ("pairs", "sft")


def with_lead(original: str, rewrite: str) -> str:
    """The rewrite with the original's leading whitespace, so it continues the prompt as the original does."""
    lead = original[: len(original) - len(original.lstrip())]
    return lead + rewrite.lstrip()


def edit_text(row: Mapping[str, Any]) -> Optional[str]:
    """The rewritten text of an edit row with the original's leading whitespace (None for skips and "no change
    needed")."""
    resolved = row.get("resolved") or {}
    if row.get("kind") != "edit" or row.get("is_gold") or resolved.get("skip") or resolved.get("unchanged"):
        return None
    text = resolved.get("text")
    if not isinstance(text, str):
        raise RecordError(MISSING, f"edit annotation {row.get('annotation_id')} has no text")
    return with_lead(row["samples"][0]["text"], text)


def edit_pair(row: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """An edit as a pairwise record: the rewrite chosen over the original it replaced (None when there is
    no rewrite); one person's edit is not a vote, so it keeps its annotator and weight 1."""
    text = edit_text(row)
    if text is None:
        return None
    return {"kind": "pairwise", "prompt": row["prompt"], "chosen": text, "rejected": row["samples"][0]["text"],
            "margin": None, "tie": False, "annotator": row["annotator"], "timestamp": row["submitted_at"], "weight": 1.0}


def edit_sft(row: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """An edit as an SFT example ``{"prompt", "completion": rewrite}`` (what ``rlhfkit sft --data`` reads)."""
    text = edit_text(row)
    return None if text is None else {"prompt": row["prompt"], "completion": text}


def edit_records(rows: Sequence[Mapping[str, Any]], *, form: str = "pairs",
                 skipped: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """The edits among annotation ``rows`` as pairwise records (``form="pairs"``, checked by the record rules)
    or SFT examples (``form="sft"``); a row that makes no valid record is described in ``skipped``."""
    if form not in EDIT_FORMS:
        raise ValueError(f"edits: unknown form {form!r}; use {' or '.join(EDIT_FORMS)}")
    skipped = [] if skipped is None else skipped
    out = []
    for row in rows:
        try:
            record = edit_pair(row) if form == "pairs" else edit_sft(row)
            if record is not None and form == "pairs":
                record = record_to_dict(record_from_dict(record))
        except RecordError as exc:
            skipped.append(f"annotation {row.get('annotation_id')}: {exc}")
            continue
        if record is not None:
            out.append(record)
    return out
