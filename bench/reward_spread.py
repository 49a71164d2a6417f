"""Does ensemble spread predict errors on real preferences, averaged over many ensembles?

One ensemble's confident-minus-unsure gap on ~500 pairs has a CI ~20 points wide, so which confidence clears 0
on one seed is largely luck. This pools the members that ``bench/reward_real.py --set ensemble_size=K`` runs
saved on one split (``correct.json``: each member's chosen-minus-rejected margins; member ``i`` of a run
with ``--rm-seed R`` is seed ``R + i``, and a member of a given seed is the same model in any run), forms the
ensembles of ``--k`` consecutive seeds, and prints one JSON line: each ensemble's gap per confidence, and
the mean gap over the ensembles with one joint question-level bootstrap CI, alone and minus the |margin|
confidence (what the spread adds over the mean margin).

Run: python bench/reward_spread.py --runs /work/rr/rm-h1-pairs6-0-0 /work/rr/rm-h1-pairs2-0-6 ... [--k 5]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from reward_real import cluster_bootstrap, correctness  # noqa: E402
from rlhfkit.reward.confidence import CONFIDENCES, confident_pairs, half_accuracy_gap  # noqa: E402


def member_margins(runs: list[Path]) -> tuple[dict[int, np.ndarray], list[int]]:
    """Margins per member seed from each run's correct.json; the runs must share one evaluation split."""
    by_seed: dict[int, np.ndarray] = {}
    groups: list[int] | None = None
    for run in runs:
        saved = json.loads((run / "correct.json").read_text())
        if groups is not None and saved["groups"] != groups:
            raise SystemExit(f"{run}: another evaluation split than {runs[0]}")
        groups = saved["groups"]
        first = int(saved["rm_seed"]) if "rm_seed" in saved else int(run.name.rsplit("-", 1)[1])
        margins = np.asarray(saved["margins"], dtype=float)
        for offset in range(margins.shape[1]):
            by_seed[first + offset] = margins[:, offset]
    if groups is None:
        raise SystemExit("no runs given")
    return by_seed, groups


def ensembles(seeds: list[int], k: int) -> list[list[int]]:
    """Every window of ``k`` consecutive member seeds that are all present."""
    present = set(seeds)
    return [list(range(s, s + k)) for s in sorted(present) if all(s + i in present for i in range(k))]


def main() -> None:
    """Pool saved member margins into ensembles of k and print the per-ensemble and mean gaps."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="reward_real run dirs (correct.json).")
    parser.add_argument("--k", type=int, default=5, help="Members per ensemble.")
    parser.add_argument("--seed", type=int, default=0, help="Bootstrap seed.")
    args = parser.parse_args()
    by_seed, groups = member_margins(args.runs)
    windows = ensembles(list(by_seed), args.k)
    if not windows:
        raise SystemExit(f"no {args.k} consecutive member seeds among {sorted(by_seed)}")
    columns = []
    for window in windows:
        margins = np.stack([by_seed[s] for s in window], axis=1)
        columns.append(correctness(margins.mean(axis=1)))
        columns += [confident_pairs(margins, kind).astype(float) for kind in CONFIDENCES]
    table, width = np.stack(columns, axis=1), 1 + len(CONFIDENCES)

    def gap(rows: np.ndarray, ensemble: int, kind: int) -> float:
        return half_accuracy_gap(rows[:, ensemble * width], rows[:, ensemble * width + 1 + kind])

    def mean_gap(rows: np.ndarray, kind: int) -> float:
        return float(np.mean([gap(rows, e, kind) for e in range(len(windows))]))

    margin = CONFIDENCES.index("margin")
    result: dict[str, object] = {"bench": "reward_spread", "k": args.k, "pairs": len(groups),
                                 "questions": len(set(groups)), "ensembles": [w[0] for w in windows]}
    for index, kind in enumerate(CONFIDENCES):
        value, low, high = cluster_bootstrap(table, groups, lambda r: mean_gap(r, index), args.seed)
        extra = cluster_bootstrap(table, groups, lambda r: mean_gap(r, index) - mean_gap(r, margin), args.seed)
        result[kind] = {"per_ensemble": [round(gap(table, e, index), 4) for e in range(len(windows))],
                        "mean": round(value, 4), "ci": [round(low, 4), round(high, 4)],
                        "minus_margin": round(extra[0], 4), "minus_margin_ci": [round(extra[1], 4),
                                                                                round(extra[2], 4)]}
    accuracy = [float(table[:, e * width].mean()) for e in range(len(windows))]
    result["accuracy_mean"] = round(float(np.mean(accuracy)), 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
