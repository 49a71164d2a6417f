"""SQLAlchemy 2 ORM schema of the feedback store: campaigns, samples, tasks, assignments, annotations.

One campaign groups prompts and their sampled responses; tasks ask annotators to compare, rate,
rank or label samples; an assignment records who was served which task with which displayed order;
an annotation is the committed answer (unique per assignment and per idempotency key).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text,
                        TypeDecorator, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

TASK_KINDS = ("pairwise", "rating", "ranking", "binary", "edit")
CAMPAIGN_STATUSES = ("open", "closed")
ASSIGNMENT_STATUSES = ("open", "answered", "skipped")


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (the only clock the store uses)."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC and always returns aware UTC, so SQLite and PostgreSQL read back alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the feedback store; use utcnow()")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    """Declarative base; JSON columns map to dict/list annotations."""

    type_annotation_map = {dict[str, Any]: JSON, list[int]: JSON, datetime: UTCDateTime}


class SchemaVersion(Base):
    """A single row holding the schema version this database was upgraded to."""

    __tablename__ = "schema_version"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class AdminToken(Base):
    """A hashed admin token (sha256 hex); the plain token is shown once and never stored.

    A revoked or expired token authenticates nothing, and the web sessions it opened end with it.
    """

    __tablename__ = "admin_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    label: Mapped[Optional[str]] = mapped_column(String(200))
    expires_at: Mapped[Optional[datetime]] = mapped_column()
    revoked_at: Mapped[Optional[datetime]] = mapped_column()


class Annotator(Base):
    """A person or program that answers tasks, identified by a hashed invite token."""

    __tablename__ = "annotators"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    token_expires_at: Mapped[Optional[datetime]] = mapped_column()
    memberships: Mapped[list[CampaignMember]] = relationship(back_populates="annotator")


class WebSession(Base):
    """A signed-in browser session; the cookie carries only its random id, the database its sha256.

    Deleting the row ends the session (logout, token revocation or rotation, a new session key),
    whatever the browser still holds. An admin session names the admin token that opened it.
    """

    __tablename__ = "web_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    annotator_id: Mapped[Optional[int]] = mapped_column(ForeignKey("annotators.id"), index=True)
    admin_token_id: Mapped[Optional[int]] = mapped_column(ForeignKey("admin_tokens.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class Campaign(Base):
    """A collection effort: its default task kind, redundancy k, rating scale and ranking size."""

    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    redundancy: Mapped[int] = mapped_column(Integer, default=1)
    scale_lo: Mapped[float] = mapped_column(Float, default=1.0)
    scale_hi: Mapped[float] = mapped_column(Float, default=5.0)
    rank_k: Mapped[int] = mapped_column(Integer, default=3)
    allow_critique: Mapped[bool] = mapped_column(Boolean, default=False)
    instructions: Mapped[str] = mapped_column(Text, default="")
    gold_rate: Mapped[float] = mapped_column(Float, default=0.1)
    status: Mapped[str] = mapped_column(String(8), default="open")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    members: Mapped[list[CampaignMember]] = relationship(back_populates="campaign")


class CampaignMember(Base):
    """Grants one annotator access to one campaign."""

    __tablename__ = "campaign_members"
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"), primary_key=True)
    campaign: Mapped[Campaign] = relationship(back_populates="members")
    annotator: Mapped[Annotator] = relationship(back_populates="memberships")


class Prompt(Base):
    """A prompt of a campaign, de-duplicated by the sha256 of its text."""

    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("campaign_id", "text_sha256"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    text_sha256: Mapped[str] = mapped_column(String(64))


class Sample(Base):
    """One response to a prompt, with the model and loop round that produced it."""

    __tablename__ = "samples"
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    response: Mapped[str] = mapped_column(Text)
    model: Mapped[Optional[str]] = mapped_column(String(200))
    round: Mapped[Optional[int]] = mapped_column(Integer)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    prompt: Mapped[Prompt] = relationship()


class Task(Base):
    """A question over 1..n samples of one prompt; gold tasks carry a known answer."""

    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    kind: Mapped[str] = mapped_column(String(16))
    scale_lo: Mapped[Optional[float]] = mapped_column(Float)
    scale_hi: Mapped[Optional[float]] = mapped_column(Float)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    gold: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    items: Mapped[list[TaskItem]] = relationship(order_by="TaskItem.slot", cascade="all, delete-orphan")
    prompt: Mapped[Prompt] = relationship()


class TaskItem(Base):
    """The samples of a task in canonical order (slot 0, 1, ...)."""

    __tablename__ = "task_items"
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"))
    sample: Mapped[Sample] = relationship()


class Assignment(Base):
    """A task served to one annotator, with the sample order displayed to them."""

    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("task_id", "annotator_id"),
        Index("ix_assignments_campaign_annotator", "campaign_id", "annotator_id", "status"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"))
    displayed: Mapped[list[int]] = mapped_column()
    status: Mapped[str] = mapped_column(String(8), default="open")
    served_at: Mapped[datetime] = mapped_column(default=utcnow)
    task: Mapped[Task] = relationship()


class Annotation(Base):
    """A committed answer: one per assignment, one per (annotator, idempotency key)."""

    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("annotator_id", "idempotency_key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), unique=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"))
    idempotency_key: Mapped[str] = mapped_column(String(128))
    body_sha256: Mapped[str] = mapped_column(String(64))
    answer: Mapped[dict[str, Any]] = mapped_column()
    resolved: Mapped[dict[str, Any]] = mapped_column()
    is_skip: Mapped[bool] = mapped_column(Boolean, default=False)
    critique: Mapped[Optional[str]] = mapped_column(Text)
    time_spent_ms: Mapped[Optional[int]] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16), default="api", server_default="api")
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    assignment: Mapped[Assignment] = relationship()
