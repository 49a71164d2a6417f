"""Liveness and "who am I"."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from rlhfkit.feedback.server.api.deps import CallerDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health(request: Request) -> dict[str, Any]:
    """No auth: lets load tests and supervisors wait for the server."""
    return {"status": "ok", "schema_version": request.app.state.store.schema_version}


@router.get("/me")
def me(caller: CallerDep) -> dict[str, Any]:
    """The role, id and name behind the presented token."""
    return {"role": caller.role, "id": caller.annotator_id, "name": caller.name}
