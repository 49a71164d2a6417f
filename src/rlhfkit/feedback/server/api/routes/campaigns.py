"""Campaigns, their samples, tasks and members (admin; members may read their campaigns)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from rlhfkit.feedback import access, crud
from rlhfkit.feedback.server.api.deps import AdminDep, CallerDep, IdPath, SessionDep
from rlhfkit.feedback.server.api.schemas import CampaignIn, MemberIn, SamplesIn, TasksIn

router = APIRouter(prefix="/campaigns", tags=["campaigns"])


@router.post("", status_code=201)
def create_campaign(body: CampaignIn, session: SessionDep, admin: AdminDep) -> dict[str, Any]:
    """Create a campaign from samples and build its tasks."""
    campaign = crud.create_campaign(
        session, name=body.name, kind=body.kind, redundancy=body.redundancy, scale=body.scale, rank_k=body.rank_k,
        allow_critique=body.allow_critique, instructions=body.instructions, gold_rate=body.gold_rate,
        samples=[s.spec() for s in body.samples], build_tasks=body.build_tasks)
    return crud.campaign_summary(session, campaign=campaign)


@router.get("")
def list_campaigns(session: SessionDep, caller: CallerDep) -> list[dict[str, Any]]:
    """All campaigns (admin) or the caller's campaigns (annotator)."""
    return [crud.campaign_summary(session, campaign=c) for c in crud.list_campaigns(session, principal=caller)]


@router.get("/{cid}")
def get_campaign(cid: IdPath, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    """One campaign the caller may see."""
    return crud.campaign_summary(session, campaign=crud.get_campaign_for(session, campaign_id=cid, principal=caller))


@router.post("/{cid}/close")
def close_campaign(cid: IdPath, session: SessionDep, admin: AdminDep, revoke_tokens: bool = False) -> dict[str, Any]:
    """Stop serving and accepting answers; ``?revoke_tokens=true`` also revokes members left with no open campaign."""
    campaign = crud.close_campaign(session, campaign=crud.get_campaign_for(session, campaign_id=cid, principal=admin))
    revoked = access.revoke_members_of_closed(session, campaign=campaign) if revoke_tokens else []
    return {**crud.campaign_summary(session, campaign=campaign), "revoked_annotator_ids": revoked}


@router.post("/{cid}/samples", status_code=201)
def add_samples(cid: IdPath, body: SamplesIn, session: SessionDep, admin: AdminDep) -> dict[str, Any]:
    """Add samples (prompts de-duplicated) without building tasks."""
    campaign = crud.get_campaign_for(session, campaign_id=cid, principal=admin)
    samples = crud.add_samples(session, campaign=campaign, samples=[s.spec() for s in body.samples])
    return {"sample_ids": [s.id for s in samples]}


@router.get("/{cid}/samples")
def list_samples(cid: IdPath, session: SessionDep, admin: AdminDep) -> list[dict[str, Any]]:
    """Every sample with its prompt."""
    return crud.list_samples(session, campaign=crud.get_campaign_for(session, campaign_id=cid, principal=admin))


@router.post("/{cid}/tasks", status_code=201)
def add_tasks(cid: IdPath, body: TasksIn, session: SessionDep, admin: AdminDep) -> dict[str, Any]:
    """Add explicit tasks, gold (honeypot) tasks included."""
    campaign = crud.get_campaign_for(session, campaign_id=cid, principal=admin)
    tasks = crud.add_tasks(session, campaign=campaign, tasks=[t.spec() for t in body.tasks])
    return {"task_ids": [t.id for t in tasks]}


@router.get("/{cid}/tasks")
def list_tasks(cid: IdPath, session: SessionDep, admin: AdminDep) -> list[dict[str, Any]]:
    """Every task with its gold answer and completion."""
    return crud.list_tasks(session, campaign=crud.get_campaign_for(session, campaign_id=cid, principal=admin))


@router.post("/{cid}/members")
def add_member(cid: IdPath, body: MemberIn, session: SessionDep, admin: AdminDep) -> dict[str, Any]:
    """Give an existing annotator access to this campaign."""
    campaign = crud.get_campaign_for(session, campaign_id=cid, principal=admin)
    crud.add_member(session, campaign=campaign, annotator_id=body.annotator_id)
    return {"campaign_id": campaign.id, "annotator_id": body.annotator_id}
