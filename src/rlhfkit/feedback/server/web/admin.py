"""Admin pages: campaigns, progress per campaign and per annotator, invitations, close, export."""

from __future__ import annotations

from typing import Annotated, Optional

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import RedirectResponse, Response

from rlhfkit.feedback import crud, reports
from rlhfkit.feedback.models import TASK_KINDS
from rlhfkit.feedback.server.api.deps import CsrfDep, IdPath, SessionDep, SettingsDep, WebAdmin
from rlhfkit.feedback.server.web.render import render

router = APIRouter(prefix="/admin", include_in_schema=False)


def _index(request: Request, session: SessionDep, admin: WebAdmin, *, error: Optional[str] = None, status_code: int = 200) -> Response:
    rows = [(c, reports.campaign_progress(session, campaign=c)) for c in crud.list_campaigns(session, principal=admin)]
    return render(request, "admin_index.html", user=admin, rows=rows, kinds=TASK_KINDS, error=error, status_code=status_code)


@router.get("")
def index(request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    """Every campaign with its completion, and the create form."""
    return _index(request, session, admin)


@router.post("/campaigns")
def create_campaign(request: Request, session: SessionDep, admin: WebAdmin, settings: SettingsDep, _csrf: CsrfDep,
                    name: Annotated[str, Form(max_length=200)], kind: Annotated[str, Form(max_length=16)],
                    samples: Annotated[UploadFile, File()],
                    redundancy: Annotated[int, Form(ge=1, le=100)] = 1,
                    scale_lo: Annotated[float, Form()] = 1.0, scale_hi: Annotated[float, Form()] = 5.0,
                    rank_k: Annotated[int, Form(ge=2, le=64)] = 3, gold_rate: Annotated[float, Form(ge=0, le=1)] = 0.1,
                    allow_critique: Annotated[bool, Form()] = False,
                    instructions: Annotated[str, Form(max_length=20_000)] = "") -> Response:
    """Create a campaign from an uploaded samples JSONL file."""
    try:
        data = samples.file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise crud.TooLargeError(f"samples: file larger than {settings.max_upload_bytes} bytes; nothing was created")
        text = data.decode("utf-8")
        specs = crud.parse_samples_jsonl(text, source=samples.filename or "upload")
        campaign = crud.create_campaign(session, name=name, kind=kind, redundancy=redundancy, scale=(scale_lo, scale_hi),
                                        rank_k=rank_k, allow_critique=allow_critique, instructions=instructions,
                                        gold_rate=gold_rate, samples=specs)
    except crud.TooLargeError as exc:
        session.rollback()
        return _index(request, session, admin, error=str(exc), status_code=413)
    except (crud.InvalidError, UnicodeDecodeError) as exc:
        session.rollback()
        return _index(request, session, admin, error=str(exc), status_code=422)
    return RedirectResponse(f"/admin/campaigns/{campaign.id}", status_code=303)


@router.get("/campaigns/{cid}")
def campaign_page(cid: IdPath, request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    """Progress of one campaign, per annotator, with invite / close / export."""
    campaign = crud.get_campaign_for(session, campaign_id=cid, principal=admin)
    return render(request, "admin_campaign.html", user=admin, campaign=campaign,
                  summary=crud.campaign_summary(session, campaign=campaign),
                  progress=reports.campaign_progress(session, campaign=campaign), invited=None)


@router.post("/campaigns/{cid}/invite")
def invite(cid: IdPath, request: Request, session: SessionDep, admin: WebAdmin, _csrf: CsrfDep,
           name: Annotated[str, Form(min_length=1, max_length=200)]) -> Response:
    """Invite an annotator; the page shows their token once (it is stored hashed)."""
    campaign = crud.get_campaign_for(session, campaign_id=cid, principal=admin)
    annotator, token = crud.create_annotator(session, name=name, campaign_ids=[campaign.id])
    response = render(request, "admin_campaign.html", user=admin, campaign=campaign,
                      summary=crud.campaign_summary(session, campaign=campaign),
                      progress=reports.campaign_progress(session, campaign=campaign),
                      invited={"name": annotator.name, "token": token}, status_code=201)
    return response


@router.post("/campaigns/{cid}/close")
def close(cid: IdPath, session: SessionDep, admin: WebAdmin, _csrf: CsrfDep) -> Response:
    """Close a campaign."""
    crud.close_campaign(session, campaign=crud.get_campaign_for(session, campaign_id=cid, principal=admin))
    return RedirectResponse(f"/admin/campaigns/{cid}", status_code=303)


@router.get("/campaigns/{cid}/annotators/{aid}")
def annotator_page(cid: IdPath, aid: IdPath, request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    """One annotator's statistics and answers in a campaign."""
    campaign = crud.get_campaign_for(session, campaign_id=cid, principal=admin)
    stats = reports.annotator_progress(session, campaign=campaign, annotator_id=aid)
    rows = [r for r in reports.annotation_rows(session, campaign=campaign) if r["annotator_id"] == aid]
    return render(request, "admin_annotator.html", user=admin, campaign=campaign, stats=stats, rows=rows[-200:])


@router.get("/campaigns/{cid}/export")
def export(cid: IdPath, session: SessionDep, admin: WebAdmin, aggregate: str = "none", edits: str = "pairs") -> Response:
    """Download the campaign's feedback records (or, with ``edits=sft``, its edits as SFT examples) as JSON lines."""
    campaign = crud.get_campaign_for(session, campaign_id=cid, principal=admin)
    skipped: list[str] = []
    records = reports.export_records(session, campaign=campaign, aggregate=aggregate, skipped=skipped, edits=edits)
    body = reports.records_jsonl(records)
    name = f"campaign-{campaign.id}-{'sft' if edits == 'sft' else aggregate}.jsonl"
    return Response(body, media_type="application/x-ndjson",
                    headers={"Content-Disposition": f'attachment; filename="{name}"',
                             "X-Skipped-Records": str(len(skipped))})
