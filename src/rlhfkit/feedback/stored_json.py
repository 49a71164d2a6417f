"""Read back JSON that was stored before today's checks existed (sample ``meta`` of older releases).

New input is refused deeper than :data:`~rlhfkit.feedback.rules.MAX_META_DEPTH` levels, but a row written
by an older release may be nested deeper, which the response encoder cannot serialize (a 500 for the
whole list). Such a value is cut at the limit and the cut part replaced by a marker saying why.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from rlhfkit.feedback.rules import MAX_META_DEPTH

TRUNCATED_KEY = "_rlhfkit_truncated"
TRUNCATED = {TRUNCATED_KEY: f"nested deeper than {MAX_META_DEPTH} levels (stored by an older release); "
                            "read the database row for the full value"}


def clip_depth(value: Any, max_depth: int = MAX_META_DEPTH, depth: int = 0) -> Any:
    """``value`` with every list/dict more than ``max_depth`` levels down replaced by :data:`TRUNCATED`."""
    if isinstance(value, (dict, list)) and depth >= max_depth:
        return dict(TRUNCATED)
    if isinstance(value, dict):
        return {key: clip_depth(item, max_depth, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [clip_depth(item, max_depth, depth + 1) for item in value]
    return value


def load_stored(text: Optional[str], max_depth: int = MAX_META_DEPTH) -> Any:
    """Parse a stored JSON text (None stays None), clipped to ``max_depth``; too deep even to parse: the marker."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except RecursionError:
        return dict(TRUNCATED)
    return clip_depth(value, max_depth)
