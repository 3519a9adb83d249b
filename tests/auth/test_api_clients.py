"""API clients for third-party systems: registered by org admins in their subtree, the secret
shown once, the client-credentials grant, scopes that limit the token, revocation."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from sqlalchemy import func, select

from gongjian.auth.models import ApiClient
from gongjian.core.audit import AuditEntry
from gongjian.core.security import decode_access_token
from tests.auth.helpers import TOKEN_URL, assert_problem, bearer
from tests.factories import World

API = "/api/v1/api-clients"


async def register(
    client: httpx.AsyncClient, world: World, scopes: list[str], who: str = "secretary", org: str = "a1"
) -> dict[str, Any]:
    r = await client.post(
        API,
        headers=world.h(who),
        json={"name": "12345热线", "scopes": scopes, "org_id": str(world.orgs[org].id)},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def client_token(
    client: httpx.AsyncClient, registered: dict[str, Any], scope: str = ""
) -> httpx.Response:
    return await client.post(
        TOKEN_URL,
        data={
            "grant_type": "client_credentials",
            "client_id": registered["client_id"],
            "client_secret": registered["client_secret"],
            "scope": scope,
        },
    )


async def access(client: httpx.AsyncClient, registered: dict[str, Any], scope: str = "") -> dict[str, str]:
    r = await client_token(client, registered, scope)
    assert r.status_code == 200, r.text
    return bearer(r.json()["access_token"])


async def test_register_shows_the_secret_once(client, world: World, session):
    created = await register(client, world, ["lists:read", "organizations:read"])
    assert created["client_id"].startswith("gjc_") and len(created["client_secret"]) >= 40
    assert created["scopes"] == ["lists:read", "organizations:read"]
    assert created["org_id"] == str(world.orgs["a1"].id) and created["revoked_at"] is None
    # Afterwards: neither the list nor the object carries the secret, and only its hash is stored.
    one = await client.get(f"{API}/{created['id']}", headers=world.h("secretary"))
    assert one.status_code == 200, one.text
    listed = await client.get(API, headers=world.h("secretary"))
    assert [c["id"] for c in listed.json()["items"]] == [created["id"]]
    for text in (one.text, listed.text):
        assert created["client_secret"] not in text and "secret" not in text
    stored = (await session.execute(select(ApiClient))).scalar_one()
    assert stored.secret_hash.startswith("$argon2id$")
    assert created["client_secret"] not in stored.secret_hash
    entry = (
        await session.execute(select(AuditEntry).where(AuditEntry.action == "api_client.create"))
    ).scalar_one()
    assert entry.org_id == world.orgs["a1"].id and created["client_secret"] not in str(entry.after)


async def test_register_refusals(client, world: World, session):
    body = {"name": "x", "scopes": ["lists:read"], "org_id": str(world.orgs["b1"].id)}
    assert_problem(await client.post(API, headers=world.h("secretary"), json=body), 404, "not_found")
    body["org_id"] = str(world.orgs["a1"].id)
    for who in ("staff", "street", "gridworker", "liaison", "member", "resident"):
        assert_problem(await client.post(API, headers=world.h(who), json=body), 403, "forbidden")
    for scopes in (["lists:delete"], ["users:write"], ["api_clients:write"], [], ["lists:read", 3]):
        r = await client.post(API, headers=world.h("secretary"), json={**body, "scopes": scopes})
        assert_problem(r, 422, "validation_error")
    r = await client.post(API, headers=world.h("secretary"), json={**body, "secret": "mine"})
    assert_problem(r, 422, "validation_error")
    assert (await session.execute(select(func.count()).select_from(ApiClient))).scalar_one() == 0


async def test_client_credentials_grant(client, world: World):
    created = await register(client, world, ["lists:read", "organizations:read"])
    r = await client_token(client, created)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 900
    assert body["refresh_token"] is None
    assert body["scope"] == "lists:read organizations:read"
    claims = decode_access_token(body["access_token"])
    assert claims["kind"] == "client" and claims["sub"] == created["id"]
    # HTTP Basic authentication of the client works as well (RFC 6749 §2.3.1).
    basic = base64.b64encode(f"{created['client_id']}:{created['client_secret']}".encode()).decode()
    r = await client.post(
        TOKEN_URL, data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"}
    )
    assert r.status_code == 200, r.text
    me = await client.get("/api/v1/auth/me", headers=bearer(r.json()["access_token"]))
    assert me.json()["kind"] == "client"
    assert me.json()["permissions"] == ["lists:read", "organizations:read"]


async def test_wrong_credentials(client, world: World):
    created = await register(client, world, ["lists:read"])
    wrong = {**created, "client_secret": created["client_secret"][:-1] + "x"}
    body = assert_problem(await client_token(client, wrong), 401, "invalid_client")
    assert body["detail"] == "客户端凭据无效"
    unknown = {**created, "client_id": "gjc_nobody"}
    assert_problem(await client_token(client, unknown), 401, "invalid_client")
    r = await client.post(
        TOKEN_URL, data={"grant_type": "client_credentials", "client_id": created["client_id"]}
    )
    assert_problem(r, 401, "invalid_client")
    for header in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()):
        r = await client.post(
            TOKEN_URL, data={"grant_type": "client_credentials"}, headers={"Authorization": header}
        )
        assert_problem(r, 401, "invalid_client")
    # A client cannot use the password or refresh grants.
    r = await client.post(
        TOKEN_URL, data={"username": created["client_id"], "password": created["client_secret"]}
    )
    assert_problem(r, 401, "invalid_credentials")


async def test_scopes_limit_the_token(client, world: World, session):
    lists_only = await access(client, await register(client, world, ["lists:read"]))
    a1, a1_branch, b1 = (str(world.orgs[k].id) for k in ("a1", "a1_branch", "b1"))
    # lists:read gives no right on organizations: creating is 403, reading its own subtree is 403,
    # and what lies outside the client's subtree does not exist for it.
    r = await client.post(
        "/api/v1/organizations",
        headers=lists_only,
        json={"name": "第三方支部", "kind": "branch", "parent_id": a1},
    )
    assert_problem(r, 403, "forbidden")
    assert_problem(await client.get(f"/api/v1/organizations/{a1}", headers=lists_only), 403, "forbidden")
    assert_problem(await client.get(f"/api/v1/organizations/{b1}", headers=lists_only), 403, "forbidden")
    # With organizations:read it reads its own subtree only.
    reader = await access(client, await register(client, world, ["organizations:read", "lists:read"]))
    for org_id in (a1, a1_branch):
        assert (await client.get(f"/api/v1/organizations/{org_id}", headers=reader)).status_code == 200
    for org in ("b1", "b1_branch", "street_a", "county"):
        r = await client.get(f"/api/v1/organizations/{world.orgs[org].id}", headers=reader)
        assert_problem(r, 404, "not_found")
    listed = await client.get("/api/v1/organizations", headers=reader, params={"limit": 100})
    assert sorted(o["id"] for o in listed.json()["items"]) == sorted([a1, a1_branch])
    # Reading is all it may do; nor does it reach users, clients or the audit log.
    r = await client.patch(f"/api/v1/organizations/{a1}", headers=reader, json={"name": "改名"})
    assert_problem(r, 403, "forbidden")
    for path in ("/api/v1/users", API, "/api/v1/audit-log"):
        assert_problem(await client.get(path, headers=reader), 403, "forbidden")
    r = await client.post(API, headers=reader, json={"name": "x", "scopes": ["lists:read"], "org_id": a1})
    assert_problem(r, 403, "forbidden")


async def test_requested_scope_subset(client, world: World):
    created = await register(client, world, ["organizations:read", "lists:read"])
    r = await client_token(client, created, scope="lists:read")
    assert r.status_code == 200 and r.json()["scope"] == "lists:read"
    narrow = bearer(r.json()["access_token"])
    a1 = world.orgs["a1"].id
    assert_problem(await client.get(f"/api/v1/organizations/{a1}", headers=narrow), 403, "forbidden")
    wide = await access(client, created, scope="organizations:read lists:read")
    assert (await client.get(f"/api/v1/organizations/{a1}", headers=wide)).status_code == 200
    # More than the client holds, or a scope that does not exist: refused, not silently narrowed.
    for scope in ("organizations:read members:read", "users:write", "lists:read nonsense"):
        body = assert_problem(await client_token(client, created, scope=scope), 400, "invalid_scope")
        assert body["detail"].startswith("申请的权限范围无效")


async def test_revoked_client_stops_at_once(client, world: World, session):
    created = await register(client, world, ["organizations:read"])
    h = await access(client, created)
    a1 = world.orgs["a1"].id
    assert (await client.get(f"/api/v1/organizations/{a1}", headers=h)).status_code == 200
    # Another admin's client is out of reach.
    assert_problem(
        await client.delete(f"{API}/{created['id']}", headers=world.h("secretary2")), 404, "not_found"
    )
    assert_problem(
        await client.get(f"{API}/{created['id']}", headers=world.h("secretary2")), 404, "not_found"
    )
    assert_problem(await client.delete(f"{API}/{created['id']}", headers=world.h("staff")), 403, "forbidden")
    r = await client.delete(f"{API}/{created['id']}", headers=world.h("secretary"))
    assert r.status_code == 204, r.text
    assert_problem(await client.get(f"/api/v1/organizations/{a1}", headers=h), 401, "invalid_token")
    assert_problem(await client_token(client, created), 401, "invalid_client")
    shown = (await client.get(f"{API}/{created['id']}", headers=world.h("secretary"))).json()
    assert shown["revoked_at"] is not None
    # Revoking again is harmless.
    assert (await client.delete(f"{API}/{created['id']}", headers=world.h("secretary"))).status_code == 204
    actions = (await session.execute(select(AuditEntry.action).order_by(AuditEntry.at))).scalars().all()
    assert actions.count("api_client.revoke") == 1


async def test_clients_are_listed_within_scope(client, world: World):
    mine = await register(client, world, ["lists:read"])
    theirs = await register(client, world, ["lists:read"], who="secretary2", org="b1")
    root = await register(client, world, ["stats:read"], who="admin", org="county")
    seen: dict[str, set[str]] = {}
    for who in ("secretary", "secretary2", "admin"):
        r = await client.get(API, headers=world.h(who))
        assert r.status_code == 200, r.text
        seen[who] = {c["id"] for c in r.json()["items"]}
    assert seen["secretary"] == {mine["id"]}
    assert seen["secretary2"] == {theirs["id"]}
    assert seen["admin"] == {mine["id"], theirs["id"], root["id"]}
    assert_problem(await client.get(API, headers=world.h("staff")), 403, "forbidden")
