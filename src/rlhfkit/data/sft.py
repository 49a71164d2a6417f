"""Supervised fine-tuning data: read records, tokenize with loss only on completions, pad batches.

Two record shapes are accepted, one JSON object per line of a JSONL file or one row of a Hugging
Face dataset saved with ``save_to_disk``:

* ``{"prompt": str, "completion": str}``: the text is ``prompt + completion`` exactly as given (put
  any separator, such as a space or newline, in the strings); the loss covers the completion
  tokens and an appended EOS token.
* ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}``: the conversation
  is rendered with the tokenizer's chat template (or :data:`DEFAULT_CHAT_TEMPLATE` when it has
  none) and the loss covers only the assistant turns, including the template's end-of-turn token.

Prompt and completion are tokenized separately and concatenated, so the completion starts on a
token boundary exactly as it would when the model continues the prompt at generation time.

Sequences longer than ``max_length`` keep their first ``max_length`` tokens (the truncated
count is reported). A prompt that leaves no room for a single completion token is an error
naming the record, unless ``skip_long_prompts`` is set: then the record is skipped and counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhfkit.models.chat import DEFAULT_CHAT_TEMPLATE, chat_template, render

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")


class SFTDataError(ValueError):
    """SFT data that cannot be used; the message names the file, the record and the field."""


class PromptTooLongError(SFTDataError):
    """A record whose prompt leaves no room for a single completion token within ``max_length``."""


@dataclass(frozen=True)
class SFTRecord:
    """One training example as read from disk; exactly one of ``messages`` or prompt/completion is set."""

    where: str
    prompt: str | None = None
    completion: str | None = None
    messages: tuple[dict[str, str], ...] | None = None


@dataclass(frozen=True)
class TokenizedExample:
    """Token ids of one example and its labels (the id where trained, ``IGNORE_INDEX`` elsewhere)."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def num_target_tokens(self) -> int:
        """Tokens that carry loss (the first token is never predicted, so it never counts)."""
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


@dataclass
class SFTDataset:
    """Tokenized examples plus what was dropped or shortened on the way."""

    examples: list[TokenizedExample]
    source: str
    skipped_long_prompts: list[str] = field(default_factory=list)

    @property
    def num_truncated(self) -> int:
        """How many examples lost tokens at the end to fit ``max_length``."""
        return sum(example.truncated for example in self.examples)

    def __len__(self) -> int:
        return len(self.examples)


def _iter_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path} line {number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SFTDataError(f"{where}: not valid UTF-8 (byte {exc.start} of the line); save the file as "
                                   "UTF-8") from None
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                raise SFTDataError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from None


def _iter_hf_dataset(path: Path, split: str) -> Iterator[tuple[str, Any]]:
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise SFTDataError(f"{path}: not a dataset written by datasets' save_to_disk ({exc})") from None
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise SFTDataError(f"{path}: dataset has no split {split!r}; splits: {sorted(dataset)}")
        dataset = dataset[split]
    for number, row in enumerate(dataset, start=1):
        yield f"{path} row {number}", row


def _text_field(obj: dict[str, Any], name: str, where: str) -> str:
    if name not in obj or obj[name] is None:
        present = ", ".join(sorted(obj)) or "nothing"
        raise SFTDataError(f"{where}: field {name!r} is missing (record has: {present})")
    if not isinstance(obj[name], str):
        raise SFTDataError(f"{where}: field {name!r} must be a string, got {type(obj[name]).__name__}")
    return obj[name]


def _parse_messages(value: Any, where: str) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise SFTDataError(f"{where}: field 'messages' must be a non-empty list of {{role, content}} objects")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise SFTDataError(f"{where}: field 'messages[{i}]' must be an object with 'role' and 'content'")
        role = _text_field(message, "role", f"{where} messages[{i}]")
        if role not in ROLES:
            raise SFTDataError(f"{where}: field 'messages[{i}].role' is {role!r}; expected one of {list(ROLES)}")
        messages.append({"role": role, "content": _text_field(message, "content", f"{where} messages[{i}]")})
    if messages[0]["role"] == "assistant":
        raise SFTDataError(f"{where}: field 'messages[0]' is an assistant turn; a conversation must start "
                           "with a system or user turn (the prompt the assistant answers)")
    if not any(m["role"] == "assistant" for m in messages):
        raise SFTDataError(f"{where}: field 'messages' has no assistant turn, so there is nothing to learn")
    return tuple(messages)


def parse_record(obj: Any, where: str) -> SFTRecord:
    """Validate one raw record (a JSON object / dataset row) and return it as an :class:`SFTRecord`."""
    if not isinstance(obj, dict):
        raise SFTDataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if obj.get("messages") is not None:
        return SFTRecord(where=where, messages=_parse_messages(obj["messages"], where))
    if "prompt" not in obj and "completion" not in obj:
        present = ", ".join(sorted(obj)) or "nothing"
        raise SFTDataError(f"{where}: record needs 'prompt' and 'completion' (or 'messages'); it has: {present}")
    return SFTRecord(where=where, prompt=_text_field(obj, "prompt", where),
                     completion=_text_field(obj, "completion", where))


def read_sft_records(path: str | Path, split: str = "train") -> list[SFTRecord]:
    """All records of a JSONL file or a ``save_to_disk`` dataset directory, validated."""
    path = Path(path)
    if not path.exists():
        raise SFTDataError(f"SFT data file {path} does not exist")
    rows = _iter_hf_dataset(path, split) if path.is_dir() else _iter_jsonl(path)
    records = [parse_record(obj, where) for where, obj in rows]
    if not records:
        raise SFTDataError(f"{path}: the dataset is empty (no records)")
    return records


def chat_template_for(tokenizer: PreTrainedTokenizerBase) -> str:
    """The tokenizer's own chat template, or :data:`DEFAULT_CHAT_TEMPLATE` when it has none."""
    return chat_template(tokenizer) or DEFAULT_CHAT_TEMPLATE


def _render(tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]], generation_prompt: bool) -> str:
    return render(tokenizer, messages, generation_prompt, chat_template_for(tokenizer))


def render_chat_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]]) -> str:
    """The text a model continues to answer ``messages`` (same template as SFT training used)."""
    return _render(tokenizer, messages, generation_prompt=True)


def chat_segments(tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]],
                  where: str = "conversation") -> list[tuple[str, bool]]:
    """Split the rendered conversation into ``(text, is_assistant_turn)`` pieces that concatenate to it.

    Each assistant turn is the difference between the render up to and including it and the
    render of what precedes it with the generation prompt; turns after the last assistant turn
    carry no loss and are dropped.
    """
    segments: list[tuple[str, bool]] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        head = _render(tokenizer, messages[:i], generation_prompt=True)
        full = _render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not head.startswith(done) or not full.startswith(head):
            raise SFTDataError(f"{where}: the chat template does not render this conversation incrementally "
                               f"(turn {i} changes earlier text), so assistant tokens cannot be located")
        segments.append((head[len(done):], False))
        segments.append((full[len(head):], True))
        done = full
    return [(text, trained) for text, trained in segments if text]


def _encode(tokenizer: PreTrainedTokenizerBase, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def tokenize_record(record: SFTRecord, tokenizer: PreTrainedTokenizerBase, max_length: int) -> TokenizedExample:
    """Token ids and labels for one record; raises :class:`SFTDataError` if the prompt fills the context."""
    if record.messages is not None:
        pieces = [(_encode(tokenizer, text, False), trained)
                  for text, trained in chat_segments(tokenizer, record.messages, record.where)]
        prompt_field = "messages (before the first assistant turn)"
    else:
        if tokenizer.eos_token_id is None:
            raise SFTDataError("the tokenizer has no eos token, so completions cannot be terminated; add one")
        pieces = [(_encode(tokenizer, record.prompt or "", True), False),
                  (_encode(tokenizer, record.completion or "", False) + [tokenizer.eos_token_id], True)]
        prompt_field = "prompt"
    input_ids: list[int] = []
    labels: list[int] = []
    for ids, trained in pieces:
        input_ids.extend(ids)
        labels.extend(ids if trained else [IGNORE_INDEX] * len(ids))
    prompt_len = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
    if prompt_len >= max_length:
        raise PromptTooLongError(f"{record.where}: field {prompt_field!r} is {prompt_len} tokens, which fills the "
                           f"context of {max_length} tokens and leaves no room for the completion; shorten it, "
                           "raise max_length, or set skip_long_prompts=true to skip such records")
    truncated = len(input_ids) > max_length
    return TokenizedExample(input_ids[:max_length], labels[:max_length], truncated)


def tokenize_records(records: Sequence[SFTRecord], tokenizer: PreTrainedTokenizerBase, max_length: int,
                     skip_long_prompts: bool = False, source: str = "") -> SFTDataset:
    """Tokenize every record; long prompts raise, or are skipped and listed with ``skip_long_prompts``."""
    examples: list[TokenizedExample] = []
    skipped: list[str] = []
    for record in records:
        try:
            examples.append(tokenize_record(record, tokenizer, max_length))
        except PromptTooLongError:
            if not skip_long_prompts:
                raise
            skipped.append(record.where)
    if not examples:
        raise SFTDataError(f"{source or 'SFT data'}: no usable records ({len(skipped)} skipped: prompt fills the context)")
    return SFTDataset(examples=examples, source=source, skipped_long_prompts=skipped)


def load_sft_dataset(path: str | Path, tokenizer: PreTrainedTokenizerBase, max_length: int,
                     skip_long_prompts: bool = False, split: str = "train") -> SFTDataset:
    """Read and tokenize the SFT data at ``path`` (JSONL file or ``save_to_disk`` directory)."""
    return tokenize_records(read_sft_records(path, split), tokenizer, max_length, skip_long_prompts, str(path))


@dataclass(frozen=True)
class SFTCollator:
    """Right-pads a list of examples to the longest one: input_ids (b, T), attention_mask (b, T), labels (b, T)."""

    pad_token_id: int

    def __call__(self, examples: Sequence[TokenizedExample]) -> dict[str, torch.Tensor]:
        import torch

        length = max(len(example.input_ids) for example in examples)
        input_ids = torch.full((len(examples), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example.input_ids)
            input_ids[row, :n] = torch.tensor(example.input_ids, dtype=torch.long)
            labels[row, :n] = torch.tensor(example.labels, dtype=torch.long)
            attention_mask[row, :n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
