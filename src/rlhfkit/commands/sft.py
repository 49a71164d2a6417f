"""``rlhfkit sft``: supervised fine-tuning of a causal LM on prompt/completion or chat data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rlhfkit.commands.common import ConfigOption, ReportToOption, SetOption, fail

INTRO = (
    "Supervised fine-tuning with loss on completion tokens only, through accelerate "
    "(CPU, GPU, DDP, FSDP, DeepSpeed).\n\n"
    "Data: JSONL with {\"prompt\", \"completion\"} or {\"messages\": [{\"role\", \"content\"}, ...]} records, "
    "or a dataset directory written by datasets' save_to_disk. Without --data, a 200-record demo dataset "
    "made from the built-in corpus is used.\n\n"
    "Several processes: torchrun --nproc_per_node N -m rlhfkit.cli sft ... (CPU: gloo; GPU: nccl); on GPUs also "
    "accelerate launch -m rlhfkit.cli sft ... with your accelerate config (DDP, FSDP, DeepSpeed).\n\n"
    "Precedence: defaults < --config YAML < --set key=value < flags. Config keys:"
)


def _help() -> str:
    """The command help: intro plus every config key with its default and help."""
    from rlhfkit.commands.common import config_keys
    from rlhfkit.sft.config import SFTConfig

    return INTRO + "\n\n" + "\n".join(f"- {line}" for line in config_keys(SFTConfig))



def _flag_overrides(**flags: Any) -> dict[str, Any]:
    return {key: value for key, value in flags.items() if value is not None and value is not False}


def _check_report_to(report_to: str | None) -> None:
    import importlib.util

    from rlhfkit.utils.tracking import BACKENDS

    for name in [n.strip() for n in (report_to or "").split(",") if n.strip()]:
        if name not in BACKENDS:
            fail(f"--report-to: unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
        if name in ("wandb", "mlflow") and importlib.util.find_spec(name) is None:
            fail(f"--report-to {name} needs `pip install {name}`")


def _print_summary(result: Any, config: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="rlhfkit sft", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    resumed = f" (resumed at step {result.resumed_from_step})" if result.resumed_from_step else ""
    rows = [
        ("model", config.model),
        ("final model", str(result.final_dir)),
        ("steps", f"{result.steps}{resumed}"),
        ("examples", f"{result.num_examples} ({result.truncated_examples} truncated, "
                     f"{result.skipped_long_prompts} skipped: prompt too long)"),
        ("loss first -> final step", f"{result.first_loss:.4f} -> {result.final_loss:.4f}"),
        ("skipped steps (non-finite)", str(result.skipped_steps)),
        ("processes", str(result.num_processes)),
        ("train time", f"{result.elapsed_s:.1f} s ({result.tokens_per_s:,.0f} tokens/s)"),
        ("logs", str(result.run_dir)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


def sft(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="'builtin', a save_pretrained dir or a hub id.")] = None,
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="JSONL file or save_to_disk dir; default: demo data.")] = None,
    output_dir: Annotated[Optional[str], typer.Option("--output-dir", "-o", help="Run directory (default runs/sft).")] = None,
    epochs: Annotated[Optional[float], typer.Option("--epochs", help="Passes over the data (default 3).")] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Optimizer steps; overrides --epochs.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Per-process micro-batch size (default 8).")] = None,
    grad_accum: Annotated[Optional[int], typer.Option("--grad-accum", help="optim.grad_accum: micro-batches per step (1).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="optim.lr: peak learning rate (5e-4).")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Longest sequence in tokens.")] = None,
    save_steps: Annotated[Optional[int], typer.Option("--save-steps", help="Checkpoint every N steps (default 50).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed (default 0).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --output-dir.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier run in --output-dir.")] = False,
    write_demo_data: Annotated[Optional[Path], typer.Option("--write-demo-data", help="Only write the demo JSONL here and exit.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    report_to: ReportToOption = None,  # type: ignore[assignment]
) -> None:
    """Fine-tune a causal LM on completions (see --help for data formats)."""
    from rlhfkit.config import ConfigError, apply_renames, load_config, merge_values, parse_overrides
    from rlhfkit.sft.config import SFTConfig

    if write_demo_data is not None:
        _write_demo(write_demo_data, config, set_ or [], model)
        return
    _check_report_to(report_to)
    flags = _flag_overrides(model=model, data=data, output_dir=output_dir, num_epochs=epochs, max_steps=max_steps,
                            per_device_batch_size=batch_size, max_length=max_length, save_steps=save_steps,
                            seed=seed, resume=resume, overwrite=overwrite, report_to=report_to)
    optim = _flag_overrides(lr=lr, grad_accum=grad_accum)
    try:
        overrides = apply_renames(SFTConfig, parse_overrides(set_ or []))
        overrides = merge_values(overrides, {**flags, **({"optim": optim} if optim else {})})
        cfg = load_config(SFTConfig, config, overrides)
    except ConfigError as exc:
        fail(str(exc))
    _check_report_to(cfg.report_to)
    result = _run(cfg)
    if result.num_processes == 1 or _is_main_process():
        _print_summary(result, cfg)


def _write_demo(path: Path, config: Path | None, overrides: list[str], model: str | None) -> None:
    """Write the demo records that fit the model's context (same file the default run uses)."""
    from transformers import AutoConfig

    from rlhfkit.config import ConfigError, load_config, parse_overrides
    from rlhfkit.data.sft import SFTDataError
    from rlhfkit.models.loading import ModelError, load_tokenizer, resolve_model_path
    from rlhfkit.sft.checkpointing import SFTError
    from rlhfkit.sft.config import SFTConfig
    from rlhfkit.sft.demo import fits_context, write_demo_dataset
    from rlhfkit.sft.trainer import resolve_max_length

    try:
        values = parse_overrides(overrides)
        values.update(_flag_overrides(model=model))
        cfg = load_config(SFTConfig, config, values)
        tokenizer = load_tokenizer(cfg.model)
        context = resolve_max_length(cfg.max_length, AutoConfig.from_pretrained(resolve_model_path(cfg.model)))
    except (ConfigError, ModelError, SFTError) as exc:
        fail(str(exc))
    try:
        write_demo_dataset(path, cfg.demo_records, cfg.seed, keep=fits_context(tokenizer, context))
    except SFTDataError as exc:
        fail(str(exc))
    typer.echo(f"wrote {cfg.demo_records} demo SFT records that fit {cfg.model!r} ({context} tokens) to {path}")


def _run(cfg: Any) -> Any:
    """Train, turning every expected failure into a one-line error."""
    import transformers

    from rlhfkit.data.sft import SFTDataError
    from rlhfkit.models.loading import ModelError
    from rlhfkit.sft.checkpointing import SFTError
    from rlhfkit.sft.trainer import train_sft

    transformers.utils.logging.disable_progress_bar()
    try:
        return train_sft(cfg)
    except (SFTDataError, ModelError, SFTError) as exc:
        fail(str(exc))


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def register(app: typer.Typer) -> None:
    """Add ``rlhfkit sft`` to the CLI."""
    app.command("sft", help=_help())(sft)
