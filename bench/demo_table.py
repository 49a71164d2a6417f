"""The README's demo figures from finished demo runs: one table row per run, then before/after samples.

Usage (after ``rlhfkit demo -q --run-dir runs/demo-sN --set seed=N`` for N = 0, 1, 2):
    python bench/demo_table.py runs/demo-s0 runs/demo-s1 runs/demo-s2
Prints markdown to paste into the README's demo section. The samples are the first ``--samples``
eval prompts of each run (not hand-picked): the base policy's answer and the final policy's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# (summary metric, column label, show base -> final, format)
COLUMNS = (("gold reward", "gold base -> final", True, ".3f"), ("KL to base (nats/sequence)", "KL", False, ".1f"),
           ("win rate vs base (gold)", "win (gold)", False, ".2f"),
           ("win rate vs base (judge, eval.judge)", "win (strict judge)", False, ".2f"),
           ("distinct-2", "distinct-2 base -> final", True, ".3f"),
           ("mean length (words)", "words base -> final", True, ".1f"),
           ("gold aspect: positive", "positive", True, ".2f"), ("gold aspect: reason", "reason", True, ".2f"))


def summary_row(run: Path) -> str:
    """One markdown row of a run's summary.json, with its seed and whether it stopped early."""
    rows = {r["metric"]: r for r in json.loads((run / "summary.json").read_text(encoding="utf-8"))}
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    state = json.loads((run / "state.json").read_text(encoding="utf-8"))
    cells = [str(config["seed"])]
    for metric, _, both, spec in COLUMNS:
        row = rows.get(metric)
        if row is None:
            cells.append("–")
        elif both:
            cells.append(f"{row['base']:{spec}} -> {row['final']:{spec}}")
        else:
            cells.append(f"{row['final']:{spec}}")
    cells.append(f"rolled back to round {state['best_round']}" if state.get("stopped") else "no")
    return "| " + " | ".join(cells) + " |"


def sample_rows(run: Path, n: int) -> list[str]:
    """The first ``n`` eval prompts: the base policy's answer and the final policy's, with their gold."""
    state = json.loads((run / "state.json").read_text(encoding="utf-8"))
    seed = json.loads((run / "config.json").read_text(encoding="utf-8"))["seed"]
    final_dir = Path(state["policy"]).parent.parent
    base = [json.loads(line) for line in (run / "rounds" / "round-000" / "samples_after.jsonl").open()][:n]
    final = [json.loads(line) for line in (final_dir / "samples_after.jsonl").open()][:n]
    return [f"| {seed} | {b['prompt']} | {b['response'].strip()} ({b['gold']:+.2f}) "
            f"| {f['response'].strip()} ({f['gold']:+.2f}) |" for b, f in zip(base, final)]


def main() -> None:
    """Print the figures table and each run's samples."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="Finished demo run directories.")
    parser.add_argument("--samples", type=int, default=3, help="Before/after samples per run.")
    args = parser.parse_args()
    header = ["seed", *(label for _, label, _, _ in COLUMNS), "rollback"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for run in args.runs:
        print(summary_row(run))
    print("\nGold in brackets:\n\n| seed | prompt | base policy | after three rounds |\n|---|---|---|---|")
    for run in args.runs:
        print("\n".join(sample_rows(run, args.samples)))

if __name__ == "__main__":
    main()
