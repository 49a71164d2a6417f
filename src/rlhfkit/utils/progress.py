"""Rich progress bars that stay quiet when output is not a terminal and CI logs would fill up."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

console = Console(stderr=True)


def make_progress(disable: bool = False) -> Progress:
    """A progress display with count, elapsed and remaining time, and a free-text metrics field."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=console, disable=disable, transient=False,
    )
