"""``--help`` of train-rm / eval-rm / probe-rm lists every config key, and no flag suggests a key they lack."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.commands.common import config_keys
from rlhfkit.reward.config import RewardEvalConfig, RewardProbeConfig, RewardTrainConfig
from rlhfkit.sft.config import SFTConfig


@pytest.mark.parametrize("command,cls", [("train-rm", RewardTrainConfig), ("eval-rm", RewardEvalConfig),
                                         ("probe-rm", RewardProbeConfig)])
def test_help_lists_every_config_key(command, cls):
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    keys = [line.split(" = ")[0] for line in config_keys(cls)]
    assert "loss.use_margin" in keys or cls is not RewardTrainConfig  # nested sections are dotted
    missing = [key for key in keys if f"{key} = " not in result.output]
    assert not missing


@pytest.mark.parametrize("command,cls", [("train-rm", RewardTrainConfig), ("eval-rm", RewardEvalConfig),
                                         ("probe-rm", RewardProbeConfig), ("sft", SFTConfig)])
def test_set_help_does_not_suggest_a_key_the_command_lacks(command, cls):
    # it once said `--set optim.lr=1e-4` where the config had no optim section; now only configs with one say it
    said = " ".join(CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"}).output.split())
    keys = {line.split(" = ")[0] for line in config_keys(cls)}
    assert "--set KEY=VALUE" in said and ("optim.lr" in said) == ("optim.lr" in keys)
