from __future__ import annotations

import math
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from gongjian.agreements.models import Side

ItemKey = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]*$")]


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Score = Annotated[float, AfterValidator(_finite)]


def _plausible(value: datetime) -> datetime:
    # Years the windows' own CHECK allows, with room for a window's length on either side.
    if not 2000 <= value.year <= 2100:
        raise ValueError("must be in the years 2000 to 2100")
    return value


Moment = Annotated[AwareDatetime, AfterValidator(_plausible)]


class RubricItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: ItemKey = Field(description="Stable code of the item, e.g. `commitments_kept`")
    label: str = Field(min_length=1, max_length=100, pattern=r"\S")
    description: str = Field(default="", max_length=500)
    weight: int = Field(ge=1, le=100, description="Relative weight in the total")
    max_score: int = Field(default=10, ge=1, le=100, description="Scores run from 0 to this")


class RubricCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    org_id: uuid.UUID = Field(description="The county or street organization setting the rubric")
    side: Side = Field(description="`community` rates the unit; `unit` rates the community")
    name: str = Field(min_length=1, max_length=100, pattern=r"\S")
    items: list[RubricItemIn] = Field(min_length=1, max_length=20)

    @model_validator(mode="after")
    def _unique_keys(self) -> Self:
        keys = [item.key for item in self.items]
        if len(set(keys)) != len(keys):
            raise ValueError("item keys must be unique")
        return self


class RubricItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    key: str
    label: str
    description: str
    weight: int
    max_score: int


class RubricOut(BaseModel):
    id: uuid.UUID | None = Field(description="None: the built-in default, not yet used by any window")
    org_id: uuid.UUID | None = Field(description="None: the built-in default")
    side: Side
    name: str
    items: list[RubricItemOut]
    retired_at: datetime | None
    created_at: datetime | None


class WindowCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    year: int = Field(ge=2000, le=2100, description="The year evaluated")
    opens_at: Moment | None = Field(default=None, description="Default: now")
    closes_at: Moment | None = Field(default=None, description="Default: 30 days after opening")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.opens_at is not None and self.closes_at is not None and self.closes_at <= self.opens_at:
            raise ValueError("closes_at must be after opens_at")
        return self


class WindowUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    opens_at: Moment | None = None
    closes_at: Moment | None = None


class WindowStatus(StrEnum):
    scheduled = "scheduled"  # not open yet
    open = "open"
    closed = "closed"


class SubmissionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    side: Side | None = Field(
        default=None, description="The side rating; inferred when the caller rates for one side only"
    )
    scores: dict[ItemKey, Score] = Field(
        max_length=20, description="A score for every item of the side's rubric, 0 to its max_score"
    )
    comment: str = Field(default="", max_length=2000)


class SubmissionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    window_id: uuid.UUID
    side: Side
    rubric_id: uuid.UUID
    scores: dict[str, float]
    total: float = Field(description="Weighted total, 0–100")
    comment: str
    submitted_by: uuid.UUID
    submitted_at: datetime


class SideOut(BaseModel):
    side: Side
    rates: str = Field(description="Who this side rates: `unit` or `community`")
    rubric: RubricOut
    submitted: bool
    submission: SubmissionOut | None = Field(
        description="Shown to the other side only once both have submitted or the window has closed"
    )


class WindowOut(BaseModel):
    id: uuid.UUID
    agreement_id: uuid.UUID
    agreement_number: str
    community_id: uuid.UUID
    unit_id: uuid.UUID
    year: int
    opens_at: datetime
    closes_at: datetime
    status: WindowStatus
    revealed: bool = Field(description="Both sides have submitted, or the window has closed")
    can_submit: list[Side] = Field(description="The sides the caller may still submit for now")
    sides: list[SideOut]
    opened_by: uuid.UUID | None
    version: int
    created_at: datetime


class YearScore(BaseModel):
    year: int
    score: float | None = Field(description="Average of the revealed ratings' totals (0–100)")
    ratings: int = Field(description="Revealed ratings counted")
    windows: int = Field(description="Evaluation windows of the year")


class ScoreHistory(BaseModel):
    subject: str = Field(description="`unit` or `community`")
    subject_id: uuid.UUID
    items: list[YearScore] = Field(description="By year, oldest first")
