"""The SFT training loop in-process: schedule shape, accumulation equivalence, non-finite skip, resume."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from sft_helpers import read_safetensors, reset_accelerate, write_jsonl

from rlhfkit.sft.checkpointing import SFTError, save_checkpoint
from rlhfkit.sft.config import SFTConfig, SFTOptimConfig
from rlhfkit.sft.stream import global_batch_indices, rank_micro_batches, total_steps
from rlhfkit.sft.trainer import SFTTrainer
from rlhfkit.utils.checkpoint import latest_checkpoint
from rlhfkit.utils.tracking import read_metrics


OPTIM_KEYS = {f.name for f in dataclasses.fields(SFTOptimConfig)}


def config(model: Path, data: Path, out: Path, **kw: object) -> SFTConfig:
    """A quick test config; optimizer keys (lr, schedule, grad_accum, ...) go into its optim section."""
    base = {"model": str(model), "data": str(data), "output_dir": str(out), "progress": False, "report_to": "none",
            "per_device_batch_size": 4, "save_steps": 0}
    optim = {"lr": 1e-3, **{k: v for k, v in kw.items() if k in OPTIM_KEYS}}
    rest = {k: v for k, v in kw.items() if k not in OPTIM_KEYS}
    return SFTConfig(**{**base, **rest}, optim=SFTOptimConfig(**optim))  # type: ignore[arg-type]


def test_stream_covers_each_epoch_once_and_splits_by_rank() -> None:
    steps = [global_batch_indices(s, 10, 4, seed=3) for s in range(5)]
    flat = [i for batch in steps for i in batch]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert flat[:10] != flat[10:20]  # a new shuffle each epoch
    assert global_batch_indices(2, 10, 4, seed=3) == steps[2]
    assert rank_micro_batches(list(range(8)), rank=1, world_size=2, micro_batch=2, accumulation=2) == [[2, 3], [6, 7]]
    assert total_steps(10, 4, 1.0, None) == 3 and total_steps(10, 4, 1.0, 7) == 7


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_logged_learning_rate_follows_warmup_then_schedule(tmp_path: Path, tiny_model_dir: Path, train_file: Path,
                                                          schedule: str) -> None:
    cfg = config(tiny_model_dir, train_file, tmp_path / "out", max_steps=10, warmup_steps=3, schedule=schedule,
                 report_to="tensorboard")
    result = SFTTrainer(cfg).train()
    lrs = [r["optim/lr"] for r in read_metrics(result.run_dir)]
    peak, warm, total = 1e-3, 3, 10

    def expected(step: int) -> float:
        if step < warm:
            return peak * step / warm
        progress = (step - warm) / (total - warm)
        return peak * (0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress)

    assert lrs == pytest.approx([expected(s) for s in range(total)], abs=1e-12)
    assert any((result.run_dir / "tensorboard").iterdir())


def test_batch_4_accum_1_equals_batch_1_accum_4(tmp_path: Path, no_dropout_model_dir: Path, train_file: Path) -> None:
    losses, weights = [], []
    for batch, accum in [(4, 1), (1, 4)]:
        reset_accelerate()
        cfg = config(no_dropout_model_dir, train_file, tmp_path / f"b{batch}", max_steps=4,
                     per_device_batch_size=batch, grad_accum=accum)
        result = SFTTrainer(cfg).train()
        losses.append([r["loss/total"] for r in read_metrics(result.run_dir)])
        weights.append(read_safetensors(result.final_dir / "model.safetensors"))
    assert len(losses[0]) == 4
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert losses[0][-1] < losses[0][0]
    for name, tensor in weights[0].items():
        torch.testing.assert_close(tensor, weights[1][name], atol=1e-5, rtol=0)


def test_non_finite_step_is_skipped_and_counted(tmp_path: Path, tiny_model_dir: Path, train_file: Path) -> None:
    trainer = SFTTrainer(config(tiny_model_dir, train_file, tmp_path / "out", max_steps=5, report_to="tensorboard"))
    calls = {"n": 0}

    def poison_third_forward(module: torch.nn.Module, args: object, output: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            output.logits = output.logits * float("nan")  # type: ignore[attr-defined]
        return output

    trainer.model.register_forward_hook(poison_third_forward)
    snapshots: list[torch.Tensor] = []
    original_step = trainer.train_step

    def recording_step(step: int):  # noqa: ANN202
        stats = original_step(step)
        snapshots.append(trainer.model.transformer.wte.weight.detach().clone())
        return stats

    trainer.train_step = recording_step  # type: ignore[method-assign]
    result = trainer.train()
    assert result.skipped_steps == 1
    assert torch.equal(snapshots[2], snapshots[1])  # step 3 changed nothing
    assert not torch.equal(snapshots[3], snapshots[2])  # training went on
    metrics = read_metrics(result.run_dir)
    assert metrics[2]["loss/total"] == "nan" and metrics[2]["train/skipped_steps"] == 1
    assert all(torch.isfinite(t).all() for t in read_safetensors(result.final_dir / "model.safetensors").values())


def test_non_finite_weights_are_never_saved(tmp_path: Path, tiny_model_dir: Path, train_file: Path) -> None:
    trainer = SFTTrainer(config(tiny_model_dir, train_file, tmp_path / "out", max_steps=2))
    with torch.no_grad():
        trainer.model.transformer.wte.weight[0, 0] = float("inf")
    with pytest.raises(SFTError, match="weights are not finite at step 0"):
        save_checkpoint(tmp_path / "out" / "checkpoint-1", trainer.accelerator, trainer.model, trainer.tokenizer,
                        trainer.optimizer, trainer.scheduler, trainer.progress, keep=2)
    assert not (tmp_path / "out" / "checkpoint-1").exists()


class Crash(RuntimeError):
    """Stands in for a kill in the middle of a step."""


def test_resume_after_a_crash_gives_bitwise_identical_weights(tmp_path: Path, tiny_model_dir: Path,
                                                              train_file: Path) -> None:
    """Dropout is on, so this also checks that the RNG state is restored."""
    full = SFTTrainer(config(tiny_model_dir, train_file, tmp_path / "full", max_steps=8, save_steps=3)).train()
    reset_accelerate()
    cfg = config(tiny_model_dir, train_file, tmp_path / "crash", max_steps=8, save_steps=3)
    trainer = SFTTrainer(cfg)
    original_step = trainer.train_step

    def crash_at_step_5(step: int):  # noqa: ANN202
        if step == 4:
            raise Crash
        return original_step(step)

    trainer.train_step = crash_at_step_5  # type: ignore[method-assign]
    with pytest.raises(Crash):
        trainer.train()
    assert latest_checkpoint(tmp_path / "crash").name == "checkpoint-3"
    reset_accelerate()
    with pytest.raises(SFTError, match="already holds a run"):
        SFTTrainer(cfg)
    reset_accelerate()
    cfg.resume = True
    resumed = SFTTrainer(cfg).train()
    assert resumed.resumed_from_step == 3 and resumed.steps == 8
    a = read_safetensors(full.final_dir / "model.safetensors")
    b = read_safetensors(resumed.final_dir / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (tmp_path / "crash").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]


def test_resume_refuses_a_different_global_batch(tmp_path: Path, tiny_model_dir: Path, train_file: Path) -> None:
    SFTTrainer(config(tiny_model_dir, train_file, tmp_path / "out", max_steps=2, save_steps=1)).train()
    reset_accelerate()
    with pytest.raises(SFTError, match="global_batch_size was 4, now 8"):
        SFTTrainer(config(tiny_model_dir, train_file, tmp_path / "out", max_steps=2, save_steps=1,
                          per_device_batch_size=8, resume=True))


def test_final_model_loads_and_learned_the_data(tmp_path: Path, no_dropout_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "The movie", "completion": " was great."}] * 8)
    result = SFTTrainer(config(no_dropout_model_dir, data, tmp_path / "out", max_steps=30, lr=1e-2,
                               warmup_ratio=0.0)).train()
    model = AutoModelForCausalLM.from_pretrained(result.final_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.final_dir)
    prompt = tokenizer("The movie", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True) == " was great."
    assert result.final_loss < result.first_loss / 5


def test_without_data_the_demo_dataset_is_generated_to_fit(tmp_path: Path) -> None:
    from helpers_models import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "long-context", n_positions=128)
    cfg = SFTConfig(model=str(model_dir), output_dir=str(tmp_path / "out"), max_steps=1, demo_records=50,
                    progress=False, report_to="none", save_steps=0)
    trainer = SFTTrainer(cfg)
    assert trainer.data_path == tmp_path / "out" / "demo_sft.jsonl"
    assert len(trainer.dataset) == 50 and trainer.dataset.num_truncated == 0
    assert trainer.train().steps == 1


def test_resume_without_a_checkpoint_starts_fresh(tmp_path: Path, tiny_model_dir: Path, train_file: Path) -> None:
    result = SFTTrainer(config(tiny_model_dir, train_file, tmp_path / "out", max_steps=2, resume=True)).train()
    assert result.resumed_from_step == 0 and result.steps == 2
