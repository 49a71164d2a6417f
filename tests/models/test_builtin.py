"""The built-in base model: a quick-recipe build, its cache key, lock, atomicity and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from rlhfkit.models import builtin
from rlhfkit.models import corpus as corpus_lib

QUICK = builtin.BuiltinRecipe.quick(steps=30)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builtin.ensure_builtin_model(tmp_path_factory.mktemp("cache"), recipe=QUICK, show_progress=False)


def _fake_build(calls: list[str], delay: float = 0.0, fail: bool = False) -> Any:
    def build(out_dir: Path, recipe: builtin.BuiltinRecipe, **_: Any) -> dict[str, Any]:
        calls.append(threading.current_thread().name)
        time.sleep(delay)
        if fail:
            raise RuntimeError("training diverged")
        (Path(out_dir) / builtin.INFO_FILE).write_text(json.dumps({"recipe": dataclasses.asdict(recipe)}))
        return {}
    return build


@pytest.mark.slow
def test_quick_build_loads_with_auto_classes(built: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert built.name == f"builtin-{builtin.recipe_hash(QUICK)}"
    assert (built / "model.safetensors").is_file() and (built / "tokenizer.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(built)
    model = AutoModelForCausalLM.from_pretrained(built)
    assert tokenizer.eos_token == builtin.EOS_TOKEN and tokenizer.bos_token == builtin.EOS_TOKEN
    assert tokenizer.pad_token == builtin.PAD_TOKEN and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.eos_token_id == tokenizer.eos_token_id and model.config.pad_token_id == tokenizer.pad_token_id
    assert model.config.vocab_size == len(tokenizer) and model.config.n_embd == QUICK.n_embd
    text = "Review of the Blue Fork cafe: The soup was great because the broth was rich."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    documents = corpus_lib.build_corpus(60, seed=9)
    rows, prompt_lengths, dropped = builtin.encode_documents(tokenizer, documents, 10_000)
    assert dropped == 0 and all(row[-1] == tokenizer.eos_token_id for row in rows)
    for doc, row, length in zip(documents, rows, prompt_lengths):
        assert row[:length] == tokenizer(doc.prompt)["input_ids"]
        assert tokenizer.decode(row[length:-1]) == doc.completion
    prompt = tokenizer("Review of the Blue Fork cafe:", return_tensors="pt")
    output = model.generate(**prompt, do_sample=False, max_new_tokens=4, pad_token_id=tokenizer.pad_token_id)
    assert output.shape[1] <= prompt["input_ids"].shape[1] + 4


@pytest.mark.slow
def test_build_info_records_recipe_and_a_falling_loss(built: Path) -> None:
    info = builtin.read_info(built)
    assert info["recipe"] == dataclasses.asdict(QUICK) and info["recipe_hash"] == builtin.recipe_hash(QUICK)
    assert info["corpus_fingerprint"] == corpus_lib.corpus_fingerprint()
    assert info["build_seconds"] > 0 and info["corpus_documents"] > 250 and info["trained_tokens"] > 0
    assert all(math.isfinite(info[key]) for key in ("first_loss", "final_loss", "eval_loss"))
    assert info["final_loss"] < info["first_loss"] - 0.3


@pytest.mark.slow
def test_cached_second_call_is_instant(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builtin, "build_builtin_model", _fake_build([], fail=True))
    started = time.perf_counter()
    assert builtin.ensure_builtin_model(built.parent, recipe=QUICK) == built
    assert time.perf_counter() - started < 0.5


@pytest.mark.slow
def test_cached_lookup_does_not_import_torch(built: Path) -> None:
    code = ("import sys; from rlhfkit.models.builtin import BuiltinRecipe, ensure_builtin_model; "
            f"path = ensure_builtin_model({str(built.parent)!r}, recipe=BuiltinRecipe.quick(steps={QUICK.steps})); "
            "print(path, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == [str(built), "False"]


@pytest.mark.slow
def test_cli_shows_path_recipe_and_samples(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from rlhfkit.cli import app

    monkeypatch.setattr(builtin, "DEFAULT_RECIPE", QUICK)
    result = CliRunner().invoke(app, ["base-model", "--cache-dir", str(built.parent), "--samples", "3"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert built.name in flat and "build time" in flat and f"{QUICK.steps} AdamW steps" in flat
    assert flat.count("Review of ") >= 2 and "Q: " in flat


def test_concurrent_callers_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(builtin, "build_builtin_model", _fake_build(calls, delay=0.5))
    results: list[Path] = []
    start = threading.Barrier(3)

    def call() -> None:
        start.wait()
        results.append(builtin.ensure_builtin_model(tmp_path, recipe=QUICK, show_progress=False))

    threads = [threading.Thread(target=call, name=f"caller-{i}") for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(results) == 3 and len(set(results)) == 1 and builtin.is_built(results[0])
    assert not list(tmp_path.glob(".builtin-*"))


def test_build_inside_an_open_display_adds_its_bar_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console
    from rich.progress import Progress

    def no_second_display(**_: Any) -> Any:
        raise AssertionError("the build opened a second live display")

    monkeypatch.setattr("rlhfkit.utils.progress.make_progress", no_second_display)
    seen: list[Any] = []

    def build(out_dir: Path, recipe: builtin.BuiltinRecipe, *, progress: Any = None, **_: Any) -> dict[str, Any]:
        with builtin._training_bar(progress, True, 3) as (bar, task):
            seen.append([t.description for t in bar.tasks])
            bar.update(task, advance=3)
        (Path(out_dir) / builtin.INFO_FILE).write_text("{}")
        return {}

    monkeypatch.setattr(builtin, "build_builtin_model", build)
    out = io.StringIO()
    with Progress(console=Console(file=out, force_terminal=True, width=100)) as display:
        display.add_task("rounds", total=4)
        path = builtin.ensure_builtin_model(tmp_path, recipe=QUICK, progress=display)
        assert [t.description for t in display.tasks] == ["rounds"]  # the build's bar is gone again
    assert builtin.is_built(path) and seen == [["rounds", "training the built-in model"]]
    assert "Building the built-in base model" in out.getvalue()


def test_force_rebuilds_and_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(builtin, "build_builtin_model", _fake_build(calls))
    path = builtin.ensure_builtin_model(tmp_path, recipe=QUICK, show_progress=False)
    builtin.ensure_builtin_model(tmp_path, recipe=QUICK, show_progress=False)
    builtin.ensure_builtin_model(tmp_path, recipe=QUICK, force=True, show_progress=False)
    assert len(calls) == 2 and builtin.is_built(path)

    other = dataclasses.replace(QUICK, seed=7)
    monkeypatch.setattr(builtin, "build_builtin_model", _fake_build(calls, fail=True))
    with pytest.raises(RuntimeError, match="diverged"):
        builtin.ensure_builtin_model(tmp_path, recipe=other, show_progress=False)
    assert not builtin.builtin_model_dir(tmp_path, other).exists()
    assert not list(tmp_path.glob(".builtin-*"))


def test_stale_temporary_builds_are_cleared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builtin, "build_builtin_model", _fake_build([]))
    target = builtin.builtin_model_dir(tmp_path, QUICK)
    stale = tmp_path / f".{target.name}.tmp-killed"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    builtin.ensure_builtin_model(tmp_path, recipe=QUICK, show_progress=False)
    assert not stale.exists() and builtin.is_built(target)


def test_hash_covers_recipe_and_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    assert builtin.recipe_hash(QUICK) == builtin.recipe_hash(builtin.BuiltinRecipe.quick(steps=30))
    assert builtin.recipe_hash(QUICK) != builtin.recipe_hash(dataclasses.replace(QUICK, steps=31))
    assert builtin.recipe_hash(QUICK) != builtin.recipe_hash(dataclasses.replace(QUICK, lr=1e-3))
    assert builtin.recipe_hash(builtin.DEFAULT_RECIPE) != builtin.recipe_hash(QUICK)
    before = builtin.recipe_hash(QUICK)
    monkeypatch.setattr(corpus_lib, "corpus_fingerprint", lambda: "another corpus")
    assert builtin.recipe_hash(QUICK) != before


def test_cache_root_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(builtin.CACHE_ENV, str(tmp_path / "mine"))
    assert builtin.default_cache_root() == tmp_path / "mine"
    assert builtin.builtin_model_dir().parent == tmp_path / "mine"
    assert builtin.builtin_model_dir(tmp_path / "explicit", QUICK).parent == tmp_path / "explicit"
    monkeypatch.delenv(builtin.CACHE_ENV)
    monkeypatch.setattr(builtin.sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert builtin.default_cache_root() == tmp_path / "xdg" / "rlhfkit"


def test_read_info_names_the_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="builtin.json"):
        builtin.read_info(tmp_path)


def test_cosine_schedule_values() -> None:
    factor = builtin.cosine_lr_factor
    assert factor(0, 10, 110, 0.1) == pytest.approx(0.1)
    assert factor(9, 10, 110, 0.1) == pytest.approx(1.0)
    assert factor(10, 10, 110, 0.1) == pytest.approx(1.0)
    assert factor(60, 10, 110, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert factor(110, 10, 110, 0.1) == pytest.approx(0.1)
    assert factor(500, 10, 110, 0.1) == pytest.approx(0.1)


def test_length_grouped_batches_and_collate() -> None:
    rng = random.Random(0)
    rows = [[1] * rng.randint(2, 60) for _ in range(1000)]
    batches = builtin.length_grouped_batches(rows, 16, random.Random(1))
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    padded = sum(max(len(rows[i]) for i in b) * len(b) for b in batches)
    assert padded < 1.1 * sum(map(len, rows))
    ids, mask, labels = builtin.collate([[5, 6, 7], [8]], pad_id=1)
    assert ids.tolist() == [[5, 6, 7], [8, 1, 1]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert labels.tolist() == [[5, 6, 7], [8, -100, -100]]
    assert labels.dtype == torch.long
    _, _, completion_labels = builtin.collate([[5, 6, 7], [8, 9]], pad_id=1, prompt_lengths=[2, 1])
    assert completion_labels.tolist() == [[-100, -100, 7], [-100, 9, -100]]
