"""A small in-memory cache of token -> principal, so hot API calls skip the token lookup.

Only known tokens are cached, each for ``ttl_s`` seconds (the database stays the authority).
Revoking, rotating or deactivating a token through the ORM in this process clears every cache at
once; a change made by another process (``rlhfkit token revoke``) is seen within ``ttl_s``.
"""

from __future__ import annotations

import time
import weakref
from typing import Any, Optional

from sqlalchemy import event

from rlhfkit.feedback.crud import Principal
from rlhfkit.feedback.models import AdminToken, Annotator

_CACHES: "weakref.WeakSet[TokenCache]" = weakref.WeakSet()


class TokenCache:
    """sha256(token) -> (principal, expiry); safe to share between the event loop and threads."""

    def __init__(self, ttl_s: float = 5.0) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[Principal, float]] = {}
        _CACHES.add(self)

    def get(self, digest: str) -> Optional[Principal]:
        """The cached principal of a token digest, if still fresh."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[1] < time.monotonic():
            self._entries.pop(digest, None)
            return None
        return entry[0]

    def put(self, digest: str, principal: Principal) -> None:
        """Remember a principal the database just confirmed."""
        if self.ttl_s > 0:
            self._entries[digest] = (principal, time.monotonic() + self.ttl_s)

    def clear(self) -> None:
        """Forget everything (an annotator was deactivated or a token revoked)."""
        self._entries.clear()


def clear_all() -> None:
    """Forget every cached token of this process (a token was revoked, rotated or expired early)."""
    for cache in list(_CACHES):
        cache.clear()


@event.listens_for(Annotator.active, "set")
@event.listens_for(Annotator.token_hash, "set")
@event.listens_for(Annotator.token_expires_at, "set")
@event.listens_for(AdminToken.revoked_at, "set")
@event.listens_for(AdminToken.expires_at, "set")
def _token_changed(target: Any, value: Any, old: Any, initiator: Any) -> None:
    """Deactivating, rotating, revoking or re-expiring a token through the ORM in this process
    invalidates every token cache (other processes' changes are seen within ``ttl_s``)."""
    if value != old:
        clear_all()
