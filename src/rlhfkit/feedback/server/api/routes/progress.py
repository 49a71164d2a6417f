"""Progress, raw annotations and export of a campaign."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Response

from rlhfkit.feedback import crud, reports
from rlhfkit.feedback.server.api.deps import AdminDep, CallerDep, IdPath, SessionDep

router = APIRouter(prefix="/campaigns/{cid}", tags=["progress"])


@router.get("/progress")
def campaign_progress(cid: IdPath, session: SessionDep, admin: AdminDep) -> dict[str, Any]:
    """Completion and per-annotator statistics."""
    return reports.campaign_progress(session, campaign=crud.get_campaign_for(session, campaign_id=cid, principal=admin))


@router.get("/annotators/{aid}/progress")
def annotator_progress(cid: IdPath, aid: IdPath, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    """One annotator's statistics: the admin sees anyone, an annotator only themself."""
    campaign = crud.get_campaign_for(session, campaign_id=cid, principal=caller)
    if not caller.is_admin and caller.annotator_id != aid:
        raise HTTPException(404, f"annotator {aid} not found")
    return reports.annotator_progress(session, campaign=campaign, annotator_id=aid)


@router.get("/annotations")
def annotations(cid: IdPath, session: SessionDep, admin: AdminDep) -> list[dict[str, Any]]:
    """Raw annotation rows, the input of aggregation."""
    return reports.annotation_rows(session, campaign=crud.get_campaign_for(session, campaign_id=cid, principal=admin))


@router.get("/export")
def export(cid: IdPath, session: SessionDep, admin: AdminDep,
           aggregate: str = Query("none", pattern="^(none|majority|reliability)$"),
           edits: str = Query("pairs", pattern="^(pairs|sft)$")) -> Response:
    """Feedback records as JSON lines (raw or aggregated); ``edits=sft``: the edits as SFT examples instead."""
    campaign = crud.get_campaign_for(session, campaign_id=cid, principal=admin)
    skipped: list[str] = []
    records = reports.export_records(session, campaign=campaign, aggregate=aggregate, skipped=skipped, edits=edits)
    body = reports.records_jsonl(records)
    return Response(body, media_type="application/x-ndjson", headers={"X-Skipped-Records": str(len(skipped))})
