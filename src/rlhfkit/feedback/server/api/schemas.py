"""Request bodies of the JSON API (see docs/feedback-api.md); responses are plain dicts from crud."""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from rlhfkit.feedback.rules import MAX_ID

from rlhfkit.feedback.crud import SampleSpec, TaskSpec

Id = Annotated[int, Field(ge=1, le=MAX_ID)]


class Strict(BaseModel):
    """Unknown fields are an error, so a typo never silently drops data."""

    model_config = ConfigDict(extra="forbid")


class SampleIn(Strict):
    prompt: str = Field(max_length=200_000)
    response: str = Field(max_length=200_000)
    model: Optional[str] = Field(None, max_length=200)
    round: Optional[int] = Field(None, ge=-MAX_ID, le=MAX_ID)
    meta: dict[str, Any] = Field(default_factory=dict)

    def spec(self) -> SampleSpec:
        """As the store's plain dataclass."""
        return SampleSpec(prompt=self.prompt, response=self.response, model=self.model, round=self.round, meta=self.meta)


class CampaignIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    kind: str
    redundancy: int = Field(1, ge=1, le=100)
    scale: tuple[float, float] = (1.0, 5.0)
    rank_k: int = Field(3, ge=2, le=64)
    allow_critique: bool = False
    instructions: str = Field("", max_length=20_000)
    gold_rate: float = Field(0.1, ge=0.0, le=1.0)
    samples: list[SampleIn] = Field(default_factory=list)
    build_tasks: bool = True


class SamplesIn(Strict):
    samples: list[SampleIn]


class TaskIn(Strict):
    sample_ids: list[Id]
    kind: Optional[str] = None
    scale: Optional[tuple[float, float]] = None
    gold: Optional[dict[str, Any]] = None

    def spec(self) -> TaskSpec:
        """As the store's plain dataclass."""
        return TaskSpec(sample_ids=self.sample_ids, kind=self.kind, scale=self.scale, gold=self.gold)


class TasksIn(Strict):
    tasks: list[TaskIn]


class AnnotatorIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    campaign_ids: list[Id] = Field(default_factory=list)


class MemberIn(Strict):
    annotator_id: Id


class SubmissionIn(Strict):
    idempotency_key: str = Field(min_length=8, max_length=128)
    answer: dict[str, Any]
    critique: Optional[str] = Field(None, max_length=10_000)
    time_spent_ms: Optional[int] = Field(None, ge=0, le=86_400_000)
