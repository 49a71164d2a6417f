"""Conversations: reading them as RL prompts, keeping them through copies, and rendering them without
a chat template (SFT's default template for policy prompts, the plain form for DPO and reward data)."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
import torch
from helpers_models import tiny_gpt2, tiny_tokenizer

from rlhfkit.data.records import Comparison
from rlhfkit.models.chat import DEFAULT_CHAT_TEMPLATE, Conversation
from rlhfkit.models.reward_model import RewardModel
from rlhfkit.reward.batching import encode_records
from rlhfkit.rl.preference_pairs import Pair, encode_pairs
from rlhfkit.rl.prompts import PromptError, read_prompts
from rlhfkit.rl.rollout import SamplingParams, encode_prompts, make_sampler

USER = [{"role": "user", "content": "Why is the sky blue?"}]
ANSWER = [{"role": "assistant", "content": "The sun is bright."}]
NO = [{"role": "assistant", "content": "No."}]


def ids(tokenizer, text: str, special: bool = False) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def test_read_prompts_takes_messages_prompt_lists_and_strings(tmp_path) -> None:
    path = tmp_path / "prompts.jsonl"
    rows = [{"messages": USER}, {"prompt": [{"role": "system", "content": "Be kind."}, *USER]}, {"prompt": "Hi"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second, third = read_prompts(path)
    assert isinstance(first, Conversation) and first.messages == tuple(USER)
    assert first == "user: Why is the sky blue?\n" and second.messages[0]["role"] == "system"
    assert third == "Hi" and not isinstance(third, Conversation)


@pytest.mark.parametrize("row,message", [
    ({"messages": USER + ANSWER}, "ends with an assistant turn"),
    ({"messages": [{"role": "user", "content": 3}]}, "must be strings"),
    ({"messages": []}, "non-empty list"),
    ({"text": "x"}, "string field 'prompt' or a list field 'messages'"),
])
def test_read_prompts_names_the_line_of_a_bad_conversation(tmp_path, row, message) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(PromptError, match=rf"prompts.jsonl:2: .*{message}"):
        read_prompts(path)


def test_conversation_survives_pickle_and_deepcopy() -> None:
    prompt = Conversation.prompt(USER)
    for clone in (pickle.loads(pickle.dumps(prompt)), copy.deepcopy(prompt)):
        assert isinstance(clone, Conversation) and clone == prompt and clone.messages == prompt.messages


def test_without_a_template_rl_prompts_use_sfts_default_template() -> None:
    tokenizer = tiny_tokenizer()
    prompt_ids, mask = encode_prompts(tokenizer, [Conversation.prompt(USER)], torch.device("cpu"), 4, None)
    rendered = tokenizer.apply_chat_template(USER, chat_template=DEFAULT_CHAT_TEMPLATE, tokenize=False,
                                             add_generation_prompt=True)
    assert rendered == "User: Why is the sky blue?\nAssistant:"
    assert prompt_ids[0][mask[0].bool()].tolist() == ids(tokenizer, rendered)


def test_sampled_rollout_keeps_the_conversation_for_the_reward() -> None:
    tokenizer = tiny_tokenizer()
    prompt = Conversation.prompt(USER)
    rollout = make_sampler("cached").sample(tiny_gpt2(tokenizer), tokenizer, [prompt, "Hi"],
                                            SamplingParams(max_new_tokens=3, do_sample=False))
    assert isinstance(rollout.prompts[0], Conversation) and rollout.prompts[0].messages == tuple(USER)


def test_without_a_template_dpo_pairs_keep_the_plain_form() -> None:
    tokenizer = tiny_tokenizer()
    pair = Pair(Conversation.prompt(USER), Conversation(ANSWER), Conversation(NO))
    data = encode_pairs([pair], tokenizer, max_prompt_tokens=64, max_response_tokens=64)
    prompt = data.prompt_ids[0][data.prompt_mask[0].bool()].tolist()
    assert prompt == ids(tokenizer, "user: Why is the sky blue?\n", True)
    chosen = data.chosen_ids[0][data.chosen_mask[0].bool()].tolist()
    assert chosen == ids(tokenizer, "assistant: The sun is bright.") + [tokenizer.eos_token_id]


def test_without_a_template_reward_scoring_matches_plain_conversational_training() -> None:
    tokenizer = tiny_tokenizer()
    prompt = Conversation.prompt(USER)
    record = Comparison(prompt, Conversation(ANSWER), Conversation(NO))
    encoded, _ = encode_records([record], tokenizer, max_length=128, eos_id=tokenizer.eos_token_id)
    expected = ids(tokenizer, "user: Why is the sky blue?\n") + ids(tokenizer, "assistant: The sun is bright.")
    assert encoded[0].sequences[0] == expected + [tokenizer.eos_token_id]
    model = RewardModel(tiny_gpt2(tokenizer).transformer, tokenizer)
    sampled, _ = model.encode([prompt], ["The sun is bright."])
    assert sampled[0] == encoded[0].sequences[0]
