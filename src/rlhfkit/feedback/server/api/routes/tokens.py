"""Token metadata and admin token revoke/rotate (admin only), as `rlhfkit token ...` does them."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Query

from rlhfkit.feedback import access
from rlhfkit.feedback.server.api.deps import AdminDep, IdPath, SessionDep

router = APIRouter(tags=["tokens"])


@router.get("/tokens")
def list_tokens(session: SessionDep, admin: AdminDep) -> dict[str, list[dict[str, Any]]]:
    """Every admin token and annotator token: label or name, created, expiry, revoked (never the token)."""
    return access.list_tokens(session)


@router.post("/admin-tokens/{tid}/revoke")
def revoke_admin(tid: IdPath, session: SessionDep, admin: AdminDep) -> dict[str, Any]:
    """Revoke an admin token and end the web sessions it opened."""
    token = access.revoke_admin_token(session, token_id=tid)
    return {"id": token.id, "label": token.label, "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None}


@router.post("/admin-tokens/{tid}/rotate")
def rotate_admin(tid: IdPath, session: SessionDep, admin: AdminDep,
                 expires_in_days: Optional[float] = Query(None, gt=0, le=3650)) -> dict[str, Any]:
    """Revoke an admin token and issue a new one with the same label (in this response only)."""
    token, plain = access.rotate_admin_token(session, token_id=tid, expires_in_days=expires_in_days)
    return {"id": token.id, "label": token.label, "token": plain,
            "expires_at": token.expires_at.isoformat() if token.expires_at else None}
