"""Annotator pages: my campaigns, the next task, and answering it with a form post."""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from rlhfkit.feedback import crud, reports
from rlhfkit.feedback.rules import MAX_EDIT, STRENGTH_MARGINS
from rlhfkit.feedback.server.api.deps import CsrfDep, IdPath, SessionDep, SettingsDep, WebAnnotator
from rlhfkit.feedback.server.web.render import render
from rlhfkit.feedback.server.web.task_context import page_extras

router = APIRouter(include_in_schema=False)


@router.get("/tasks")
def my_campaigns(request: Request, session: SessionDep, me: WebAnnotator) -> Response:
    """The annotator's campaigns with how many tasks they have answered."""
    rows = []
    for campaign in crud.list_campaigns(session, principal=me):
        assert me.annotator_id is not None
        stats = reports.annotator_progress(session, campaign=campaign, annotator_id=me.annotator_id)
        rows.append({"campaign": campaign, "done": stats["annotations"] + stats["gold_answered"] + stats["skips"]})
    return render(request, "home.html", user=me, rows=rows)


def _task_page(request: Request, session: Any, me: Any, assignment: Any, settings: Any, *, error: Optional[str] = None,
               status_code: int = 200, draft: Optional[str] = None) -> Response:
    view = crud.assignment_view(session, assignment=assignment)
    campaign = crud.get_campaign_for(session, campaign_id=assignment.campaign_id, principal=me)
    lo, hi = view["scale"] or (0, 0)
    discrete = float(lo).is_integer() and float(hi).is_integer() and 2 <= hi - lo <= 10
    extras = page_extras(session, view, campaign, me.annotator_id, settings.assignment_timeout_s)
    return render(request, "task.html", user=me, view=view, campaign=campaign, error=error, status_code=status_code,
                  idempotency_key=secrets.token_urlsafe(18), max_edit=MAX_EDIT, draft=draft,
                  strengths=list(STRENGTH_MARGINS), **extras,
                  rating_values=[int(lo) + i for i in range(int(hi - lo) + 1)] if discrete else [])


@router.get("/campaigns/{cid}/task")
def next_task(cid: IdPath, request: Request, session: SessionDep, me: WebAnnotator, settings: SettingsDep) -> Response:
    """Show the caller's open or next assignment, or a finished page."""
    campaign = crud.get_campaign_for(session, campaign_id=cid, principal=me)
    if campaign.status != "open":
        return render(request, "done.html", user=me, campaign=campaign, closed=True)
    assert me.annotator_id is not None
    assignment = crud.next_assignment(session, campaign=campaign, annotator_id=me.annotator_id,
                                      timeout_s=settings.assignment_timeout_s)
    if assignment is None:
        return render(request, "done.html", user=me, campaign=campaign, closed=False)
    return _task_page(request, session, me, assignment, settings)


def _answer_from_form(kind: str, choice: Optional[str], rating: Optional[str], label: Optional[str],
                      rank: list[str], item: list[int], edit_text: Optional[str] = None,
                      strength: Optional[str] = None) -> dict[str, Any]:
    if choice == "skip":
        return {"skip": True}
    if kind == "edit":
        return {"unchanged": True} if choice == "unchanged" else {"text": (edit_text or "").replace("\r\n", "\n")}
    if kind == "pairwise":
        return {"choice": choice, "strength": strength} if strength and choice != "tie" else {"choice": choice}
    if kind == "rating":
        try:
            return {"rating": float(rating or "")}
        except ValueError:
            raise crud.InvalidError("answer.rating: pick a value on the scale") from None
    if kind == "ranking":
        ranks = [int(r) if r.isascii() and r.isdigit() and len(r) <= 3 else 0 for r in rank]
        if len(ranks) != len(item) or sorted(ranks) != list(range(1, len(item) + 1)):
            raise crud.InvalidError("answer.order: give every response a different rank")
        return {"order": [sid for _, sid in sorted(zip(ranks, item))]}
    return {"label": label}


@router.post("/assignments/{aid}/answer")
def answer(aid: IdPath, request: Request, session: SessionDep, me: WebAnnotator, _csrf: CsrfDep, settings: SettingsDep,
           idempotency_key: Annotated[str, Form(max_length=128)],
           choice: Annotated[Optional[str], Form(max_length=16)] = None,
           rating: Annotated[Optional[str], Form(max_length=32)] = None,
           label: Annotated[Optional[str], Form(max_length=8)] = None,
           strength: Annotated[Optional[str], Form(max_length=16)] = None,
           rank: Annotated[list[str], Form()] = [],
           item: Annotated[list[int], Form()] = [],
           edit_text: Annotated[Optional[str], Form(max_length=MAX_EDIT)] = None,
           critique: Annotated[str, Form(max_length=10_000)] = "",
           time_spent_ms: Annotated[Optional[int], Form(ge=0, le=86_400_000)] = None) -> Response:
    """Store the answer (idempotent) and go on to the next task."""
    assignment = crud.get_assignment_for(session, assignment_id=aid, principal=me)
    kind = crud.assignment_view(session, assignment=assignment)["kind"]
    try:
        body = _answer_from_form(kind, choice, rating, label, rank, item, edit_text, strength)
        crud.submit_annotation(session, assignment=assignment, idempotency_key=idempotency_key, answer=body,
                               critique=critique.strip() or None, time_spent_ms=time_spent_ms, source="web")
    except crud.InvalidError as exc:
        session.rollback()
        return _task_page(request, session, me, assignment, settings, error=str(exc), status_code=422, draft=edit_text)
    except crud.ConflictError:
        session.rollback()
    return RedirectResponse(f"/campaigns/{assignment.campaign_id}/task", status_code=303)
