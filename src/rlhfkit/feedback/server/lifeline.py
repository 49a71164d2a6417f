"""Exit with the parent: a server started by a script or test must not outlive it (even a SIGKILLed one).

A daemon thread compares ``os.getppid()`` with the pid the parent announced (RLHFKIT_PARENT_PID); once
the parent is gone the server SIGTERMs itself, so uvicorn shuts down cleanly (queued writes are
committed), and exits hard if that has not happened within ``grace_s``. Unlike PR_SET_PDEATHSIG this
does not depend on which thread of the parent started the server, and works on every POSIX system.
"""

from __future__ import annotations

import os
import signal
import threading
import time


def exit_with_parent(parent_pid: int, *, interval_s: float = 0.25, grace_s: float = 10.0) -> threading.Thread:
    """Start the watcher thread for ``parent_pid`` (returns it; it runs until the process exits)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread
