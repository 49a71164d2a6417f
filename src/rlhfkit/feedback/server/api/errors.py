"""Which HTTP status each store error becomes (shared by the exception handlers and the hot path)."""

from __future__ import annotations

from typing import Optional

from rlhfkit.feedback import crud
from rlhfkit.feedback.store import DatabaseBusyError, StoreError


def error_status(exc: BaseException) -> Optional[tuple[int, Optional[dict[str, str]]]]:
    """(status, extra headers) for a store/crud error; None for anything else (a bug: 500)."""
    if isinstance(exc, crud.NotFoundError):
        return 404, None
    if isinstance(exc, crud.ConflictError):
        return 409, None
    if isinstance(exc, crud.TooLargeError):
        return 413, None
    if isinstance(exc, crud.InvalidError):
        return 422, None
    if isinstance(exc, DatabaseBusyError):
        return 503, {"Retry-After": "1"}
    if isinstance(exc, StoreError):
        return 503, None
    return None
