"""The GPU run, ready to go: the architecture matrix in bf16, rollout backends, and GRPO / PPO steps at two
sizes, one JSON line per section printed (and flushed) as soon as it is measured, a summary line last.

Sizes (random weights built from config, nothing downloaded): ``124m`` = GPT-2 small (n_embd 768, 12 layers,
12 heads, vocab 50257); ``0.5b`` = Qwen2-0.5B's shape (hidden 896, 24 layers, 14 heads / 2 KV heads,
intermediate 4864, vocab 151936, tied embeddings). Tokenizer: a word-level vocabulary of the model's size
(``w1 .. w{V-1}``, ``<eos>`` = pad = id 0), built locally. Reward: a cheap function (distinct-word ratio);
the ``grpo-rm`` section scores with a 124M GPT-2 reward model instead.

Per step: 256 completions (GRPO: 32 prompts x 8; PPO: 256 prompts, separate critic) of exactly 128 new
tokens (EOS blocked) after prompts of 64 tokens; ``run.dtype=bfloat16`` (autocast, float32 master
weights, reference in bf16 as the runner loads it); GRPO one optimizer step, PPO one epoch of 4
mini-batches. Each trainer section: one warm-up step, then up to ``--steps`` timed steps inside the
section's deadline. Phase times come from the trainer's own ``time/<phase>`` timers, with a CUDA
synchronize added at each phase boundary so asynchronous kernels land in the right phase.

Rollout against the memory-bandwidth floor: one generated token per row needs, at least, every weight
read once (at the compute dtype: autocast's bf16 copies) plus the KV cache of every row read once, so
for B rows, prompt P, N new tokens: floor seconds = (N * weight_bytes + sum_t B * kv_bytes_per_token *
(P + t)) / peak bandwidth; ``floor_fraction`` = floor seconds / measured generation seconds.

Run (GPU, < 5 minutes on one H100, only torch, transformers, accelerate, peft, pyyaml needed):
    python bench/gpu.py                          # everything; one JSON line per section
    python bench/gpu.py --sections grpo,ppo --sizes 0.5b --steps 3
    python bench/gpu.py --smoke                  # tiny models on CPU, seconds (run by tests/test_gpu_bench.py)
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(1, os.path.join(ROOT, "tests", "arch"))
for _name, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"),
                      ("TOKENIZERS_PARALLELISM", "false"), ("OMP_WAIT_POLICY", "PASSIVE")):
    os.environ.setdefault(_name, _value)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

T0 = time.perf_counter()
RESULTS: dict[str, Any] = {}
#: The trainer's phases; on a CPU some run side by side and are timed together ("scoring+reference", "values+reference")
PHASES = ("generation", "scoring", "reference", "values", "training")

# peak memory bandwidth in GB/s by device-name fragment (first match wins; override with --bandwidth-gbs)
BANDWIDTH_GBS = (("GH200", 4000.0), ("H200", 4800.0), ("H100 NVL", 3900.0), ("H100 PCIE", 2000.0), ("H100", 3350.0),
                 ("H800", 3350.0), ("B200", 8000.0), ("A100-SXM4-80GB", 2039.0), ("A100 80GB PCIE", 1935.0),
                 ("A100", 1555.0), ("L40S", 864.0), ("L40", 864.0), ("A10G", 600.0), ("A10", 600.0), ("L4", 300.0),
                 ("RTX 4090", 1008.0), ("RTX 3090", 936.0), ("V100", 900.0), ("T4", 320.0))


@dataclass(frozen=True)
class Size:
    """One benchmark model shape."""

    name: str
    family: str  # gpt2 | qwen2
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    positions: int


SIZES = {
    "124m": Size("124m", "gpt2", 50257, 768, 12, 12, 12, 3072, 1024),
    "0.5b": Size("0.5b", "qwen2", 151936, 896, 24, 14, 2, 4864, 4096),
}
SMOKE_SIZES = {
    "124m": Size("tiny-gpt2", "gpt2", 1024, 64, 2, 4, 4, 256, 128),
    "0.5b": Size("tiny-qwen2", "qwen2", 1024, 64, 2, 4, 2, 128, 128),
}


# ---------------------------------------------------------------------------------------------- output


def emit(section: str, record: dict[str, Any]) -> dict[str, Any]:
    """Print one JSON line for ``section`` now (flushed) and keep it for the summary."""
    line = {"section": section, **record, "elapsed_s": round(time.perf_counter() - T0, 1)}
    RESULTS[section] = line
    print(json.dumps(line, default=_jsonable), flush=True)
    return line


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (torch.dtype, torch.device, Path)):
        return str(value)
    return repr(value)


def short_error(exc: BaseException) -> str:
    """``Type: message`` and the innermost rlhfkit/bench frame, on one line."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "rlhfkit" in f.filename or "bench" in f.filename]
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {str(exc)[:300]}{where}"


def start_watchdog(seconds: float) -> None:
    """If the whole run passes ``seconds``, print what was measured and exit 3 (runs unattended)."""
    def fire() -> None:
        emit("watchdog", {"error": f"time budget of {seconds:.0f}s exceeded; exiting", "done": sorted(RESULTS)})
        sys.stdout.flush()
        os._exit(3)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()


# ---------------------------------------------------------------------------------------------- device


def sync(device: torch.device) -> None:
    """Wait for queued kernels (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    """Free cached blocks and start a new peak-memory window."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, float | None]:
    """Peak allocated / reserved GPU memory (GiB) since :func:`reset_peak`; None on CPU."""
    if device.type != "cuda":
        return {"peak_gpu_mem_gib": None, "peak_gpu_reserved_gib": None}
    return {"peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
            "peak_gpu_reserved_gib": round(torch.cuda.max_memory_reserved(device) / 2**30, 2)}


def device_bandwidth(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """Peak memory bandwidth (GB/s) and where it came from."""
    if override:
        return override, "--bandwidth-gbs"
    if device.type != "cuda":
        return None, "unknown (CPU; pass --bandwidth-gbs)"
    name = torch.cuda.get_device_name(device).upper()
    for fragment, gbs in BANDWIDTH_GBS:
        if fragment.upper() in name:
            return gbs, f"table ({fragment})"
    return None, f"unknown device {name!r}; pass --bandwidth-gbs"


# ---------------------------------------------------------------------------------------------- models


def make_tokenizer(vocab: int) -> Any:
    """Word-level tokenizer of exactly ``vocab`` ids: ``<eos>`` = 0 (also pad and BOS), ``w1 .. w{vocab-1}``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<eos>": 0, **{f"w{i}": i for i in range(1, vocab)}}
    backend = Tokenizer(models.WordLevel(vocab=words, unk_token="<eos>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", bos_token="<eos>", pad_token="<eos>",
                                   padding_side="left")


def model_config(size: Size) -> Any:
    """The transformers config of ``size`` (eos = pad = bos = 0)."""
    from transformers import GPT2Config, Qwen2Config

    ids = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    if size.family == "gpt2":
        return GPT2Config(vocab_size=size.vocab, n_positions=size.positions, n_embd=size.hidden, n_layer=size.layers,
                          n_head=size.heads, n_inner=size.intermediate, **ids)
    return Qwen2Config(vocab_size=size.vocab, hidden_size=size.hidden, intermediate_size=size.intermediate,
                       num_hidden_layers=size.layers, num_attention_heads=size.heads,
                       num_key_value_heads=size.kv_heads, max_position_embeddings=size.positions,
                       rope_theta=1_000_000.0, tie_word_embeddings=True, use_sliding_window=False, **ids)


def build_bundle(size: Size, device: torch.device, dtype: torch.dtype, critic: bool, seed: int = 0) -> Any:
    """Policy (float32 master weights), frozen reference in ``dtype`` and optional critic, built on ``device``."""
    from transformers import AutoModel, AutoModelForCausalLM

    from rlhfkit.models.loading import PolicyBundle, make_frozen_reference
    from rlhfkit.models.value import CriticModel

    config = model_config(size)
    torch.manual_seed(seed)
    with torch.device(device):
        policy = AutoModelForCausalLM.from_config(config).eval()
        value = CriticModel(AutoModel.from_config(config).eval()) if critic else None
    reference = make_frozen_reference(policy).to(dtype)
    return PolicyBundle(policy=policy, tokenizer=make_tokenizer(size.vocab), value_model=value,
                        frozen_reference=reference)


def distinct_ratio(prompts: list[str], responses: list[str]) -> list[float]:
    """Cheap reward: distinct words / words of each response."""
    out = []
    for response in responses:
        words = response.split()
        out.append(len(set(words)) / max(len(words), 1))
    return out


def function_reward() -> Any:
    """The cheap reward as the trainer takes it."""
    from rlhfkit.rl.rewards import EnsembleReward, FunctionReward

    return EnsembleReward([FunctionReward(distinct_ratio, "distinct-ratio")])


def model_reward(size: Size, device: torch.device, dtype: torch.dtype, seed: int = 1) -> Any:
    """A reward model of ``size`` (trunk + scalar head), frozen, stored in ``dtype``."""
    from transformers import AutoModel

    from rlhfkit.models.reward_model import RewardModel, RewardModelSettings
    from rlhfkit.rl.rewards import EnsembleReward, ModelReward

    torch.manual_seed(seed)
    with torch.device(device):
        trunk = AutoModel.from_config(model_config(size)).eval()
    model = RewardModel(trunk, make_tokenizer(size.vocab), RewardModelSettings(max_length=size.positions)).eval()
    model.to(dtype).requires_grad_(False)
    return EnsembleReward([ModelReward(model, f"rm-{size.name}", normalized=False, batch_size=256)])


def make_prompts(count: int, tokens: int, vocab: int, seed: int = 0) -> list[str]:
    """``count`` prompts of exactly ``tokens`` words."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (count, tokens), generator=generator)
    return [" ".join(f"w{i}" for i in row.tolist()) for row in ids]


def unique_params(module: torch.nn.Module) -> int:
    """Parameter count with tied tensors counted once."""
    seen, total = set(), 0
    for param in module.parameters():
        if param.data_ptr() not in seen:
            seen.add(param.data_ptr())
            total += param.numel()
    return total


def kv_bytes_per_token(config: Any, element_bytes: int) -> int:
    """Bytes of K and V over all layers for one token of one row."""
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    heads = getattr(config, "num_attention_heads", None) or config.n_head
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return 2 * layers * kv_heads * head_dim * element_bytes


def bandwidth_floor(policy: torch.nn.Module, rows: int, prompt_tokens: int, new_tokens: int, dtype: torch.dtype,
                    seconds: float, bandwidth_gbs: float | None) -> dict[str, Any]:
    """Achieved rollout tokens/s against the floor: weights + KV cache read once per generated token."""
    element = torch.tensor([], dtype=dtype).element_size()
    weight_bytes = unique_params(policy) * element
    kv_token = kv_bytes_per_token(policy.config, element)
    kv_total = sum(rows * kv_token * (prompt_tokens + t) for t in range(new_tokens))
    floor_bytes = new_tokens * weight_bytes + kv_total
    tokens = rows * new_tokens
    out: dict[str, Any] = {
        "tokens_per_s": round(tokens / seconds, 1), "generation_s": round(seconds, 3),
        "weight_mb_per_token_step": round(weight_bytes / 1e6, 1),
        "kv_mb_per_token_step_mean": round(kv_total / new_tokens / 1e6, 1),
        "achieved_gbs": round(floor_bytes / seconds / 1e9, 1), "bandwidth_gbs": bandwidth_gbs,
        "floor_tokens_per_s": None, "floor_fraction": None,
    }
    if bandwidth_gbs:
        floor_seconds = floor_bytes / (bandwidth_gbs * 1e9)
        out["floor_tokens_per_s"] = round(tokens / floor_seconds, 1)
        out["floor_fraction"] = round(floor_seconds / seconds, 4)
    return out


# ---------------------------------------------------------------------------------------------- trainers


def synced_timer(device: torch.device) -> Any:
    """The trainer's PhaseTimer with a CUDA synchronize at each phase boundary."""
    from rlhfkit.rl.timers import PhaseTimer

    class SyncedPhaseTimer(PhaseTimer):
        @contextlib.contextmanager
        def phase(self, name: str) -> Iterator[None]:
            sync(device)
            with super().phase(name):
                yield
                sync(device)

    return SyncedPhaseTimer()


def run_overrides(args: argparse.Namespace, output_dir: str, device: torch.device) -> list[str]:
    """Settings every trainer section shares."""
    return [f"run.output_dir={output_dir}", "run.steps=1000", "run.progress=false", "run.save_every=0",
            f"run.device={device.type}", f"run.dtype={args.dtype}", f"generation.max_new_tokens={args.new_tokens}",
            f"generation.min_new_tokens={args.new_tokens}", "reward.invalid_score=null", "reward.penalize_empty=false",
            "optim.lr=1e-6"]


def trainer_config(algo: str, args: argparse.Namespace, output_dir: str, device: torch.device, micro_rows: int) -> Any:
    """GRPO: completions/group prompts x group, one optimizer step; PPO: one epoch of 4 mini-batches, critic."""
    from rlhfkit.config import load_config
    from rlhfkit.rl.config import PolicyGradientConfig, PPOConfig

    rows = args.completions
    if algo == "grpo":
        accum = max(1, math.ceil(rows / micro_rows))
        return load_config(PolicyGradientConfig, None, run_overrides(args, output_dir, device) + [
            "algo=grpo", f"num_prompts={rows // args.group}", f"group_size={args.group}", "epochs=1",
            "num_minibatches=1", f"optim.grad_accum={accum}"])
    minibatches = 4 if rows >= 4 else 1
    accum = max(1, math.ceil(rows / minibatches / micro_rows))
    return load_config(PPOConfig, None, run_overrides(args, output_dir, device) + [
        f"num_prompts={rows}", "epochs=1", f"num_minibatches={minibatches}", f"optim.grad_accum={accum}",
        "value_model=critic", "approx_kl_stop=null"])


def micro_rows_for(size: Size, args: argparse.Namespace) -> int:
    """Rows per micro-batch: (rows x 129 x vocab) float32 log-softmax intermediates dominate memory."""
    if args.micro_rows:
        return args.micro_rows
    return 32 if size.vocab > 100_000 else 64


def time_trainer(trainer: Any, steps: int, deadline: float, device: torch.device) -> dict[str, Any]:
    """One warm-up step, then up to ``steps`` timed steps while the next one is expected to end before ``deadline``."""
    harness = trainer.harness
    harness.timer = synced_timer(device)
    sync(device)
    started = time.perf_counter()
    metrics = trainer.train_step()
    harness.step += 1
    sync(device)
    warmup = time.perf_counter() - started
    warm_phases = harness.timer.pop()
    reset_peak(device)
    durations: list[float] = []
    totals: dict[str, float] = {}
    while len(durations) < steps:
        expected = sum(durations) / len(durations) if durations else warmup
        if time.perf_counter() + expected > deadline:
            break
        sync(device)
        started = time.perf_counter()
        metrics = trainer.train_step()
        harness.step += 1
        sync(device)
        durations.append(time.perf_counter() - started)
        for key, value in harness.timer.pop().items():
            totals[key] = totals.get(key, 0.0) + value
    warmup_only = not durations
    if warmup_only:  # no time for a timed step: report the warm-up step, flagged
        durations, totals = [warmup], warm_phases
    wall = sum(durations)
    names = [*PHASES, *sorted(key[5:] for key in totals if key.startswith("time/") and key[5:] not in PHASES)]
    phase_seconds = {name: round(totals.get(f"time/{name}", 0.0) / len(durations), 4) for name in names}
    share = {name: round(totals.get(f"time/{name}", 0.0) / wall, 4) for name in names}
    share["other"] = round(max(0.0, 1.0 - sum(share.values())), 4)
    return {"steps": len(durations), "warmup_only": warmup_only, "warmup_s": round(warmup, 2),
            "seconds_per_step": round(wall / len(durations), 4), "phase_seconds": phase_seconds,
            "phase_share": share, "metrics": metrics, "memory": peak_memory(device),
            "generation_s": totals.get("time/generation", 0.0) / len(durations)}


def trainer_section(algo: str, size: Size, args: argparse.Namespace, device: torch.device, dtype: torch.dtype,
                    deadline: float, bandwidth: float | None, reward_model: bool = False) -> dict[str, Any]:
    """Build, warm up and time one trainer at one size."""
    from rlhfkit.rl.onpolicy import OnPolicyTrainer
    from rlhfkit.rl.rollout import make_sampler

    built = time.perf_counter()
    reset_peak(device)
    micro = micro_rows_for(size, args)
    with tempfile.TemporaryDirectory() as tmp:
        config = trainer_config(algo, args, tmp, device, micro)
        bundle = build_bundle(size, device, dtype, critic=algo == "ppo")
        reward = model_reward(size, device, dtype) if reward_model else function_reward()
        prompts = make_prompts(max(4 * config.num_prompts, 64), args.prompt_tokens, size.vocab)
        trainer = OnPolicyTrainer(config, bundle, reward, prompts, make_sampler(args.backend))
        build_s = time.perf_counter() - built
        timed = time_trainer(trainer, args.steps, deadline, device)
        metrics = timed.pop("metrics")
        rows = trainer.config.num_prompts * trainer.config.group_size
        rollout = bandwidth_floor(bundle.policy, rows, args.prompt_tokens, args.new_tokens, dtype,
                                  timed.pop("generation_s"), bandwidth)
        params = unique_params(bundle.policy)
        del trainer, bundle, reward
    losses = {k: round(v, 5) for k, v in metrics.items() if k.startswith("loss/")}
    per_step = timed["seconds_per_step"]
    return {"algo": algo, "size": size.name, "params_m": round(params / 1e6, 1), "backend": args.backend,
            "dtype": str(dtype).removeprefix("torch."), "reward": "model" if reward_model else "function",
            "completions_per_step": rows, "prompts_per_step": rows // (args.group if algo == "grpo" else 1),
            "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "micro_batch_rows": micro,
            "optimizer_steps_per_step": metrics.get("train/updates"), "build_s": round(build_s, 2),
            "completions_per_s": round(rows / per_step, 2), "episodes_per_s": round(rows / per_step, 2),
            **{k: v for k, v in timed.items() if k != "memory"}, **timed["memory"], "rollout": rollout,
            "losses": losses, "losses_finite": bool(losses) and all(math.isfinite(v) for v in losses.values())}


# ---------------------------------------------------------------------------------------------- rollout only


def rollout_section(size: Size, args: argparse.Namespace, device: torch.device, dtype: torch.dtype,
                    deadline: float, bandwidth: float | None) -> dict[str, Any]:
    """Each sampler backend alone on the trainer's shapes: one warm-up call, one timed call."""
    from rlhfkit.rl.config import GenerationConfig
    from rlhfkit.rl.rollout import SAMPLERS, make_sampler
    from rlhfkit.utils.precision import autocast

    reset_peak(device)
    bundle = build_bundle(size, device, dtype, critic=False)
    prompts = make_prompts(args.completions, args.prompt_tokens, size.vocab, seed=1)
    params = GenerationConfig(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    backends = args.backends.split(",") if args.backends else list(SAMPLERS)
    results: dict[str, Any] = {}
    for name in backends:
        if time.perf_counter() > deadline:
            results[name] = {"skipped": "section deadline"}
            continue
        try:
            sampler = make_sampler(name)
            generator = torch.Generator(device=device).manual_seed(0)
            timings = []
            for _ in range(2):
                if timings and time.perf_counter() + timings[-1] > deadline:
                    break
                sync(device)
                started = time.perf_counter()
                with autocast(device, dtype):
                    rollout = sampler.sample(bundle.policy, bundle.tokenizer, prompts, params, generator=generator)
                sync(device)
                timings.append(time.perf_counter() - started)
            tokens = int(rollout.response_mask.sum())
            results[name] = {"warmup_s": round(timings[0], 3), "timed": len(timings) > 1, "tokens": tokens,
                             **bandwidth_floor(bundle.policy, args.completions, args.prompt_tokens, args.new_tokens,
                                               dtype, timings[-1], bandwidth)}
        except Exception as exc:  # one backend failing must not stop the run
            results[name] = {"error": short_error(exc)}
    del bundle
    ok = [r for r in results.values() if "tokens_per_s" in r]
    best = max(ok, key=lambda r: r["tokens_per_s"]) if ok else None
    return {"size": size.name, "rows": args.completions, "prompt_tokens": args.prompt_tokens,
            "new_tokens": args.new_tokens, "dtype": str(dtype).removeprefix("torch."), "backends": results,
            "best_backend": next((n for n, r in results.items() if r is best), None),
            "best_floor_fraction": best["floor_fraction"] if best else None, **peak_memory(device)}


# ---------------------------------------------------------------------------------------------- arch matrix


def arch_family(name: str, root: Path, args: argparse.Namespace, device: torch.device,
                dtype: torch.dtype) -> dict[str, Any]:
    """Build a tiny model of the family, load it by path, sample 8 tokens in ``dtype`` and compare the sampler's
    log-probs with a forward, then one PPO step (value head) and one GRPO step (gradient checkpointing)."""
    import arch_zoo

    from rlhfkit.config import load_config
    from rlhfkit.models.loading import load_policy_bundle
    from rlhfkit.rl.config import PolicyGradientConfig, PPOConfig
    from rlhfkit.rl.logprobs import token_logprobs
    from rlhfkit.rl.onpolicy import OnPolicyTrainer
    from rlhfkit.rl.rollout import make_sampler
    from rlhfkit.utils.precision import autocast

    started = time.perf_counter()
    built = arch_zoo.build(name, root / name)
    prompts = ["Why is the sky blue?", "The movie was great and the actors were", "Hi",
               "Please explain why the food was bad."]
    common = [f"run.output_dir={root / name / 'run'}", "run.steps=2", "run.progress=false", "run.save_every=0",
              f"run.device={device.type}", f"run.dtype={args.dtype}", "generation.max_new_tokens=8", "optim.lr=1e-4"]
    out: dict[str, Any] = {}

    def load(value: str) -> Any:
        bundle = load_policy_bundle(built.policy, value=value, device=device, dtype=torch.float32)
        bundle.frozen_reference.to(dtype)  # as rlhfkit.rl.runner loads it: frozen models in the compute dtype
        return bundle

    bundle = load("head")
    config = load_config(PPOConfig, None, common + ["num_prompts=4", "epochs=1", "num_minibatches=1"])
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad(), autocast(device, dtype):
        rollout = make_sampler(args.backend).sample(bundle.policy, bundle.tokenizer, prompts, config.generation,
                                                    generator=generator)
        forward = token_logprobs(bundle.policy, rollout.sequences, rollout.attention_mask, rollout.response_start)
    mask = rollout.response_mask.bool()
    diff = (forward.float() - rollout.logprobs.float()).abs()[mask]
    out["sampled_tokens"] = int(mask.sum())
    out["logprobs_finite"] = bool(torch.isfinite(rollout.logprobs[mask]).all())
    out["logprob_max_diff"] = round(float(diff.max()), 5) if diff.numel() else 0.0
    ppo = OnPolicyTrainer(config, bundle, function_reward(), prompts, make_sampler(args.backend)).train_step()
    out["ppo_losses"] = {k: round(v, 4) for k, v in ppo.items() if k.startswith("loss/")}
    del bundle
    config = load_config(PolicyGradientConfig, None, common + ["num_prompts=2", "group_size=2",
                                                                 "run.gradient_checkpointing=true"])
    grpo = OnPolicyTrainer(config, load("none"), function_reward(), prompts, make_sampler(args.backend)).train_step()
    out["grpo_losses"] = {k: round(v, 4) for k, v in grpo.items() if k.startswith("loss/")}
    losses = [*out["ppo_losses"].values(), *out["grpo_losses"].values()]
    out["logprob_match"] = out["logprob_max_diff"] <= args.arch_logprob_tol
    out["ok"] = bool(out["logprobs_finite"] and losses and all(math.isfinite(v) for v in losses)
                     and out["logprob_match"])
    out["s"] = round(time.perf_counter() - started, 2)
    return out


def arch_section(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, deadline: float) -> dict[str, Any]:
    """Every family of ``tests/arch/arch_zoo.py`` (or ``--arch-families``), each pass/fail with its time."""
    from transformers.utils import logging as hf_logging

    import arch_zoo

    names = args.arch_families.split(",") if args.arch_families else list(arch_zoo.ARCHITECTURES)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    families: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in names:
                if time.perf_counter() > deadline:
                    families[name] = {"ok": None, "skipped": "section deadline"}
                    continue
                started = time.perf_counter()
                try:
                    families[name] = arch_family(name, Path(tmp), args, device, dtype)
                except Exception as exc:
                    families[name] = {"ok": False, "error": short_error(exc),
                                      "s": round(time.perf_counter() - started, 2)}
                reset_peak(device)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    ran = [f for f in families.values() if f.get("ok") is not None]
    return {"dtype": str(dtype).removeprefix("torch."), "backend": args.backend, "logprob_tol": args.arch_logprob_tol,
            "passed": sum(1 for f in ran if f["ok"]), "failed": sum(1 for f in ran if not f["ok"]),
            "skipped": len(families) - len(ran), "families": families}


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--smoke`` shrinks every default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="Tiny models, 1 step, on CPU unless --device: a check "
                                                             "that the script runs, not a measurement.")
    parser.add_argument("--device", default=None, help="cuda (default) or cpu (default with --smoke).")
    parser.add_argument("--dtype", default="bfloat16", help="run.dtype of every trainer (default bfloat16).")
    parser.add_argument("--sections", default="arch,rollout,grpo,ppo,grpo-rm",
                        help="Comma list of arch, rollout, grpo, ppo, grpo-rm (grpo-rm runs at the first size).")
    parser.add_argument("--sizes", default="124m,0.5b", help="Comma list of 124m, 0.5b.")
    parser.add_argument("--steps", type=int, default=None, help="Timed steps per trainer section (default 2; smoke 1).")
    parser.add_argument("--completions", type=int, default=None, help="Completions per step (default 256; smoke 8).")
    parser.add_argument("--group", type=int, default=None, help="GRPO group size (default 8; smoke 2).")
    parser.add_argument("--new-tokens", type=int, default=None,
                        help="New tokens per completion (default 128; smoke 8).")
    parser.add_argument("--prompt-tokens", type=int, default=None, help="Prompt tokens (default 64; smoke 8).")
    parser.add_argument("--micro-rows", type=int, default=None, help="Rows per micro-batch (default 64, 32 for 0.5b).")
    parser.add_argument("--backend", default="cached", help="Sampler of the trainer sections (rlhfkit.rl.rollout).")
    parser.add_argument("--backends", default=None, help="Samplers of the rollout section (default: all in SAMPLERS).")
    parser.add_argument("--arch-families", default=None, help="Comma list of arch_zoo families (default: all).")
    parser.add_argument("--arch-logprob-tol", type=float, default=None,
                        help="Sampler vs forward log-prob tolerance in the arch matrix (default 0.1 in bf16/fp16, "
                             "1e-4 in float32).")
    parser.add_argument("--bandwidth-gbs", type=float, default=None, help="Peak memory bandwidth (GB/s) for the floor "
                                                                          "(default: from the device name).")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="Whole-run budget in seconds (default 270; smoke 120); sections get deadlines inside it "
                             "and a watchdog exits 10 s after it.")
    args = parser.parse_args(argv)
    defaults = ({"steps": 1, "completions": 8, "group": 2, "new_tokens": 8, "prompt_tokens": 8, "budget_s": 120.0}
                if args.smoke else
                {"steps": 2, "completions": 256, "group": 8, "new_tokens": 128, "prompt_tokens": 64, "budget_s": 270.0})
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.device is None:
        args.device = "cpu" if args.smoke else "cuda"
    if args.arch_logprob_tol is None:
        args.arch_logprob_tol = 1e-4 if args.dtype in ("float32", "fp32") else 0.1
    if args.completions % args.group:
        parser.error(f"--completions {args.completions} must be a multiple of --group {args.group}")
    return args


# (section, size or None, share of the budget it may use at most)
def plan(args: argparse.Namespace) -> list[tuple[str, str | None, float]]:
    """The sections to run, in order, with their budget shares."""
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sections if s not in ("arch", "rollout", "grpo", "ppo", "grpo-rm")]
    unknown += [s for s in sizes if s not in SIZES]
    if unknown:
        raise SystemExit(f"unknown section or size: {unknown}")
    steps: list[tuple[str, str | None, float]] = []
    if "arch" in sections:
        steps.append(("arch", None, 0.15))
    big = {"124m": 1.0, "0.5b": 1.6}
    for size in sizes:
        for section, share in (("rollout", 0.08), ("grpo", 0.09), ("ppo", 0.09)):
            if section in sections:
                steps.append((section, size, share * big[size]))
    if "grpo-rm" in sections and sizes:
        steps.append(("grpo-rm", sizes[0], 0.07))
    return steps


def main(argv: list[str] | None = None) -> int:
    """Run the plan; 0 if every section ran and passed, 1 if any failed, 2 without the requested device."""
    import transformers

    args = parse_args(argv)
    device = torch.device(args.device)
    env = {"mode": "smoke" if args.smoke else "full", "python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "cuda_available": torch.cuda.is_available(),
           "device": args.device, "dtype": args.dtype, "budget_s": args.budget_s}
    if device.type == "cuda" and not torch.cuda.is_available():
        emit("env", {**env, "error": "CUDA is not available: the full run needs a GPU (python bench/gpu.py --smoke "
                                     "runs the reduced CPU check)"})
        return 2
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update({"gpu": torch.cuda.get_device_name(device), "gpu_mem_gib": round(props.total_memory / 2**30, 1),
                    "cuda": torch.version.cuda, "capability": f"{props.major}.{props.minor}"})
    else:
        from rlhfkit.utils.runtime import configure_threads

        env["threads"] = configure_threads(None)
    bandwidth, source = device_bandwidth(device, args.bandwidth_gbs)
    env.update({"bandwidth_gbs": bandwidth, "bandwidth_source": source})
    from rlhfkit.utils.runtime import pick_dtype

    dtype = pick_dtype(device, args.dtype)
    emit("env", env)
    start_watchdog(args.budget_s + 10.0)
    sizes = SMOKE_SIZES if args.smoke else SIZES
    end = T0 + args.budget_s
    failed = False
    for section, size_name, share in plan(args):
        now = time.perf_counter()
        label = section if size_name is None else f"{section}-{size_name}"
        deadline = min(end, now + share * args.budget_s)
        if end - now < 5.0:
            emit(label, {"skipped": "run budget spent"})
            continue
        try:
            if section == "arch":
                record = arch_section(args, device, dtype, deadline)
                failed |= record["failed"] > 0
            elif section == "rollout":
                record = rollout_section(sizes[size_name], args, device, dtype, deadline, bandwidth)
                failed |= any("error" in r for r in record["backends"].values())
            else:
                algo = "ppo" if section == "ppo" else "grpo"
                record = trainer_section(algo, sizes[size_name], args, device, dtype, deadline, bandwidth,
                                         reward_model=section == "grpo-rm")
                failed |= not record["losses_finite"]
            emit(label, record)
        except Exception as exc:  # report and go on: an unattended run should measure what it can
            failed = True
            emit(label, {"error": short_error(exc), **peak_memory(device)})
        reset_peak(device)
    summary = {}
    for label, line in RESULTS.items():
        if label == "env":
            continue
        if "completions_per_s" in line:
            summary[label] = {k: line.get(k) for k in ("completions_per_s", "episodes_per_s", "seconds_per_step",
                                                        "peak_gpu_mem_gib")}
            summary[label]["phase_share"] = line["phase_share"]
            summary[label]["rollout_tokens_per_s"] = line["rollout"]["tokens_per_s"]
            summary[label]["floor_fraction"] = line["rollout"]["floor_fraction"]
        elif "families" in line:
            summary[label] = {"passed": line["passed"], "failed": line["failed"], "skipped": line["skipped"]}
        elif "backends" in line:
            summary[label] = {name: {k: r.get(k) for k in ("tokens_per_s", "floor_fraction", "error")}
                              for name, r in line["backends"].items()}
        else:
            summary[label] = {k: line.get(k) for k in ("error", "skipped")}
    emit("summary", {"ok": not failed, "device": env.get("gpu", args.device), "total_s":
                     round(time.perf_counter() - T0, 1), "sections": summary})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
