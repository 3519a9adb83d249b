from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from gongjian.core.access import Role

Phone = Field(default=None, pattern=r"^1[3-9]\d{9}$", description="Mainland mobile number")


class RoleAssignmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    org_id: uuid.UUID | None = Field(default=None, description="Subtree root (required except for liaisons)")
    unit_id: uuid.UUID | None = Field(default=None, description="The resident unit, for unit_liaison")


class RoleAssignmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    role: Role
    org_id: uuid.UUID | None
    unit_id: uuid.UUID | None
    created_at: datetime


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=3, max_length=50, pattern=r"^[A-Za-z0-9_.-]+$")
    display_name: str = Field(min_length=1, max_length=50)
    password: str = Field(min_length=8, max_length=128)
    phone: str | None = Phone
    role_assignments: list[RoleAssignmentIn] = Field(min_length=1, max_length=20)


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    display_name: str | None = Field(default=None, min_length=1, max_length=50)
    phone: str | None = Phone
    is_active: bool | None = None


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(min_length=1, max_length=128)
    new_password: str = Field(min_length=8, max_length=128)


class UserOut(BaseModel):
    id: uuid.UUID
    username: str
    display_name: str
    phone: str | None = Field(description="Masked")
    is_active: bool
    last_login_at: datetime | None
    created_at: datetime
    version: int
    role_assignments: list[RoleAssignmentOut]
