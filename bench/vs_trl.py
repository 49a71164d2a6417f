"""rlhfkit vs TRL side by side on the fixed bench workloads (one JSON line per workload).

TRL is never a dependency of rlhfkit: it is installed into separate virtual environments
(``$RLHFKIT_TRL_VENV``, default /work/.trl-venv, with trl==1.16.0 for GRPO, DPO and reward models;
``$RLHFKIT_TRL_PPO_VENV``, default /work/.trl112-venv, with trl==1.12.0 for its experimental PPO, which
later TRL dropped), each with torch==2.13.0 installed first. The same models (GPT-2 4 x 256, 4,096-word
vocabulary, built by bench/rl_workload.py and saved with save_pretrained), tokenizer and data are
written to a temp dir; bench/trl_runner.py runs TRL's trainer on them in the TRL venv and rlhfkit's own
bench (bench/grpo.py, dpo.py, reward_model.py, ppo.py) runs in this venv, each as a subprocess,
alternating ``--rounds`` times (the first mover alternating too), 2 threads, OMP_WAIT_POLICY=PASSIVE.
Peak RSS is each process's own ru_maxrss (rlhfkit's before it times its floor). For DPO and reward models
``cpu_ratio_*`` also compares process CPU seconds of the timed work (TRL's / rlhfkit's), which other load
on the machine skews less than wall time.

``--dtype bfloat16`` runs both sides' forwards under CPU autocast (float32 master weights): rlhfkit's
``run.dtype=bfloat16`` / RewardTrainer ``autocast_dtype`` (our rollouts sample in bf16 too; reward models
score in float32), TRL's ``bf16=True`` (whatever its trainer runs under autocast).

``RLHFKIT_BENCH_POLICY=llama|qwen3`` makes the policy (and reference) a Llama-family model of about the GPT-2's
size on both sides (bench/rl_workload.py); rlhfkit's floors then decode with Llama-family blocks (bench/floor.py).

Run: python bench/vs_trl.py [--workloads grpo,dpo,reward,ppo] [--rounds 3] [--no-install] [--dtype bfloat16]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH, TRL_MAIN, TRL_PPO = "torch==2.13.0", "trl==1.16.0", "trl==1.12.0"
GRPO = {"prompts": 16, "group": 4, "steps": 3, "beta": 0.04, "new_tokens": 32}
PPO = {"batch": 64, "minibatches": 4, "steps": 3, "kl_coef": 0.05, "new_tokens": 32}
DPO = {"batch_pairs": 16, "beta": 0.1}
REWARD = {"batch_pairs": 16}
# rlhfkit's side: the bench script, its args, and the throughput key of its JSON line
OURS = {"grpo": (["grpo.py", "--steps", "3"], "completions_per_s"), "dpo": (["dpo.py"], "pairs_per_s"),
        "reward": (["reward_model.py", "--skip-naive"], "pairs_per_s"),
        "ppo": (["ppo.py", "--steps", "3"], "episodes_per_s")}
TRL_KEY = {"grpo": "completions_per_s", "dpo": "pairs_per_s", "reward": "pairs_per_s", "ppo": "episodes_per_s"}


def loadavg() -> list[float]:
    with open("/proc/loadavg") as handle:
        return [float(x) for x in handle.read().split()[:3]]


def ensure_venv(path: str, trl_spec: str, install: bool) -> str | None:
    """Create/reuse a venv with torch then TRL; returns None when ready, else the error text."""
    python = os.path.join(path, "bin", "python")
    check = [python, "-c", f"import trl, torch; assert trl.__version__ == {trl_spec.split('==')[1]!r}"]
    if os.path.exists(python) and subprocess.run(check, capture_output=True).returncode == 0:
        return None
    if not install:
        return f"{path} has no {trl_spec} (--no-install)"
    steps = [[sys.executable, "-m", "venv", path], [python, "-m", "pip", "install", "-q", TORCH],
             [python, "-m", "pip", "install", "-q", trl_spec]]
    for command in steps:
        if command[0] == sys.executable and os.path.exists(python):
            continue
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            return f"{' '.join(command[-2:])} failed: {done.stderr.strip()[-500:]}"
    return None if subprocess.run(check, capture_output=True).returncode == 0 else f"{trl_spec} does not import"


def prepare(root: str) -> None:
    """Models (save_pretrained), tokenizer and data.json for trl_runner.py, from rlhfkit's bench builders."""
    import dpo as dpo_bench
    import reward_model as rm_bench
    import rl_workload as wl
    import torch
    from transformers import GPT2ForSequenceClassification

    def no_dropout(config):  # noqa: ANN001, ANN202
        config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = config.summary_first_dropout = 0.0
        return config

    tokenizer = wl.tokenizer()
    bundle = wl.bundle(critic=True)
    bundle.policy.config = no_dropout(bundle.policy.config)
    bundle.policy.save_pretrained(os.path.join(root, "policy"))
    # reward model: the RewardModel trunk + scalar head as a sequence classifier (last non-pad token)
    ours = wl.reward().members[0].model
    classifier = GPT2ForSequenceClassification(no_dropout(wl.gpt2_config()))
    classifier.config.num_labels = 1
    classifier.score = torch.nn.Linear(wl.EMBD, 1, bias=False)
    classifier.transformer.load_state_dict(ours.backbone.state_dict())
    classifier.score.weight.data.copy_(ours.head.weight.data)
    classifier.save_pretrained(os.path.join(root, "reward"))
    critic = GPT2ForSequenceClassification(no_dropout(wl.gpt2_config()))
    critic.config.num_labels = 1
    critic.score = torch.nn.Linear(wl.EMBD, 1, bias=False)
    critic.transformer.load_state_dict(bundle.value_model.trunk.state_dict())
    critic.score.weight.data.copy_(bundle.value_model.value_head.linear.weight.data)
    critic.save_pretrained(os.path.join(root, "critic"))
    for name in ("policy", "reward", "critic"):
        tokenizer.save_pretrained(os.path.join(root, name))
    prompts = wl.prompts(256)
    # DPO: TRL always appends EOS to string completions, so its completion is 47 of the same words + EOS:
    # the same 16 + 48 token shapes as rlhfkit's (append_eos=false, 48 words)
    pairs = [{"prompt": p.prompt, "chosen": " " + " ".join(p.chosen.split()[:47]) + " <eos>",
              "rejected": " " + " ".join(p.rejected.split()[:47]) + " <eos>"} for p in dpo_bench.pairs()]
    rm_pairs = [{"chosen_ids": r.sequences[0], "rejected_ids": r.sequences[1]} for r in rm_bench.build_pairs()]
    data = {"prompts": prompts, "prompt_ids": [tokenizer(p).input_ids for p in prompts], "pairs": pairs,
            "rm_pairs": rm_pairs, "grpo": GRPO, "ppo": PPO, "dpo": DPO, "reward": REWARD}
    with open(os.path.join(root, "data.json"), "w") as handle:
        json.dump(data, handle)


def run_child(command: list[str], env: dict[str, str], timeout: float) -> tuple[dict | None, float, str]:
    """Run ``command``; (its last JSON line or None, its own peak RSS MiB via wait4, stderr tail)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=os.path.dirname(HERE))
        deadline = time.time() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith("{")]
        tail = err.read()[-1500:]
    result = json.loads(lines[-1]) if lines and proc.returncode == 0 else None
    return result, usage.ru_maxrss / 1024.0, tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="grpo,dpo,reward,ppo")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900.0, help="Seconds per child run.")
    parser.add_argument("--no-install", action="store_true", help="Use existing TRL venvs only.")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="Both sides' compute precision.")
    args = parser.parse_args()
    venvs = {"main": os.environ.get("RLHFKIT_TRL_VENV", "/work/.trl-venv"),
             "ppo": os.environ.get("RLHFKIT_TRL_PPO_VENV", "/work/.trl112-venv")}
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads), BENCH_THREADS=str(args.threads), HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", BENCH_DTYPE=args.dtype)
    with tempfile.TemporaryDirectory(prefix="vs_trl_") as root:
        prepare(root)
        for workload in args.workloads.split(","):
            spec, venv = (TRL_PPO, venvs["ppo"]) if workload == "ppo" else (TRL_MAIN, venvs["main"])
            line: dict = {"bench": "vs_trl", "workload": workload, "policy": os.environ.get("RLHFKIT_BENCH_POLICY", "gpt2"),
                          "trl": spec, "threads": args.threads,
                          "dtype": args.dtype, "loadavg_before": loadavg()}
            problem = ensure_venv(venv, spec, not args.no_install)
            ours_script, ours_key = OURS[workload]
            ours_cmd = [sys.executable, os.path.join(HERE, ours_script[0]), *ours_script[1:], "--threads",
                        str(args.threads), *(["--dtype", args.dtype] if args.dtype != "float32" else [])]
            trl_cmd = [os.path.join(venv, "bin", "python"), os.path.join(HERE, "trl_runner.py"), workload, root]
            runs: dict[str, list[dict]] = {"rlhfkit": [], "trl": []}
            errors: list[str] = [problem] if problem else []
            for round_ in range(args.rounds):
                order = ["rlhfkit", "trl"] if round_ % 2 == 0 else ["trl", "rlhfkit"]
                for side in order:
                    if side == "trl" and problem:
                        continue
                    result, rss, tail = run_child(ours_cmd if side == "rlhfkit" else trl_cmd, env, args.timeout)
                    if result is None:
                        errors.append(f"{side}: {tail.strip()[-600:]}")
                        continue
                    result["child_peak_rss_mb"] = round(rss, 1)
                    runs[side].append(result)
            ours = [r[ours_key] for r in runs["rlhfkit"]]
            theirs = [r[TRL_KEY[workload]] for r in runs["trl"]]
            line.update({"metric": ours_key, "rlhfkit": [round(x, 2) for x in ours],
                         "trl_runs": [round(x, 2) for x in theirs]})
            if ours and theirs:
                paired = [a / b for a, b in zip(ours, theirs)]
                line.update({"ratio_median": round(statistics.median(ours) / statistics.median(theirs), 3),
                             "ratio_per_round": [round(x, 3) for x in paired],
                             "ratio_range": [round(min(paired), 3), round(max(paired), 3)]})
            cpu = [(a["cpu_seconds"], b["cpu_seconds"]) for a, b in zip(runs["rlhfkit"], runs["trl"])
                   if "cpu_seconds" in a and "cpu_seconds" in b]
            if cpu:  # the same work on both sides: TRL's CPU seconds over ours (less skewed by other load)
                line["cpu_ratio_per_round"] = [round(theirs_cpu / ours_cpu, 3) for ours_cpu, theirs_cpu in cpu]
                line["cpu_ratio_median"] = statistics.median(line["cpu_ratio_per_round"])
            for side in ("rlhfkit", "trl"):  # each process's own ru_maxrss (rlhfkit's taken before its floor)
                if runs[side]:
                    line[f"{side}_peak_rss_mb"] = round(statistics.median(r["peak_rss_mb"] for r in runs[side]), 1)
            floors = [r for r in runs["rlhfkit"] if r.get("floor_s") is not None]
            if floors:
                line["rlhfkit_overhead"] = [r["overhead"] for r in floors]
                line["rlhfkit_floor_s"] = [r["floor_s"] for r in floors]
                line["rlhfkit_overhead_cpu"] = [r.get("overhead_cpu") for r in floors]
            if runs["trl"]:
                line["trl_versions"] = {k: runs["trl"][0][k] for k in ("trl", "torch", "transformers")}
            line["run_loadavg"] = [r.get("loadavg_before") for side in ("rlhfkit", "trl") for r in runs[side]]
            line["loadavg_after"] = loadavg()
            if errors:
                line["errors"] = errors
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
