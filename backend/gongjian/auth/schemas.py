from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gongjian.core.access import CLIENT_SCOPES, Role


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str | None = Field(
        default=None, description="Rotating refresh token (password and refresh grants only)"
    )
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires")
    scope: str | None = Field(default=None, description="Granted scopes, space-separated (API clients)")


class LogoutRequest(BaseModel):
    refresh_token: str | None = Field(default=None, max_length=200)


class GrantOut(BaseModel):
    role: Role
    org_id: uuid.UUID | None
    unit_id: uuid.UUID | None


class MeOut(BaseModel):
    id: uuid.UUID
    kind: str
    name: str
    roles: list[str]
    grants: list[GrantOut]
    permissions: list[str]


ClientScope = Literal[
    "organizations:read",
    "units:read",
    "grids:read",
    "members:read",
    "lists:read",
    "lists:write",
    "stats:read",
]


class ApiClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    scopes: list[ClientScope] = Field(min_length=1, max_length=len(CLIENT_SCOPES))
    org_id: uuid.UUID = Field(description="The organization subtree the client may reach")


class ApiClientOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    client_id: str
    scopes: list[str]
    org_id: uuid.UUID
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiClientCreated(ApiClientOut):
    client_secret: str = Field(description="Shown only once; store it now")
