"""Task presets: prompts, a gold reward, references and judge text, one small file per task.

``TASKS`` is a plain dict of the built-in presets. A user adds a task by writing a Python file that
defines ``TASK = Task(...)`` and passing its path wherever a task name is accepted::

    # my_task.py
    from rlhfkit.tasks.base import Task
    def prompts(n, seed, split): return [f"Say hello #{seed}-{i}:" for i in range(n)]
    def gold(prompts, responses): return [float("hello" in r.lower()) for r in responses]
    TASK = Task(name="hello", description="Greet.", prompt_fn=prompts, gold_fn=gold,
                judge_instructions="Prefer the response that says hello.")

Instead of ``gold_fn`` a task may declare ``aspects`` (named scores in [0, 1]) and a ``combine``
function: the report then shows each aspect, and the strict judge defaults to the weakest one
(rlhfkit.tasks.aspects).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

from rlhfkit.tasks import explain, sentiment, summary
from rlhfkit.tasks.base import Task, TaskError

TASKS: dict[str, Task] = {task.name: task for task in (sentiment.TASK, explain.TASK, summary.TASK)}

__all__ = ["TASKS", "Task", "TaskError", "get_task", "load_task_file"]


def load_task_file(path: str | Path) -> Task:
    """Import a user's Python file and return the ``Task`` it binds to the name ``TASK``."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"task file {file} does not exist")
    digest = hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:10]
    module_name = f"rlhfkit_user_task_{file.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise TaskError(f"task file {file}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise TaskError(f"task file {file}: importing it failed: {type(exc).__name__}: {exc}") from exc
    task = getattr(module, "TASK", None)
    if task is None:
        raise TaskError(f"task file {file}: defines no TASK (write `TASK = Task(...)` at module level)")
    if not isinstance(task, Task):
        raise TaskError(f"task file {file}: TASK is a {type(task).__name__}, expected rlhfkit.tasks.Task")
    return task


def get_task(name: str) -> Task:
    """A preset by name (``sentiment``, ``explain``, ``summary``) or a task file by path (``*.py``)."""
    if name in TASKS:
        return TASKS[name]
    if name.endswith(".py") or Path(name).is_file():
        return load_task_file(name)
    raise TaskError(f"unknown task {name!r}; choose one of {sorted(TASKS)} or give a path to a .py "
                    "file that defines TASK")
