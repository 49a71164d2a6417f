"""train-rm says on the console what it decided for the user: held-out split, length cap, truncation;
``--help`` marks ``--data`` as needed; a failed run leaves no empty output directory."""

from __future__ import annotations

import json

import pytest
from helpers_models import save_tiny_model
from typer.testing import CliRunner

from rlhfkit.cli import app

pytestmark = pytest.mark.slow

QUICK = ["--set", "progress=false", "--set", "bootstrap_samples=20", "--report-to", "none", "--batch-size", "8"]


def _said(result) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("rm-console")
    save_tiny_model(root / "trunk", n_positions=64)
    long_tail = " and the story goes on" * 20
    rows = [{"prompt": f"Question {i}?", "chosen": f"The movie was great {i}.", "rejected": f"The food was bad {i}."}
            for i in range(30)]
    rows += [{"prompt": f"Tell me more {i}.", "chosen": f"Good {i}{long_tail}", "rejected": f"Bad {i}{long_tail}"}
             for i in range(10)]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_split_cap_and_truncation_are_printed(workspace):
    out = workspace / "run"
    result = CliRunner().invoke(app, ["train-rm", "--model", str(workspace / "trunk"), "--data",
                                      str(workspace / "train.jsonl"), "-o", str(out), *QUICK])
    assert result.exit_code == 0, result.output
    said = _said(result)
    assert ("holding out 10% of --data for evaluation (4 records, training on 36): pass --eval-data to choose "
            "the evaluation set") in said
    assert "max_length 512 capped at the model's 64 (its context length)" in said
    report = json.loads((out / "data_report.json").read_text())[-1]
    cut = report["notes"]["truncated but kept"] + sum(p["count"] for p in report["problems"].values())
    assert cut > 0 and f"{cut} of 36 training records exceed 64 tokens" in said


def test_eval_data_means_no_split_message(workspace):
    result = CliRunner().invoke(app, ["train-rm", "--model", str(workspace / "trunk"), "--data",
                                      str(workspace / "train.jsonl"), "--eval-data", str(workspace / "train.jsonl"),
                                      "-o", str(workspace / "run-eval"), "--set", "max_length=64",
                                      "--set", "max_steps=1", *QUICK])
    assert result.exit_code == 0, result.output
    said = _said(result)
    assert "holding out" not in said and "capped" not in said


def test_failed_run_leaves_no_empty_output_directory(workspace):
    out = workspace / "never" / "run"
    result = CliRunner().invoke(app, ["train-rm", "--model", str(workspace / "no-such-model"), "--data",
                                      str(workspace / "train.jsonl"), "-o", str(out), *QUICK])
    assert result.exit_code != 0
    assert not out.exists()
    missing = CliRunner().invoke(app, ["train-rm", "--model", str(workspace / "trunk"), "--data",
                                       str(workspace / "absent.jsonl"), "-o", str(out), *QUICK])
    assert missing.exit_code != 0 and not out.exists()


def test_failed_run_keeps_an_existing_output_directory(workspace):
    out = workspace / "kept"
    out.mkdir()
    result = CliRunner().invoke(app, ["train-rm", "--model", str(workspace / "no-such-model"), "--data",
                                      str(workspace / "train.jsonl"), "-o", str(out), *QUICK])
    assert result.exit_code != 0 and out.is_dir()


def test_help_marks_data_as_required():
    said = " ".join(CliRunner().invoke(app, ["train-rm", "--help"], env={"COLUMNS": "250"}).output.split())
    assert "[required, or 'data' in --config] Feedback file" in said
