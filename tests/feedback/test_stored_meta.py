"""Sample meta stored by an older release, nested deeper than today's limit, still lists (cut, with a marker)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text

from rlhfkit.feedback.rules import MAX_META_DEPTH, check_json
from rlhfkit.feedback.stored_json import TRUNCATED, TRUNCATED_KEY, clip_depth, load_stored


def _nested(depth: int) -> str:
    """JSON text of ``depth`` nested objects around the number 1."""
    return '{"a":' * depth + "1" + "}" * depth


def test_clip_depth_keeps_allowed_values_and_cuts_deeper_ones() -> None:
    allowed = load_stored(_nested(MAX_META_DEPTH))
    check_json(allowed, "meta")  # the deepest value new input may have is returned unchanged
    assert allowed == json.loads(_nested(MAX_META_DEPTH))
    assert clip_depth({"x": [1, {"y": [2]}], "z": 3}, max_depth=2) == {"x": [1, TRUNCATED], "z": 3}
    assert clip_depth([[["deep"]]], max_depth=1) == [TRUNCATED]
    assert load_stored(None) is None
    assert load_stored(_nested(100_000)) == TRUNCATED  # too deep even for the JSON parser


def test_listing_samples_with_too_deep_stored_meta_answers_200(api: Any) -> None:
    campaign = api.campaign()
    with api.store.engine.begin() as conn:  # as an older release (before the depth check) wrote it
        ids = [r[0] for r in conn.execute(text("SELECT id FROM samples WHERE campaign_id = :c ORDER BY id"),
                                          {"c": campaign["id"]})]
        conn.execute(text("UPDATE samples SET meta = :m WHERE id = :i"), {"m": _nested(300), "i": ids[0]})
        conn.execute(text("UPDATE samples SET meta = :m WHERE id = :i"), {"m": '{"note": "fine"}', "i": ids[1]})
    resp = api.client.get(f"/api/v1/campaigns/{campaign['id']}/samples", headers=api.admin())
    assert resp.status_code == 200, resp.text
    by_id = {s["id"]: s["meta"] for s in resp.json()}
    meta = by_id[ids[0]]
    for _ in range(MAX_META_DEPTH):
        meta = meta["a"]
    assert TRUNCATED_KEY in meta and "older release" in meta[TRUNCATED_KEY]
    assert by_id[ids[1]] == {"note": "fine"}
