from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from gongjian.organizations.models import OrgKind, OrgLevel

Name = Field(min_length=1, max_length=100)


class OrganizationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Name
    kind: OrgKind
    parent_id: uuid.UUID | None = Field(
        description="The parent organization; null only for a county committee"
    )
    level: OrgLevel = OrgLevel.other
    short_name: str | None = Field(default=None, max_length=50)
    code: str | None = Field(default=None, max_length=50, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = Field(default=None, max_length=2000)
    address: str | None = Field(default=None, max_length=200)
    contact_phone: str | None = Field(default=None, max_length=30, pattern=r"^[0-9+\- ]{5,30}$")
    established_on: date | None = None
    external_ref: str | None = Field(default=None, max_length=100)


class OrganizationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=100)
    level: OrgLevel | None = None
    short_name: str | None = Field(default=None, max_length=50)
    code: str | None = Field(default=None, max_length=50, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = Field(default=None, max_length=2000)
    address: str | None = Field(default=None, max_length=200)
    contact_phone: str | None = Field(default=None, max_length=30, pattern=r"^[0-9+\- ]{5,30}$")
    established_on: date | None = None
    external_ref: str | None = Field(default=None, max_length=100)


class OrganizationMove(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parent_id: uuid.UUID = Field(description="The new parent")


class OrganizationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    parent_id: uuid.UUID | None
    kind: OrgKind
    level: OrgLevel
    name: str
    short_name: str | None
    code: str | None
    description: str | None
    address: str | None
    contact_phone: str | None
    established_on: date | None
    external_ref: str | None
    depth: int
    version: int
    created_at: datetime
    updated_at: datetime


class OrganizationCounts(BaseModel):
    organization_id: uuid.UUID
    descendants: int = Field(description="Organizations below this one, at any depth")
    children: int
    by_kind: dict[str, int]
    resident_units: int = 0
    grid_cells: int = 0
    members: int = 0


class CommitteeMemberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=50)
    position: str = Field(min_length=1, max_length=50, description="e.g. 兼职委员")
    resident_unit_id: uuid.UUID | None = None
    unit_position: str | None = Field(default=None, max_length=50)
    term_start: date | None = None
    term_end: date | None = None


class CommitteeMemberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    organization_id: uuid.UUID
    name: str
    position: str
    resident_unit_id: uuid.UUID | None
    unit_position: str | None
    term_start: date | None
    term_end: date | None
    created_at: datetime
