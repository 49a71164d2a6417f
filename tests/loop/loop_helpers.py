"""A tiny loop config for the end-to-end tests: a test-sized GPT-2, a few comparisons, two PPO steps."""

from __future__ import annotations

from pathlib import Path

import yaml
from helpers_models import save_tiny_model


def tiny_loop_settings(tmp_path: Path, rounds: int = 2, comparisons: int = 10) -> dict:
    """A loop config (as a dict) that runs in seconds per round on a tiny random model."""
    model = save_tiny_model(tmp_path / "model")
    return {
        "run_dir": str(tmp_path / "run"), "model": str(model), "task": "sentiment", "rounds": rounds,
        "report_to": "none", "threads": 2,
        "candidates": {"prompts_per_round": max(6, comparisons // 2), "per_prompt": 3, "max_new_tokens": 12},
        "selection": {"comparisons_per_round": comparisons, "max_per_prompt": 3},
        "feedback": {"redundancy": 2, "panel": {"size": 3, "spammers": 1}, "wait_timeout_s": 120},
        "reward": {"train": {"epochs": 1, "batch_size": 8, "max_length": 64, "bootstrap_samples": 20,
                             "normalization_samples": 32, "save_every": 2}},
        "policy": {"prompts": 16, "ppo": {"run": {"steps": 2, "save_every": 1}, "num_prompts": 4,
                                          "num_minibatches": 1, "epochs": 1,
                                          "generation": {"max_new_tokens": 12}}},
        "eval": {"prompts": 4},
    }


def write_config(tmp_path: Path, settings: dict) -> Path:
    """The settings as a YAML file next to the run."""
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path
