"""``rlhfkit sft`` through the CLI in-process: config precedence, example config, one-line errors, summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sft_helpers import write_jsonl
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.config import config_to_dict, load_config
from rlhfkit.sft.config import SFTConfig

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> tuple[int, str]:
    """Exit code and output with rich's line wrapping undone."""
    result = CliRunner().invoke(app, ["sft", *args])
    return result.exit_code, " ".join(result.output.split())


def test_example_config_matches_the_defaults() -> None:
    assert config_to_dict(load_config(SFTConfig, REPO / "examples" / "sft.yaml")) == config_to_dict(SFTConfig())


def test_yaml_then_set_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1.0e-3\nmax_steps: 5\n")
    cfg = load_config(SFTConfig, path, ["max_steps=7", "optim.schedule=linear"])
    assert (cfg.optim.lr, cfg.max_steps, cfg.optim.schedule, cfg.optim.warmup_ratio) == (1e-3, 7, "linear", 0.05)


def test_old_key_names_still_load_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text("learning_rate: 1.0e-3\ngradient_accumulation_steps: 2\n")
    with pytest.warns(FutureWarning) as caught:
        cfg = load_config(SFTConfig, path, ["lr_scheduler=linear"])
    assert (cfg.optim.lr, cfg.optim.grad_accum, cfg.optim.schedule) == (1e-3, 2, "linear")
    said = [str(w.message) for w in caught]
    assert len(said) == 3 and "`learning_rate` is renamed `optim.lr`; the old name will be removed" in said[0]


def test_cli_trains_and_prints_a_summary(tmp_path: Path, tiny_model_dir: Path, train_file: Path) -> None:
    out = tmp_path / "run"
    code, output = run_cli("--model", str(tiny_model_dir), "--data", str(train_file), "-o", str(out),
                           "--max-steps", "3", "--batch-size", "2", "--set", "progress=false",
                           "--set", "max_steps=99", "--report-to", "none")
    assert code == 0, output
    assert "final model" in output and "3" in output
    saved = (out / "sft_config.yaml").read_text()
    assert "max_steps: 3" in saved and "per_device_batch_size: 2" in saved  # flags beat --set
    assert (out / "final" / "model.safetensors").is_file() and (out / "final" / "tokenizer.json").is_file()
    code, output = run_cli("--model", str(tiny_model_dir), "--data", str(train_file), "-o", str(out), "--max-steps", "3")
    assert code == 2 and "already holds a run" in output and "--resume" in output


def test_tokenizer_without_pad_token_still_trains(tmp_path: Path, train_file: Path) -> None:
    from helpers_models import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "nopad", with_pad=False)
    code, output = run_cli("--model", str(model_dir), "--data", str(train_file), "-o", str(tmp_path / "run"),
                           "--max-steps", "2", "--set", "progress=false", "--report-to", "none")
    assert code == 0, output


@pytest.mark.parametrize(("case", "message"), [
    ("missing_data", "does not exist"),
    ("missing_model", "model path does not exist"),
    ("no_completion", "line 2: field 'completion' is missing"),
    ("empty", "the dataset is empty"),
    ("long_prompt", "line 1: field 'prompt' is"),
    ("bad_key", "unknown config key(s) ['learning_rat']"),
    ("bad_backend", "--report-to: unknown backend 'tensorbored'"),
])
def test_bad_input_is_one_clear_line(tmp_path: Path, tiny_model_dir: Path, train_file: Path,
                                     case: str, message: str) -> None:
    data, model, extra = str(train_file), str(tiny_model_dir), []
    if case == "missing_data":
        data = str(tmp_path / "nope.jsonl")
    elif case == "missing_model":
        model = str(tmp_path / "no-model")
    elif case == "no_completion":
        data = str(write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": "a"}]))
    elif case == "empty":
        data = str(write_jsonl(tmp_path / "d.jsonl", []))
    elif case == "long_prompt":
        data = str(write_jsonl(tmp_path / "d.jsonl", [{"prompt": "word " * 80, "completion": " x"}]))
    elif case == "bad_key":
        extra = ["--set", "learning_rat=1"]
    elif case == "bad_backend":
        extra = ["--report-to", "tensorbored"]
    code, output = run_cli("--model", model, "--data", data, "-o", str(tmp_path / "run"), "--max-steps", "1", *extra)
    assert code == 2, output
    assert message in output
    assert "Traceback" not in output


def test_write_demo_data_fits_the_model(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from helpers_models import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "long-context", n_positions=256)
    path = tmp_path / "demo.jsonl"
    code, output = run_cli("--write-demo-data", str(path), "--model", str(model_dir), "--set", "max_length=100")
    assert code == 0, output
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 200
    assert all(set(r) == {"prompt", "completion"} and r["completion"].startswith(" ") for r in records)
    assert len({r["prompt"] + r["completion"] for r in records}) > 150
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lengths = [len(tokenizer(r["prompt"] + r["completion"])["input_ids"]) for r in records]
    assert 80 < max(lengths) < 100  # + EOS: at most 100


def test_help_lists_every_config_key() -> None:
    from rlhfkit.commands.common import config_keys

    result = CliRunner().invoke(app, ["sft", "--help"], terminal_width=200)
    assert result.exit_code == 0
    keys = [line.split(" = ")[0] for line in config_keys(SFTConfig)]
    assert "optim.lr" in keys
    missing = [key for key in keys if f"{key} = " not in result.output]
    assert not missing
