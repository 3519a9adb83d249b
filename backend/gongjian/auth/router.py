from __future__ import annotations

import base64
import uuid
from typing import Annotated
from urllib.parse import unquote

from fastapi import APIRouter, Form, Header, Response, status
from sqlalchemy import select

from gongjian.auth import service
from gongjian.auth.deps import CurrentPrincipal
from gongjian.auth.models import ApiClient
from gongjian.auth.schemas import (
    ApiClientCreate,
    ApiClientCreated,
    ApiClientOut,
    GrantOut,
    LogoutRequest,
    MeOut,
    TokenResponse,
)
from gongjian.core.access import Perm, get_visible, require, visible
from gongjian.core.db import SessionDep
from gongjian.core.errors import ProblemError, problem_responses
from gongjian.core.pagination import Page, PageParamsDep, paginate

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
clients_router = APIRouter(prefix="/api/v1/api-clients", tags=["api-clients"])


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """client_id and secret from `Authorization: Basic ...` (RFC 6749 §2.3.1), if sent."""
    if not authorization or authorization[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise ProblemError("invalid_client", headers={"WWW-Authenticate": "Basic"}) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise ProblemError("invalid_client", headers={"WWW-Authenticate": "Basic"})
    return unquote(client_id), unquote(secret)


@router.post(
    "/token",
    response_model=TokenResponse,
    summary="Get tokens (OAuth2 password, refresh_token or client_credentials grant)",
    description=(
        "Form-encoded, as OAuth2 says. `password` (the default): `username` (or the phone number) and "
        "`password`; 5 failures within 15 minutes lock the account for 15 minutes (423, `Retry-After`). "
        "`refresh_token`: a rotating refresh token; presenting a used one revokes its whole family. "
        "`client_credentials`: `client_id` and `client_secret` (or HTTP Basic), optional `scope` (a "
        "subset of the client's scopes)."
    ),
    responses=problem_responses(400, 401, 403, 422, 423),
)
async def token(
    session: SessionDep,
    grant_type: Annotated[str, Form(max_length=40)] = "password",
    username: Annotated[str | None, Form(max_length=50)] = None,
    password: Annotated[str | None, Form(max_length=128)] = None,
    refresh_token: Annotated[str | None, Form(max_length=200)] = None,
    client_id: Annotated[str | None, Form(max_length=64)] = None,
    client_secret: Annotated[str | None, Form(max_length=128)] = None,
    scope: Annotated[str, Form(max_length=500)] = "",
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> TokenResponse:
    if grant_type == "password":
        if not username or not password:
            raise ProblemError("invalid_credentials")
        user = await service.authenticate(session, username, password)
        pair = await service.issue_tokens(session, user)
    elif grant_type == "refresh_token":
        if not refresh_token:
            raise ProblemError("invalid_grant")
        pair = await service.rotate_refresh_token(session, refresh_token)
    elif grant_type == "client_credentials":
        basic = _basic_credentials(authorization)
        if basic is not None:
            client_id, client_secret = basic
        if not client_id or not client_secret or len(client_id) > 64 or len(client_secret) > 128:
            raise ProblemError("invalid_client", headers={"WWW-Authenticate": "Basic"})
        client = await service.authenticate_client(session, client_id, client_secret)
        pair = service.issue_client_token(client, scope.split() or None)
    else:
        raise ProblemError("unsupported_grant_type")
    return TokenResponse(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
        scope=pair.scope,
    )


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke the refresh token family (or all of the user's sessions)",
    responses=problem_responses(401, 422),
)
async def logout(
    session: SessionDep, principal: CurrentPrincipal, body: LogoutRequest | None = None
) -> Response:
    await service.logout(session, principal, body.refresh_token if body else None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/me", response_model=MeOut, summary="Who am I: roles and scopes", responses=problem_responses(401)
)
async def me(principal: CurrentPrincipal) -> MeOut:
    perms = sorted({p.value for g in principal.grants for p in g.perms})
    return MeOut(
        id=principal.id,
        kind=principal.kind,
        name=principal.name,
        roles=principal.roles,
        grants=[GrantOut(role=g.role, org_id=g.org_id, unit_id=g.unit_id) for g in principal.grants],
        permissions=perms,
    )


@clients_router.post(
    "",
    response_model=ApiClientCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Register an API client (the secret is shown once)",
    description="Org admins register clients on an organization in their subtree, with scopes they hold "
    "there. `client_secret` is in this answer only; afterwards only its hash is kept.",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_api_client(
    session: SessionDep, principal: CurrentPrincipal, body: ApiClientCreate, response: Response
) -> ApiClientCreated:
    client, secret = await service.create_api_client(
        session, principal, name=body.name, scopes=list(body.scopes), org_id=body.org_id
    )
    response.headers["Location"] = f"{clients_router.prefix}/{client.id}"
    return ApiClientCreated(**ApiClientOut.model_validate(client).model_dump(), client_secret=secret)


@clients_router.get(
    "",
    response_model=Page[ApiClientOut],
    summary="List API clients in scope",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_api_clients(
    session: SessionDep, principal: CurrentPrincipal, page: PageParamsDep
) -> Page[ApiClientOut]:
    require(principal, Perm.clients_write)
    stmt = visible(select(ApiClient), ApiClient, principal, Perm.clients_write)
    rows, cursor = await paginate(session, stmt, ApiClient, page)
    return Page(items=[ApiClientOut.model_validate(r) for r in rows], next_cursor=cursor)


@clients_router.get(
    "/{client_id}",
    response_model=ApiClientOut,
    summary="Get an API client (never its secret)",
    responses=problem_responses(401, 403, 404),
)
async def get_api_client(
    session: SessionDep, principal: CurrentPrincipal, client_id: uuid.UUID
) -> ApiClientOut:
    client = await get_visible(
        session, ApiClient, client_id, principal, Perm.clients_write, name="api_client"
    )
    return ApiClientOut.model_validate(client)


@clients_router.delete(
    "/{client_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API client (its tokens stop working at once)",
    responses=problem_responses(401, 403, 404),
)
async def revoke_api_client(
    session: SessionDep, principal: CurrentPrincipal, client_id: uuid.UUID
) -> Response:
    client = await get_visible(
        session, ApiClient, client_id, principal, Perm.clients_write, name="api_client"
    )
    await service.revoke_api_client(session, principal, client)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
