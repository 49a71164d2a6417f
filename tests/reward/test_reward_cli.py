"""``rlhfkit train-rm / eval-rm / probe-rm`` end to end on a tiny trunk, in-process."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
from helpers_models import save_tiny_model
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.data.preference_io import write_jsonl
from rlhfkit.models.reward_model import RewardEnsemble, load_reward_model
from rlhfkit.reward.config import RewardTrainConfig
from rlhfkit.reward.pipeline import train_reward_model
from rlhfkit.utils.tracking import read_metrics

from .synthetic import comparisons, labels, ratings, rankings

pytestmark = pytest.mark.slow


def _said(result) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("rm-cli")
    save_tiny_model(root / "trunk")
    rng = random.Random(0)
    write_jsonl(comparisons(40, rng) + rankings(10, rng) + ratings(20, rng) + labels(20, rng), root / "train.jsonl")
    with open(root / "train.jsonl", "a") as handle:
        handle.write(json.dumps({"kind": "pairwise", "prompt": "p", "chosen": "same", "rejected": "same"}) + "\n")
        handle.write(json.dumps({"kind": "rating", "prompt": "p", "response": "r", "rating": 9, "scale": [1, 5]}) + "\n")
    write_jsonl(comparisons(20, rng) + rankings(5, rng) + ratings(10, rng), root / "test.jsonl")
    return root


def test_train_eval_probe(workspace):
    runner = CliRunner()
    out = workspace / "run"
    result = runner.invoke(app, ["train-rm", "--model", str(workspace / "trunk"), "--data", str(workspace / "train.jsonl"),
                                 "--eval-data", str(workspace / "test.jsonl"), "-o", str(out), "--num-heads", "2",
                                 "--report-to", "tensorboard", "--set", "epochs=1", "--set", "batch_size=16",
                                 "--set", "progress=false", "--set", "bootstrap_samples=50", "--set", "eval_every=2",
                                 "--set", "log_every=1"])
    assert result.exit_code == 0, result.output
    assert "identical chosen/rejected: 1 record(s) [91]" in _said(result)
    assert "rating outside the declared scale: 1 record(s) [92]" in _said(result)
    assert "pairwise_accuracy" in _said(result)
    model = load_reward_model(out / "model")
    assert model.num_heads == 2 and model.settings.std > 0
    metrics = read_metrics(out / "logs")
    assert any("loss/pairwise" in m for m in metrics)
    assert [m["step"] for m in metrics if "eval/ranking_kendall_tau" in m] == [2, 4, 6]  # mid-run, then final
    assert "eval/pairwise_accuracy_low" in metrics[-1]
    assert (out / "logs" / "tensorboard").is_dir() and (out / "reliability.png").is_file()
    report = json.loads((out / "data_report.json").read_text())
    assert report[0]["valid"] == 90 and report[0]["total"] == 92

    result = runner.invoke(app, ["eval-rm", "--model", str(out / "model"), "--data", str(workspace / "test.jsonl"),
                                 "-o", str(workspace / "eval"), "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((workspace / "eval" / "eval.json").read_text())
    assert set(evaluation["metrics"]) >= {"pairwise_accuracy", "pairwise_ece", "ranking_kendall_tau", "rating_spearman",
                                          "rating_rmse"}
    assert (workspace / "eval" / "reliability.png").is_file()
    assert json.loads((workspace / "eval" / "logs" / "config.json").read_text())["bootstrap_samples"] == 50

    result = runner.invoke(app, ["probe-rm", "--model", str(out / "model"), "--data", str(workspace / "test.jsonl"),
                                 "-o", str(workspace / "probe"), "--samples", "8", "--suffix-length", "1",
                                 "--set", "suffix_candidates=4"])
    assert result.exit_code == 0, result.output
    probes = json.loads((workspace / "probe" / "probes.json").read_text())
    names = {p["name"] for p in probes["probes"]}
    assert names >= {"filler_padding", "repeated_sentence", "flattery", "claims_correct", "truncation", "off_topic_swap"}
    assert all(0.0 <= p["share_rose"] <= 1.0 and p["n"] == 8 for p in probes["probes"])
    assert json.loads((workspace / "probe" / "logs" / "config.json").read_text())["suffix_candidates"] == 4


def test_rerun_resumes_instead_of_retraining(workspace):
    config = RewardTrainConfig(model=str(workspace / "trunk"), data=[str(workspace / "train.jsonl")],
                               output_dir=str(workspace / "resume"), max_steps=2, batch_size=8, progress=False,
                               report_to="none", bootstrap_samples=0)
    first = train_reward_model(config)
    again = train_reward_model(config)
    assert first.summaries[0].resumed_from == 0 and again.summaries[0].resumed_from == 2


def test_ensemble_of_members(workspace):
    config = RewardTrainConfig(model=str(workspace / "trunk"), data=[str(workspace / "train.jsonl")],
                               output_dir=str(workspace / "ensemble"), max_steps=1, batch_size=8, ensemble_size=2,
                               progress=False, report_to="none", eval_fraction=0.0)
    outcome = train_reward_model(config)
    ensemble = load_reward_model(outcome.model_dir)
    assert isinstance(ensemble, RewardEnsemble) and len(ensemble.members) == 2
    mean, std = ensemble.score_texts(["q0 answer:"], ["good good"], with_uncertainty=True)
    assert std.item() > 0
    warm = dataclasses.replace(config, model=str(outcome.model_dir), output_dir=str(workspace / "ensemble-warm"))
    continued = load_reward_model(train_reward_model(warm).model_dir)
    assert isinstance(continued, RewardEnsemble) and len(continued.members) == 2


def test_bad_input_and_config_errors_exit_cleanly(workspace, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"kind": "label", "prompt": "p", "response": "", "label": True}) + "\n")
    runner = CliRunner()
    result = runner.invoke(app, ["train-rm", "--model", str(workspace / "trunk"), "--data", str(bad), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no valid feedback records" in _said(result) and "empty response" in _said(result)
    result = runner.invoke(app, ["train-rm", "--data", str(bad), "--set", "nonsense=1"])
    assert result.exit_code == 2 and "unknown config key" in _said(result)
    result = runner.invoke(app, ["eval-rm", "--model", str(tmp_path / "missing"), "--data", str(workspace / "test.jsonl")])
    assert result.exit_code == 2 and "not a directory" in _said(result)
