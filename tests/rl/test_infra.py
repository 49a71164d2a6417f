"""Trainer infrastructure: prompt stream position, skip guard, phase timer, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.rl.checkpointing import CheckpointError, load_checkpoint, resolve_resume, save_checkpoint
from rlhfkit.rl.guard import SkipGuard, TooManySkipsError, first_non_finite
from rlhfkit.rl.prompts import PromptError, PromptStream, read_prompts
from rlhfkit.rl.timers import PhaseTimer


def test_prompt_stream_covers_each_pass_and_resumes_exactly():
    prompts = [f"p{i}" for i in range(5)]
    stream = PromptStream(prompts, seed=3)
    first_pass = stream.next_batch(5)
    assert sorted(first_pass) == prompts
    stream.next_batch(2)
    saved = stream.state_dict()
    expected = stream.next_batch(7)
    resumed = PromptStream(prompts, seed=3)
    resumed.load_state_dict(saved)
    assert resumed.next_batch(7) == expected
    assert PromptStream(prompts, seed=0, shuffle=False).next_batch(6) == prompts + ["p0"]


def test_read_prompts_txt_jsonl_and_errors(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("one\n\ntwo\n")
    assert read_prompts(txt) == ["one", "two"]
    jl = tmp_path / "p.jsonl"
    jl.write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    assert read_prompts(jl) == ["a", "b"]
    jl.write_text('{"prompt": "a"}\n{"text": "b"}\n')
    with pytest.raises(PromptError, match=r"p.jsonl:2: expected an object with a string field 'prompt'"):
        read_prompts(jl)
    with pytest.raises(PromptError, match="does not exist"):
        read_prompts(tmp_path / "none.txt")


def test_skip_guard_limit_and_reset():
    guard = SkipGuard(max_consecutive=2)
    guard.skip("loss is nan", 1)
    guard.ok()
    guard.skip("loss is nan", 2)
    guard.skip("grad_norm is inf", 3)
    with pytest.raises(TooManySkipsError, match="3 consecutive updates skipped, last because reward"):
        guard.skip("reward is nan", 4)
    assert guard.state_dict() == {"consecutive": 3, "total": 4}
    assert first_non_finite(loss=torch.tensor(1.0), grad_norm=math.inf) == "grad_norm"
    assert first_non_finite(loss=torch.tensor([1.0, 2.0])) is None


def test_phase_timer_accumulates_and_resets():
    timer = PhaseTimer()
    for _ in range(2):
        with timer.phase("generation"):
            pass
    out = timer.pop()
    assert set(out) == {"time/generation"} and out["time/generation"] >= 0
    assert timer.pop() == {}


def test_checkpoint_roundtrip_refuses_non_finite_and_keeps_latest(tmp_path):
    model = torch.nn.Linear(3, 2)
    state = {"step": 1, "rng": torch.get_rng_state()}
    assert save_checkpoint(tmp_path, 1, {"policy": model}, state, keep=1) is not None
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.fill_(math.nan)
    assert save_checkpoint(tmp_path, 2, {"policy": model}, {"step": 2}, keep=1) is None
    assert resolve_resume("auto", tmp_path).name == "checkpoint-1"
    loaded = load_checkpoint(tmp_path / "checkpoint-1", {"policy": model})
    assert loaded["step"] == 1 and torch.equal(model.weight, saved["weight"])
    with pytest.raises(CheckpointError, match="missing value.safetensors"):
        load_checkpoint(tmp_path / "checkpoint-1", {"value": model})
    with pytest.raises(CheckpointError, match="neither a checkpoint"):
        resolve_resume(tmp_path / "nothing", tmp_path)
    assert resolve_resume(None, tmp_path) is None
