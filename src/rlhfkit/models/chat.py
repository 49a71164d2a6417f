"""Conversations as token ids: chat-template rendering shared by RL prompts, DPO pairs and reward models.

A :class:`Conversation` is a ``str`` (its plain ``role: content`` text, what logs, files and reward
functions see) that keeps its messages, so it passes through every text interface unchanged and is
rendered with the chat template only where a tokenizer turns it into ids. Rendered text is tokenized
without added special tokens: the template writes BOS itself when the model wants one (no second BOS),
and the prompt ends with the generation prompt (no EOS before the response).

A response ends the way the template ends an assistant turn: at its end-of-turn token (EOS for
most templates, ``<end_of_turn>`` for Gemma, ``<|end|>`` for Phi-3; see :func:`turn_end_ids`),
which is also where sampling stops, so the policy learns to close the turn it is sampled to close.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Message = dict[str, str]
_TURN_PROBE = "rlhfkit turn probe"
_TURN_END_CACHE: dict[tuple[int, str], frozenset[int]] = {}

#: Used for chat data when the tokenizer has no chat template. It renders
#: ``"<system>\n\nUser: <user>\nAssistant: <assistant><eos>\nUser: ..."``; the generation prompt is
#: ``"Assistant:"``, so an assistant turn's trained tokens are ``" <content><eos>"``.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{% else %}{% if not loop.first and messages[loop.index0 - 1]['role'] != 'system' %}{{ '\\n' }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] }}"
    "{% else %}{{ 'Assistant: ' + message['content'] + eos_token }}{% endif %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{% if messages and messages[-1]['role'] != 'system' %}{{ '\\n' }}{% endif %}{{ 'Assistant:' }}"
    "{% endif %}"
)


class ChatError(ValueError):
    """A conversation that cannot be used; the message says which field and why."""


def plain_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The plain rendering: one ``role: content`` line per message."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def is_messages(value: Any) -> bool:
    """True for a non-empty list of ``{"role", "content"}`` mappings (the conversational format)."""
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(m, Mapping) and "role" in m and "content" in m for m in value)


def parse_messages(value: Any, where: str = "messages") -> tuple[Message, ...]:
    """Validate a message list: each item an object with string ``role`` and ``content``."""
    if not is_messages(value):
        raise ChatError(f"{where}: expected a non-empty list of {{role, content}} objects")
    messages = []
    for index, message in enumerate(value):
        role, content = message["role"], message["content"]
        if not isinstance(role, str) or not isinstance(content, str):
            raise ChatError(f"{where}[{index}]: 'role' and 'content' must be strings")
        messages.append({"role": role, "content": content})
    return tuple(messages)


class Conversation(str):
    """Text that remembers the messages it was rendered from (see the module docstring)."""

    messages: tuple[Message, ...]

    def __new__(cls, messages: Iterable[Mapping[str, Any]], text: str | None = None) -> Conversation:
        parsed = parse_messages(list(messages))
        obj = super().__new__(cls, plain_text(parsed) if text is None else text)
        obj.messages = parsed
        return obj

    @classmethod
    def prompt(cls, messages: Iterable[Mapping[str, Any]]) -> Conversation:
        """A prompt: plain text ends with a newline so that ``prompt + response`` reads as the dialogue."""
        parsed = parse_messages(list(messages))
        return cls(parsed, plain_text(parsed) + "\n")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Conversation, ([dict(m) for m in self.messages], str(self)))

    def __repr__(self) -> str:
        return f"Conversation({list(self.messages)!r})"


def chat_template(tokenizer: Any) -> str | None:
    """The tokenizer's chat template, or None when it has none."""
    template = getattr(tokenizer, "chat_template", None)
    return template if isinstance(template, str) and template else None


def render(tokenizer: Any, messages: Sequence[Mapping[str, str]], generation_prompt: bool,
           template: str | None = None) -> str:
    """``messages`` through ``template`` (default: the tokenizer's own) as text."""
    return tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False,
                                         chat_template=template or chat_template(tokenizer),
                                         add_generation_prompt=generation_prompt)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Rendered template text -> ids, adding no special tokens (the template placed them)."""
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def prompt_ids(tokenizer: Any, prompts: Sequence[str], fallback_template: str | None = None) -> list[list[int]]:
    """Token ids of policy prompts: a :class:`Conversation` through the chat template with the generation
    prompt (``fallback_template`` when the tokenizer has none, else its plain text); other text with the
    tokenizer's special tokens, as before."""
    out = list(tokenizer(list(prompts), add_special_tokens=True, verbose=False)["input_ids"]) if prompts else []
    template = chat_template(tokenizer) or fallback_template
    for index, prompt in enumerate(prompts):
        if isinstance(prompt, Conversation) and template is not None:
            out[index] = encode_text(tokenizer, render(tokenizer, prompt.messages, True, template))
    return out


def _response_messages(response: str) -> tuple[Message, ...]:
    if isinstance(response, Conversation):
        return response.messages
    return ({"role": "assistant", "content": str(response)},)


def _special_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokenizer's special tokens, added special tokens (``<end_of_turn>``) included."""
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return set(getattr(tokenizer, "all_special_ids", [])) | {int(i) for i, t in added.items()
                                                             if getattr(t, "special", False)}


def turn_end_ids(tokenizer: Any) -> frozenset[int]:
    """The special token the tokenizer's chat template closes an assistant turn with (empty without one).

    EOS for most templates, ``<end_of_turn>`` for Gemma, ``<|end|>`` for Phi-3: found by rendering a
    probe reply and taking the token right after it when that token is special. Sampling adds it to
    its stop tokens, so a model whose generation config lists only EOS still stops at the turn's end.
    """
    template = chat_template(tokenizer)
    if template is None:
        return frozenset()
    key = (id(tokenizer), template)
    if key not in _TURN_END_CACHE:
        _TURN_END_CACHE[key] = _probe_turn_end(tokenizer)
    return _TURN_END_CACHE[key]


def _probe_turn_end(tokenizer: Any) -> frozenset[int]:
    try:
        text = render(tokenizer, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _TURN_PROBE}],
                      generation_prompt=False)
    except Exception:  # noqa: BLE001 - a template may refuse any message pattern; then there is no turn end
        return frozenset()
    if _TURN_PROBE not in text:
        return frozenset()
    after = encode_text(tokenizer, text[text.rindex(_TURN_PROBE) + len(_TURN_PROBE):])
    return frozenset(after[:1]) if after and after[0] in _special_ids(tokenizer) else frozenset()


def _cut_at_turn_end(ids: list[int], eos_id: int | None, turn_end: frozenset[int]) -> tuple[list[int], bool]:
    """The response ids as sampling would end them, and whether they ended with EOS.

    Cut at the last EOS or end-of-turn token: before an EOS (the caller appends EOS as it does for
    plain text), after any other end-of-turn token (it stays: it is what the policy must learn to
    sample). What a template writes after it (a newline) is dropped: sampling stops there.
    """
    stops = set(turn_end) | ({eos_id} if eos_id is not None else set())
    last = max((i for i, token in enumerate(ids) if token in stops), default=None)
    if last is None:
        return ids, False
    if ids[last] == eos_id:
        return ids[:last], True
    return ids[: last + 1], False


def templated_pair(tokenizer: Any, prompt: Conversation, response: str) -> tuple[list[int], list[int], bool]:
    """(prompt ids, response ids, whether the template ended the response with EOS) for a templated tokenizer.

    The prompt is the render with the generation prompt; the response is what the full render adds to
    it (the content and the template's end of turn), cut before its last EOS or after its last other
    end-of-turn token (:func:`turn_end_ids`).
    """
    head = render(tokenizer, prompt.messages, generation_prompt=True)
    full = render(tokenizer, [*prompt.messages, *_response_messages(response)], generation_prompt=False)
    if full.startswith(head):
        head_ids, tail_ids = encode_text(tokenizer, head), encode_text(tokenizer, full[len(head):])
    else:
        head_ids, full_ids = encode_text(tokenizer, head), encode_text(tokenizer, full)
        shared = 0
        while shared < min(len(head_ids), len(full_ids)) and head_ids[shared] == full_ids[shared]:
            shared += 1
        head_ids, tail_ids = full_ids[:shared], full_ids[shared:]
    body, had_eos = _cut_at_turn_end(tail_ids, tokenizer.eos_token_id, turn_end_ids(tokenizer))
    return head_ids, body, had_eos


def pair_ids(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], prompt_special_tokens: bool
             ) -> tuple[list[list[int]], list[list[int]], list[bool]]:
    """Ids of (prompt, response) pairs for DPO and reward models, and per pair whether the template put EOS.

    A :class:`Conversation` prompt with a templated tokenizer is rendered by :func:`templated_pair`;
    otherwise the plain texts are tokenized as before (a sampled response to a conversation becomes
    an ``assistant:`` line, the plain form conversational training data has).
    """
    templated = chat_template(tokenizer) is not None
    plain = [i for i, p in enumerate(prompts) if not (templated and isinstance(p, Conversation))]
    texts = [plain_response_text(prompts[i], responses[i]) for i in plain]
    plain_prompts, plain_responses = [], []
    if plain:
        plain_prompts = tokenizer([prompts[i] for i in plain], add_special_tokens=prompt_special_tokens, verbose=False)["input_ids"]
        plain_responses = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    prompt_out: list[list[int]] = [[] for _ in prompts]
    response_out: list[list[int]] = [[] for _ in prompts]
    had_eos = [False] * len(prompts)
    for i, p_ids, r_ids in zip(plain, plain_prompts, plain_responses):
        prompt_out[i], response_out[i] = list(p_ids), list(r_ids)
    for i, prompt in enumerate(prompts):
        if templated and isinstance(prompt, Conversation):
            prompt_out[i], response_out[i], had_eos[i] = templated_pair(tokenizer, prompt, responses[i])
    return prompt_out, response_out, had_eos


def plain_response_text(prompt: str, response: str) -> str:
    """A response in plain form: after a conversation, plain text becomes an ``assistant:`` line."""
    if isinstance(prompt, Conversation) and not isinstance(response, Conversation):
        return plain_text(_response_messages(response))
    return str(response)
