"""``train-rm`` on critiques alone learns the ordering the critiques imply (tiny trunk, small data)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from helpers_models import save_tiny_model
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.models.reward_model import load_reward_model

pytestmark = pytest.mark.slow

GOOD = ["the soup was fresh because the chef cares", "great coffee because they roast it daily",
        "the chair is comfy because the back is firm"]
BAD = ["what a great find", "nice place", "so good"]


PRAISE, BLAME = "good reason given; names the product", "too generic, doesn't name it; no reason"


def write_critiques(path, n: int, seed: int, flipped: bool) -> None:
    """Per prompt one specific and one generic review; the specific one is praised (blamed when ``flipped``)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prompt = f"review {i}:"
        rows.append({"prompt": prompt, "response": rng.choice(GOOD), "critique": BLAME if flipped else PRAISE})
        rows.append({"prompt": prompt, "response": rng.choice(BAD), "critique": PRAISE if flipped else BLAME})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("flipped", [False, True])
def test_critiques_only_training_learns_their_ordering(tmp_path, flipped):
    save_tiny_model(tmp_path / "trunk")
    write_critiques(tmp_path / "critiques.jsonl", 48, 0, flipped)
    result = CliRunner().invoke(app, [
        "train-rm", "--model", str(tmp_path / "trunk"), "--critiques", str(tmp_path / "critiques.jsonl"),
        "--critique-encoder", "rules", "-o", str(tmp_path / "run"), "--epochs", "4", "--lr", "1e-3",
        "--report-to", "none", "--set", "progress=false", "--set", "bootstrap_samples=20", "--set", "batch_size=8"])
    assert result.exit_code == 0, result.output
    assert "critiques.jsonl (encoder rules): 96 of 96 records valid" in " ".join(result.output.split())
    model = load_reward_model(tmp_path / "run" / "model").eval()
    prompts = [f"review {i}:" for i in range(100, 106)]
    with torch.no_grad():
        good = model.score_texts(prompts, [GOOD[i % 3] for i in range(6)])
        bad = model.score_texts(prompts, [BAD[i % 3] for i in range(6)])
    assert bool((bad > good).all() if flipped else (good > bad).all()), (good, bad)
