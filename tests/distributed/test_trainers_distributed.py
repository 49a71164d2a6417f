"""GRPO, PPO and DPO under ``torchrun --nproc_per_node 2`` (gloo, CPU) take the steps one process takes
on the same global batch: same metrics (within 1e-5), same sampled responses, one writer, and a
2-process checkpoint resumes."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_models import save_tiny_model, tiny_gpt2, tiny_tokenizer
from safetensors.torch import load_file

TOLERANCE = 1e-5
TIMEOUT_S = 240

REWARD_FILE = """
import json, os


def score(prompts, responses):
    with open(os.environ["H1_RESPONSES"] + ".rank" + os.environ.get("RANK", "0"), "a") as out:
        out.write(json.dumps(responses) + "\\n")
    return [0.1 * len(r) + r.count("e") for r in responses]
"""

PROMPTS = ["The movie was", "The food", "I loved the story", "What a lovely day", "Please explain why",
           "Stop. That is", "The answer is", "This product"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("distributed")
    (root / "reward.py").write_text(REWARD_FILE)
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    pairs = [{"prompt": p, "chosen": " good and kind.", "rejected": " bad" * (i % 3 + 1)}
             for i, p in enumerate(PROMPTS)]
    (root / "pairs.jsonl").write_text("".join(json.dumps(pair) + "\n" for pair in pairs))
    return {"root": root, "model": save_tiny_model(root / "model"), "reward": root / "reward.py",
            "prompts": root / "prompts.txt", "pairs": root / "pairs.jsonl"}


def run_cli(args: list[str], processes: int, output_dir: Path) -> None:
    """``rlhfkit ARGS`` in one plain process or under torchrun with ``processes``, bounded in time."""
    launcher = [sys.executable, "-m", "rlhfkit.cli"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
        "-m", "rlhfkit.cli"]
    env = {**os.environ, "H1_RESPONSES": str(output_dir) + ".responses", "RLHFKIT_THREADS": "1",
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(launcher + args + ["--output-dir", str(output_dir)], capture_output=True, text=True,
                            timeout=TIMEOUT_S, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def common(files: dict[str, Path], steps: int) -> list[str]:
    return ["--model", str(files["model"]), "--steps", str(steps), "--report-to", "none",
            "--set", "run.progress=false", "--set", "run.device=cpu", "--set", "run.save_every=1"]


def on_policy_args(files: dict[str, Path], command: str, steps: int, *extra: str) -> list[str]:
    sets = ["generation.max_new_tokens=6", "generation.seed_per_row=always", "optim.lr=3e-3", *extra]
    return [command, "--reward-fn", f"{files['reward']}:score", "--prompts", str(files["prompts"]),
            *common(files, steps), *[arg for item in sets for arg in ("--set", item)]]


def metrics(output_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_metrics(one: Path, two: Path, steps: int) -> None:
    first, second = metrics(one), metrics(two)
    assert [m["step"] for m in first] == [m["step"] for m in second] == list(range(1, steps + 1))  # one writer
    for a, b in zip(first, second):
        assert_same_record(a, b)


def assert_same_record(a: dict[str, float], b: dict[str, float]) -> None:
    """Every logged value but timings equal within TOLERANCE."""
    keys = {k for k in a if not k.startswith(("perf/", "time")) and isinstance(a[k], float)}
    assert keys == {k for k in b if not k.startswith(("perf/", "time")) and isinstance(b[k], float)}
    for key in keys:
        assert a[key] == pytest.approx(b[key], abs=TOLERANCE, rel=TOLERANCE, nan_ok=True), (a["step"], key)


def sampled(output_dir: Path, ranks: int) -> list[list[str]]:
    """Each step's responses, the ranks' shards concatenated in rank order."""
    shards = [Path(f"{output_dir}.responses.rank{rank}").read_text().splitlines() for rank in range(ranks)]
    return [sum((json.loads(lines[step]) for lines in shards), []) for step in range(len(shards[0]))]


def final_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in (output_dir / "final").glob("*.safetensors"):
        tensors.update({f"{path.name}:{k}": v for k, v in load_file(str(path)).items()})
    assert tensors
    return tensors


def written(output_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(output_dir)) for p in output_dir.rglob("*"))


def test_grpo_two_processes_take_the_one_process_steps_and_resume(files, tmp_path):
    steps, args = 2, on_policy_args(files, "grpo", 2, "num_prompts=4", "group_size=2", "num_minibatches=2",
                                    "epochs=2", "reward.scaling=running")
    run_cli(args, 1, tmp_path / "one")
    run_cli(args, 2, tmp_path / "two")
    assert_same_metrics(tmp_path / "one", tmp_path / "two", steps)
    assert sampled(tmp_path / "one", 1) == sampled(tmp_path / "two", 2)
    assert written(tmp_path / "one") == written(tmp_path / "two")
    # resume the 2-process run from its step-1 checkpoint, again with 2 processes
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "two", resumed)
    shutil.rmtree(resumed / "checkpoint-2")
    shutil.rmtree(resumed / "final")
    run_cli(args + ["--resume"], 2, resumed)
    straight, again = final_weights(tmp_path / "two"), final_weights(resumed)
    assert straight.keys() == again.keys()
    for name in straight:
        assert torch.equal(straight[name], again[name]), name
    assert metrics(resumed)[-1] == pytest.approx({**metrics(tmp_path / "two")[-1], **{
        k: v for k, v in metrics(resumed)[-1].items() if k.startswith(("perf/", "time"))}})


def test_ppo_with_a_value_head_two_processes_match_one_and_resume_in_one(files, tmp_path):
    steps, args = 2, on_policy_args(files, "ppo", 2, "num_prompts=4", "num_minibatches=2", "epochs=2",
                                    "approx_kl_stop=null")
    run_cli(args, 1, tmp_path / "one")
    run_cli(args, 2, tmp_path / "two")
    assert_same_metrics(tmp_path / "one", tmp_path / "two", steps)
    assert sampled(tmp_path / "one", 1) == sampled(tmp_path / "two", 2)
    assert "value_head.safetensors" in written(tmp_path / "two/final")
    # A 2-process checkpoint resumed by one process takes the one-process step 2. (Weights are not
    # compared: Adam turns float noise in the ~0 gradient of the attention key bias into lr-sized steps.)
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "two", resumed)
    shutil.rmtree(resumed / "checkpoint-2")
    shutil.rmtree(resumed / "final")
    run_cli(args + ["--resume"], 1, resumed)
    assert [m["step"] for m in metrics(resumed)] == [1, 2, 2]
    assert_same_record(metrics(resumed)[-1], metrics(tmp_path / "one")[-1])
    assert final_weights(resumed).keys() == final_weights(tmp_path / "one").keys()


def test_dpo_two_processes_match_one_and_resume(files, tmp_path):
    steps = 2
    args = ["dpo", "--data", str(files["pairs"]), *common(files, steps), "--set", "batch_size=4",
            "--set", "optim.lr=1e-2", "--set", "optim.grad_accum=2"]
    run_cli(args, 1, tmp_path / "one")
    run_cli(args, 2, tmp_path / "two")
    assert_same_metrics(tmp_path / "one", tmp_path / "two", steps)
    assert written(tmp_path / "one") == written(tmp_path / "two")
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "two", resumed)
    shutil.rmtree(resumed / "checkpoint-2")
    shutil.rmtree(resumed / "final")
    run_cli(args + ["--resume"], 2, resumed)
    straight, again = final_weights(tmp_path / "two"), final_weights(resumed)
    for name in straight:
        assert torch.equal(straight[name], again[name]), name


def test_a_global_batch_that_does_not_split_over_the_processes_is_refused(monkeypatch):
    import rlhfkit.rl.dpo as dpo
    import rlhfkit.rl.onpolicy as onpolicy
    from rlhfkit.rl.config import DPOConfig, GenerationConfig, PolicyGradientConfig, RunConfig
    from rlhfkit.rl.preference_pairs import Pair
    from rlhfkit.rl.rewards import EnsembleReward, FunctionReward
    from rlhfkit.rl.rollout import CachedSampler, HFGenerateSampler
    from rlhfkit.models.loading import PolicyBundle, make_frozen_reference
    from rlhfkit.utils.distributed import World

    def toy_bundle() -> PolicyBundle:
        tokenizer = tiny_tokenizer()
        policy = tiny_gpt2(tokenizer)
        return PolicyBundle(policy=policy, tokenizer=tokenizer, value_model=None,
                            frozen_reference=make_frozen_reference(policy))

    two = World(rank=1, world_size=2)
    monkeypatch.setattr(onpolicy, "current_world", lambda: two)
    monkeypatch.setattr(dpo, "current_world", lambda: two)
    reward = EnsembleReward([FunctionReward(lambda p, r: [0.0] * len(r), "zero")])
    config = PolicyGradientConfig(num_prompts=3, group_size=2, run=RunConfig(output_dir="unused"))
    with pytest.raises(ValueError, match="num_prompts=3 does not split over 2 processes"):
        onpolicy.OnPolicyTrainer(config, toy_bundle(), reward, ["a"], CachedSampler())
    config = PolicyGradientConfig(num_prompts=2, group_size=2, run=RunConfig(output_dir="unused"),
                                  generation=GenerationConfig(seed_per_row="never"))
    with pytest.raises(ValueError, match="same random stream"):
        onpolicy.OnPolicyTrainer(config, toy_bundle(), reward, ["a"], CachedSampler())
    config = dataclasses.replace(config, generation=GenerationConfig(backend="hf"))
    with pytest.raises(ValueError, match="cannot seed each row"):
        onpolicy.OnPolicyTrainer(config, toy_bundle(), reward, ["a"], HFGenerateSampler())
    with pytest.raises(ValueError, match="batch_size=3 pairs do not split over 2 processes"):
        dpo.DPOTrainer(DPOConfig(batch_size=3, run=dataclasses.replace(DPOConfig().run, output_dir="unused")),
                       toy_bundle(), [Pair("a", "b", "c", 1.0)])
