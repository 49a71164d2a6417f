"""The SFT phase of a round (feedback.kind=edit, feedback.edits_sft): a few ``rlhfkit.sft`` steps on the round's
rewrites, from the current policy, before the policy phase.

The trainer runs in ``rounds/round-XXX/sft`` with its own checkpoints (a restart resumes from the newest
one); a finished ``sft/final`` (with its stats written) is reused as is. With LoRA (the policy trainer's
``run.lora``) SFT trains adapters too: the policy's adapters, or fresh ones on the base in round 1, so the
base stays the KL reference. Without rewrites this round the phase does nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhfkit.feedback.edits import edit_sft
from rlhfkit.loop.candidates import write_jsonl
from rlhfkit.utils.checkpoint import atomic_write_json

if TYPE_CHECKING:
    from rlhfkit.loop.phases import LoopContext

SFT_DIR = "sft"
DATA_FILE = "sft_edits.jsonl"
STATS_FILE = "sft_stats.json"


def sft_examples(rows: Sequence[Mapping[str, Any]], round_index: int) -> list[dict[str, str]]:
    """``{"prompt", "completion"}`` for every rewrite among the edit answers of round ``round_index`` (the
    completion keeps the original's leading whitespace, ``edit_sft``)."""
    out = []
    for row in rows:
        if row.get("kind") != "edit" or not row["samples"] or row["samples"][0].get("round") != round_index:
            continue
        example = edit_sft(row)
        if example is not None:
            out.append(example)
    return out


def is_finished(final: Path) -> bool:
    """Whether ``final`` holds a saved model (full weights or LoRA adapters)."""
    return (final / "config.json").is_file() or (final / "adapter_config.json").is_file()


def lora_start(policy: str, lora: Any, folder: Path) -> str:
    """Where SFT starts with LoRA: the policy itself when it is an adapter directory, else fresh adapters on it
    saved (once) in ``folder``."""
    if lora is None or (Path(policy) / "adapter_config.json").is_file():
        return policy
    if not (folder / "adapter_config.json").is_file():
        from rlhfkit.models.loading import load_causal_lm, load_tokenizer
        from rlhfkit.models.lora import apply_lora

        model = apply_lora(load_causal_lm(policy, device="cpu"), lora)
        model.save_pretrained(folder)
        load_tokenizer(policy).save_pretrained(folder)
    return str(folder)


def sft_on_edits(ctx: LoopContext) -> None:
    """Fine-tune the current policy on this round's rewrites -> sft/final, which becomes the policy."""
    from rlhfkit.loop.phases import campaign_rows
    from rlhfkit.sft.config import SFTConfig, SFTOptimConfig
    from rlhfkit.sft.trainer import train_sft

    cfg = ctx.config.feedback
    if not cfg.edits_sft:
        return
    assert ctx.state.policy is not None
    output = ctx.round_dir / SFT_DIR
    final = output / "final"
    if not (is_finished(final) and (ctx.round_dir / STATS_FILE).is_file()):
        examples = sft_examples(campaign_rows(ctx), ctx.round)
        if not examples:
            ctx.display.log(f"round {ctx.round}: no rewrites this round; SFT phase skipped")
            return
        data = ctx.round_dir / DATA_FILE
        write_jsonl(data, examples)
        ctx.display.phase(f"round {ctx.round} · sft on edits", cfg.edits_sft_steps)
        policy = ctx.config.policy
        lora = {"ppo": policy.ppo, "dpo": policy.dpo}.get(policy.algorithm, policy.group).run.lora
        start = lora_start(ctx.state.policy, lora, ctx.round_dir / "sft_lora_init")
        config = SFTConfig(model=start, data=str(data), output_dir=str(output),
                           max_length=ctx.config.reward.train.max_length, skip_long_prompts=True,
                           per_device_batch_size=cfg.edits_sft_batch_size, max_steps=cfg.edits_sft_steps,
                           optim=SFTOptimConfig(lr=cfg.edits_sft_lr), cpu=ctx.device.type == "cpu",
                           seed=ctx.config.seed + ctx.round, save_steps=max(1, cfg.edits_sft_steps // 2),
                           report_to="none", resume=True, progress=False)
        result = train_sft(config)
        atomic_write_json(ctx.round_dir / STATS_FILE,
                          {"sft/examples": result.num_examples, "sft/steps": result.steps,
                           "sft/first_loss": result.first_loss, "sft/final_loss": result.final_loss})
    stats = json.loads((ctx.round_dir / STATS_FILE).read_text(encoding="utf-8"))
    ctx.state.policy = str(final)
    ctx.display.log(f"round {ctx.round}: SFT on {stats['sft/examples']} rewrites, first -> last batch loss "
                    f"{stats['sft/first_loss']:.3f} -> {stats['sft/final_loss']:.3f}")
