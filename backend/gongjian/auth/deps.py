"""Who is calling: the bearer token turned into a Principal, once per request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from gongjian.auth.service import load_principal
from gongjian.core.access import Principal
from gongjian.core.db import SessionDep
from gongjian.core.errors import ProblemError
from gongjian.core.security import decode_access_token

oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/token",
    auto_error=False,
    scopes={
        "lists:read": "Read the three lists",
        "lists:write": "Write needs and resources",
        "stats:read": "Read dashboard figures",
        "organizations:read": "Read the organization tree",
        "grids:read": "Read grid cells",
        "units:read": "Read resident units",
        "members:read": "Read members (masked)",
    },
)


async def current_principal(
    request: Request, session: SessionDep, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> Principal:
    if not token:
        raise ProblemError("not_authenticated", headers={"WWW-Authenticate": "Bearer"})
    claims = decode_access_token(token)
    principal = await load_principal(session, claims)
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
