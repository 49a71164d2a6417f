"""Being served a task and answering it (annotators only, own assignments only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from rlhfkit.feedback import crud
from rlhfkit.feedback.server.api.deps import CurrentAnnotator, SessionDep, SettingsDep
from rlhfkit.feedback.server.api.schemas import SubmissionIn

router = APIRouter(tags=["assignments"])


@router.get("/campaigns/{cid}/next", response_model=None)
def next_task(cid: int, session: SessionDep, me: CurrentAnnotator, settings: SettingsDep) -> dict[str, Any] | Response:
    """The caller's open assignment or a new one; 204 when nothing is left for them."""
    campaign = crud.get_campaign_for(session, campaign_id=cid, principal=me)
    assert me.annotator_id is not None
    view = crud.next_assignment_view(session, campaign=campaign, annotator_id=me.annotator_id,
                                     timeout_s=settings.assignment_timeout_s)
    return Response(status_code=204) if view is None else view


@router.post("/assignments/{aid}/annotations", response_model=None)
def submit(aid: int, body: SubmissionIn, session: SessionDep, me: CurrentAnnotator) -> JSONResponse:
    """Store an answer once (201); a retry with the same key gets the stored one (200)."""
    assignment = crud.get_assignment_for(session, assignment_id=aid, principal=me)
    annotation, replayed = crud.submit_annotation(
        session, assignment=assignment, idempotency_key=body.idempotency_key, answer=body.answer,
        critique=body.critique, time_spent_ms=body.time_spent_ms, source="api")
    return JSONResponse(crud.annotation_view(annotation, replayed=replayed), status_code=200 if replayed else 201)
