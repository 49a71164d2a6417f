"""Inviting and listing annotators (admin only)."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Query

from rlhfkit.feedback import access, crud
from rlhfkit.feedback.server.api.deps import AdminDep, IdPath, SessionDep
from rlhfkit.feedback.server.api.schemas import AnnotatorIn

router = APIRouter(prefix="/annotators", tags=["annotators"])


@router.post("", status_code=201)
def invite(body: AnnotatorIn, session: SessionDep, admin: AdminDep) -> dict[str, Any]:
    """Create an annotator; the token is in this response only."""
    annotator, token = crud.create_annotator(session, name=body.name, campaign_ids=body.campaign_ids)
    return {"id": annotator.id, "name": annotator.name, "token": token, "campaign_ids": sorted(set(body.campaign_ids))}


@router.get("")
def list_annotators(session: SessionDep, admin: AdminDep) -> list[dict[str, Any]]:
    """Every annotator and their campaigns (never tokens)."""
    return crud.list_annotators(session)


@router.post("/{aid}/revoke")
def revoke(aid: IdPath, session: SessionDep, admin: AdminDep) -> dict[str, Any]:
    """Deactivate the annotator's token and end their web sessions (their answers stay)."""
    annotator = access.revoke_annotator(session, annotator_id=aid)
    return {"id": annotator.id, "name": annotator.name, "active": annotator.active}


@router.post("/{aid}/rotate")
def rotate(aid: IdPath, session: SessionDep, admin: AdminDep,
           expires_in_days: Optional[float] = Query(None, gt=0, le=3650)) -> dict[str, Any]:
    """Issue a new token (in this response only); the old one stops working and its sessions end."""
    annotator, token = access.rotate_annotator(session, annotator_id=aid, expires_in_days=expires_in_days)
    expires = annotator.token_expires_at
    return {"id": annotator.id, "name": annotator.name, "token": token,
            "expires_at": None if expires is None else expires.isoformat()}
