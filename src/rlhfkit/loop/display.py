"""What the loop shows while it runs: a rounds bar, a bar for the phase in flight, one line per phase."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.progress import Progress, TaskID
from rich.table import Table

from rlhfkit.utils.progress import make_progress


class LoopDisplay:
    """Rich progress for the loop; ``quiet`` keeps only the per-phase lines (logs, tests)."""

    def __init__(self, rounds: int, quiet: bool = False) -> None:
        self.progress: Progress = make_progress(disable=quiet)
        self.rounds = rounds
        self._round_task: TaskID | None = None
        self._phase_task: TaskID | None = None

    def __enter__(self) -> LoopDisplay:
        self.progress.__enter__()
        self._round_task = self.progress.add_task("rounds", total=self.rounds + 1, info="")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def set_round(self, completed: int, info: str = "") -> None:
        """Rounds finished so far (round 0, the baseline, counts as one)."""
        if self._round_task is not None:
            self.progress.update(self._round_task, completed=completed, info=info)

    def phase(self, description: str, total: float | None) -> None:
        """Start showing a phase with ``total`` units of work (None = unknown)."""
        self.phase_done()
        self._phase_task = self.progress.add_task(description, total=total, info="")

    def phase_done(self) -> None:
        """Remove the bar of the last phase."""
        if self._phase_task is not None:
            self.progress.remove_task(self._phase_task)
            self._phase_task = None

    def update(self, completed: float, total: float | None = None, info: str = "") -> None:
        """Progress of the phase in flight."""
        if self._phase_task is not None:
            self.progress.update(self._phase_task, completed=completed, total=total, info=info)

    def log(self, message: str) -> None:
        """A line above the bars."""
        self.progress.console.print(message)


def summary_table(rows: Sequence[dict[str, Any]], title: str) -> Table:
    """The base-vs-final table printed at the end of a run."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("base", justify="right")
    table.add_column("final", justify="right")
    for row in rows:
        table.add_row(str(row["metric"]), _fmt(row.get("base")), _fmt(row.get("final")))
    return table


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
