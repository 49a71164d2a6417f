"""``rlhfkit loop``, ``rlhfkit demo`` and ``rlhfkit report``: the whole RLHF loop, its demo, and its report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rlhfkit.commands.common import ConfigOption, SetOption, fail

ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue the run in run_dir where it stopped.")]
RunDirOption = Annotated[Optional[str], typer.Option("--run-dir", help="Run directory (overrides run_dir).")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, only one line per phase.")]

LOOP_HELP = """Run the RLHF loop from a YAML config, round after round (see examples/loop.yaml).

Each round: generate candidates, collect feedback through the feedback server, aggregate it, update the
reward model, optimize the policy, evaluate.

The state lives in the run directory: killed at any point, `--resume` continues with the first unfinished phase
(no feedback is lost, no finished phase is redone). Ends with summary.json and report.html in the run directory.
Precedence: defaults (= the demo) < --config YAML < --set.
"""

DEMO_HELP = """Three rounds of the full loop on the built-in model: the README's demo.

Runs on the embedded defaults: the built-in model, the sentiment task, a SQLite feedback store, and a simulated
annotator panel (hidden utility = the task's gold reward) answering through the real
server API. Prints a summary table (base vs final policy) and the path of the HTML report.
"""


def _expected_errors() -> tuple[type[BaseException], ...]:
    from rlhfkit.config import ConfigError
    from rlhfkit.feedback.client import FeedbackAPIError
    from rlhfkit.loop.collect import CollectionError
    from rlhfkit.loop.server import FeedbackConnectionError
    from rlhfkit.loop.state import StateError
    from rlhfkit.models.loading import ModelError
    from rlhfkit.tasks.base import TaskError

    return (ConfigError, StateError, ModelError, TaskError, CollectionError, FeedbackConnectionError,
            FeedbackAPIError, FileNotFoundError)


def _run(config: Any, resume: bool, quiet: bool, title: str) -> None:
    from rich.console import Console

    from rlhfkit.loop.display import summary_table
    from rlhfkit.loop.runner import run_rlhf_loop

    try:
        result = run_rlhf_loop(config, resume=resume, quiet=quiet)
    except _expected_errors() as exc:
        fail(str(exc))
        return
    out = Console()
    out.print(summary_table(result.summary, title))
    if result.stopped:
        out.print(f"[yellow]stopped early:[/] {result.stopped}")
    out.print(f"report: {result.report}")
    out.print(f"run directory: {result.run_dir}  ({result.seconds / 60:.1f} min)")


def loop(config: ConfigOption = None, set_: SetOption = None, resume: ResumeOption = False,
         run_dir: RunDirOption = None, quiet: QuietOption = False) -> None:
    """Run the RLHF loop from a YAML config (see examples/loop.yaml)."""
    from rlhfkit.config import ConfigError
    from rlhfkit.loop.runner import load_loop_config

    overrides = list(set_ or []) + ([f"run_dir={run_dir}"] if run_dir else [])
    try:
        loop_config = load_loop_config(config, overrides)
    except ConfigError as exc:
        fail(str(exc))
        return
    _run(loop_config, resume, quiet, f"RLHF loop · {loop_config.task}")


def demo(run_dir: RunDirOption = None, set_: SetOption = None, resume: ResumeOption = False,
         quiet: QuietOption = False) -> None:
    """Three rounds of the full loop on the built-in model (runs in minutes on a laptop CPU)."""
    from rlhfkit.config import ConfigError
    from rlhfkit.loop.runner import load_loop_config
    from rlhfkit.utils.tracking import new_run_dir

    if run_dir is None:
        if resume:
            fail("--resume needs --run-dir (the demo's run directory)")
            return
        run_dir = str(new_run_dir("runs", "demo"))
    try:
        loop_config = load_loop_config(None, list(set_ or []) + [f"run_dir={run_dir}"])
    except ConfigError as exc:
        fail(str(exc))
        return
    model = Path(loop_config.model).name or loop_config.model
    _run(loop_config, resume, quiet, f"rlhfkit demo · {loop_config.task} · {model} · {loop_config.policy.algorithm}")


def report(run_dir: Annotated[Path, typer.Argument(help="Run directory of `rlhfkit loop` or `rlhfkit demo`.")],
           output: Annotated[Optional[Path], typer.Option("--output", "-o",
                                                          help="HTML file (default RUN_DIR/report.html).")] = None
           ) -> None:
    """Write the self-contained HTML report of a run: rewards, KL, RM accuracy, reliability, win rates, samples."""
    from rlhfkit.eval.report import build_report

    if not run_dir.is_dir():
        fail(f"run directory {run_dir} does not exist")
        return
    if not (run_dir / "rounds").is_dir() and not (run_dir / "state.json").is_file():
        fail(f"{run_dir} is not a run of `rlhfkit loop` or `rlhfkit demo` (no rounds/ or state.json); "
             f"for a single trainer run, open its TensorBoard logs: tensorboard --logdir {run_dir}")
        return
    typer.echo(str(build_report(run_dir, output)))


def register(app: typer.Typer) -> None:
    """Add loop, demo and report to the CLI."""
    app.command("loop", help=LOOP_HELP)(loop)
    app.command("demo", help=DEMO_HELP)(demo)
    app.command("report")(report)
