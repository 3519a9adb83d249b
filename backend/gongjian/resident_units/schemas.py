from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from gongjian.resident_units.models import PartyOrgMode, UnitType

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
# Length and alphabet are checked by the service (GB 32100), answering `invalid_credit_code`;
# the cap here only keeps absurd input out.
CreditCode = Annotated[
    str,
    Field(
        min_length=1,
        max_length=50,
        description="Unified social credit code (统一社会信用代码, GB 32100), 18 characters; "
        "stored in upper case",
        examples=["91330100MA27XL1234"],
    ),
]
Lat = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False, description="WGS-84 latitude")]
Lng = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False, description="WGS-84 longitude")]
Phone = Annotated[str, Field(max_length=30, pattern=r"^[0-9+\- ]{5,30}$")]

# Columns that cannot be cleared with an explicit null in a PATCH.
_NOT_NULL = ("name", "type", "credit_code", "community_id", "party_org_mode")


class ResidentUnitCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    type: UnitType
    credit_code: CreditCode
    community_id: uuid.UUID = Field(description="The community (level `community`) the unit sits in")
    address: str | None = Field(default=None, max_length=200)
    lat: Lat | None = None
    lng: Lng | None = None
    party_org_mode: PartyOrgMode = Field(
        default=PartyOrgMode.none,
        description="`none`, or how the unit's party org is formed: "
        "single 单独组建, joint 联合, attached 挂靠",
    )
    party_org_id: uuid.UUID | None = Field(
        default=None, description="The unit's party organization; required unless party_org_mode is `none`"
    )
    contact_name: str | None = Field(default=None, max_length=50)
    contact_phone: Phone | None = None
    description: str | None = Field(default=None, max_length=2000)
    external_ref: str | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _location_pair(self) -> ResidentUnitCreate:
        if (self.lat is None) != (self.lng is None):
            raise ValueError("lat and lng go together")
        return self


class ResidentUnitUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    type: UnitType | None = None
    credit_code: CreditCode | None = None
    community_id: uuid.UUID | None = Field(default=None, description="Move the unit to another community")
    address: str | None = Field(default=None, max_length=200)
    lat: Lat | None = None
    lng: Lng | None = None
    party_org_mode: PartyOrgMode | None = None
    party_org_id: uuid.UUID | None = None
    contact_name: str | None = Field(default=None, max_length=50)
    contact_phone: Phone | None = None
    description: str | None = Field(default=None, max_length=2000)
    external_ref: str | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _no_null_for_required(self) -> ResidentUnitUpdate:
        nulled = [f for f in _NOT_NULL if f in self.model_fields_set and getattr(self, f) is None]
        if nulled:
            raise ValueError(f"may not be null: {', '.join(nulled)}")
        return self


class ResidentUnitOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    type: UnitType
    credit_code: str
    address: str | None
    lat: float | None
    lng: float | None
    community_id: uuid.UUID
    party_org_mode: PartyOrgMode
    party_org_id: uuid.UUID | None
    contact_name: str | None
    contact_phone: str | None
    description: str | None
    external_ref: str | None
    version: int
    created_at: datetime
    updated_at: datetime


class LiaisonOut(BaseModel):
    """A user holding the unit_liaison role on the unit."""

    user_id: uuid.UUID
    username: str
    display_name: str
    is_active: bool
    assignment_id: uuid.UUID
    assigned_at: datetime


class CreditCodeCheck(BaseModel):
    valid: bool = Field(
        description="Whether the code is well formed and its GB 32100 check character matches"
    )
    normalized: str = Field(description="The code as it would be stored (trimmed, upper case)")
