"""Loop config: defaults < YAML < --set, merged key by key so tuned nested defaults survive."""

from __future__ import annotations

import pytest

from rlhfkit.config import ConfigError
from rlhfkit.loop.config import LoopConfig
from rlhfkit.loop.runner import load_loop_config


def test_partial_nested_override_keeps_the_other_tuned_defaults(tmp_path):
    default = LoopConfig()
    path = tmp_path / "loop.yaml"
    path.write_text("rounds: 2\npolicy:\n  ppo:\n    run: {steps: 3}\nfeedback: {panel: {size: 4}}\n")
    config = load_loop_config(path, ["policy.ppo.num_prompts=8", "rounds=5"])
    assert config.rounds == 5  # --set beats YAML
    assert config.policy.ppo.run.steps == 3 and config.policy.ppo.num_prompts == 8
    assert config.policy.ppo.optim.lr == default.policy.ppo.optim.lr  # not the trainer's class default
    assert config.policy.ppo.run.save_every == default.policy.ppo.run.save_every
    assert config.feedback.panel.size == 4 and config.feedback.panel.spammers == default.feedback.panel.spammers
    assert config.reward.train.num_heads == default.reward.train.num_heads


def test_partial_ppo_section_keeps_the_loops_ppo_defaults(tmp_path):
    default = LoopConfig()
    assert default.policy.ppo.run.steps == 16 and default.policy.ppo.reward.uncertainty_coef == 0.5
    path = tmp_path / "loop.yaml"
    path.write_text("policy: {ppo: {num_prompts: 32}}\n")
    for config in (load_loop_config(path), load_loop_config(None, ["policy.ppo.num_prompts=32"])):
        assert config.policy.ppo.num_prompts == 32
        assert config.policy.ppo.run.steps == 16 and config.policy.ppo.run.save_every == 4
        assert config.policy.ppo.reward.uncertainty_coef == 0.5 and config.policy.ppo.kl.coef == 0.15
        assert config.policy.ppo.entropy_coef == 0.01
        assert config.policy.ppo.generation.max_new_tokens == 48
        assert config.policy.algorithm == default.policy.algorithm and config.policy.group == default.policy.group


def test_unknown_keys_and_bad_values_are_named(tmp_path):
    with pytest.raises(ConfigError, match="feedback.panel.sizee"):
        load_loop_config(None, ["feedback.panel.sizee=3"])
    path = tmp_path / "bad.yaml"
    path.write_text("rounds: many\n")
    with pytest.raises(ConfigError, match=r"rounds.*\(in .*bad.yaml\)"):
        load_loop_config(path)


@pytest.mark.parametrize("override, message", [
    ("candidates.per_prompt=1", "per_prompt must be >= 2"),
    ("feedback.redundancy=9", "exceeds the panel size"),
    ("feedback.panel.spammers=9", "do not fit"),
    ("rounds=0", "rounds must be >= 1"),
])
def test_inconsistent_settings_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_loop_config(None, [override])


def test_the_example_config_loads_and_documents_the_defaults():
    from pathlib import Path

    from rlhfkit.config import config_to_dict

    example = Path(__file__).resolve().parents[2] / "examples" / "loop.yaml"
    loaded = config_to_dict(load_loop_config(example))
    defaults = config_to_dict(LoopConfig())
    assert loaded.pop("run_dir") == "runs/loop-example"
    defaults.pop("run_dir")
    assert loaded == defaults
