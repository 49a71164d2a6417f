"""``rlhfkit generate`` through the CLI on a tiny local model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_models import save_tiny_model
from typer.testing import CliRunner

from rlhfkit.cli import app


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("gen") / "model", eos_boost=1.5)


@pytest.mark.parametrize("sampler", ["hf", "cached"])
def test_generate_json_lines(model_dir: Path, sampler: str) -> None:
    result = CliRunner().invoke(app, ["generate", "--model", str(model_dir), "--prompt", "The movie was", "--prompt", "Hi",
                                      "--num", "3", "--max-new-tokens", "8", "--temperature", "0.8",
                                      "--sampler", sampler, "--json"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["prompt"] for r in records] == ["The movie was"] * 3 + ["Hi"] * 3
    assert all(1 <= r["tokens"] <= 8 and r["logprob"] <= 0 for r in records)


def test_generate_table_from_prompts_file(model_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What a lovely day\n\nPlease explain\n")
    result = CliRunner().invoke(app, ["generate", "-m", str(model_dir), "--prompts-file", str(prompts), "--greedy",
                                      "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert "What a lovely day" in result.stdout and "Please explain" in result.stdout and "mean logprob" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--model", "/no/such/model", "--prompt", "Hi"], "does not exist"),
    (["--prompt", "Hi", "--temperature", "0"], "temperature"),
    (["--prompt", "Hi " * 80], "exceeds the model context"),
    ([], "at least one --prompt"),
])
def test_generate_bad_input_is_one_clear_error(model_dir: Path, args: list[str], message: str) -> None:
    if "--model" not in args:
        args = ["--model", str(model_dir)] + args
    result = CliRunner().invoke(app, ["generate"] + args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
