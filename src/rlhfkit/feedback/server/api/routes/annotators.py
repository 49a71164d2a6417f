"""Inviting and listing annotators (admin only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from rlhfkit.feedback import crud
from rlhfkit.feedback.server.api.deps import AdminDep, SessionDep
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
