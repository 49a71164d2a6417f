"""A new loop run on the built-in model builds it with its bar on the loop's own display."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhfkit.loop.config import LoopConfig
from rlhfkit.loop.display import LoopDisplay
from rlhfkit.loop.runner import prepare_run
from rlhfkit.loop.state import RunPaths
from rlhfkit.models import builtin


def test_prepare_run_builds_the_builtin_model_on_the_loop_display(tmp_path, monkeypatch):
    monkeypatch.setenv(builtin.CACHE_ENV, str(tmp_path / "cache"))
    calls: list[Any] = []

    def build(out_dir: Path, recipe: builtin.BuiltinRecipe, *, progress: Any = None, **_: Any) -> dict[str, Any]:
        calls.append(progress)
        (Path(out_dir) / builtin.INFO_FILE).write_text("{}")
        return {}

    monkeypatch.setattr(builtin, "build_builtin_model", build)
    config = LoopConfig(run_dir=str(tmp_path / "run"))
    with LoopDisplay(config.rounds, quiet=True) as display:
        state = prepare_run(config, RunPaths(Path(config.run_dir)), resume=False, log=display.log,
                            progress=display.progress)
    assert calls == [display.progress]
    assert state.base_model == str(builtin.builtin_model_dir()) and state.policy == state.base_model
