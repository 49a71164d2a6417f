"""Candidate responses: k samples per prompt from the current policy, stored as JSONL per round."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from rlhfkit.models.chat import Conversation
from rlhfkit.rl.rollout import Sampler, SamplingParams
from rlhfkit.utils.checkpoint import atomic_write_text


@dataclass(frozen=True)
class Candidate:
    """One sampled response; ``index`` is its position in the round's candidate file. ``prompt`` is the
    plain text; ``prompt_messages`` keeps a conversational prompt's turns (for the annotation page)."""

    index: int
    prompt_index: int
    prompt: str
    response: str
    finished: bool
    prompt_messages: list[dict[str, str]] | None = None


def prompt_messages(prompt: str) -> list[dict[str, str]] | None:
    """A Conversation's turns as plain dicts (None for plain text)."""
    return [dict(m) for m in prompt.messages] if isinstance(prompt, Conversation) else None


def sample_responses(model: torch.nn.Module, tokenizer: Any, sampler: Sampler, prompts: Sequence[str],
                     params: SamplingParams, generator: torch.Generator, batch_size: int = 128,
                     on_batch: Callable[[int], None] | None = None) -> tuple[list[str], list[bool]]:
    """One response per prompt (repeat prompts for several) in batches; returns texts and finished flags."""
    texts: list[str] = []
    finished: list[bool] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        rollout = sampler.sample(model, tokenizer, chunk, params, generator=generator)
        texts.extend(rollout.responses)
        finished.extend(bool(f) for f in rollout.finished.tolist())
        if on_batch is not None:
            on_batch(len(chunk))
    return texts, finished


def generate_candidates(model: torch.nn.Module, tokenizer: Any, sampler: Sampler, prompts: Sequence[str],
                        per_prompt: int, params: SamplingParams, generator: torch.Generator,
                        on_batch: Callable[[int], None] | None = None) -> list[Candidate]:
    """``per_prompt`` candidates for each prompt, grouped by prompt (candidate i of prompt p is p*k + i)."""
    repeated = [p for p in prompts for _ in range(per_prompt)]
    texts, finished = sample_responses(model, tokenizer, sampler, repeated, params, generator, on_batch=on_batch)
    return [Candidate(index=i, prompt_index=i // per_prompt, prompt=repeated[i], response=texts[i], finished=finished[i],
                      prompt_messages=prompt_messages(repeated[i])) for i in range(len(repeated))]


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write dict rows as JSONL atomically."""
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file written by :func:`write_jsonl`; a bad line raises naming file and line."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
    return rows


def write_candidates(path: Path, candidates: Sequence[Candidate]) -> None:
    """Store the round's candidates (atomically)."""
    write_jsonl(path, [{k: v for k, v in asdict(c).items() if v is not None} for c in candidates])


def read_candidates(path: Path) -> list[Candidate]:
    """Candidates written by :func:`write_candidates`, checked to be numbered 0..n-1."""
    candidates = [Candidate(**row) for row in read_jsonl(path)]
    if [c.index for c in candidates] != list(range(len(candidates))):
        raise ValueError(f"{path}: candidate indices are not 0..{len(candidates) - 1}")
    return candidates
