"""``rlhfkit train-rm`` under ``torchrun --nproc_per_node 2`` (gloo, CPU) against one process, same global batch."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_models import save_tiny_model
from reward.synthetic import comparisons, labels, rankings, ratings

from rlhfkit.data.preference_io import write_jsonl
from rlhfkit.models.reward_model import load_reward_model
from rlhfkit.reward.config import RewardLossConfig, RewardTrainConfig
from rlhfkit.reward.pipeline import train_reward_model
from rlhfkit.reward.trainer import RewardTrainer
from rlhfkit.utils.distributed import World
from rlhfkit.utils.tracking import read_metrics

# Two shards of 4 records vs one batch of 8: the same records, denominators and AdamW updates; only
# float summation order differs (gloo all-reduce, batch padding). Measured over 6 steps: loss
# 2.4e-7, final weights 6e-8; the bound leaves room for other CPUs.
LOSS_TOLERANCE = 1e-5
STEPS = 6

pytestmark = pytest.mark.slow


def _torchrun() -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _settings(root: Path) -> dict:
    return {"model": str(root / "trunk"), "data": [str(root / "train.jsonl")], "eval_data": [str(root / "test.jsonl")],
            "num_heads": 2, "batch_size": 8, "max_steps": STEPS, "log_every": 1, "save_every": 3,
            "keep_checkpoints": 3, "bootstrap_samples": 20, "normalization_samples": 64, "progress": False,
            "report_to": "none"}


def _config(root: Path, output: Path) -> RewardTrainConfig:
    return RewardTrainConfig(**_settings(root), output_dir=str(output), loss=RewardLossConfig(rating_loss="ordinal"))


def _cli_args(root: Path, output: Path) -> list[str]:
    args = ["-m", "rlhfkit.cli", "train-rm", "-o", str(output), "--model", str(root / "trunk"), "--data",
            str(root / "train.jsonl"), "--eval-data", str(root / "test.jsonl"), "--set", "loss.rating_loss=ordinal"]
    for key, value in _settings(root).items():
        if key not in ("model", "data", "eval_data"):
            args += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    return args


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rm-processes")
    save_tiny_model(root / "trunk")
    rng = random.Random(0)
    write_jsonl(comparisons(32, rng) + rankings(8, rng) + ratings(12, rng) + labels(12, rng), root / "train.jsonl")
    write_jsonl(comparisons(24, rng) + ratings(8, rng), root / "test.jsonl")
    return root


def _step_rows(output: Path) -> list[dict]:
    return [row for row in read_metrics(output / "logs") if "loss/total" in row]


def _max_weight_difference(a: Path, b: Path) -> float:
    first, second = load_reward_model(a).state_dict(), load_reward_model(b).state_dict()
    return max(float((first[k] - second[k]).abs().max()) for k in first)


def test_two_processes_match_one_and_resume_from_their_checkpoint(root: Path) -> None:
    two = root / "two"
    env = {**os.environ, "RLHFKIT_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*_torchrun(), *_cli_args(root, two)], capture_output=True, text=True, timeout=240,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("reward model saved") == 1  # the second process prints nothing

    one = train_reward_model(_config(root, root / "one"))
    rows_two, rows_one = _step_rows(two), _step_rows(root / "one")
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one] == list(range(1, STEPS + 1))
    for a, b in zip(rows_two, rows_one):
        assert sorted(a) == sorted(b)
        for key in (k for k in a if k.startswith(("loss/", "train/"))):
            assert a[key] == pytest.approx(b[key], abs=LOSS_TOLERANCE), (a["step"], key)
        assert a["count/pairs"] == b["count/pairs"]
    accuracy = json.loads((two / "eval.json").read_text())["metrics"]["pairwise_accuracy"]
    assert accuracy["value"] == one.evaluation.metrics["pairwise_accuracy"].value
    assert _max_weight_difference(two / "model", root / "one" / "model") < LOSS_TOLERANCE
    assert json.loads((two / "data_report.json").read_text())[0]["valid"] == 64
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["checkpoint-3", "checkpoint-6"]

    resumed = root / "resumed"
    shutil.copytree(two, resumed)
    for name in ("model", "checkpoints/checkpoint-6", "logs"):
        shutil.rmtree(resumed / name)
    outcome = train_reward_model(_config(root, resumed))
    assert outcome.summaries[0].resumed_from == 3
    assert [r["step"] for r in _step_rows(resumed)] == [4, 5, 6]
    assert _max_weight_difference(resumed / "model", two / "model") < LOSS_TOLERANCE


def test_a_batch_that_does_not_split_over_the_processes_is_refused(root: Path) -> None:
    config = RewardTrainConfig(model=str(root / "trunk"), batch_size=5, output_dir=str(root / "refused"))
    with pytest.raises(ValueError, match="batch_size 5 does not divide over 2 processes"):
        RewardTrainer(torch.nn.Linear(1, 1), config, [object()],  # type: ignore[arg-type]
                      world=World(rank=0, world_size=2))


def test_train_rm_refuses_an_fsdp_launch(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match="train-rm does not support FSDP: it runs data parallel"):
        train_reward_model(_config(root, root / "fsdp"))
    assert not (root / "fsdp").exists()
