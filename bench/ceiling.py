"""How far any implementation could get on this CPU: each workload's matrix products timed alone.

For each workload this records the ``mm``/``addmm``/``bmm`` calls of our implementation (bench/matmuls.py)
and replays only them: ``matmul_s``, a lower bound on the time of any float32 implementation that does the
same arithmetic. ``max_possible_ratio = hf_or_trl_s / matmul_s`` is then the largest speed-up over the
reference that removing *everything else* (norms, GELU, softmax, sampling, copies, Python) could give.

- ``rollout-sample`` / ``rollout-varied``: bench/rollout.py's workload (64 prompts of 4-23 words, 32 new
  tokens; varied = EOS made likely); HF ``generate`` and ``CachedSampler`` timed alternately here.
- ``ppo`` / ``grpo`` / ``dpo``: the trainer floors of bench/floor.py on the bench shapes (our trainers run
  within -2..13% of them); TRL is not run here (5 min per workload): ``hf_or_trl_s`` is the floor times
  the recorded rlhfkit/TRL ratio (``--vs-trl``, README figures; bench/vs_trl.py measures it).

Every time is given as wall (``*_s``) and process CPU seconds (``*_cpu_s``, steadier on a loaded box). With
``--threads 2`` the replay keeps both threads busy while many of our small ops run on one, so the CPU-time
ceiling is conservative there; ``--threads 1`` compares like with like. ``--profile`` also prints the top
operators (torch.profiler, self CPU time) of one HF and one cached rollout.
Run: OMP_WAIT_POLICY=PASSIVE python bench/ceiling.py [--workloads rollout,ppo,grpo,dpo] [--threads 1]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import matmuls  # noqa: E402
import torch  # noqa: E402

README_VS_TRL = "ppo=1.64,grpo=1.94,dpo=1.90"


def result(workload: str, reference_s: tuple[float, float], ours_s: tuple[float, float], calls: list[matmuls.Call],
           repeats: int, **extra: Any) -> dict[str, Any]:
    """One workload's JSON fields from its (wall, CPU) seconds and recorded products. Process CPU seconds
    (``*_cpu_s``) are the steadier figures on a loaded box (they leave out time spent waiting for a core)."""
    matmul_s = matmuls.replay_seconds(calls, repeats)
    fields: dict[str, Any] = {"bench": "ceiling", "workload": workload}
    for suffix, index in (("s", 0), ("cpu_s", 1)):
        fields.update({f"hf_or_trl_{suffix}": round(reference_s[index], 4), f"ours_{suffix}": round(ours_s[index], 4),
                       f"matmul_{suffix}": round(matmul_s[index], 4)})
    for suffix, index in (("", 0), ("_cpu", 1)):
        fields.update({f"matmul_share_of_ours{suffix}": round(matmul_s[index] / ours_s[index], 3),
                       f"ratio_now{suffix}": round(reference_s[index] / ours_s[index], 2),
                       f"max_possible_ratio{suffix}": round(reference_s[index] / matmul_s[index], 2)})
    return {**fields, "matmul_calls": len(calls), "matmul_gflops": round(matmuls.flops(calls) / matmul_s[0] / 1e9, 1),
            **extra, "loadavg": os.getloadavg()[0]}


def rollout_workloads(repeats: int, profile: bool) -> list[dict[str, Any]]:
    """HF generate vs CachedSampler on bench/rollout.py's workload, alternating; sampled and varied lengths."""
    import rollout as bench_rollout

    from rlhfkit.rl.rollout import CachedSampler, HFGenerateSampler

    model, tokenizer, prompts, scenarios = bench_rollout.workload()
    samplers = {"hf": HFGenerateSampler(), "cached": CachedSampler()}
    out = []
    for workload, scenario in (("rollout-sample", "sample"), ("rollout-varied", "sample-varied-length")):
        if scenario == "sample-varied-length":
            bench_rollout.boost_eos(model, tokenizer, 6.0)
        params = scenarios[scenario]

        def run(name: str, seed: int = 0) -> Any:
            return samplers[name].sample(model, tokenizer, prompts, params, generator=torch.Generator().manual_seed(seed))

        times: dict[str, list[tuple[float, float]]] = {name: [] for name in samplers}
        for name in samplers:
            run(name)  # warm-up
        for repeat in range(repeats):
            for name in samplers if repeat % 2 == 0 else reversed(samplers):
                started, cpu_started = time.perf_counter(), time.process_time()
                run(name, repeat)
                times[name].append((time.perf_counter() - started, time.process_time() - cpu_started))
        calls = matmuls.record(lambda: run("cached"))
        hf_calls = matmuls.record(lambda: run("hf"))
        tokens = int(run("cached").response_mask.sum())
        out.append(result(workload, medians(times["hf"]), medians(times["cached"]), calls, repeats,
                          hf_matmul_cpu_s=round(matmuls.replay_seconds(hf_calls, repeats)[1], 4),
                          response_tokens=tokens))
        if profile and scenario == "sample":
            for name in samplers:
                print(json.dumps({"bench": "ceiling-profile", "workload": workload, "sampler": name,
                                  "top_ops": top_ops(lambda n=name: run(n))}), flush=True)
    return out


def medians(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """Median wall and median CPU seconds of (wall, CPU) pairs."""
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def top_ops(fn: Callable[[], Any], count: int = 12) -> list[dict[str, Any]]:
    """The ``count`` operators with the most self CPU time in one call of ``fn`` (ms, calls, share)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1000, 1), "calls": e.count,
             "share": round(e.self_cpu_time_total / total, 3)} for e in events[:count]]


def floor_workload(workload: str, ratio: float, repeats: int) -> dict[str, Any]:
    """A trainer floor (bench/floor.py) timed as the trainer benches do, its products recorded from one more step."""
    import floor
    import trainer_bench

    recorded: list[matmuls.Call] = []
    original = floor.timed

    def timed_then_recorded(step: Callable[[], Any], timer: Any, count: int) -> tuple[float, dict[str, float]]:
        timing = original(step, timer, count)
        recorded.extend(matmuls.record(step))
        return timing

    floor.timed = timed_then_recorded
    try:
        if workload == "dpo":
            import dpo

            fields = dpo.floor_summary(1.0, 1.0, dpo.pairs())
        elif workload == "grpo":
            fields = trainer_bench.onpolicy_floor(1.0, 1.0, 16, 4, 1, critic=False)
        else:
            fields = trainer_bench.onpolicy_floor(1.0, 1.0, 64, 1, 4, critic=True)
    finally:
        floor.timed = original
    ours = (fields["floor_s"], fields["floor_cpu_s"])
    return result(workload, (ratio * ours[0], ratio * ours[1]), ours, recorded, repeats,
                  ours_is="bench/floor.py floor_s", trl_s_from_ratio=ratio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default="rollout,ppo,grpo,dpo")
    parser.add_argument("--vs-trl", default=README_VS_TRL, help="rlhfkit/TRL throughput ratios (bench/vs_trl.py).")
    parser.add_argument("--profile", action="store_true", help="Also print the top operators of HF's and our rollout.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ratios = {name: float(value) for name, value in (item.split("=") for item in args.vs_trl.split(","))}
    for workload in args.workloads.split(","):
        if workload == "rollout":
            lines = rollout_workloads(args.repeats, args.profile)
        elif workload in ratios:
            lines = [floor_workload(workload, ratios[workload], args.repeats)]
        else:
            raise ValueError(f"unknown workload {workload!r}; choose from rollout, {', '.join(ratios)}")
        for line in lines:
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
