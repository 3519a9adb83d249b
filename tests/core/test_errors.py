"""Errors are RFC 9457 problem+json with a stable code, Chinese by default and English on request,
carrying the request id; bad input is a 4xx, never a 500."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from gongjian.auth.models import User
from gongjian.organizations.models import Organization
from tests.auth.helpers import assert_problem
from tests.factories import World

ORGS = "/api/v1/organizations"


async def _org_count(session) -> int:
    return (await session.execute(select(func.count()).select_from(Organization))).scalar_one()


async def test_malformed_json_is_400(client, world: World, session):
    before = await _org_count(session)
    for raw in (b'{"name": "x", ', b"not json", b'{"name": "\xff"}', b""):
        r = await client.post(
            ORGS, headers=world.h("secretary", **{"Content-Type": "application/json"}), content=raw
        )
        if raw == b"":
            # An empty body is a missing body: a validation error on the body itself.
            assert_problem(r, 422, "validation_error")
            continue
        body = assert_problem(r, 400, "malformed_request")
        assert body["detail"] == "请求格式错误"
        if raw != b'{"name": "\xff"}':  # not even text: no position to point at
            assert body["errors"][0]["type"] == "json_invalid"
    assert await _org_count(session) == before


async def test_wrong_types_are_422_with_field_errors(client, world: World, session):
    before = await _org_count(session)
    r = await client.post(
        ORGS,
        headers=world.h("secretary"),
        json={"name": ["list"], "kind": "emperor", "parent_id": "not-a-uuid"},
    )
    body = assert_problem(r, 422, "validation_error")
    locs = {tuple(e["loc"]) for e in body["errors"]}
    assert {("body", "name"), ("body", "kind"), ("body", "parent_id")} <= locs
    assert all(set(e) == {"loc", "msg", "type"} for e in body["errors"])
    # Oversize strings, wrong query types and path parameters are the same kind of answer.
    r = await client.post(
        ORGS,
        headers=world.h("secretary"),
        json={"name": "长" * 101, "kind": "branch", "parent_id": str(world.orgs["a1"].id)},
    )
    assert_problem(r, 422, "validation_error")
    assert_problem(
        await client.get(f"{ORGS}/not-a-uuid", headers=world.h("secretary")), 422, "validation_error"
    )
    assert_problem(
        await client.get("/api/v1/users", headers=world.h("secretary"), params={"limit": "ten"}), 422
    )
    assert await _org_count(session) == before


@pytest.mark.parametrize(
    ("accept_language", "english"),
    [
        (None, False),
        ("zh-CN,zh;q=0.9", False),
        ("en", True),
        ("en-US,en;q=0.9", True),
        ("fr-FR, en;q=0.5", True),
        ("zh-CN, en;q=0.8", False),
        ("en;q=0.2, zh;q=0.9", False),
        ("de", False),
        ("en;q=abc", False),
        ("*", False),
    ],
)
async def test_language(client, world: World, accept_language: str | None, english: bool):
    headers = world.h("secretary")
    if accept_language is not None:
        headers["Accept-Language"] = accept_language
    body = assert_problem(
        await client.get(f"{ORGS}/{world.orgs['b1'].id}", headers=headers), 404, "not_found"
    )
    assert body["detail"] == ("Organization not found" if english else "党组织不存在")
    assert body["title"] == "Not Found"  # the same for every occurrence of the type


async def test_request_id_is_echoed(client, world: World):
    r = await client.get(
        f"{ORGS}/{world.orgs['b1'].id}", headers=world.h("secretary", **{"X-Request-ID": "abc-123.X_y"})
    )
    assert r.headers["x-request-id"] == "abc-123.X_y"
    assert r.json()["request_id"] == "abc-123.X_y"
    # None sent: one is made up, the same in header and body.
    r = await client.get(f"{ORGS}/{world.orgs['b1'].id}", headers=world.h("secretary"))
    assert len(r.headers["x-request-id"]) == 32 and r.json()["request_id"] == r.headers["x-request-id"]
    # An unsafe one is replaced, not echoed.
    for unsafe in (b"a b", b"x" * 65, b"<script>", "é".encode()):
        r = await client.get("/api/v1/auth/me", headers={"X-Request-ID": unsafe})
        assert r.headers["x-request-id"].encode() != unsafe and len(r.headers["x-request-id"]) == 32
        assert r.json()["request_id"] == r.headers["x-request-id"]
    # Successful answers carry it too.
    r = await client.get("/api/v1/auth/me", headers=world.h("secretary", **{"X-Request-ID": "ok-1"}))
    assert r.status_code == 200 and r.headers["x-request-id"] == "ok-1"


async def test_request_id_lands_in_the_audit_log(client, world: World):
    r = await client.post(
        ORGS,
        headers=world.h("secretary", **{"X-Request-ID": "trace-42"}),
        json={"name": "东湖社区第二党支部", "kind": "branch", "parent_id": str(world.orgs["a1"].id)},
    )
    assert r.status_code == 201, r.text
    log = await client.get(
        "/api/v1/audit-log", headers=world.h("secretary"), params={"object_id": r.json()["id"]}
    )
    assert [e["request_id"] for e in log.json()["items"]] == ["trace-42"]


async def test_unknown_routes_and_methods(client, world: World):
    assert_problem(await client.get("/api/v1/nothing-here", headers=world.h("secretary")), 404, "not_found")
    r = await client.put(f"{ORGS}/{world.orgs['a1'].id}", headers=world.h("secretary"), json={})
    assert r.status_code == 405 and r.headers["content-type"].startswith("application/problem+json")


async def test_values_the_database_cannot_take_are_422(client, world: World, session):
    # A NUL character passes JSON and pydantic but not PostgreSQL text: still the client's fault.
    before = (await session.execute(select(func.count()).select_from(User))).scalar_one()
    r = await client.get("/api/v1/users", headers=world.h("secretary"), params={"q": "a\x00b"})
    assert_problem(r, 422, "validation_error")
    r = await client.post(
        "/api/v1/users",
        headers=world.h("secretary"),
        json={
            "username": "nul.user",
            "display_name": "a\x00b",
            "password": "Gongjian#2026",
            "role_assignments": [{"role": "org_staff", "org_id": str(world.orgs["a1"].id)}],
        },
    )
    assert_problem(r, 422, "validation_error")
    r = await client.post("/api/v1/auth/token", data={"username": "a\x00b", "password": "x"})
    assert r.status_code in (401, 422), r.text
    assert (await session.execute(select(func.count()).select_from(User))).scalar_one() == before
