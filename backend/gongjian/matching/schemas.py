"""What the matching API answers and takes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gongjian.matching.models import RunStatus, SuggestionState


class MatchRunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    org_id: uuid.UUID = Field(
        description="Match every open need under this organization (a street or community)"
    )


class Progress(BaseModel):
    done: int
    total: int


class MatchRunOut(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    status: RunStatus
    progress: Progress
    suggestions_count: int = Field(description="Strong suggestions stored by the run")
    needs_without_match: int = Field(description="Open needs that nothing fits (no strong suggestion)")
    requested_by: uuid.UUID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


class MatchedResource(BaseModel):
    id: uuid.UUID
    external_ref: str | None
    title: str
    category: str
    provider_name: str
    org_id: uuid.UUID
    remaining_quantity: int
    quantity_unit: str
    state: str


class MatchOut(BaseModel):
    id: uuid.UUID = Field(description="The suggestion's id, to accept or dismiss it")
    need_id: uuid.UUID
    score: float = Field(description="0–1; higher fits better")
    weak: bool = Field(description="Below the confidence floor: shown only with include_weak, after the rest")
    state: SuggestionState
    explanation: dict[str, Any] = Field(
        description="summary (Chinese sentence), matched_words, matched_concepts, category_fit, distance_km, "
        "serves_radius_km, window_overlap, remaining_quantity, cautions"
    )
    resource: MatchedResource
    project_id: uuid.UUID | None


class NeedMatches(BaseModel):
    need_id: uuid.UUID
    items: list[MatchOut]


class AcceptSuggestion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: int | None = Field(
        default=None, gt=0, description="Commit this much of the resource to the project"
    )
    title: str | None = Field(default=None, min_length=1, max_length=200, description="Project title")


class DismissSuggestion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)
