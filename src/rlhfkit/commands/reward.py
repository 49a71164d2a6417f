"""``rlhfkit train-rm``, ``eval-rm`` and ``probe-rm``: reward models from every kind of human feedback."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from rlhfkit.commands.common import ConfigOption, ReportToOption, SetOption, config_keys, fail

DATA_HELP = ("[required, or 'data' in --config] Feedback file: rlhfkit JSONL/CSV (pairwise, ranking, rating, label), "
             "TRL prompt/chosen/rejected (explicit, implicit prompt or conversational), FineGrainedRLHF "
             "qa-feedback JSON, .parquet, or a save_to_disk dir (dir:split); text files may be .gz/.bz2/.xz/.zst. "
             "Repeatable.")

TRAIN_HELP = """Train a reward model from comparisons, rankings, ratings and good/bad labels (mixed freely).

Bad records are reported per reason with record numbers and skipped. Writes OUTPUT_DIR/model (the reward
model the policy trainers load), checkpoints (a rerun resumes), logs, eval.json and reliability.png.

Several processes: torchrun --nproc_per_node N -m rlhfkit.cli train-rm ... (gloo on CPU, NCCL on GPUs);
batch_size is the global batch and must be a multiple of N; only the first process writes.

Precedence: defaults < --config YAML < --set < flags.
"""

DataOption = Annotated[Optional[list[str]], typer.Option("--data", "-d", help=DATA_HELP)]
OutputOption = Annotated[Optional[str], typer.Option("--output-dir", "-o", help="Output directory.")]


def _config(cls: type, config: Any, set_: list[str] | None, flags: dict[str, Any]) -> Any:
    from rlhfkit.config import ConfigError, apply_renames, load_config, merge_values, parse_overrides

    given = {k: v for k, v in flags.items() if v is not None}
    try:
        overrides = merge_values(apply_renames(cls, parse_overrides(set_ or [])), given)
        return load_config(cls, config, overrides)
    except ConfigError as exc:
        fail(str(exc))


def _quiet_transformers() -> None:
    """Hide transformers' per-file progress bars (our own progress and reports say what happens)."""
    import transformers

    transformers.utils.logging.disable_progress_bar()


def _expected_errors() -> tuple[type[BaseException], ...]:
    from rlhfkit.data.records import NoValidRecordsError
    from rlhfkit.models.loading import ModelError
    from rlhfkit.models.reward_model import RewardModelError

    return (NoValidRecordsError, ModelError, RewardModelError, FileNotFoundError, ValueError, KeyError)


def train_rm(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Trunk: 'builtin' (default), a model dir, or a reward model to continue.")] = None,
    data: DataOption = None,
    eval_data: Annotated[Optional[list[str]], typer.Option("--eval-data", help="Held-out feedback (default: a split of --data).")] = None,
    output_dir: OutputOption = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Passes over the data.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Records per micro-batch.")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate (optim.lr).")] = None,
    num_heads: Annotated[Optional[int], typer.Option("--num-heads", help="Heads on one trunk (ensemble).")] = None,
    ensemble_size: Annotated[Optional[int], typer.Option("--ensemble-size", help="Independent models (ensemble).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed.")] = None,
    critiques: Annotated[Optional[list[str]], typer.Option("--critiques", help="Critique JSONL encoded into weighted ratings and mixed in (repeatable; alone it is enough).")] = None,
    critique_encoder: Annotated[Optional[str], typer.Option("--critique-encoder", help="rules, rules:FILE, learned, learned:FILE.npz, module:function or a reward-model dir.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    report_to: ReportToOption = None,  # type: ignore[assignment]
) -> None:
    """Train a reward model (see --help)."""
    from rlhfkit.reward.config import RewardTrainConfig
    from rlhfkit.reward.pipeline import train_reward_model

    cfg = _config(RewardTrainConfig, config, set_, {
        "model": model, "data": data or None, "eval_data": eval_data or None, "output_dir": output_dir,
        "epochs": epochs, "batch_size": batch_size, "optim": {"lr": lr} if lr is not None else None,
        "num_heads": num_heads, "ensemble_size": ensemble_size, "seed": seed, "report_to": report_to,
        "critiques": critiques or None, "critique_encoder": critique_encoder})
    _quiet_transformers()
    from rlhfkit.utils.distributed import finish_world

    try:
        outcome = train_reward_model(cfg)
    except _expected_errors() as exc:
        fail(str(exc))
    finally:
        finish_world()
    from rlhfkit.utils.progress import console

    steps = ", ".join(str(s.steps) for s in outcome.summaries)
    console.print(f"[bold green]reward model saved:[/] {outcome.model_dir}  (optimizer steps: {steps})")
    if outcome.evaluation is not None:
        console.print("\n".join(outcome.evaluation.lines()))


def eval_rm(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Reward model directory.")] = None,
    data: DataOption = None,
    output_dir: OutputOption = None,
    bootstrap_samples: Annotated[Optional[int], typer.Option("--bootstrap", help="Bootstrap resamples.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    report_to: ReportToOption = None,  # type: ignore[assignment]
) -> None:
    """Pairwise accuracy, Kendall tau, Spearman/RMSE, ECE (with bootstrap CIs) and a reliability diagram."""
    from pathlib import Path

    from rlhfkit.data.preference_io import read_feedback_files
    from rlhfkit.data.records import require_valid
    from rlhfkit.models.reward_model import load_reward_model
    from rlhfkit.config import config_to_dict
    from rlhfkit.reward.config import RewardEvalConfig
    from rlhfkit.reward.evaluation import evaluate_model
    from rlhfkit.reward.pipeline import write_evaluation
    from rlhfkit.utils.progress import console
    from rlhfkit.utils.runtime import configure_threads, pick_device
    from rlhfkit.utils.tracking import Tracker

    cfg = _config(RewardEvalConfig, config, set_, {"model": model, "data": data or None, "output_dir": output_dir,
                                                   "bootstrap_samples": bootstrap_samples, "report_to": report_to})
    if not cfg.model:
        fail("eval-rm needs --model DIR (a reward model written by train-rm)")
    configure_threads(cfg.threads)
    _quiet_transformers()
    try:
        reward_model = load_reward_model(cfg.model, device=pick_device(cfg.device)).eval()
        feedback = read_feedback_files(cfg.data, tuple(cfg.rating_scale) if cfg.rating_scale else None)
        console.print("\n".join(feedback.report.lines()))
        records = require_valid(feedback.records, feedback.report)
        report = evaluate_model(reward_model, records, resamples=cfg.bootstrap_samples, confidence=cfg.confidence,
                                seed=cfg.seed, batch_size=cfg.batch_size)
    except _expected_errors() as exc:
        fail(str(exc))
    output = Path(cfg.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    payload = write_evaluation(report, output)
    with Tracker(output / "logs", report_to=cfg.report_to, config=config_to_dict(cfg)) as tracker:
        tracker.log(report.flat(), 0)
    console.print("\n".join(report.lines()))
    console.print(f"wrote {output / 'eval.json'}" + (f" and {payload['reliability_plot']}" if "reliability_plot" in payload else ""))


def probe_rm(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Reward model directory.")] = None,
    data: DataOption = None,
    output_dir: OutputOption = None,
    samples: Annotated[Optional[int], typer.Option("--samples", help="Samples to probe.")] = None,
    suffix_length: Annotated[Optional[int], typer.Option("--suffix-length", help="Greedy suffix words (0 = off).")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    report_to: ReportToOption = None,  # type: ignore[assignment]
) -> None:
    """Exploit probes: filler, repetition, flattery, 'this answer is correct', truncation, off-topic, suffix search."""
    from pathlib import Path

    from rich.table import Table

    from rlhfkit.data.preference_io import read_feedback_files
    from rlhfkit.data.records import require_valid
    from rlhfkit.models.reward_model import load_reward_model
    from rlhfkit.config import config_to_dict
    from rlhfkit.reward.config import RewardProbeConfig
    from rlhfkit.reward.probes import probe_samples, run_probes, suffix_candidates
    from rlhfkit.utils.checkpoint import atomic_write_json
    from rlhfkit.utils.progress import console
    from rlhfkit.utils.runtime import configure_threads, pick_device
    from rlhfkit.utils.tracking import Tracker

    cfg = _config(RewardProbeConfig, config, set_, {"model": model, "data": data or None, "output_dir": output_dir,
                                                    "samples": samples, "suffix_length": suffix_length,
                                                    "report_to": report_to})
    if not cfg.model:
        fail("probe-rm needs --model DIR (a reward model written by train-rm)")
    configure_threads(cfg.threads)
    _quiet_transformers()
    try:
        reward_model = load_reward_model(cfg.model, device=pick_device(cfg.device)).eval()
        feedback = read_feedback_files(cfg.data, tuple(cfg.rating_scale) if cfg.rating_scale else None)
        records = require_valid(feedback.records, feedback.report)
        chosen = probe_samples(records, cfg.samples)
        report = run_probes(reward_model, chosen, cfg.probes or None, cfg.suffix_length,
                            suffix_candidates(chosen, cfg.suffix_candidates), cfg.batch_size)
    except _expected_errors() as exc:
        fail(str(exc))
    output = Path(cfg.output_dir)
    atomic_write_json(output / "probes.json", report.to_dict())
    with Tracker(output / "logs", report_to=cfg.report_to, config=config_to_dict(cfg)) as tracker:
        tracker.log({f"probe/{r.name}_share_rose": r.share_rose for r in report.results}
                    | {f"probe/{r.name}_mean_delta": r.mean_delta for r in report.results}, 0)
    table = Table(title=f"reward exploit probes ({len(chosen)} samples)")
    for column in ("probe", "share rose", "mean Δreward", "mean reward before → after"):
        table.add_column(column)
    for r in report.results:
        name = f"{r.name} ({r.detail!r})" if r.detail else r.name
        table.add_row(name, f"{r.share_rose:.0%}", f"{r.mean_delta:+.4f}", f"{r.mean_base:.3f} → {r.mean_probed:.3f}")
    console.print(table)
    console.print(f"wrote {output / 'probes.json'}")


def _help(intro: str, cls_name: str) -> str:
    """Command help: intro plus every config key (rlhfkit.reward.config imports no torch)."""
    from rlhfkit.reward import config as reward_config

    keys = "\n".join(f"- {line}" for line in config_keys(getattr(reward_config, cls_name)))
    return intro.rstrip() + "\n\nConfig keys (--set key=value):\n\n" + keys


def register(app: typer.Typer) -> None:
    """Add ``train-rm``, ``eval-rm`` and ``probe-rm`` to the CLI."""
    app.command("train-rm", help=_help(TRAIN_HELP, "RewardTrainConfig"))(train_rm)
    app.command("eval-rm", help=_help(eval_rm.__doc__ or "", "RewardEvalConfig"))(eval_rm)
    app.command("probe-rm", help=_help(probe_rm.__doc__ or "", "RewardProbeConfig"))(probe_rm)
    from rlhfkit.critiques.command import encode_critiques

    app.command("encode-critiques")(encode_critiques)
