"""The loop's spine: resume or start a run, then run the next unfinished phase until the run is done.

Round 0 evaluates the base policy; rounds 1..N run generate -> select -> campaign -> collect ->
aggregate -> reward -> (adversarial) -> (sft) -> policy -> evaluate -> (compare) -> checkpoint; the phases in
parentheses do nothing unless configured. After each phase the state is saved
atomically, so a restart (``rlhfkit loop --resume``) continues with the first unfinished phase.
Each phase's wall time goes to the round's timings and, at the checkpoint, into its metrics.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from rlhfkit.config import ConfigError, config_to_dict, load_config
from rlhfkit.loop import phases
from rlhfkit.loop.config import LoopConfig
from rlhfkit.loop.display import LoopDisplay
from rlhfkit.loop.state import LoopState, RunPaths, StateError, load_state, save_state
from rlhfkit.utils.checkpoint import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from rich.progress import Progress

TIMINGS_FILE = "timings.json"


@dataclass
class LoopResult:
    """Where the run is and how it ended."""

    run_dir: Path
    report: Path
    summary: list[dict[str, Any]]
    stopped: str | None
    seconds: float


def load_loop_config(path: str | Path | None = None, overrides: list[str] | None = None) -> LoopConfig:
    """Defaults < YAML < ``key=value`` overrides; a partial nested section keeps the loop's other defaults.

    ``rlhfkit.config.load_config`` merges a partial section into the field's default (its
    ``default_factory`` value, e.g. the loop's tuned PPO settings), not the trainer's class defaults.
    The cross-field checks of :class:`LoopConfig` become :class:`ConfigError` too.
    """
    try:
        return load_config(LoopConfig, path, overrides)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        where = f" (in {path})" if path else ""
        raise ConfigError(f"invalid loop config{where}: {exc}") from None


def _config_changes(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    changes = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += _config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes


def prepare_run(config: LoopConfig, paths: RunPaths, resume: bool, log: Callable[[str], None],
                progress: Progress | None = None) -> LoopState:
    """The state to continue from: a new run, or the saved one (``resume``), checked against the config.

    A new run on the built-in model builds it first if needed, its bar on ``progress`` (the loop's display).
    """
    state = load_state(paths.root)
    current = config_to_dict(config)
    if state is None:
        from rlhfkit.models.builtin import ensure_builtin_model
        from rlhfkit.models.loading import BUILTIN_NAME, resolve_model_path

        paths.root.mkdir(parents=True, exist_ok=True)
        if config.model.strip() == BUILTIN_NAME:
            ensure_builtin_model(progress=progress)
        base = resolve_model_path(config.model)
        state = LoopState(run_id=f"{paths.root.resolve().name}-{secrets.token_hex(3)}", base_model=base, policy=base)
        atomic_write_text(paths.loop_config, yaml.safe_dump(current, sort_keys=False))
        save_state(paths.root, state)
        return state
    if not resume:
        raise StateError(f"{paths.root} already holds a run (round {state.round}, done: {state.done or 'nothing'}); "
                         "pass --resume to continue it, or choose another run_dir")
    if paths.loop_config.is_file():
        changes = _config_changes(yaml.safe_load(paths.loop_config.read_text(encoding="utf-8")) or {}, current)
        if changes:
            log("[yellow]config differs from the saved run's:[/] " + "; ".join(changes[:8]))
            atomic_write_text(paths.loop_config, yaml.safe_dump(current, sort_keys=False))
    if state.finished and not state.stopped and state.round < config.rounds:
        state.finished = False
        state.advance()
        save_state(paths.root, state)
    log(f"resuming {paths.root} at round {state.round}"
                + (f", phase {state.next_phase()}" if state.next_phase() else ""))
    return state


def _read_timings(path: Path) -> dict[str, dict[str, float]]:
    """Wall and CPU seconds per finished phase of a round: {"wall": {...}, "cpu": {...}}."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"wall": {}, "cpu": {}}


def run_phase(ctx: phases.LoopContext, phase: str, timings: dict[str, dict[str, float]]) -> None:
    """Dispatch one phase by name."""
    match phase:
        case "generate":
            phases.generate(ctx)
        case "select":
            phases.select(ctx)
        case "campaign":
            phases.open_campaign(ctx)
        case "collect":
            phases.collect_feedback(ctx)
        case "aggregate":
            phases.aggregate_feedback(ctx)
        case "reward":
            phases.train_reward(ctx)
        case "adversarial":
            from rlhfkit.loop.adversarial import adversarial_round

            adversarial_round(ctx)
        case "sft":
            from rlhfkit.loop.sft_phase import sft_on_edits

            sft_on_edits(ctx)
        case "policy":
            phases.optimize(ctx)
        case "evaluate":
            phases.evaluate(ctx)
        case "compare":
            phases.compare_with_base(ctx)
        case "checkpoint":
            phases.checkpoint(ctx, timings)
        case _:
            raise StateError(f"unknown phase {phase!r}")


def dedupe_timeline(path: Path) -> None:
    """Keep the last record per (step, metric names) in metrics.jsonl.

    A phase killed after logging some steps logs them again when it resumes from its checkpoint;
    the report should draw each step once.
    """
    if not path.is_file():
        return
    records: dict[tuple[int, tuple[str, ...]], str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        key = (record.get("step"), tuple(sorted(k for k in record if k not in ("step", "time"))))
        records.pop(key, None)
        records[key] = line
    atomic_write_text(path, "".join(line + "\n" for line in records.values()))


def finish(paths: RunPaths, state: LoopState) -> tuple[Path, list[dict[str, Any]]]:
    """Summary, deduplicated timeline and HTML report of a finished (or stopped) run; safe to repeat."""
    from rlhfkit.eval.report import build_report

    rows = phases.write_summary(paths, state)
    dedupe_timeline(paths.root / "metrics.jsonl")
    return build_report(paths.root), rows


def run_rlhf_loop(config: LoopConfig, *, resume: bool = False, quiet: bool = False) -> LoopResult:
    """Run (or continue) the loop described by ``config`` to its end; returns the report and summary."""
    from rlhfkit.config import config_to_dict as as_dict
    from rlhfkit.models.builtin import quiet_transformers
    from rlhfkit.tasks import get_task
    from rlhfkit.utils.runtime import configure_threads, pick_device, seed_everything
    from rlhfkit.utils.tracking import Tracker

    started = time.perf_counter()
    configure_threads(config.threads)
    seed_everything(config.seed)
    task = get_task(config.task)
    paths = RunPaths(Path(config.run_dir))
    with quiet_transformers(), LoopDisplay(config.rounds, quiet=quiet) as display:
        state = prepare_run(config, paths, resume, display.log, display.progress)
        timeline = Tracker(paths.root, report_to=config.report_to, config=as_dict(config))
        ctx = phases.LoopContext(config=config, paths=paths, state=state, task=task, display=display,
                                 timeline=timeline, device=pick_device(config.device))
        try:
            while not state.finished:
                display.set_round(state.round, info=f"round {state.round}/{config.rounds}")
                phase = state.next_phase()
                if phase is None:
                    state.advance()
                    save_state(paths.root, state)
                    continue
                timings_path = ctx.round_dir / TIMINGS_FILE
                timings = _read_timings(timings_path)
                wall, cpu = time.perf_counter(), time.process_time()
                seed_everything(config.seed + 7 * state.round)
                run_phase(ctx, phase, timings)
                timings["wall"][phase] = time.perf_counter() - wall
                timings["cpu"][phase] = time.process_time() - cpu
                atomic_write_json(timings_path, timings)
                state.complete(phase)
                if phase == "checkpoint" and not state.finished:
                    state.advance()
                save_state(paths.root, state)
            display.phase_done()
            display.set_round(config.rounds + 1, info="done")
        finally:
            timeline.close()
            if ctx.server is not None:
                ctx.server.stop()
        report, rows = finish(paths, state)
    return LoopResult(paths.root, report, rows, state.stopped, time.perf_counter() - started)
