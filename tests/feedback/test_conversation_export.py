"""A campaign on a conversational prompt exports its turns, so reward and DPO data keep the chat template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rlhfkit.data.preference_io import read_feedback
from rlhfkit.models.chat import Conversation

TURNS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
TEXT = "".join(f"{t['role']}: {t['content']}\n" for t in TURNS)


def _answered_campaign(api: Any, meta: dict[str, Any] | None) -> int:
    samples = [{"prompt": TEXT, "response": text, **({"meta": meta} if meta else {})} for text in ("Blue.", "Green.")]
    c = api.campaign(name=f"chat-{bool(meta)}", kind="pairwise", gold_rate=0.0, redundancy=1, samples=samples)
    _, token = api.invite(f"ann-{bool(meta)}", [c["id"]])
    view = api.next(c["id"], token).json()
    assert view["prompt"] == TEXT
    assert api.submit(view["assignment_id"], token, {"choice": "left"}).status_code == 201
    return c["id"]


def _export(api: Any, cid: int, aggregate: str) -> list[dict[str, Any]]:
    text = api.client.get(f"/api/v1/campaigns/{cid}/export?aggregate={aggregate}", headers=api.admin()).text
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("aggregate", ["none", "majority", "reliability"])
def test_exported_records_carry_the_turns_and_read_back_as_a_conversation(api: Any, aggregate: str,
                                                                           tmp_path: Path) -> None:
    cid = _answered_campaign(api, {"prompt_messages": TURNS})
    (record,) = _export(api, cid, aggregate)
    assert record["prompt"] == TURNS
    path = tmp_path / "feedback.jsonl"
    path.write_text(json.dumps(record) + "\n")
    (read,) = read_feedback(path).records
    assert isinstance(read.prompt, Conversation)
    assert [dict(m) for m in read.prompt.messages] == TURNS
    assert str(read.prompt) == TEXT


def test_a_plain_prompt_still_exports_as_text(api: Any) -> None:
    cid = _answered_campaign(api, None)
    (record,) = _export(api, cid, "none")
    assert record["prompt"] == TEXT
