"""Prompt sources for on-policy training, with a resumable, seeded data position."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rlhfkit.models.chat import ChatError, Conversation

DEFAULT_PROMPTS = (
    "Write a short review of a movie you liked:",
    "Describe the weather today in one sentence:",
    "Tell me about your favourite food:",
    "Explain why the sky is blue:",
    "Give one tip for learning a new language:",
    "Describe a quiet morning in the city:",
    "What makes a good friend?",
    "Summarise a day at the beach:",
)


class PromptError(ValueError):
    """A prompt file that cannot be read; the message names the file and line."""


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a ``.txt`` file (one per non-empty line) or ``.jsonl``: a string field ``prompt``, or a
    conversation (``messages``, or ``prompt`` as a list of ``{role, content}``) that the sampler renders
    with the policy's chat template (a :class:`~rlhfkit.models.chat.Conversation`)."""
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"prompt file {path} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix != ".jsonl":
        prompts = [line for line in lines if line.strip()]
    else:
        prompts = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PromptError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            prompts.append(_prompt_of(record, f"{path}:{number}"))
    if not prompts:
        raise PromptError(f"prompt file {path} holds no prompts")
    return prompts


def _prompt_of(record: object, where: str) -> str:
    """The prompt of one JSONL record: its string ``prompt`` or its conversation."""
    if not isinstance(record, dict):
        raise PromptError(f"{where}: expected an object with a string field 'prompt' or a list field 'messages'")
    value = record.get("messages", record.get("prompt"))
    if isinstance(value, str) and "messages" not in record:
        return value
    if not isinstance(value, list):
        raise PromptError(f"{where}: expected an object with a string field 'prompt' or a list field 'messages'")
    try:
        conversation = Conversation.prompt(value)
    except ChatError as exc:
        raise PromptError(f"{where}: {exc}") from None
    if conversation.messages[-1]["role"] == "assistant":
        raise PromptError(f"{where}: the conversation ends with an assistant turn; a prompt ends with the turn "
                          "the policy answers (user or system)")
    return conversation


class PromptStream:
    """Endless batches of prompts: a fresh seeded permutation each pass, position in the state.

    The order depends only on (seed, epoch), so (epoch, index) is all a checkpoint needs to
    resume at exactly the next unseen prompt.
    """

    def __init__(self, prompts: list[str], seed: int, shuffle: bool = True) -> None:
        if not prompts:
            raise PromptError("no prompts to train on")
        self.prompts = list(prompts)
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.index = 0

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.prompts)))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.prompts), generator=generator).tolist()

    def next_batch(self, size: int) -> list[str]:
        """The next ``size`` prompts, wrapping into a new pass when the current one runs out."""
        batch: list[str] = []
        order = self._order()
        while len(batch) < size:
            if self.index >= len(order):
                self.epoch += 1
                self.index = 0
                order = self._order()
            take = min(size - len(batch), len(order) - self.index)
            batch.extend(self.prompts[i] for i in order[self.index:self.index + take])
            self.index += take
        return batch

    def state_dict(self) -> dict[str, int]:
        """Data position, for checkpoints."""
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.epoch = int(state["epoch"])
        self.index = int(state["index"])
