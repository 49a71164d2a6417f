"""Run the annotation server with uvicorn (used by ``rlhfkit serve``)."""

from __future__ import annotations

from rlhfkit.feedback.settings import FeedbackSettings
from rlhfkit.feedback.store import Store


def run_server(settings: FeedbackSettings, *, store: Store, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the app until interrupted; one process, requests handled in its thread pool."""
    import uvicorn

    from rlhfkit.feedback.server.app import create_app

    uvicorn.run(create_app(settings, store=store), host=host, port=port, log_level="warning", access_log=False)
