"""Small data files of the architecture matrix, conversational where the trainers accept it."""

from __future__ import annotations

import json
from pathlib import Path

USER = [{"role": "user", "content": "Why is the sky blue?"}]
SYSTEM_USER = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Tell me about the food."}]


def answer(text: str) -> list[dict[str, str]]:
    """One assistant turn."""
    return [{"role": "assistant", "content": text}]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """One JSON object per line."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def prompts_file(directory: Path) -> Path:
    """RL prompts: two conversations and one plain string."""
    return write_jsonl(directory / "prompts.jsonl", [{"messages": USER}, {"messages": SYSTEM_USER},
                                                     {"prompt": "The movie was"}])


def sft_file(directory: Path) -> Path:
    """SFT records: conversations and a prompt/completion pair."""
    return write_jsonl(directory / "sft.jsonl", [
        {"messages": USER + answer("The sun is bright.")},
        {"messages": SYSTEM_USER + answer("The food was great.")},
        {"prompt": "The movie was", "completion": " great and kind."},
        {"messages": USER + answer("It is blue.")},
    ])


def preference_file(directory: Path) -> Path:
    """TRL conversational preference pairs (explicit and implicit prompt) and a plain pair."""
    return write_jsonl(directory / "prefs.jsonl", [
        {"prompt": USER, "chosen": answer("The sun is bright."), "rejected": answer("It broke.")},
        {"chosen": SYSTEM_USER + answer("Warm and kind."), "rejected": SYSTEM_USER + answer("Terrible.")},
        {"prompt": USER, "chosen": answer("Blue light."), "rejected": answer("No.")},
        {"prompt": "The movie was", "chosen": " great.", "rejected": " bad."},
    ])
