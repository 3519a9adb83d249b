"""Cursor pagination: a capped page size, opaque cursors that are checked, and every row once."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from gongjian.organizations.models import OrgKind
from tests.auth.helpers import assert_problem
from tests.factories import World, make_org


def _cursor(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "path", ["/api/v1/organizations", "/api/v1/users", "/api/v1/audit-log", "/api/v1/api-clients"]
)
async def test_limit_over_the_cap_is_422(client, world: World, path: str):
    for limit in ("101", "0", "-1", "1e3", "x"):
        r = await client.get(path, headers=world.h("admin"), params={"limit": limit})
        body = assert_problem(r, 422, "validation_error")
        assert body["errors"][0]["loc"] == ["query", "limit"]
    assert (await client.get(path, headers=world.h("admin"), params={"limit": "100"})).status_code == 200


BAD_CURSORS = [
    "garbage!",
    "%%%",
    _cursor(b"\xff\xfe"),
    _cursor(b"not json"),
    _cursor(5),
    _cursor({"a": 1}),
    _cursor(["2026-01-01T00:00:00+00:00"]),
    _cursor(["yesterday", str(uuid.uuid4())]),
    _cursor(["2026-01-01T00:00:00+00:00", "not-a-uuid"]),
    _cursor([20260101, str(uuid.uuid4())]),
    _cursor(["2026-01-01T00:00:00+00:00", str(uuid.uuid4()), "extra"]),
]


@pytest.mark.parametrize("path", ["/api/v1/organizations", "/api/v1/users", "/api/v1/audit-log"])
@pytest.mark.parametrize("cursor", BAD_CURSORS)
async def test_bad_cursor_is_400(client, world: World, path: str, cursor: str):
    r = await client.get(path, headers=world.h("admin"), params={"cursor": cursor})
    assert_problem(r, 400, "invalid_cursor")


async def test_long_cursor_is_422(client, world: World):
    r = await client.get("/api/v1/organizations", headers=world.h("admin"), params={"cursor": "a" * 201})
    assert_problem(r, 422, "validation_error")


async def test_odd_but_well_formed_cursors_are_fine(client, world: World):
    # A cursor without a time zone, or from the far past or future, is still a position.
    for created in ("2026-01-01T00:00:00", "0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+00:00"):
        r = await client.get(
            "/api/v1/users",
            headers=world.h("admin"),
            params={"cursor": _cursor([created, str(uuid.uuid4())])},
        )
        assert r.status_code == 200, (created, r.text)


async def _walk(client, world: World, who: str, path: str, limit: int) -> list[str]:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        r = await client.get(path, headers=world.h(who), params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"items", "next_cursor"}
        assert len(body["items"]) <= limit
        seen.extend(item["id"] for item in body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
        assert pages < 100


async def test_walking_all_pages_returns_each_row_once(client, world: World, session):
    for i in range(23):
        await make_org(session, world.orgs["a1"], OrgKind.branch, f"东湖社区第{i + 2}党支部")
    await session.commit()
    for limit in (1, 4, 7, 100):
        ids = await _walk(client, world, "admin", "/api/v1/organizations", limit)
        assert len(ids) == len(set(ids)) == 8 + 23, limit
        scoped = await _walk(client, world, "secretary", "/api/v1/organizations", limit)
        assert len(scoped) == len(set(scoped)) == 2 + 23
    users = await _walk(client, world, "admin", "/api/v1/users", 2)
    assert sorted(users) == sorted(str(u.id) for u in world.users.values())
    # The audit log pages newest first and also returns each entry once.
    entries = await _walk(client, world, "admin", "/api/v1/audit-log", 5)
    assert len(entries) == len(set(entries)) >= 8 + 23


async def test_rows_added_while_walking_do_not_repeat_earlier_ones(client, world: World, session):
    first = await client.get("/api/v1/organizations", headers=world.h("admin"), params={"limit": 4})
    await make_org(session, world.orgs["a1"], OrgKind.branch, "新来的支部")
    await session.commit()
    rest = await _walk(client, world, "admin", "/api/v1/organizations", 100)
    page_one = [o["id"] for o in first.json()["items"]]
    r = await client.get(
        "/api/v1/organizations",
        headers=world.h("admin"),
        params={"limit": 100, "cursor": first.json()["next_cursor"]},
    )
    later = [o["id"] for o in r.json()["items"]]
    assert not set(page_one) & set(later)
    assert sorted(page_one + later) == sorted(rest)
