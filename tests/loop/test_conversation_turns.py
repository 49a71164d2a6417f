"""Conversational prompts keep their turns through the loop: candidates file, campaign samples, HTML report."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rlhfkit.eval.report import build_report
from rlhfkit.loop.candidates import Candidate, prompt_messages, read_candidates, write_candidates
from rlhfkit.loop.collect import campaign_samples
from rlhfkit.models.chat import Conversation
from tests.eval.test_report import make_run_dir

TURNS = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Review <b>this</b>\x00 film:"}]
CHAT = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Review <b>this</b>\nfilm:"}]


def test_candidates_keep_turns_and_campaign_samples_carry_them(tmp_path: Path) -> None:
    prompt = Conversation.prompt(TURNS)
    candidates = [Candidate(0, 0, prompt, "Great.", True, prompt_messages(prompt)),
                  Candidate(1, 1, "plain prompt", "Fine.", True, prompt_messages("plain prompt"))]
    path = tmp_path / "candidates.jsonl"
    write_candidates(path, candidates)
    back = read_candidates(path)
    assert back[0].prompt == "system: Be kind.\nuser: Review <b>this</b>\x00 film:\n"
    assert back[0].prompt_messages == TURNS and back[1].prompt_messages is None
    legacy = tmp_path / "legacy.jsonl"
    legacy.write_text(json.dumps({"index": 0, "prompt_index": 0, "prompt": "p", "response": "r", "finished": True}) + "\n")
    assert read_candidates(legacy)[0].prompt_messages is None, "files written before the field still load"
    samples = campaign_samples(back, [0, 1], 2, None)
    assert samples[0]["meta"] == {"candidate": 0, "prompt_messages": [
        {"role": "system", "content": "Be kind."}, {"role": "user", "content": "Review <b>this</b>\ufffd film:"}]}
    assert samples[1]["meta"] == {"candidate": 1}


def test_report_shows_a_conversation_turn_by_turn(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path)
    for folder in sorted((run / "rounds").iterdir()):
        path = folder / "samples_after.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        rows[1]["prompt"] = str(Conversation.prompt(CHAT))
        rows[1]["prompt_messages"] = CHAT
        rows[2]["prompt_messages"] = [{"role": "user"}]  # malformed: the plain text shows
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    html = build_report(run).read_text(encoding="utf-8")
    assert re.findall(r'<span class="turn"><b>(\w+):</b> ([^<]*)', html) == [
        ("system", "Be kind."), ("user", "Review &lt;b&gt;this&lt;/b&gt;\nfilm:")]
    assert "<td class=\"text\"><div>Review 2:</div>" in html
