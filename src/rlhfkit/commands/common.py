"""Options shared by every command, so flags read the same everywhere."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file; flags override it.")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override one config key: --set KEY=VALUE, nested keys dotted (section.key); repeatable.")]
ReportToOption = Annotated[str, typer.Option("--report-to", help="Metric backends, comma separated: tensorboard, wandb, mlflow, none.")]


def config_keys(cls: Any, prefix: str = "") -> list[str]:
    """``key = default: help`` for every (nested) field of a config dataclass, for ``--help`` texts."""
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            lines.extend(config_keys(type(default), f"{prefix}{f.name}."))
        else:
            lines.append(f"{prefix}{f.name} = {default!r}: {f.metadata.get('help', '')}")
    return lines


def fail(message: str) -> None:
    """Print a one-line error and exit with status 2 (bad input), never a traceback."""
    from rlhfkit.utils.progress import console

    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)
