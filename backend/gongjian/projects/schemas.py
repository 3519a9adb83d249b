from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gongjian.lists.models import ListCategory, NeedState
from gongjian.meetings.models import DecisionOutcome, MeetingKind
from gongjian.projects.models import ClaimMethod, ProjectState

Title = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]
Reason = Annotated[str, Field(min_length=1, max_length=500, pattern=r"\S")]
PhotoUrl = Annotated[str, Field(max_length=500, pattern=r"^https?://\S+$")]
Quantity = Annotated[int, Field(gt=0, le=10**12)]
Budget = Annotated[int, Field(ge=0, le=10**12, description="Yuan")]


def _check_plan(plan_from: date | None, plan_to: date | None) -> None:
    if plan_from is not None and plan_to is not None and plan_to < plan_from:
        raise ValueError("plan_to is before plan_from")


class CommitmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resource_id: uuid.UUID
    quantity: Quantity = Field(description="Reserved from the resource's remaining quantity")


class MilestoneCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Title
    due_on: date | None = None


class MilestoneUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Title | None = None
    due_on: date | None = None
    done: bool | None = Field(default=None, description="Mark done (now) or not done")


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    org_id: uuid.UUID = Field(description="The community (or street) organization that owns the project")
    title: Title
    description: str = Field(default="", max_length=5000)
    need_ids: list[uuid.UUID] = Field(default_factory=list, max_length=50)
    commitments: list[CommitmentCreate] = Field(default_factory=list, max_length=50)
    lead_unit_id: uuid.UUID | None = Field(default=None, description="Assign a lead unit now (by staff)")
    joint_unit_ids: list[uuid.UUID] = Field(default_factory=list, max_length=50)
    responsible_name: str | None = Field(default=None, min_length=1, max_length=50)
    responsible_user_id: uuid.UUID | None = None
    budget: Budget | None = None
    plan_from: date | None = None
    plan_to: date | None = None
    milestones: list[MilestoneCreate] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _plan_ordered(self) -> Self:
        _check_plan(self.plan_from, self.plan_to)
        return self


class ProjectUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Title | None = None
    description: str | None = Field(default=None, max_length=5000)
    joint_unit_ids: list[uuid.UUID] | None = Field(default=None, max_length=50)
    responsible_name: str | None = Field(default=None, min_length=1, max_length=50)
    responsible_user_id: uuid.UUID | None = None
    budget: Budget | None = None
    plan_from: date | None = None
    plan_to: date | None = None

    @model_validator(mode="after")
    def _plan_ordered(self) -> Self:
        _check_plan(self.plan_from, self.plan_to)
        return self


class ProjectTransition(BaseModel):
    """Move a project to `to`. `approved` and `rejected` are refused here: only a meeting decides them."""

    model_config = ConfigDict(extra="forbid")
    to: ProjectState
    reason: Reason | None = Field(default=None, description="Why; required to cancel")
    note: str | None = Field(
        default=None, min_length=1, max_length=5000, description="The completion note (required to complete)"
    )
    rating: int | None = Field(
        default=None, ge=1, le=5, description="The evaluation, 1–5 (required to evaluate)"
    )


class NeedLink(BaseModel):
    model_config = ConfigDict(extra="forbid")
    need_id: uuid.UUID


class CommitmentRelease(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason | None = None


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unit_id: uuid.UUID | None = Field(
        default=None,
        description="The claiming unit: a liaison's own (may be omitted), or the unit staff assign",
    )


class ProgressCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(min_length=1, max_length=5000, pattern=r"\S")
    percent: int | None = Field(default=None, ge=0, le=100)
    photos: list[PhotoUrl] = Field(default_factory=list, max_length=9)
    unit_id: uuid.UUID | None = Field(
        default=None, description="The working unit reported for (a liaison's own unit by default)"
    )


# --- out ----------------------------------------------------------------------------------


class LinkedNeed(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    title: str
    category: ListCategory
    state: NeedState
    external_ref: str | None
    linked_at: datetime


class CommitmentOut(BaseModel):
    id: uuid.UUID
    resource_id: uuid.UUID
    resource_title: str
    provider_name: str
    quantity: int
    quantity_unit: str
    created_by: uuid.UUID | None
    created_at: datetime
    released_at: datetime | None
    released_by: uuid.UUID | None
    release_reason: str | None


class MilestoneOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    title: str
    due_on: date | None
    done_at: datetime | None
    done_by: uuid.UUID | None
    version: int
    created_at: datetime


class ProgressOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    note: str
    percent: int | None
    photos: list[str]
    unit_id: uuid.UUID | None
    created_by: uuid.UUID | None
    created_at: datetime


class MeetingRef(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    kind: MeetingKind
    title: str
    scheduled_at: datetime
    held_at: datetime | None


class DecisionTrace(BaseModel):
    """A meeting's decision on the project, with the meeting it was taken in."""

    decision_id: uuid.UUID
    agenda_item_id: uuid.UUID
    outcome: DecisionOutcome
    note: str | None
    votes_for: int | None
    votes_against: int | None
    votes_abstain: int | None
    decided_by: uuid.UUID | None
    decided_at: datetime
    meeting: MeetingRef


class ProjectResult(BaseModel):
    completion_note: str | None
    completed_at: datetime | None
    completed_by: uuid.UUID | None
    evaluation_rating: int | None
    evaluation_note: str | None
    evaluated_at: datetime | None
    evaluated_by: uuid.UUID | None


class ProjectOut(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    title: str
    description: str
    state: ProjectState
    lead_unit_id: uuid.UUID | None
    claim_method: ClaimMethod | None = Field(
        description="How the lead unit took it: paired, hall or assigned"
    )
    claimed_by: uuid.UUID | None
    claimed_at: datetime | None
    street_opens_at: datetime = Field(description="From then on every unit of the street may claim it")
    joint_unit_ids: list[uuid.UUID]
    responsible_name: str | None
    responsible_user_id: uuid.UUID | None
    budget: int | None = Field(description="Yuan")
    plan_from: date | None
    plan_to: date | None
    state_reason: str | None
    state_changed_by: uuid.UUID | None
    state_changed_at: datetime | None
    created_by: uuid.UUID | None
    version: int
    created_at: datetime
    updated_at: datetime


class ProjectDetail(ProjectOut):
    """The project and its trail: needs → meeting decision → project → result."""

    needs: list[LinkedNeed]
    commitments: list[CommitmentOut] = Field(description="Active and released commitments")
    milestones: list[MilestoneOut]
    progress_percent: int | None = Field(description="The latest progress entry's percent")
    decision: DecisionTrace | None = Field(description="The decision that approved or rejected the project")
    decisions: list[DecisionTrace] = Field(
        description="Every decision on it, deferrals included, oldest first"
    )
    result: ProjectResult
