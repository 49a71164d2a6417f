"""Exact share of the KL-regularized optimum reached by PPO, GRPO, RLOO and REINFORCE on their
defaults, on an enumerable problem where the optimum needs exploration.

Problem (built by tests/rl/enumerable.py): 5 letters a..e + <eos>, responses of at most 4 tokens
(781 responses). The reference is the 1-layer GPT-2 fitted to emit, after every prefix,
<eos> 0.10, a 0.35, b 0.25, c 0.15, d 0.10, e 0.05, so 66% of its samples hit the length cap.
Reward: 0.25 per "a" plus 2.5 when the response contains the pair "de" (reference mass of such
responses: 1.3%; every one of them has reference probability below 1%). The optimum
pi* ∝ ref exp(r / beta) puts all its mass (beta 0.1) or 60% (beta 0.5) on "de" responses, while
the easy gradient leads to "aaaa"; the best policy without "de" gets only 0.14 / 0.06 of the
achievable improvement. Share = (J(pi) - J(ref)) / (J* - J(ref)) for J = E[r] - beta KL(pi||ref).

Per algorithm and beta: an lr grid x seeds, 4,096 episodes (64 a step: PPO 64 prompts, the
group algorithms 16 prompts x 4), only problem settings set (kl.coef, optim.lr, run.steps,
num_prompts, group_size, max_new_tokens); reports the best lr by median share, its shares and the
exact final KL against the optimum's. ``--set key=value`` adds config settings (exploration
experiments), ``--quick`` is a smoke run. Prints ONE JSON line.

Run: python bench/exact_optimum.py [--quick] [--threads 1] [--algos ppo,grpo] [--set entropy_coef=0.01]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "rl"))
import enumerable as en  # noqa: E402

REFERENCE_NEXT_TOKEN = (0.10, 0.35, 0.25, 0.15, 0.10, 0.05)  # <eos>, a, b, c, d, e
RARE_PAIR, PAIR_BONUS, PER_A = "de", 2.5, 0.25


def reward(text: str) -> float:
    return PER_A * text.count("a") + PAIR_BONUS * (RARE_PAIR in text)


def build_problem() -> tuple[en.EnumerableProblem, torch.nn.Module, dict[str, float]]:
    problem = en.EnumerableProblem(num_letters=5, max_len=4, prompt="a")
    reference = problem.policy(0)
    en.fit_next_token_distribution(problem, reference, REFERENCE_NEXT_TOKEN, steps=300)
    reference.requires_grad_(True)
    return problem, reference, problem.reward_table(reward)


def describe(problem: en.EnumerableProblem, reference: torch.nn.Module, table: dict[str, float],
             betas: list[float]) -> dict:
    ref = problem.logprobs(reference)
    rewards = problem.rewards(table)
    rare = torch.tensor([RARE_PAIR in problem.text(r) for r in problem.responses])
    low = ref.exp() < 0.01
    out = {"responses": problem.size, "ref_length_cap_frac": round(float(ref.exp()[-5 ** 4:].sum()), 4),
           "ref_mass_rare_pair": round(float(ref.exp()[rare].sum()), 4),
           "ref_max_prob_rare_pair": round(float(ref.exp()[rare].max()), 5)}
    for beta in betas:
        best = en.optimal_logprobs(ref, rewards, beta)
        start, top = en.objective(ref, ref, rewards, beta), en.optimum(ref, rewards, beta)
        without = beta * float(torch.logsumexp((ref + rewards / beta)[~rare], 0))
        out[f"beta_{beta}"] = {"optimum_mass_ref_prob_below_1pct": round(float(best.exp()[low].sum()), 4),
                               "optimum_mass_rare_pair": round(float(best.exp()[rare].sum()), 4),
                               "optimum_kl": round(en.kl(best, ref), 4), "achievable_gain": round(top - start, 4),
                               "best_share_without_rare_pair": round((without - start) / (top - start), 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 lr, 1 seed, 512 episodes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--algos", default=",".join(en.ALGORITHMS))
    parser.add_argument("--betas", default="0.1,0.5")
    parser.add_argument("--lrs", default="3e-4,1e-3,3e-3,1e-2")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--episodes", type=int, default=4096)
    parser.add_argument("--per-step", type=int, default=64, help="episodes per step")
    parser.add_argument("--group-size", type=int, default=4, help="group algorithms: responses per prompt")
    parser.add_argument("--set", action="append", default=[], help="extra config key=value (exploration runs)")
    args = parser.parse_args()
    if args.quick:
        args.lrs, args.seeds, args.episodes = "1e-3", "0", 512
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    load_before = [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    start = time.perf_counter()
    algos, betas = args.algos.split(","), [float(b) for b in args.betas.split(",")]
    lrs, seeds = [float(x) for x in args.lrs.split(",")], [int(s) for s in args.seeds.split(",")]
    problem, reference, table = build_problem()
    steps = args.episodes // args.per_step
    results: dict[str, dict] = {}
    for algo in algos:
        group = 1 if algo == "ppo" else args.group_size
        for beta in betas:
            runs = {}
            for lr in lrs:
                shares, kls = [], []
                for seed in seeds:
                    with tempfile.TemporaryDirectory() as out:
                        run = en.train_exact(problem, algo, table, out, beta=beta, lr=lr, steps=steps,
                                             num_prompts=args.per_step // group, group_size=group,
                                             policy=copy.deepcopy(reference), seed=seed, extra=args.set)
                    shares.append(round(run.share, 4))
                    kls.append(round(run.kl, 4))
                runs[lr] = {"median_share": round(statistics.median(shares), 4), "shares": shares, "final_kl": kls}
            best = max(runs, key=lambda lr: runs[lr]["median_share"])
            by_lr = {str(lr): r["median_share"] for lr, r in runs.items()}
            results[f"{algo}/beta_{beta}"] = {"best_lr": best, **runs[best], "median_share_by_lr": by_lr}
    print(json.dumps({
        "bench": "exact_optimum", "quick": args.quick, "threads": torch.get_num_threads(), "episodes": args.episodes,
        "episodes_per_step": args.per_step, "lrs": lrs, "seeds": seeds, "extra_settings": args.set,
        "trainer": "OnPolicyTrainer" if _has_onpolicy() else "PPOTrainer/PolicyGradientTrainer",
        "problem": describe(problem, reference, table, betas), "results": results,
        "wall_s": round(time.perf_counter() - start, 1), "loadavg_before": load_before,
        "loadavg_after": [float(x) for x in open("/proc/loadavg").read().split()[:3]],
    }))


def _has_onpolicy() -> bool:
    try:
        import rlhfkit.rl.onpolicy  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
