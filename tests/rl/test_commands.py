"""The rl commands in-process (typer's CliRunner): grpo/rloo/dpo run; bad input is one clean line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_rloo_with_lora_and_dpo_commands_run(tmp_path, toy_files):
    out = invoke("rloo", "--model", str(toy_files["model"]), "--reward-fn", f"{toy_files['reward']}:score",
                 "--prompts", str(toy_files["prompts"]), "--output-dir", str(tmp_path / "rloo"), "--steps", "2",
                 "--report-to", "none", "--set", "num_prompts=2", "--set", "generation.max_new_tokens=2",
                 "--set", "run.lora.r=2", "--set", "run.progress=false")
    assert out.exit_code == 0, out.output
    assert "done: 2 steps" in out.output and (tmp_path / "rloo" / "final" / "adapter_model.safetensors").is_file()
    config = json.loads((tmp_path / "rloo" / "config.json").read_text())
    assert config["algo"] == "rloo" and config["run"]["lora"]["r"] == 2
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps({"prompt": "a", "chosen": c, "rejected": r}) + "\n"
                            for c, r in [("a", "b"), ("c d", "d"), ("a b", "c"), ("b", "b b")])
                    + '{"prompt": "a", "chosen": "b"}\n'
                    + '{"kind": "rating", "prompt": "a", "response": "b", "rating": 3, "scale": [1, 5]}\n')
    out = invoke("dpo", "--data", str(data), "--model", str(toy_files["model"]), "--output-dir", str(tmp_path / "dpo"),
                 "--report-to", "none", "--loss", "ipo", "--set", "batch_size=2", "--set", "epochs=2",
                 "--set", "run.progress=false")
    assert out.exit_code == 0, out.output
    assert "done: 4 steps" in out.output
    said = " ".join(out.output.split())  # the dropped and unused records are reported, as train-rm does
    assert "prefs.jsonl: 5 of 6 records valid" in said and "[5]" in said
    assert "1 record(s) carry no strict preference" in said and "4 pairs remain" in said
    metrics = [json.loads(line) for line in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss/dpo", "rewards/accuracy", "time/training", "time/reference"} <= set(metrics[0])


@pytest.mark.parametrize("args,message", [
    (["grpo", "--reward-fn", "nowhere_xyz:f"], "cannot import 'nowhere_xyz'"),
    (["grpo", "--reward-fn", "x:y", "--set", "group_size=zero"], "group_size: expected an integer"),
    (["ppo", "--reward-fn", "x:y", "--set", "nonsense=1"], "unknown config key(s) ['nonsense']"),
    (["dpo"], "DPO needs preference data"),
    (["ppo"], "no reward given"),
])
def test_bad_input_is_one_clean_line(tmp_path, toy_files, args, message):
    out = invoke(*args, "--model", str(toy_files["model"]), "--output-dir", str(tmp_path / "out"),
                 "--report-to", "none")
    assert out.exit_code == 2, out.output
    assert message in " ".join(out.output.split())
    assert "Traceback" not in out.output


@pytest.mark.parametrize("name,cls", [("ppo", "PPOConfig"), ("grpo", "PolicyGradientConfig"), ("dpo", "DPOConfig")])
def test_example_configs_load(name, cls):
    from pathlib import Path

    from rlhfkit.config import load_config
    from rlhfkit.rl import config as rl_config

    path = Path(__file__).resolve().parents[2] / "examples" / f"{name}.yaml"
    loaded = load_config(getattr(rl_config, cls), path)
    assert loaded.run.output_dir == f"runs/{name}"


def test_help_keeps_the_default_output_dir_readable():
    # markdown help used to swallow "runs/<command>" as an HTML tag, leaving "(default runs/)"
    said = " ".join(runner.invoke(app, ["ppo", "--help"], terminal_width=250).output.split())
    assert "(default runs/ppo, runs/grpo" in said and "runs/)" not in said
