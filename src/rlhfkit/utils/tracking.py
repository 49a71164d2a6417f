"""Metric logging: TensorBoard by default, wandb or MLflow on request, plus a JSONL copy.

Each command gets its own run directory; ``metrics.jsonl`` there is what tests and the HTML
report read, the event files are what TensorBoard shows.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BACKENDS = ("tensorboard", "wandb", "mlflow", "none")


def new_run_dir(root: str | Path, command: str) -> Path:
    """A fresh ``root/<command>-<timestamp>`` directory (suffixed when the name is taken). Each name is claimed by
    ``mkdir`` itself, so runs started in the same second by several processes (seeds side by side) each get their
    own directory instead of one of them failing on the other's."""
    root = Path(root)
    name = f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    suffix = 1
    while True:
        candidate = root / (name if suffix == 1 else f"{name}-{suffix}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            suffix += 1


class Tracker:
    """Writes scalar metrics to the chosen backends and to ``metrics.jsonl`` in ``log_dir``."""

    def __init__(self, log_dir: str | Path, report_to: Sequence[str] | str = ("tensorboard",),
                 config: Mapping[str, Any] | None = None, run_name: str | None = None,
                 enabled: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.enabled = enabled
        names = [report_to] if isinstance(report_to, str) else list(report_to)
        names = [n.strip() for item in names for n in item.split(",") if n.strip()]
        unknown = [n for n in names if n not in BACKENDS]
        if unknown:
            raise ValueError(f"--report-to: unknown backend(s) {unknown}; choose from {BACKENDS}")
        self.backends = [n for n in names if n != "none"]
        self._tb = self._wandb = self._mlflow = None
        self._jsonl = None
        if not enabled:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.log_dir / "metrics.jsonl", "a", encoding="utf-8")
        if config is not None:
            (self.log_dir / "config.json").write_text(json.dumps(dict(config), indent=2, default=str))
        if "tensorboard" in self.backends:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.log_dir / "tensorboard"))
        if "wandb" in self.backends:
            try:
                import wandb
            except ImportError as exc:
                raise RuntimeError("--report-to wandb needs `pip install wandb`") from exc
            self._wandb = wandb.init(name=run_name or self.log_dir.name, dir=str(self.log_dir),
                                     config=dict(config or {}))
        if "mlflow" in self.backends:
            try:
                import mlflow
            except ImportError as exc:
                raise RuntimeError("--report-to mlflow needs `pip install mlflow`") from exc
            self._mlflow = mlflow
            mlflow.start_run(run_name=run_name or self.log_dir.name)
            if config:
                mlflow.log_params({k: str(v)[:250] for k, v in dict(config).items()})

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Record scalars (names grouped by prefix, e.g. ``loss/policy``) at ``step``."""
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        record = {"step": step, "time": time.time(),
                  **{k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()}}
        assert self._jsonl is not None
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for name, value in clean.items():
                self._tb.add_scalar(name, value, step)
        if self._wandb is not None:
            self._wandb.log(clean, step=step)
        if self._mlflow is not None:
            self._mlflow.log_metrics({k.replace("/", "."): v for k, v in clean.items()
                                      if math.isfinite(v)}, step=step)

    def close(self) -> None:
        """Flush and close every backend."""
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._mlflow is not None:
            self._mlflow.end_run()
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(log_dir: str | Path) -> list[dict[str, Any]]:
    """All records of ``metrics.jsonl`` in order (for tests and reports)."""
    path = Path(log_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
