"""Loading tokenizers and causal LMs from local directories, and the errors for bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from helpers_models import save_tiny_model, tiny_gpt2, tiny_tokenizer
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rlhfkit.models.loading import ModelError, load_causal_lm, load_tokenizer, resolve_model_path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_load_by_path_matches_saved_model(model_dir: Path) -> None:
    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, device="cpu", dtype="float32")
    reference = tiny_gpt2(tiny_tokenizer())
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<pad>"
    assert model.dtype == torch.float32 and not model.training
    ids = tokenizer(["The movie was great", "Hi"], return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(model(**ids).logits, reference(**ids).logits, rtol=0, atol=0)


def test_load_relative_path_and_dtype(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(model_dir.parent)
    model = load_causal_lm("./model", device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    assert resolve_model_path("./model") == str(model_dir.resolve())


@pytest.mark.parametrize("name", ["/nonexistent/model-dir", "./missing-model", "a/b/c"])
def test_missing_path_is_a_model_error_naming_it(name: str) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_causal_lm(name)
    with pytest.raises(ModelError, match="does not exist"):
        load_tokenizer(name)


def test_uncached_hub_id_offline_is_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="rlhfkit-test/definitely-not-cached"):
        load_causal_lm("rlhfkit-test/definitely-not-cached")


def test_directory_without_config_is_a_model_error(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelError, match="no config.json"):
        load_causal_lm(tmp_path)
    with pytest.raises(ModelError, match="no tokenizer files"):
        load_tokenizer(tmp_path)
    with pytest.raises(ModelError, match="is a file"):
        resolve_model_path(tmp_path / "weights.bin")


def test_tokenizer_without_pad_uses_eos(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    save_tiny_model(tmp_path, with_pad=False)
    with caplog.at_level(logging.INFO, logger="rlhfkit.models.loading"):
        tokenizer = load_tokenizer(tmp_path)
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert "no pad token" in caplog.text


def test_tokenizer_without_pad_or_eos_is_a_model_error(tmp_path: Path) -> None:
    raw = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]").save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="neither a pad token nor an eos token"):
        load_tokenizer(tmp_path)


def test_right_padding_on_request(model_dir: Path) -> None:
    assert load_tokenizer(model_dir, padding_side="right").padding_side == "right"
    with pytest.raises(ModelError, match="padding_side"):
        load_tokenizer(model_dir, padding_side="middle")


def test_builtin_name_goes_through_ensure_builtin_model(monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> None:
    import types
    import sys

    fake = types.ModuleType("rlhfkit.models.builtin")
    fake.ensure_builtin_model = lambda cache_dir=None: model_dir  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rlhfkit.models.builtin", fake)
    assert resolve_model_path("builtin") == str(model_dir)
    assert load_tokenizer("builtin").pad_token == "<pad>"
