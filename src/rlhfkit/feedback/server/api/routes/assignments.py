"""Being served a task and answering it (annotators only, own assignments only).

These two routes carry the load of a campaign, so they are lean: async (no thread hop), the caller
from the token cache, the work done as one group-committed writer operation, JSON by orjson.
Ordinary requests with a cached annotator token never reach them: the fast path in ``api/hot.py``
answers those with the same AnnotationService calls; these handlers serve the first request of a
token, every error case, and every request when the token cache is off (``RLHFKIT_TOKEN_CACHE_S=0``).
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Response

from rlhfkit.feedback.server.api.deps import CurrentAnnotator, IdPath, ServiceDep
from rlhfkit.feedback.server.api.schemas import SubmissionIn

router = APIRouter(tags=["assignments"])


def _json(body: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


@router.get("/campaigns/{cid}/next", response_model=None)
async def next_task(cid: IdPath, me: CurrentAnnotator, service: ServiceDep) -> Response:
    """The caller's open assignment or a new one (committed before the answer); 204 when nothing is left."""
    assert me.annotator_id is not None
    view = await service.next_assignment(campaign_id=cid, annotator_id=me.annotator_id)
    return Response(status_code=204) if view is None else _json(view)


@router.post("/assignments/{aid}/annotations", response_model=None)
async def submit(aid: IdPath, body: SubmissionIn, me: CurrentAnnotator, service: ServiceDep) -> Response:
    """Store an answer once (201, after commit); a retry with the same key gets the stored one (200)."""
    assert me.annotator_id is not None
    view, replayed = await service.submit(
        assignment_id=aid, annotator_id=me.annotator_id, idempotency_key=body.idempotency_key, answer=body.answer,
        critique=body.critique, time_spent_ms=body.time_spent_ms, source="api")
    return _json(view, status_code=200 if replayed else 201)
