"""One vocabulary across training commands: the same optimizer and LoRA keys, the same logged metric names."""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_models import save_tiny_model
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.reward.config import RewardTrainConfig
from rlhfkit.rl.config import DPOConfig, PolicyGradientConfig, PPOConfig
from rlhfkit.sft.config import SFTConfig
from rlhfkit.training_config import LoraConfig, OptimConfig
from rlhfkit.utils.tracking import read_metrics

TRAINING_CONFIGS = [SFTConfig, RewardTrainConfig, PPOConfig, PolicyGradientConfig, DPOConfig]
OPTIM_WORDS = {"lr", "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
               "grad_accum", "gradient_accumulation_steps", "lr_scheduler", "schedule", "warmup_steps", "warmup_ratio"}
OLD_METRIC_NAMES = {"lr", "train/lr", "train/grad_norm", "loss/train", "train/skipped_updates", "train/skipped_step"}


def _nested_configs(cls: type, prefix: str = "") -> Iterator[tuple[str, type]]:
    """``(dotted name, dataclass)`` of ``cls`` and every config nested in it (also inside ``X | None``)."""
    yield prefix, cls
    for name, hint in typing.get_type_hints(cls).items():
        for arg in (hint, *typing.get_args(hint)):
            if dataclasses.is_dataclass(arg):
                yield from _nested_configs(arg, f"{prefix}{name}.")


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("cls", TRAINING_CONFIGS, ids=lambda c: c.__name__)
def test_every_training_config_has_the_shared_optim_section(cls: type) -> None:
    optim = typing.get_type_hints(cls)["optim"]
    assert issubclass(optim, OptimConfig)
    assert _field_names(optim) == _field_names(OptimConfig)
    stray = [f"{path}{name}" for path, nested in _nested_configs(cls) if not issubclass(nested, OptimConfig)
             for name in _field_names(nested) if name in OPTIM_WORDS]
    assert not stray, f"optimizer keys outside `optim`: {stray}"


@pytest.mark.parametrize("cls", TRAINING_CONFIGS, ids=lambda c: c.__name__)
def test_lora_sections_use_the_shared_lora_config(cls: type) -> None:
    for path, nested in _nested_configs(cls):
        if "lora" in path.split("."):
            assert issubclass(nested, LoraConfig) and _field_names(nested) == _field_names(LoraConfig), path


def test_lora_settings_of_the_models_package_are_the_shared_config() -> None:
    from rlhfkit.models.lora import LoraSettings

    assert LoraSettings is LoraConfig


@pytest.mark.parametrize("cls", TRAINING_CONFIGS, ids=lambda c: c.__name__)
def test_renamed_keys_point_at_existing_keys(cls: type) -> None:
    for path, nested in _nested_configs(cls):
        for old, new in getattr(nested, "RENAMED", {}).items():
            assert old not in _field_names(nested), f"{path}{old} is still a field"
            target: Any = nested
            for part in new.split("."):
                assert part in _field_names(target), f"{path}{old} -> {path}{new}: no such key"
                hint = typing.get_type_hints(target)[part]
                target = next((a for a in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(a)), None)


def assert_shared_metric_names(records: list[dict[str, Any]], command: str) -> None:
    """The metrics.jsonl ``records`` of one training run use the shared names (reusable for the RL commands)."""
    names = {key for record in records for key in record}
    assert {"optim/lr", "grad/norm"} <= names, f"{command}: logged {sorted(names)}"
    assert any(name.startswith("loss/") for name in names), f"{command}: no loss/<name> in {sorted(names)}"
    assert not names & OLD_METRIC_NAMES, f"{command}: old metric names {sorted(names & OLD_METRIC_NAMES)}"


def _metrics_under(directory: Path) -> list[dict[str, Any]]:
    files = sorted(directory.rglob("metrics.jsonl"))
    assert len(files) == 1, files
    return read_metrics(files[0].parent)


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    return save_tiny_model(tmp_path / "tiny")


@pytest.fixture
def _fresh_accelerate() -> Iterator[None]:
    """SFT builds an Accelerator; accelerate keeps its settings in process-wide singletons."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.mark.usefixtures("_fresh_accelerate")
def test_sft_logs_the_shared_metric_names(tmp_path: Path, tiny_model: Path) -> None:
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"say {w}", "completion": f" {w} {w}."}) + "\n"
                            for w in ["good", "bad", "warm", "slow"] * 2))
    out = tmp_path / "sft"
    result = CliRunner().invoke(app, ["sft", "--model", str(tiny_model), "--data", str(data), "-o", str(out),
                                      "--max-steps", "2", "--batch-size", "4", "--report-to", "none",
                                      "--set", "progress=false", "--set", "save_steps=0"])
    assert result.exit_code == 0, result.output
    assert_shared_metric_names(_metrics_under(out / "logs"), "sft")


def test_train_rm_logs_the_shared_metric_names(tmp_path: Path, tiny_model: Path) -> None:
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps({"kind": "pairwise", "prompt": f"q{i}", "chosen": "good good",
                                        "rejected": f"bad {i}"}) + "\n" for i in range(8)))
    out = tmp_path / "rm"
    result = CliRunner().invoke(app, ["train-rm", "--model", str(tiny_model), "--data", str(data), "-o", str(out),
                                      "--batch-size", "4", "--report-to", "none", "--set", "max_steps=2",
                                      "--set", "log_every=1", "--set", "progress=false", "--set", "eval_fraction=0",
                                      "--set", "bootstrap_samples=0", "--set", "normalization_samples=4"])
    assert result.exit_code == 0, result.output
    assert_shared_metric_names(_metrics_under(out / "logs"), "train-rm")


RL_RUN = ["--report-to", "none", "--steps", "2", "--set", "run.progress=false", "--set", "run.save_every=0",
          "--set", "generation.max_new_tokens=4"]


@pytest.mark.parametrize("command,extra", [("ppo", ["--set", "num_prompts=4", "--set", "num_minibatches=2"]),
                                           ("grpo", ["--set", "num_prompts=2", "--set", "group_size=2"])])
def test_on_policy_commands_log_the_shared_metric_names(tmp_path: Path, tiny_model: Path, command: str,
                                                        extra: list[str]) -> None:
    reward = tmp_path / "length_reward.py"
    reward.write_text("def score(prompts, responses):\n    return [float(len(r)) for r in responses]\n")
    out = tmp_path / command
    result = CliRunner().invoke(app, [command, "--model", str(tiny_model), "--reward-fn", f"{reward}:score",
                                      "-o", str(out), *RL_RUN, *extra])
    assert result.exit_code == 0, result.output
    assert_shared_metric_names(read_metrics(out), command)


def test_dpo_logs_the_shared_metric_names(tmp_path: Path, tiny_model: Path) -> None:
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "good good", "rejected": f"bad {i}"}) + "\n"
                            for i in range(4)))
    out = tmp_path / "dpo"
    result = CliRunner().invoke(app, ["dpo", "--model", str(tiny_model), "--data", str(data), "-o", str(out),
                                      "--report-to", "none", "--steps", "2", "--set", "batch_size=2",
                                      "--set", "run.progress=false", "--set", "run.save_every=0"])
    assert result.exit_code == 0, result.output
    assert_shared_metric_names(read_metrics(out), "dpo")
