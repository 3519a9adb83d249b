from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gongjian.lists.models import (
    ListCategory,
    NeedSource,
    NeedState,
    ProviderKind,
    ResourceState,
    Urgency,
)

MAX_QUANTITY = 10**12
MAX_PHOTOS = 9

Title = Field(min_length=1, max_length=200, pattern=r"\S")
Description = Field(default="", max_length=5000)
ExternalRef = Field(default=None, min_length=1, max_length=100, description="The id in the source system")
Year = Field(
    default=None,
    ge=2000,
    le=2100,
    description="The yearly list it belongs to (default: the window's start year)",
)
WEEKDAYS_DESCRIPTION = "ISO weekdays 1 (Monday) … 7 (Sunday)"


class Location(BaseModel):
    """A WGS-84 point."""

    model_config = ConfigDict(extra="forbid")
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)


def _dedupe_weekdays(value: list[int] | None) -> list[int] | None:
    return None if value is None else sorted(set(value))


# --- resources ------------------------------------------------------------------------------


class ResourceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    org_id: uuid.UUID | None = Field(
        default=None,
        description="The organization whose list it is on; for a resident unit's resource its community "
        "(the default when `unit_id` is given)",
    )
    unit_id: uuid.UUID | None = Field(
        default=None, description="The resident unit offering it (a liaison publishes for their own unit)"
    )
    provider_kind: ProviderKind | None = Field(
        default=None, description="Defaults to the unit's type, or `organization` without a unit"
    )
    provider_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Defaults to the unit's or organization's name",
    )
    grid_id: uuid.UUID | None = Field(default=None, description="A grid cell under the organization")
    category: ListCategory
    title: str = Title
    description: str = Description
    quantity: int = Field(ge=1, le=MAX_QUANTITY, description="How much is offered, in `quantity_unit`")
    quantity_unit: str = Field(min_length=1, max_length=20, description="e.g. 次, 人, 小时, 元, 件")
    available_from: date | None = Field(default=None, description="Default: today (Asia/Shanghai)")
    available_to: date | None = Field(default=None, description="Default: 31 December of the start year")
    weekdays: list[int] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5, 6, 7],
        min_length=1,
        max_length=7,
        description=WEEKDAYS_DESCRIPTION,
    )
    location: Location | None = None
    serves_radius_km: float | None = Field(
        default=None, ge=0, le=20000, description="How far from `location` it serves; null: anywhere"
    )
    year: int | None = Year
    external_ref: str | None = ExternalRef

    _weekdays = field_validator("weekdays")(_dedupe_weekdays)

    @field_validator("weekdays")
    @classmethod
    def _weekday_range(cls, value: list[int]) -> list[int]:
        if any(d < 1 or d > 7 for d in value):
            raise ValueError("weekdays run from 1 (Monday) to 7 (Sunday)")
        return value


class ResourceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider_name: str | None = Field(default=None, min_length=1, max_length=200)
    grid_id: uuid.UUID | None = None
    category: ListCategory | None = None
    title: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"\S")
    description: str | None = Field(default=None, max_length=5000)
    quantity: int | None = Field(
        default=None,
        ge=1,
        le=MAX_QUANTITY,
        description="The remaining quantity follows: new quantity minus what is committed",
    )
    quantity_unit: str | None = Field(default=None, min_length=1, max_length=20)
    available_from: date | None = None
    available_to: date | None = None
    weekdays: list[int] | None = Field(
        default=None, min_length=1, max_length=7, description=WEEKDAYS_DESCRIPTION
    )
    location: Location | None = None
    serves_radius_km: float | None = Field(default=None, ge=0, le=20000)
    year: int | None = Field(default=None, ge=2000, le=2100)
    external_ref: str | None = Field(default=None, min_length=1, max_length=100)

    _weekdays = field_validator("weekdays")(_dedupe_weekdays)

    @field_validator("weekdays")
    @classmethod
    def _weekday_range(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(d < 1 or d > 7 for d in value):
            raise ValueError("weekdays run from 1 (Monday) to 7 (Sunday)")
        return value


class ResourceOut(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    unit_id: uuid.UUID | None
    provider_kind: ProviderKind
    provider_name: str
    grid_id: uuid.UUID | None
    category: ListCategory
    title: str
    description: str
    quantity: int
    quantity_unit: str
    remaining_quantity: int = Field(description="Not yet committed to projects; never below zero")
    available_from: date
    available_to: date
    weekdays: list[int]
    location: Location | None
    serves_radius_km: float | None
    year: int
    state: ResourceState
    state_reason: str | None = Field(description="Why it was last withdrawn")
    external_ref: str | None
    created_by: uuid.UUID | None
    version: int
    created_at: datetime
    updated_at: datetime


class StateReason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=500)


class RequiredReason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500, pattern=r"\S")


# --- needs ----------------------------------------------------------------------------------

RaisedVia = Literal["visit", "staff", "hotline"]


def _check_photos(value: list[str]) -> list[str]:
    for url in value:
        if len(url) > 500 or not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
            raise ValueError("photos are http(s) URLs of at most 500 characters")
    return value


class NeedCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    org_id: uuid.UUID = Field(description="The community (an organization at community level)")
    grid_id: uuid.UUID | None = Field(default=None, description="A grid cell of that community")
    category: ListCategory
    title: str = Title
    description: str = Description
    beneficiaries: int = Field(default=1, ge=0, le=1_000_000, description="How many people it concerns")
    urgency: Urgency = Urgency.normal
    wanted_from: date | None = Field(default=None, description="Default: today (Asia/Shanghai)")
    wanted_to: date | None = Field(default=None, description="Default: 31 December of the start year")
    location: Location | None = None
    source: RaisedVia | None = Field(
        default=None,
        description="`visit` (走访: a grid worker, in a cell assigned to them; photos, location and grid "
        "required), `staff`, or `hotline` (API clients only). Default: hotline for API clients, staff for "
        "staff, visit for grid workers",
    )
    year: int | None = Year
    photos: list[str] = Field(
        default_factory=list, max_length=MAX_PHOTOS, description="Photo URLs (http or https)"
    )
    external_ref: str | None = ExternalRef
    allow_duplicate: bool = Field(
        default=False, description="Store it even though similar open needs exist nearby"
    )
    duplicate_of_id: uuid.UUID | None = Field(
        default=None, description="The open need this one repeats: it is stored linked to it"
    )

    @field_validator("photos")
    @classmethod
    def _photo_urls(cls, value: list[str]) -> list[str]:
        return _check_photos(value)


class NeedUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grid_id: uuid.UUID | None = None
    category: ListCategory | None = None
    title: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"\S")
    description: str | None = Field(default=None, max_length=5000)
    beneficiaries: int | None = Field(default=None, ge=0, le=1_000_000)
    urgency: Urgency | None = None
    wanted_from: date | None = None
    wanted_to: date | None = None
    location: Location | None = None
    year: int | None = Field(default=None, ge=2000, le=2100)
    photos: list[str] | None = Field(default=None, max_length=MAX_PHOTOS)
    external_ref: str | None = Field(default=None, min_length=1, max_length=100)

    @field_validator("photos")
    @classmethod
    def _photo_urls(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_photos(value)


class NeedOut(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    grid_id: uuid.UUID | None
    category: ListCategory
    title: str
    description: str
    beneficiaries: int
    urgency: Urgency
    wanted_from: date
    wanted_to: date
    location: Location | None
    source: NeedSource
    year: int
    state: NeedState
    external_ref: str | None
    photos: list[str]
    duplicate_of_id: uuid.UUID | None = Field(description="The open need this one repeats, if linked")
    raised_by: uuid.UUID | None = Field(description="The user or API client that raised it")
    state_reason: str | None = Field(description="Why it last changed state, when given")
    state_changed_by: uuid.UUID | None
    state_changed_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime


class NeedCandidate(BaseModel):
    """An open need a new one may repeat."""

    id: uuid.UUID
    title: str
    state: NeedState
    grid_id: uuid.UUID | None
    created_at: datetime
    score: float = Field(description="Text similarity, 0 … 1")
    distance_m: float | None = Field(description="Metres between the two locations, when both have one")


class SimilarNeeds(BaseModel):
    items: list[NeedCandidate] = Field(description="Most similar first")
