"""Chat templates on the architectures that have one: RL prompts, SFT, DPO pairs and reward-model data
in conversational form render through the template exactly once (one BOS, the generation prompt at
the end, no EOS before the response), and reward training and RL scoring see the same ids."""

from __future__ import annotations

import functools

import pytest
import torch
from arch_data import USER, answer, preference_file
from arch_zoo import CHAT_ARCHITECTURES, FAMILIES

from rlhfkit.data.records import Comparison
from rlhfkit.data.sft import SFTRecord, tokenize_record
from rlhfkit.models.chat import Conversation, turn_end_ids
from rlhfkit.models.loading import load_tokenizer
from rlhfkit.models.reward_model import RewardModel
from rlhfkit.reward.batching import encode_records
from rlhfkit.rl.preference_pairs import encode_pairs, read_preference_pairs
from rlhfkit.rl.rollout import encode_prompts, eos_token_ids

pytestmark = pytest.mark.arch

PROMPT = Conversation.prompt(USER)


@functools.lru_cache(maxsize=None)
def _tokenizer(path: str):  # noqa: ANN202 - a transformers tokenizer
    return load_tokenizer(path)


def ids_of(tokenizer, text: str) -> list[int]:
    """Ids of template text, adding nothing."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def generation_prompt(tokenizer) -> str:
    """The rendered prompt as the template writes it."""
    return tokenizer.apply_chat_template(USER, tokenize=False, add_generation_prompt=True)


def assert_single_bos(arch: str, tokenizer, ids: list[int]) -> None:
    """One BOS, first, when the family's template writes one (its tokenizer adds one too); none otherwise."""
    writes_bos = "bos_token" in FAMILIES[arch].template
    count = ids.count(tokenizer.bos_token_id) if tokenizer.bos_token_id is not None else 0
    assert count == int(writes_bos) and (not writes_bos or ids[0] == tokenizer.bos_token_id)


@pytest.mark.parametrize("arch", CHAT_ARCHITECTURES)
def test_rl_prompt_is_the_template_with_generation_prompt_and_one_bos(zoo, arch) -> None:
    tokenizer = _tokenizer(str(zoo[arch].policy))
    ids, mask = encode_prompts(tokenizer, [PROMPT, "Hi"], torch.device("cpu"), 4, None)
    row = ids[0][mask[0].bool()].tolist()
    assert row == ids_of(tokenizer, generation_prompt(tokenizer))
    assert_single_bos(arch, tokenizer, row)
    assert row[-1] != tokenizer.eos_token_id
    plain = ids[1][mask[1].bool()].tolist()
    assert plain == tokenizer("Hi", add_special_tokens=True)["input_ids"]  # plain prompts are unchanged


@pytest.mark.parametrize("arch", CHAT_ARCHITECTURES)
def test_sft_conversation_has_one_bos_and_trains_the_answer(zoo, arch) -> None:
    tokenizer = _tokenizer(str(zoo[arch].policy))
    messages = tuple(USER + answer("It is blue."))
    example = tokenize_record(SFTRecord(where="x", messages=messages), tokenizer, max_length=256)
    full = tokenizer.apply_chat_template(list(messages), tokenize=False)
    assert tokenizer.decode(example.input_ids) == full
    assert_single_bos(arch, tokenizer, example.input_ids)
    trained = tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label != -100])
    assert trained == full[len(generation_prompt(tokenizer)):] and "It is blue." in trained


def expected_response(tokenizer, content: str) -> list[int]:
    """The template's response tokens up to its end of turn (kept unless it is EOS), then one EOS."""
    full = tokenizer.apply_chat_template(USER + answer(content), tokenize=False)
    tail = ids_of(tokenizer, full[len(generation_prompt(tokenizer)):])
    eos = tokenizer.eos_token_id
    if eos in tail:
        return tail[: tail.index(eos)] + [eos]
    turn_end = next((i for i, token in enumerate(tail) if token in turn_end_ids(tokenizer)), None)
    return (tail if turn_end is None else tail[: turn_end + 1]) + [eos]


@pytest.mark.parametrize("arch", CHAT_ARCHITECTURES)
def test_dpo_pairs_render_through_the_template(zoo, arch, tmp_path) -> None:
    tokenizer = _tokenizer(str(zoo[arch].policy))
    pairs = read_preference_pairs(str(preference_file(tmp_path))).pairs
    assert isinstance(pairs[0].prompt, Conversation) and isinstance(pairs[0].chosen, Conversation)
    data = encode_pairs(pairs[:1], tokenizer, max_prompt_tokens=128, max_response_tokens=128)
    prompt = data.prompt_ids[0][data.prompt_mask[0].bool()].tolist()
    assert prompt == ids_of(tokenizer, generation_prompt(tokenizer))
    assert_single_bos(arch, tokenizer, prompt)
    assert data.chosen_ids[0][data.chosen_mask[0].bool()].tolist() == expected_response(tokenizer, "The sun is bright.")
    assert data.rejected_ids[0][data.rejected_mask[0].bool()].tolist() == expected_response(tokenizer, "It broke.")
    assert data.chosen_ids[0][data.chosen_mask[0].bool()].tolist().count(tokenizer.eos_token_id) == 1


@pytest.mark.parametrize("arch", CHAT_ARCHITECTURES)
def test_reward_training_and_rl_scoring_render_the_same_conversation(zoo, arch, tmp_path) -> None:
    tokenizer = _tokenizer(str(zoo[arch].policy))
    record = Comparison(PROMPT, Conversation(answer("The sun is bright.")), Conversation(answer("It broke.")))
    encoded, _ = encode_records([record], tokenizer, max_length=256, eos_id=tokenizer.eos_token_id)
    head = ids_of(tokenizer, generation_prompt(tokenizer))
    assert encoded[0].sequences[0] == head + expected_response(tokenizer, "The sun is bright.")
    model = RewardModel.from_trunk(zoo[arch].policy, seed=0)
    sampled, _ = model.encode([PROMPT], ["The sun is bright."])  # a sampled response is plain text
    assert sampled[0] == encoded[0].sequences[0]


#: The token each chat family's template closes an assistant turn with (EOS for qwen2 and llama).
TURN_ENDS = {"gemma": "<end_of_turn>", "phi3": "<|end|>", "qwen2": "<|im_end|>", "llama": "<|eot_id|>"}


@pytest.mark.parametrize("arch", ["gemma", "phi3", "qwen2", "llama"])
def test_the_end_of_turn_token_is_read_from_the_template(zoo, arch) -> None:
    tokenizer = _tokenizer(str(zoo[arch].policy))
    assert turn_end_ids(tokenizer) == {tokenizer.convert_tokens_to_ids(TURN_ENDS[arch])}


@pytest.mark.parametrize("arch", ["gemma", "phi3"])
def test_dpo_and_reward_responses_end_the_turn_where_sampling_stops(zoo, arch, tmp_path) -> None:
    tokenizer = _tokenizer(str(zoo[arch].policy))
    turn_end, eos = tokenizer.convert_tokens_to_ids(TURN_ENDS[arch]), tokenizer.eos_token_id
    content = ids_of(tokenizer, "The sun is bright.")
    pairs = read_preference_pairs(str(preference_file(tmp_path))).pairs
    data = encode_pairs(pairs[:1], tokenizer, max_prompt_tokens=128, max_response_tokens=128)
    chosen = data.chosen_ids[0][data.chosen_mask[0].bool()].tolist()
    assert chosen == content + [turn_end, eos]  # the template's newline after the turn end is never sampled
    record = Comparison(PROMPT, Conversation(answer("The sun is bright.")), Conversation(answer("It broke.")))
    encoded, _ = encode_records([record], tokenizer, max_length=256, eos_id=eos)
    assert encoded[0].sequences[0][-len(content) - 2:] == content + [turn_end, eos]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(zoo[arch].policy)
    model.generation_config.eos_token_id = eos  # a checkpoint whose generation config knows only EOS
    assert set(eos_token_ids(model, tokenizer)) == {eos, turn_end}
