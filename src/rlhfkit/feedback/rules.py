"""The annotation rules, implemented once: every check on what enters the feedback store.

The web pages (through :mod:`rlhfkit.feedback.crud`), the JSON API's fast path
(:mod:`rlhfkit.feedback.serving`) and the commands all call these functions, so an input is
accepted or refused with the same message wherever it arrives. Numbers that can reach training
must be finite and within ``MAX_ABS`` (far inside float32, so sums and products over a batch stay
finite); ids must fit the database's 32-bit integer columns; text must hold no NUL byte
(PostgreSQL refuses it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from rlhfkit.data.records import MAX_ABS
from rlhfkit.feedback.errors import InvalidError
from rlhfkit.models.chat import ChatError, Conversation, is_messages

PAIR_CHOICES = ("left", "right", "tie", "skip")
#: How much better the chosen response is, as the Bradley-Terry margin m in -log σ(r_c - r_r - m): Llama 2's
#: "margin small" scale (Touvron et al. 2023, Table 28: slightly 1/3, better 2/3, significantly 1).
STRENGTH_MARGINS = {"slightly": 1 / 3, "clearly": 2 / 3, "much": 1.0}
MAX_CRITIQUE = 10_000
MAX_EDIT = 50_000
MAX_TIME_SPENT_MS = 86_400_000
MAX_ID = 2**31 - 1
MAX_META_DEPTH = 16
KEY_LENGTH = (8, 128)
#: Sample meta key holding a conversational prompt's turns ([{"role", "content"}, ...]).
PROMPT_MESSAGES = "prompt_messages"


def is_number(value: Any) -> bool:
    """A JSON number (not a bool), finite and within +-MAX_ABS."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and abs(value) <= MAX_ABS)


def check_number(value: Any, field: str) -> float:
    """``value`` as a float, or InvalidError naming the field when not finite or out of range."""
    if not is_number(value):
        raise InvalidError(f"{field}: must be a finite number within +-{MAX_ABS:g}, got {value!r}")
    return float(value)


def check_id(value: Any, field: str) -> int:
    """A positive database id that fits a 32-bit integer column, else InvalidError."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_ID:
        raise InvalidError(f"{field}: must be an id between 1 and {MAX_ID}, got {value!r}")
    return value


def check_int(value: Any, field: str, lo: int = -MAX_ID, hi: int = MAX_ID) -> int:
    """An integer within [lo, hi] (defaults: a 32-bit column), else InvalidError."""
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidError(f"{field}: must be an integer between {lo} and {hi}, got {value!r}")
    return value



def storable_text(text: str) -> str:
    """``text`` with NUL bytes (which a byte-level model can generate) shown as U+FFFD, so a server stores it."""
    return text.replace("\x00", "\ufffd")

def check_text(value: Any, field: str, *, max_length: Optional[int] = None) -> str:
    """A string without NUL bytes (PostgreSQL cannot store them) and within ``max_length``."""
    if not isinstance(value, str):
        raise InvalidError(f"{field}: must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidError(f"{field}: must not contain a NUL byte")
    if max_length is not None and len(value) > max_length:
        raise InvalidError(f"{field}: longer than {max_length} characters")
    return value


def check_scale(scale: Sequence[Any], field: str) -> tuple[float, float]:
    """A rating scale [lo, hi] of finite, in-range numbers with lo < hi."""
    if isinstance(scale, (str, bytes)) or len(scale) != 2:
        raise InvalidError(f"{field}: scale must be [lo, hi] numbers")
    lo, hi = check_number(scale[0], f"{field}[0]"), check_number(scale[1], f"{field}[1]")
    if not lo < hi:
        raise InvalidError(f"{field}: scale lo {lo} must be below hi {hi}")
    return lo, hi


def check_json(value: Any, field: str, *, depth: int = 0) -> Any:
    """JSON-like data (sample meta, gold answers) that the store can write and read back as strict JSON:
    at most MAX_META_DEPTH levels, finite numbers, NUL-free strings."""
    if depth > MAX_META_DEPTH:
        raise InvalidError(f"{field}: nested deeper than {MAX_META_DEPTH} levels")
    if isinstance(value, Mapping):
        for key, item in value.items():
            check_text(key, f"{field} key")
            check_json(item, f"{field}.{key}", depth=depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_json(item, f"{field}[{i}]", depth=depth + 1)
    elif isinstance(value, str):
        check_text(value, field)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidError(f"{field}: must be finite, got {value!r}")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63 - 1:
        raise InvalidError(f"{field}: integer {value} does not fit 64 bits")
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise InvalidError(f"{field}: unsupported value of type {type(value).__name__}")
    return value


def prompt_turns(prompt: Any, field: str) -> tuple[Any, Optional[list[dict[str, str]]]]:
    """A sample's prompt as text plus its turns: a message list (or Conversation) becomes its plain
    ``role: content`` text, its turns kept (sample meta PROMPT_MESSAGES) so pages show them; other values pass."""
    messages = prompt.messages if isinstance(prompt, Conversation) else prompt if is_messages(prompt) else None
    if messages is None:
        return prompt, None
    try:
        conversation = Conversation.prompt(messages)
    except ChatError as exc:
        raise InvalidError(f"{field}: {exc}") from None
    turns = [{k: storable_text(v) for k, v in m.items()} for m in conversation.messages]
    return storable_text(str(conversation)), turns


def check_submission(*, idempotency_key: Any, critique: Optional[str], time_spent_ms: Optional[int],
                     allow_critique: bool) -> None:
    """The checks on a submission that do not depend on the task: key, critique, time spent."""
    check_text(idempotency_key, "idempotency_key")
    if not KEY_LENGTH[0] <= len(idempotency_key) <= KEY_LENGTH[1]:
        raise InvalidError(f"idempotency_key: must be {KEY_LENGTH[0]} to {KEY_LENGTH[1]} characters")
    if critique is not None:
        check_text(critique, "critique")
        if not allow_critique or len(critique) > MAX_CRITIQUE:
            raise InvalidError(f"critique: not allowed in this campaign or longer than {MAX_CRITIQUE} characters")
    if time_spent_ms is not None:
        check_int(time_spent_ms, "time_spent_ms", 0, MAX_TIME_SPENT_MS)


def check_edit(answer: dict[str, Any], original: str) -> dict[str, Any]:
    """An edit answer: ``{"text": rewritten}`` (non-empty, NUL-free, at most MAX_EDIT characters, not the
    original again) or ``{"unchanged": true}``, the explicit "no change needed" that makes no record."""
    if answer == {"unchanged": True}:
        return {"unchanged": True}
    if set(answer) != {"text"}:
        raise InvalidError('answer: edit needs {"text": the rewritten response} or {"unchanged": true}')
    text = check_text(answer["text"], "answer.text", max_length=MAX_EDIT)
    if not text.strip():
        raise InvalidError("answer.text: must not be empty (send {\"unchanged\": true} when no change is needed)")
    if text.strip() == original.strip():
        raise InvalidError("answer.text: identical to the response (send {\"unchanged\": true} when no change is needed)")
    return {"text": text}


def strength_margin(strength: Any, margin: Optional[float] = None) -> float:
    """The margin of a named strength of preference (see STRENGTH_MARGINS); a margin given too is refused."""
    if strength not in STRENGTH_MARGINS:
        raise InvalidError(f"answer.strength: must be one of {list(STRENGTH_MARGINS)}, got {strength!r}")
    if margin is not None:
        raise InvalidError("answer: give a strength or a margin, not both")
    return STRENGTH_MARGINS[strength]


def resolve_answer(*, kind: str, answer: Any, displayed: Sequence[int], scale: Optional[Sequence[float]],
                   original: Optional[str] = None) -> dict[str, Any]:
    """Validate an answer for a task kind and restate it in sample-id terms (positions resolved);
    ``original`` is the response an edit task rewrites."""
    if not isinstance(answer, dict):
        raise InvalidError("answer: must be an object")
    if answer == {"skip": True}:
        return {"skip": True}
    if kind == "edit":
        if original is None:
            raise InvalidError("answer: an edit task needs the original response to compare with")
        return check_edit(answer, original)
    if kind == "pairwise":
        if set(answer) - {"choice", "margin", "strength"} or answer.get("choice") not in PAIR_CHOICES:
            raise InvalidError(f"answer: pairwise needs choice in {list(PAIR_CHOICES)} and optional margin or strength")
        margin = answer.get("margin")
        if margin is not None and (not is_number(margin) or margin < 0):
            raise InvalidError(f"answer.margin: must be a finite number in [0, {MAX_ABS:g}], got {margin!r}")
        choice = answer["choice"]
        if answer.get("strength") is not None:
            if choice == "tie":
                raise InvalidError("answer.strength: a tie has no strength of preference")
            margin = strength_margin(answer["strength"], margin)
        if choice == "skip":
            return {"skip": True}
        winner: Any = "tie" if choice == "tie" else displayed[0 if choice == "left" else 1]
        return {"winner": winner, "margin": None if margin is None else float(margin)}
    if kind == "rating":
        rating = answer.get("rating")
        if set(answer) != {"rating"} or not is_number(rating):
            raise InvalidError(f"answer.rating: rating needs {{\"rating\": finite number}}, got {rating!r}")
        assert scale is not None
        if not scale[0] <= rating <= scale[1]:
            raise InvalidError(f"answer.rating: {rating} is outside the scale {list(scale)}")
        return {"rating": float(rating)}
    if kind == "ranking":
        order = answer.get("order")
        if set(answer) != {"order"} or not isinstance(order, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in order) \
                or sorted(order) != sorted(displayed):
            raise InvalidError(f"answer.order: must be a permutation of the sample ids {sorted(displayed)}, best first")
        return {"order": list(order)}
    if set(answer) != {"label"} or answer["label"] not in ("good", "bad"):
        raise InvalidError("answer: binary needs {\"label\": \"good\" | \"bad\"}")
    return {"label": answer["label"]}
