"""The loop's policy phase builds nothing itself: it fills in a config and calls the CLI's runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rlhfkit.config import load_config
from rlhfkit.loop.config import LoopConfig
from rlhfkit.loop.policy_phase import optimize_policy, trainer_config
from rlhfkit.rl.runner import TrainResult
from rlhfkit.tasks import get_task


def loop_config(*overrides: str) -> LoopConfig:
    return load_config(LoopConfig, None, list(overrides))


def test_trainer_config_keeps_the_users_reward_functions_and_sampler(tmp_path: Path) -> None:
    config = loop_config("policy.ppo.reward.functions=[mymod:bonus]", "sampler=hf")
    cfg = trainer_config(config, "builtin", tmp_path / "policy", tmp_path / "rm", round_index=1)
    assert cfg.reward.models == [str(tmp_path / "rm")] and cfg.reward.functions == ["mymod:bonus"]
    assert cfg.generation.backend == "hf" and cfg.run.output_dir == str(tmp_path / "policy")
    assert cfg.run.seed == config.seed + 1000 and cfg.algo == "ppo"


@pytest.mark.parametrize("algorithm,runner_name", [("ppo", "train_on_policy"), ("rloo", "train_on_policy"),
                                                    ("dpo", "train_dpo")])
def test_optimize_policy_runs_through_the_clis_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      algorithm: str, runner_name: str) -> None:
    import rlhfkit.rl.runner as runner

    calls: list[dict[str, Any]] = []

    def fake(cfg: Any, report_to: str = "tensorboard", resume: Any = None, **kwargs: Any) -> TrainResult:
        calls.append({"cfg": cfg, "resume": resume, **kwargs})
        final = Path(cfg.run.output_dir) / "final"
        final.mkdir(parents=True)
        (final / "config.json").write_text("{}")
        return TrainResult(Path(cfg.run.output_dir), final, cfg.run.steps, None, {})

    monkeypatch.setattr(runner, runner_name, fake)
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_text('{"kind": "pairwise", "prompt": "p", "chosen": "a", "rejected": "b"}\n')
    config = loop_config(f"policy.algorithm={algorithm}")
    final, steps = optimize_policy(config, get_task("sentiment"), "base-model", "round-1-policy", tmp_path / "rm",
                                   ["p1", "p2"], tmp_path / "policy", 1, None, 0, feedback=feedback)
    assert final == tmp_path / "policy" / "final" and len(calls) == 1
    call = calls[0]
    assert call["resume"] is True and call["reference"] == "base-model"
    if algorithm != "dpo":
        assert call["prompts"] == ["p1", "p2"] and call["gold"] is not None and call["cfg"].algo == algorithm
