"""SFT data: reading, hand-checked label masks, chat rendering, padding, and every bad-input message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sft_helpers import char_tokenizer, write_jsonl

from rlhfkit.data.sft import (DEFAULT_CHAT_TEMPLATE, IGNORE_INDEX, PromptTooLongError, SFTCollator, SFTDataError,
                              chat_segments, load_sft_dataset, read_sft_records, render_chat_prompt, tokenize_record,
                              tokenize_records)

X = IGNORE_INDEX


def ids(text: str) -> list[int]:
    """Character ids of the char tokenizer, worked out from its vocabulary order."""
    return [char_tokenizer().get_vocab()[c] for c in text]


def test_char_tokenizer_ids_are_what_the_tests_assume() -> None:
    assert ids("ab") == [4, 5]
    assert char_tokenizer()("ab c", add_special_tokens=False)["input_ids"] == [4, 5, 3, 6]


def test_prompt_completion_labels_mask_the_prompt_and_end_with_eos(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ab", "completion": " c"}])
    example = load_sft_dataset(path, char_tokenizer(), max_length=16).examples[0]
    # a=4 b=5 ' '=3 c=6 eos=1
    assert example.input_ids == [4, 5, 3, 6, 1]
    assert example.labels == [X, X, 3, 6, 1]
    assert example.num_target_tokens == 3
    assert not example.truncated


def test_chat_labels_cover_only_assistant_turns() -> None:
    tok = char_tokenizer()
    record = read_sft_records_from([{"messages": [{"role": "user", "content": "hi"},
                                                  {"role": "assistant", "content": "yo"},
                                                  {"role": "user", "content": "ok"},
                                                  {"role": "assistant", "content": "no"}]}])[0]
    example = tokenize_record(record, tok, max_length=200)
    text = "User: hi\nAssistant: yo<eos>\nUser: ok\nAssistant: no<eos>"
    assert tok.apply_chat_template(list(record.messages), chat_template=DEFAULT_CHAT_TEMPLATE, tokenize=False) == text
    expected_ids = (ids("User: hi\nAssistant:") + ids(" yo") + [1]
                    + ids("\nUser: ok\nAssistant:") + ids(" no") + [1])
    assert example.input_ids == expected_ids
    trained = [i for i, label in zip(example.input_ids, example.labels) if label != X]
    assert trained == ids(" yo") + [1] + ids(" no") + [1]
    assert example.labels[:len("User: hi\nAssistant:")] == [X] * len("User: hi\nAssistant:")


def test_chat_with_system_prompt_and_generation_prompt_match_training_text() -> None:
    tok = char_tokenizer()
    messages = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo"}, {"role": "user", "content": "bye"}]
    assert render_chat_prompt(tok, messages[:2]) == "be kind\n\nUser: hi\nAssistant:"
    # the trailing user turn carries no loss and is dropped
    assert chat_segments(tok, messages) == [("be kind\n\nUser: hi\nAssistant:", False), (" yo<eos>", True)]


def test_a_tokenizer_with_its_own_template_is_used() -> None:
    tok = char_tokenizer()
    tok.chat_template = ("{% for m in messages %}{{ m['role'][0] + ':' + m['content'] + ';' }}{% endfor %}"
                         "{% if add_generation_prompt %}{{ 'a:' }}{% endif %}")
    segments = chat_segments(tok, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}])
    assert segments == [("u:q;a:", False), ("r;", True)]


def test_template_that_rewrites_history_is_rejected() -> None:
    tok = char_tokenizer()
    tok.chat_template = "{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(SFTDataError, match="does not render this conversation incrementally"):
        chat_segments(tok, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}], "f line 1")


def test_collator_pads_to_longest_with_masked_labels() -> None:
    tok = char_tokenizer()
    examples = tokenize_records(read_sft_records_from([{"prompt": "a", "completion": "b"},
                                                       {"prompt": "abc", "completion": "de"}]), tok, 32).examples
    batch = SFTCollator(pad_token_id=tok.pad_token_id)(examples)
    assert batch["input_ids"].tolist() == [[4, 5, 1, 2, 2, 2], [4, 5, 6, 7, 8, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[X, 5, 1, X, X, X], [X, X, X, 7, 8, 1]]
    assert batch["input_ids"].dtype == torch.long


def test_truncation_keeps_the_start_and_is_counted() -> None:
    dataset = tokenize_records(read_sft_records_from([{"prompt": "ab", "completion": "cdef"}]), char_tokenizer(), 4)
    assert dataset.examples[0].input_ids == [4, 5, 6, 7]
    assert dataset.examples[0].labels == [X, X, 6, 7]
    assert dataset.num_truncated == 1


def test_hf_dataset_on_disk_and_split_selection(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    rows = [{"prompt": "ab", "completion": " c"}, {"prompt": "b", "completion": " a"}]
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dd"))
    records = read_sft_records(tmp_path / "dd")
    assert [(r.prompt, r.completion) for r in records] == [("ab", " c"), ("b", " a")]
    assert records[1].where.endswith("row 2")
    with pytest.raises(SFTDataError, match="no split 'test'"):
        read_sft_records(tmp_path / "dd", split="test")
    Dataset.from_list([{"prompt": "ab", "answer": "x"}]).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(SFTDataError, match=r"bad row 1: field 'completion' is missing \(record has: answer, prompt\)"):
        read_sft_records(tmp_path / "bad")


@pytest.mark.parametrize(("lines", "message"), [
    (['{"prompt": "a", "completion": "b"}', '{"prompt": "a", "completion": '],
     r"d\.jsonl line 2: malformed JSON"),
    (['{"prompt": "a"}'], r"d\.jsonl line 1: field 'completion' is missing \(record has: prompt\)"),
    (['{"prompt": "a", "completion": 3}'], r"line 1: field 'completion' must be a string, got int"),
    (['{"text": "a"}'], r"line 1: record needs 'prompt' and 'completion' \(or 'messages'\); it has: text"),
    (['[1, 2]'], r"line 1: expected a JSON object, got list"),
    (['{"messages": []}'], r"line 1: field 'messages' must be a non-empty list"),
    (['{"messages": [{"role": "user", "content": "a"}]}'], r"line 1: field 'messages' has no assistant turn"),
    (['{"messages": [{"role": "bot", "content": "a"}]}'], r"line 1: field 'messages\[0\]\.role' is 'bot'"),
    (['{"messages": [{"role": "user"}]}'], r"line 1 messages\[0\]: field 'content' is missing"),
    (['{"messages": [{"role": "assistant", "content": "a"}]}'], r"field 'messages\[0\]' is an assistant turn"),
    (['', '  '], r"d\.jsonl: the dataset is empty"),
])
def test_bad_records_name_file_record_and_field(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(SFTDataError, match=message):
        read_sft_records(path)


def test_missing_file_and_non_dataset_directory(tmp_path: Path) -> None:
    with pytest.raises(SFTDataError, match=r"SFT data file .*nope\.jsonl does not exist"):
        read_sft_records(tmp_path / "nope.jsonl")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(SFTDataError, match="not a dataset written by datasets' save_to_disk"):
        read_sft_records(tmp_path / "empty_dir")


def test_long_prompt_is_an_error_naming_the_record_or_skipped_on_request(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ab", "completion": "c"},
                                              {"prompt": "abcdefgh", "completion": "c"}])
    with pytest.raises(PromptTooLongError, match=r"d\.jsonl line 2: field 'prompt' is 8 tokens, which fills "
                                                 r"the context of 6 tokens"):
        load_sft_dataset(path, char_tokenizer(), max_length=6)
    dataset = load_sft_dataset(path, char_tokenizer(), max_length=6, skip_long_prompts=True)
    assert len(dataset) == 1
    assert dataset.skipped_long_prompts == [f"{path} line 2"]
    only_long = write_jsonl(tmp_path / "long.jsonl", [{"prompt": "abcdefgh", "completion": "c"}])
    with pytest.raises(SFTDataError, match="no usable records"):
        load_sft_dataset(only_long, char_tokenizer(), max_length=6, skip_long_prompts=True)


def read_sft_records_from(objs: list[dict]) -> list:
    """Records parsed from in-memory objects, located as 'mem line N'."""
    from rlhfkit.data.sft import parse_record

    return [parse_record(obj, f"mem line {i}") for i, obj in enumerate(objs, start=1)]
