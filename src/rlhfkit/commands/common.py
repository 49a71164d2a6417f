"""Options shared by every command, so flags read the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file; flags override it.")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override any config key: --set optim.lr=1e-4 (repeatable).")]
ReportToOption = Annotated[str, typer.Option("--report-to", help="Metric backends, comma separated: tensorboard, wandb, mlflow, none.")]


def fail(message: str) -> None:
    """Print a one-line error and exit with status 2 (bad input), never a traceback."""
    from rlhfkit.utils.progress import console

    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)
