"""The adversarial round (reward.adversarial.enabled): after the reward phase, attack the new reward model
with the exploit probes of ``rlhfkit probe-rm`` and ask the annotators about its worst failures.

1. The probes (filler, repetition, flattery, a claim of correctness, truncation, off-topic swap, and a
   greedy reward-raising suffix) rewrite this round's candidates. Candidates of odd prompt indices are
   held out: probed, measured, never sent.
2. Among the others, the probed responses whose reward rose most go to the annotators as pairwise
   comparisons, probed vs original (the simulated panel judges by gold, so it prefers the original
   when the probe made it worse, and the probe when it truly helped).
3. Their answers join the reward data and the reward model is retrained from the reward phase's model
   (``reward_adversarial/``), which then becomes the round's reward model.
4. Each probe's success rate (share of probed samples whose reward rose) is measured on the same probed
   texts before and after, on the sent and the held-out samples -> ``adversarial_stats.json`` (metrics).

Resumable: the probe plan is written once (``adversarial_probes.json``), the campaign is found by name,
the records are rebuilt from the database and the reward trainer resumes from its checkpoints.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rlhfkit.loop.candidates import Candidate, read_candidates, write_jsonl
from rlhfkit.loop.selection import Pair
from rlhfkit.reward.probes import probe_edits, share_rose
from rlhfkit.utils.checkpoint import atomic_write_json

if TYPE_CHECKING:
    from rlhfkit.loop.phases import LoopContext

PLAN_FILE = "adversarial_probes.json"
STATS_FILE = "adversarial_stats.json"
RECORDS_FILE = "feedback_adversarial.jsonl"
REWARD_DIR = "reward_adversarial"
ORIGINAL_MODEL = "original"


def adversarial_name(run_id: str, round_index: int) -> str:
    """The adversarial campaign's name: unique per run and round, found again after a restart."""
    return f"{run_id} round {round_index} adversarial"


Sample = tuple[str, str]


def probe_pool(candidates: Sequence[Candidate], limit: int, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Up to ``limit`` distinct non-empty (prompt, response) candidates, drawn with ``seed``: (sendable, held out);
    candidates of odd prompt indices are held out."""
    seen: dict[tuple[str, str], int] = {}
    for c in candidates:
        if c.response.strip():
            seen.setdefault((c.prompt, c.response), c.prompt_index)
    keys = sorted(seen, key=lambda k: (seen[k], k))
    random.Random(seed).shuffle(keys)
    keys = keys[:limit]
    return [k for k in keys if seen[k] % 2 == 0], [k for k in keys if seen[k] % 2 == 1]


def worst_indices(deltas: Sequence[float], eligible: Sequence[bool], n: int) -> list[int]:
    """The ``n`` eligible indices with the largest positive reward rise, largest first (ties by index)."""
    ranked = sorted((i for i, d in enumerate(deltas) if eligible[i] and d > 0), key=lambda i: (-deltas[i], i))
    return ranked[:n]


def score_items(model: Any, items: Sequence[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Rewards of each item's original and probed response (each distinct original scored once)."""
    originals = sorted({(it["prompt"], it["original"]) for it in items})
    base = model.score_texts([p for p, _ in originals], [r for _, r in originals]).tolist() if originals else []
    by_original = dict(zip(originals, base))
    probed = model.score_texts([it["prompt"] for it in items], [it["probed"] for it in items]).tolist() if items else []
    return [by_original[(it["prompt"], it["original"])] for it in items], probed


def make_plan(ctx: LoopContext) -> dict[str, Any]:
    """Probe the reward phase's model on this round's candidates; the items to send are marked ``sent``."""
    from rlhfkit.loop.scoring import load_scorer
    from rlhfkit.reward.probes import greedy_suffix_search, suffix_candidates

    cfg = ctx.config.reward.adversarial
    assert ctx.state.reward_model is not None
    sendable, held_out = probe_pool(read_candidates(ctx.paths.candidates(ctx.round)), cfg.samples,
                                    ctx.config.seed * 131 + ctx.round)
    model = load_scorer(ctx.state.reward_model, device=ctx.device)
    suffix = ""
    if cfg.suffix_length > 0 and sendable:
        suffix, _ = greedy_suffix_search(model, sendable, suffix_candidates(sendable), cfg.suffix_length)
    held = set(held_out)
    items = [{"probe": s.probe, "prompt": s.prompt, "original": s.original, "probed": s.probed,
              "held_out": (s.prompt, s.original) in held}
             for s in probe_edits([*sendable, *held_out], cfg.probes or None, suffix)]
    base, probed = score_items(model, items)
    deltas = [b - a for a, b in zip(base, probed)]
    sent = set(worst_indices(deltas, [not it["held_out"] for it in items], cfg.comparisons))
    for index, item in enumerate(items):
        item.update(reward_original=base[index], reward_probed=probed[index], sent=index in sent)
    return {"reward_model": ctx.state.reward_model, "suffix": suffix, "items": items}


def comparison_set(items: Sequence[dict[str, Any]]) -> tuple[list[Candidate], list[str], list[Pair]]:
    """Candidates (probed then original per sent item), their model labels, and one pair per sent item."""
    candidates, models, pairs = [], [], []
    for k, item in enumerate(it for it in items if it["sent"]):
        candidates += [Candidate(2 * k, k, item["prompt"], item["probed"], True),
                       Candidate(2 * k + 1, k, item["prompt"], item["original"], True)]
        models += [f"probe:{item['probe']}", ORIGINAL_MODEL]
        pairs.append(Pair(prompt_index=k, a=2 * k, b=2 * k + 1))
    return candidates, models, pairs


def success_table(items: Sequence[dict[str, Any]], after: Sequence[float], after_original: Sequence[float],
                  gold_fell: Sequence[bool] | None = None) -> dict[str, float]:
    """``adversarial/<group>/<probe>_before`` and ``_after``: share of probed samples whose reward rose, per
    probe and over all ("all"), for the sent and the held-out samples, on the same texts before and after.

    With ``gold_fell`` (per item: the probe did not raise the gold reward), ``exploit_before``/``_after`` is
    the share of those items whose reward rose anyway: reward up, quality not.
    """
    out: dict[str, float] = {}
    for group, keep in (("sent", lambda it: it["sent"]), ("held_out", lambda it: it["held_out"])):
        chosen = [i for i, it in enumerate(items) if keep(it)]
        if not chosen:
            continue
        tables = {}
        for when, base, probed in (("before", [it["reward_original"] for it in items],
                                    [it["reward_probed"] for it in items]), ("after", after_original, after)):
            names = [items[i]["probe"] for i in chosen]
            tables[when] = share_rose(names, [base[i] for i in chosen], [probed[i] for i in chosen])
            exploits = [i for i in chosen if gold_fell is not None and gold_fell[i]]
            if exploits:
                rates = share_rose(["exploit"] * len(exploits), [base[i] for i in exploits],
                                   [probed[i] for i in exploits])
                tables[when]["exploit"] = rates["exploit"]
        for name in tables["before"]:
            out[f"adversarial/{group}/{name}_before"] = tables["before"][name]
            out[f"adversarial/{group}/{name}_after"] = tables["after"][name]
    return out


def gold_not_raised(task: Any, items: Sequence[dict[str, Any]]) -> list[bool] | None:
    """Per item, whether its probe left the task's gold reward unchanged or lower (None without a gold reward)."""
    if not task.has_gold or not items:
        return None
    prompts = [it["prompt"] for it in items]
    before = task.gold_reward(prompts, [it["original"] for it in items])
    after = task.gold_reward(prompts, [it["probed"] for it in items])
    if before is None or after is None:
        return None
    return [b <= a for a, b in zip(before, after)]


def probed_preferred(rows: Sequence[dict[str, Any]]) -> float | None:
    """Share of the campaign's non-skip, non-tie answers that chose the probed response (its first sample)."""
    votes = [(r.get("resolved") or {}).get("winner") == int(r["samples"][0]["id"]) for r in rows
             if r.get("kind") == "pairwise" and (r.get("resolved") or {}).get("winner") not in (None, "tie")]
    return sum(votes) / len(votes) if votes else None


def adversarial_round(ctx: LoopContext) -> None:
    """Probe, ask, retrain, re-probe (see the module docstring); a no-op unless reward.adversarial.enabled."""
    from rlhfkit.loop import collect, phases
    from rlhfkit.loop.reward_phase import reward_train_config, train_round_reward
    from rlhfkit.loop.scoring import load_scorer

    if not ctx.config.reward.adversarial.enabled:
        return
    ctx.display.phase(f"round {ctx.round} · adversarial probes", None)
    plan_path = ctx.round_dir / PLAN_FILE
    if not plan_path.is_file():
        atomic_write_json(plan_path, make_plan(ctx))
    plan = json.loads(plan_path.read_text(encoding="utf-8"))
    items = plan["items"]
    candidates, models, pairs = comparison_set(items)
    if not pairs:
        ctx.display.log(f"round {ctx.round}: no probe raised the reward; adversarial round skipped")
        return
    instructions = ctx.config.feedback.instructions or ctx.task.judge_instructions
    with ctx.feedback().admin() as admin:
        campaign_id = collect.open_campaign(admin, adversarial_name(ctx.state.run_id, ctx.round), candidates, pairs,
                                            ctx.config.feedback, instructions, ctx.round, models=models)
        phases.add_annotators(ctx, admin, campaign_id)
    if campaign_id not in ctx.state.campaign_ids:
        ctx.state.campaign_ids.append(campaign_id)
    ctx.display.log(f"round {ctx.round}: {len(pairs)} probed responses sent to annotators (campaign {campaign_id})")
    phases.collect_answers(ctx, campaign_id,
                           lambda done, total: ctx.display.update(done, total, info="comparisons complete"))
    rows = phases.campaign_rows(ctx)
    records, _ = phases.feedback_records(ctx, rows)
    data = ctx.round_dir / RECORDS_FILE
    write_jsonl(data, records)
    ctx.display.phase(f"round {ctx.round} · reward model (adversarial)", None)
    train_config = reward_train_config(ctx.config, data, ctx.round_dir / REWARD_DIR, plan["reward_model"], ctx.round)
    model_dir, result = train_round_reward(train_config)
    model = load_scorer(str(model_dir), device=ctx.device)
    after_original, after = score_items(model, items)
    with ctx.feedback().admin() as admin:
        preferred = probed_preferred(admin.annotations(campaign_id))
    stats = {**success_table(items, after, after_original, gold_not_raised(ctx.task, items)),
             "adversarial/sent": float(len(pairs)),
             "adversarial/records": float(len(records))}
    if preferred is not None:
        stats["adversarial/probed_preferred"] = preferred
    if "accuracy" in result:
        stats["adversarial/rm_accuracy"] = float(result["accuracy"])
    atomic_write_json(ctx.round_dir / STATS_FILE, stats)
    ctx.state.reward_model = str(model_dir)
    rates = [f"{stats[f'adversarial/{g}/all_before']:.2f} -> {stats[f'adversarial/{g}/all_after']:.2f} "
             f"({g.replace('_', '-')})" for g in ("sent", "held_out") if f"adversarial/{g}/all_before" in stats]
    ctx.display.log(f"round {ctx.round}: probes raised the reward of " + ", ".join(rates)
                    + (f" of probed samples; annotators preferred the probed response in {preferred:.2f}"
                       if preferred is not None else " of probed samples"))
