from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from gongjian.meetings.models import (
    AttendanceStatus,
    AttendeeKind,
    DecisionOutcome,
    MeetingKind,
    MeetingState,
)

Title = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]
Reason = Annotated[str, Field(min_length=1, max_length=500, pattern=r"\S")]
Votes = Annotated[int, Field(ge=0, le=100000)]


class AgendaItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Title
    description: str | None = Field(default=None, max_length=5000)
    project_id: uuid.UUID | None = Field(default=None, description="The project the meeting is to decide")


class MeetingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    org_id: uuid.UUID = Field(description="The street or community organization holding the meeting")
    kind: MeetingKind
    title: Title
    scheduled_at: AwareDatetime
    location: str | None = Field(default=None, max_length=200)
    invited_org_ids: list[uuid.UUID] = Field(default_factory=list, max_length=100)
    invited_unit_ids: list[uuid.UUID] = Field(default_factory=list, max_length=100)
    agenda: list[AgendaItemCreate] = Field(default_factory=list, max_length=50)


class MeetingUpdate(BaseModel):
    """Title, kind, time, place and invitations while scheduled; the minutes once held."""

    model_config = ConfigDict(extra="forbid")
    kind: MeetingKind | None = None
    title: Title | None = None
    scheduled_at: AwareDatetime | None = None
    location: str | None = Field(default=None, max_length=200)
    invited_org_ids: list[uuid.UUID] | None = Field(default=None, max_length=100)
    invited_unit_ids: list[uuid.UUID] | None = Field(default=None, max_length=100)
    minutes: str | None = Field(default=None, max_length=50000)


class MeetingTransition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: MeetingState
    reason: Reason | None = Field(default=None, description="Why; required to cancel")


class AttendanceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attendee_kind: AttendeeKind
    user_id: uuid.UUID | None = None
    unit_id: uuid.UUID | None = None
    org_id: uuid.UUID | None = None
    name: str = Field(min_length=1, max_length=50, description="The attendee, or the representative present")
    status: AttendanceStatus
    note: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _reference(self) -> Self:
        refs = {"user": self.user_id, "unit": self.unit_id, "org": self.org_id}
        given = {k for k, v in refs.items() if v is not None}
        if given - {self.attendee_kind.value}:
            raise ValueError(
                f"a {self.attendee_kind.value} attendee refers to a {self.attendee_kind.value} only"
            )
        if self.attendee_kind != AttendeeKind.user and not given:
            raise ValueError(f"a {self.attendee_kind.value} attendee needs its {self.attendee_kind.value}_id")
        return self


class AttendanceSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entries: list[AttendanceEntry] = Field(max_length=500)


class DecisionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agenda_item_id: uuid.UUID
    outcome: DecisionOutcome
    note: str | None = Field(default=None, max_length=5000)
    votes_for: Votes | None = None
    votes_against: Votes | None = None
    votes_abstain: Votes | None = None


# --- out ----------------------------------------------------------------------------------


class AgendaItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    position: int
    title: str
    description: str | None
    project_id: uuid.UUID | None
    subject_type: str | None = Field(description="Reserved for what else a meeting decides (agreements)")
    subject_id: uuid.UUID | None


class AttendanceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    attendee_kind: AttendeeKind
    user_id: uuid.UUID | None
    unit_id: uuid.UUID | None
    org_id: uuid.UUID | None
    name: str
    status: AttendanceStatus
    note: str | None


class DecisionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    meeting_id: uuid.UUID
    agenda_item_id: uuid.UUID
    project_id: uuid.UUID | None
    outcome: DecisionOutcome
    note: str | None
    votes_for: int | None
    votes_against: int | None
    votes_abstain: int | None
    decided_by: uuid.UUID | None
    decided_at: datetime


class MeetingOut(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    kind: MeetingKind
    title: str
    scheduled_at: datetime
    location: str | None
    state: MeetingState
    held_at: datetime | None
    published_at: datetime | None
    created_by: uuid.UUID | None
    state_reason: str | None
    state_changed_by: uuid.UUID | None
    state_changed_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime


class MeetingDetail(MeetingOut):
    minutes: str | None
    invited_org_ids: list[uuid.UUID]
    invited_unit_ids: list[uuid.UUID]
    agenda: list[AgendaItemOut]
    attendance: list[AttendanceOut]
    decisions: list[DecisionOut]
