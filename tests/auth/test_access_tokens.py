"""Access tokens on a protected endpoint: every kind of bad token is a 401 problem+json, never a 500."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from jose import jwt
from sqlalchemy import delete, update

from gongjian.auth.models import RoleAssignment, User
from gongjian.core.config import get_settings
from gongjian.core.security import create_access_token
from tests.auth.helpers import assert_problem, bearer
from tests.factories import World

ME = "/api/v1/auth/me"


def _b64(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _claims(world: World, **override: Any) -> dict[str, Any]:
    settings = get_settings()
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": str(world.users["secretary"].id),
        "kind": "user",
        "roles": ["org_admin"],
        "iat": now,
        "exp": now + 600,
    }
    claims.update(override)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(claims: dict[str, Any], key: str | None = None, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key or get_settings().signing_key, algorithm=algorithm)


def _flip_last(segment: str) -> str:
    return segment[:-2] + ("A" if segment[-2] != "A" else "B") + segment[-1]


def _tampered_signature(w: World) -> str:
    head, payload, sig = _signed(_claims(w)).split(".")
    return ".".join([head, payload, _flip_last(sig)])


def _tampered_payload(w: World) -> str:
    head, _, sig = _signed(_claims(w)).split(".")
    return ".".join([head, _b64(_claims(w, sub=str(w.users["admin"].id), roles=["platform_admin"])), sig])


def _alg_none(w: World) -> str:
    return ".".join([_b64({"alg": "none", "typ": "JWT"}), _b64(_claims(w)), ""])


def _alg_none_with_signature(w: World) -> str:
    _head, payload, sig = _signed(_claims(w)).split(".")
    return ".".join([_b64({"alg": "none", "typ": "JWT"}), payload, sig])


BAD_TOKENS: dict[str, Callable[[World], str]] = {
    "garbage": lambda w: "garbage",
    "three dots of nothing": lambda w: "..",
    "tampered signature": _tampered_signature,
    "tampered payload": _tampered_payload,
    "junk after the signature": lambda w: _signed(_claims(w)) + "~",
    "expired": lambda w: _signed(_claims(w, iat=int(time.time()) - 1000, exp=int(time.time()) - 10)),
    "wrong audience": lambda w: _signed(_claims(w, aud="another-api")),
    "wrong issuer": lambda w: _signed(_claims(w, iss="someone-else")),
    "no expiry": lambda w: _signed(_claims(w, exp=None)),
    "no subject": lambda w: _signed(_claims(w, sub=None)),
    "no audience": lambda w: _signed(_claims(w, aud=None)),
    "subject not a uuid": lambda w: _signed(_claims(w, sub="secretary")),
    "unknown subject": lambda w: _signed(_claims(w, sub=str(uuid.uuid4()))),
    "unknown kind": lambda w: _signed(_claims(w, kind="root")),
    "user id as a client": lambda w: _signed(_claims(w, kind="client", scope="organizations:read")),
    "alg none": _alg_none,
    "alg none with a signature": _alg_none_with_signature,
    "HS512 with the right key": lambda w: _signed(_claims(w), algorithm="HS512"),
    "signed with another key": lambda w: _signed(_claims(w), key="another-key-" + "z" * 40),
    "header not an object": lambda w: ".".join([_b64([1]), _b64(_claims(w)), "abc"]),
    "payload not an object": lambda w: _signed(_claims(w)).split(".")[0] + "." + _b64([1]) + ".abc",
    "very long": lambda w: "a" * 5000 + ".b.c",
}


@pytest.mark.parametrize("name", sorted(BAD_TOKENS))
async def test_bad_token_is_401(client, world: World, name: str):
    r = await client.get(ME, headers=bearer(BAD_TOKENS[name](world)))
    assert_problem(r, 401, "invalid_token")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["detail"] == "令牌无效或已过期"


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer ", "Basic c2VjcmV0YXJ5OkRlbW9AMjAyNg==", "Token abc", "bearer"],
)
async def test_missing_token_is_401(client, world: World, header: str | None):
    r = await client.get(ME, headers={"Authorization": header} if header is not None else {})
    body = assert_problem(r, 401, "not_authenticated")
    assert r.headers["www-authenticate"] == "Bearer"
    assert body["instance"] == ME


async def test_the_good_token_works(client, world: World):
    r = await client.get(ME, headers=bearer(_signed(_claims(world))))
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "secretary"
    r = await client.get(ME, headers={"Authorization": "bearer " + _signed(_claims(world))})
    assert r.status_code == 200  # the scheme is case-insensitive


async def test_token_of_a_deleted_user_is_401(client, world: World, session):
    token = world.tokens["staff"]
    assert (await client.get(ME, headers=bearer(token))).status_code == 200
    await session.execute(delete(User).where(User.id == world.users["staff"].id))
    await session.commit()
    assert_problem(await client.get(ME, headers=bearer(token)), 401, "invalid_token")


async def test_token_of_a_disabled_user_is_401(client, world: World, session):
    token = world.tokens["staff"]
    await session.execute(update(User).where(User.id == world.users["staff"].id).values(is_active=False))
    await session.commit()
    assert_problem(await client.get(ME, headers=bearer(token)), 401, "invalid_token")
    r = await client.get(f"/api/v1/organizations/{world.orgs['a1'].id}", headers=bearer(token))
    assert_problem(r, 401, "invalid_token")


async def test_roles_come_from_the_database_not_the_token(client, world: World, session):
    # A token claiming platform_admin gives nothing beyond what the user holds now.
    token, _ = create_access_token(
        subject=str(world.users["staff"].id), kind="user", roles=["platform_admin"]
    )
    r = await client.get(f"/api/v1/organizations/{world.orgs['b1'].id}", headers=bearer(token))
    assert_problem(r, 404, "not_found")
    # A withdrawn role stops working at once, with the same token.
    await session.execute(delete(RoleAssignment).where(RoleAssignment.user_id == world.users["staff"].id))
    await session.commit()
    me = await client.get(ME, headers=bearer(token))
    assert me.status_code == 200 and me.json()["roles"] == []
    r = await client.get(f"/api/v1/organizations/{world.orgs['a1'].id}", headers=bearer(token))
    assert_problem(r, 403, "forbidden")
