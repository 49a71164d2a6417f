"""The loop with LoRA: adapters trained round after round on one base, the base (adapters off) as reference."""

from __future__ import annotations

import json

import pytest
from loop_helpers import tiny_loop_settings, write_config

from rlhfkit.loop.runner import load_loop_config, run_rlhf_loop
from rlhfkit.loop.state import load_state


@pytest.mark.slow
def test_two_lora_rounds_chain_adapters_on_the_base(tmp_path) -> None:
    settings = tiny_loop_settings(tmp_path, rounds=2, comparisons=6)
    settings["policy"]["ppo"]["run"]["lora"] = {"r": 4, "alpha": 8}
    config = load_loop_config(write_config(tmp_path, settings))
    run_rlhf_loop(config, quiet=True)
    run = tmp_path / "run"
    assert load_state(run).finished
    for index in (1, 2):
        final = run / "rounds" / f"round-{index:03d}" / "policy" / "final"
        adapter = json.loads((final / "adapter_config.json").read_text())
        assert adapter["r"] == 4
        assert not (final / "model.safetensors").exists()  # adapters only, no second copy of the base
        metrics = json.loads((run / "rounds" / f"round-{index:03d}" / "metrics.json").read_text())
        assert metrics["eval/kl"] > 0
    # round 2 continued round 1's adapters on the same base instead of stacking a new adapter on a merged copy
    first = json.loads((run / "rounds" / "round-001" / "policy" / "final" / "adapter_config.json").read_text())
    second = json.loads((run / "rounds" / "round-002" / "policy" / "final" / "adapter_config.json").read_text())
    assert second["base_model_name_or_path"] == first["base_model_name_or_path"]
