"""Run the annotation server with uvicorn (used by ``rlhfkit serve``)."""

from __future__ import annotations

from rlhfkit.feedback.settings import FeedbackSettings
from rlhfkit.feedback.store import Store


def run_server(settings: FeedbackSettings, *, store: Store, host: str = "127.0.0.1", port: int = 8000,
               access_log: bool = False) -> None:
    """Serve the app until interrupted; one process, one event loop.

    No ``Server`` header (it only advertises the software); the access log is off unless asked for,
    since a line per request costs CPU on the request path of a busy campaign; no WebSocket support
    (the app has no WebSocket route, and loading it would slow every start).
    """
    import uvicorn

    from rlhfkit.feedback.server.app import create_app

    uvicorn.run(create_app(settings, store=store), host=host, port=port, log_level="info" if access_log else "warning",
                access_log=access_log, server_header=False, ws="none")
