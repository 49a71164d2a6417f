"""Ending access: server-side web sessions, and revoking, rotating, expiring and listing tokens.

A signed cookie alone cannot be taken back, so the cookie only carries a random session id whose
sha256 is a row of ``web_sessions``; deleting the row ends the session. Revoking or rotating a token
deletes the sessions it opened, as does a new session signing key (:func:`end_all_sessions`).
Every function that writes takes ``commit`` (default True) so callers can group changes.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any, Optional

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from rlhfkit.feedback.crud import Principal
from rlhfkit.feedback.errors import NotFoundError
from rlhfkit.feedback.models import AdminToken, Annotator, Campaign, CampaignMember, WebSession, utcnow
from rlhfkit.feedback.rules import check_id, check_text
from rlhfkit.feedback.security import hash_token, new_token
from rlhfkit.feedback.tokens import clear_all


def _done(session: Session, commit: bool) -> None:
    if commit:
        session.commit()
    else:
        session.flush()


def expiry(days: Optional[float]) -> Optional[datetime]:
    """The expiry time ``days`` from now (None: never)."""
    return None if days is None else utcnow() + timedelta(days=days)


# ---------------------------------------------------------------- web sessions

def open_web_session(session: Session, *, principal: Principal, max_age_s: float) -> str:
    """Record a new signed-in session for ``principal`` (dropping expired ones); returns the id the cookie carries; commits."""
    sid = secrets.token_urlsafe(32)
    session.execute(delete(WebSession).where(WebSession.expires_at <= utcnow()))
    session.add(WebSession(id_hash=hash_token(sid), role=principal.role, annotator_id=principal.annotator_id,
                           admin_token_id=principal.admin_token_id, expires_at=utcnow() + timedelta(seconds=max_age_s)))
    session.commit()
    return sid


def web_session_principal(session: Session, *, sid: str) -> Optional[Principal]:
    """The principal of a live session: unexpired, and its token still valid (None otherwise)."""
    now = utcnow()
    row = session.get(WebSession, hash_token(sid))
    if row is None or row.expires_at <= now:
        return None
    if row.role == "admin":
        token = session.get(AdminToken, row.admin_token_id) if row.admin_token_id is not None else None
        if token is None or token.revoked_at is not None or (token.expires_at is not None and token.expires_at <= now):
            return None
        return Principal(role="admin", admin_token_id=token.id)
    ann = session.get(Annotator, row.annotator_id) if row.annotator_id is not None else None
    if ann is None or not ann.active or (ann.token_expires_at is not None and ann.token_expires_at <= now):
        return None
    return Principal(role="annotator", annotator_id=ann.id, name=ann.name)


def end_web_session(session: Session, *, sid: str) -> None:
    """Log out: delete the session row; commits."""
    session.execute(delete(WebSession).where(WebSession.id_hash == hash_token(sid)))
    session.commit()


def end_sessions(session: Session, *, annotator_ids: Any = (), admin_token_ids: Any = (), commit: bool = True) -> int:
    """Delete the sessions opened by these annotators or admin tokens (and any expired one); returns how many."""
    result = session.execute(delete(WebSession).where(or_(
        WebSession.annotator_id.in_(list(annotator_ids)), WebSession.admin_token_id.in_(list(admin_token_ids)),
        WebSession.expires_at <= utcnow())))
    _done(session, commit)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def end_all_sessions(session: Session, *, commit: bool = True) -> int:
    """Delete every web session (after a new session signing key); returns how many."""
    result = session.execute(delete(WebSession))
    _done(session, commit)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- admin tokens

def create_admin_token(session: Session, *, label: str = "", expires_in_days: Optional[float] = None,
                       commit: bool = True) -> tuple[AdminToken, str]:
    """A new admin token (the plain token is returned once, stored hashed)."""
    check_text(label, "label", max_length=200)
    plain = new_token("adm")
    row = AdminToken(token_hash=hash_token(plain), label=label or None, expires_at=expiry(expires_in_days))
    session.add(row)
    _done(session, commit)
    return row, plain


def _admin_token(session: Session, token_id: int) -> AdminToken:
    check_id(token_id, "admin token id")
    row = session.get(AdminToken, token_id)
    if row is None:
        raise NotFoundError(f"admin token {token_id} not found")
    return row


def revoke_admin_token(session: Session, *, token_id: int, commit: bool = True) -> AdminToken:
    """Revoke an admin token and end the web sessions it opened."""
    row = _admin_token(session, token_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    end_sessions(session, admin_token_ids=[row.id], commit=False)
    _done(session, commit)
    return row


def rotate_admin_token(session: Session, *, token_id: int, expires_in_days: Optional[float] = None,
                       commit: bool = True) -> tuple[AdminToken, str]:
    """Replace an admin token by a new one (same label); the old one is revoked, its sessions ended."""
    old = revoke_admin_token(session, token_id=token_id, commit=False)
    return create_admin_token(session, label=old.label or "", expires_in_days=expires_in_days, commit=commit)


# ---------------------------------------------------------------- annotator tokens

def _annotator(session: Session, annotator_id: int) -> Annotator:
    check_id(annotator_id, "annotator id")
    row = session.get(Annotator, annotator_id)
    if row is None:
        raise NotFoundError(f"annotator {annotator_id} not found")
    return row


def revoke_annotator(session: Session, *, annotator_id: int, commit: bool = True) -> Annotator:
    """Deactivate an annotator's token and end their web sessions (their answers stay)."""
    row = _annotator(session, annotator_id)
    row.active = False
    end_sessions(session, annotator_ids=[row.id], commit=False)
    _done(session, commit)
    return row


def rotate_annotator(session: Session, *, annotator_id: int, expires_in_days: Optional[float] = None,
                     commit: bool = True) -> tuple[Annotator, str]:
    """Give an annotator a new token (the old one stops working, their sessions end); returns it once."""
    row = _annotator(session, annotator_id)
    plain = new_token("ann")
    row.token_hash, row.active, row.token_expires_at = hash_token(plain), True, expiry(expires_in_days)
    end_sessions(session, annotator_ids=[row.id], commit=False)
    _done(session, commit)
    return row, plain


def revoke_members_of_closed(session: Session, *, campaign: Campaign, commit: bool = True) -> list[int]:
    """After closing ``campaign``: revoke members who belong to no other open campaign; returns their ids."""
    members = set(session.scalars(select(CampaignMember.annotator_id).where(CampaignMember.campaign_id == campaign.id)))
    still_open = set(session.scalars(select(CampaignMember.annotator_id).join(Campaign, Campaign.id == CampaignMember.campaign_id)
                                     .where(Campaign.status == "open", CampaignMember.annotator_id.in_(members))))
    revoked = sorted(members - still_open)
    if revoked:
        session.execute(update(Annotator).where(Annotator.id.in_(revoked)).values(active=False))
        end_sessions(session, annotator_ids=revoked, commit=False)
    _done(session, commit)
    clear_all()
    return revoked


def list_tokens(session: Session) -> dict[str, list[dict[str, Any]]]:
    """Every admin and annotator token's metadata (never the token): for `rlhfkit token list`."""
    def iso(value: Optional[datetime]) -> Optional[str]:
        return None if value is None else value.isoformat()

    admins = [{"id": t.id, "label": t.label, "created_at": iso(t.created_at), "expires_at": iso(t.expires_at),
               "revoked_at": iso(t.revoked_at)} for t in session.scalars(select(AdminToken).order_by(AdminToken.id))]
    annotators = [{"id": a.id, "name": a.name, "active": a.active, "created_at": iso(a.created_at),
                   "expires_at": iso(a.token_expires_at)} for a in session.scalars(select(Annotator).order_by(Annotator.id))]
    return {"admin_tokens": admins, "annotators": annotators}
