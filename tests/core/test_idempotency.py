"""Idempotency-Key on creates: a retry replays the first answer, a different body with the same key
is refused, concurrent duplicates create one row, and a failed attempt releases the key."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select

from gongjian.core.idempotency import IdempotencyRecord
from gongjian.organizations.models import Organization
from tests.auth.helpers import assert_problem
from tests.factories import World

ORGS = "/api/v1/organizations"


def _branch(world: World, name: str = "东湖社区第二党支部", parent: str = "a1") -> dict[str, Any]:
    return {"name": name, "kind": "branch", "parent_id": str(world.orgs[parent].id)}


async def _named(session, name: str) -> int:
    stmt = select(func.count()).select_from(Organization).where(Organization.name == name)
    return (await session.execute(stmt)).scalar_one()


async def test_retry_replays_the_first_answer(client, world: World, session):
    h = world.h("secretary", **{"Idempotency-Key": "k-1"})
    first = await client.post(ORGS, headers=h, json=_branch(world))
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    second = await client.post(ORGS, headers=h, json=_branch(world))
    assert second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert second.headers["location"] == first.headers["location"]
    assert second.headers["etag"] == first.headers["etag"]
    assert second.headers["content-type"] == first.headers["content-type"]
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert await _named(session, "东湖社区第二党支部") == 1


async def test_same_key_different_body_is_422(client, world: World, session):
    h = world.h("secretary", **{"Idempotency-Key": "k-2"})
    assert (await client.post(ORGS, headers=h, json=_branch(world))).status_code == 201
    r = await client.post(ORGS, headers=h, json=_branch(world, "另一个支部"))
    body = assert_problem(r, 422, "idempotency_mismatch")
    assert "Idempotency-Key" in body["detail"]
    # Another path with the same key is another request too.
    r = await client.post(
        f"{ORGS}/{world.orgs['a1'].id}/committee-members",
        headers=h,
        json={"name": "张三", "position": "兼职委员"},
    )
    assert_problem(r, 422, "idempotency_mismatch")
    assert await _named(session, "另一个支部") == 0


async def test_concurrent_duplicates_create_one_row(client, client2, world: World, session):
    h = world.h("secretary", **{"Idempotency-Key": "k-3"})
    results = await asyncio.gather(
        *((client if i % 2 else client2).post(ORGS, headers=h, json=_branch(world)) for i in range(4))
    )
    statuses = [r.status_code for r in results]
    assert all(s in (201, 409) for s in statuses), [r.text for r in results]
    assert 201 in statuses
    for r in results:
        if r.status_code == 409:
            assert_problem(r, 409, "idempotency_in_progress")
        else:
            assert r.json()["name"] == "东湖社区第二党支部"
    assert len({r.json()["id"] for r in results if r.status_code == 201}) == 1
    assert await _named(session, "东湖社区第二党支部") == 1
    # Once the first has finished, a retry replays it.
    again = await client.post(ORGS, headers=h, json=_branch(world))
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"


async def test_a_failed_attempt_releases_the_key(client, world: World, session):
    h = world.h("secretary", **{"Idempotency-Key": "k-4"})
    # Out of scope (404), then bad input (422): neither is remembered.
    r = await client.post(ORGS, headers=h, json=_branch(world, parent="b1"))
    assert_problem(r, 404, "not_found")
    r = await client.post(ORGS, headers=h, json=_branch(world, parent="b1"))
    assert_problem(r, 404, "not_found")
    assert "idempotent-replayed" not in r.headers
    r = await client.post(ORGS, headers=h, json={"name": "x", "kind": "nonsense", "parent_id": None})
    assert_problem(r, 422, "validation_error")
    # The corrected request goes through with the same key.
    r = await client.post(ORGS, headers=h, json=_branch(world))
    assert r.status_code == 201, r.text
    assert "idempotent-replayed" not in r.headers
    assert (await session.execute(select(func.count()).select_from(IdempotencyRecord))).scalar_one() == 1


async def test_keys_belong_to_their_caller(client, world: World, session):
    r1 = await client.post(
        ORGS, headers=world.h("secretary", **{"Idempotency-Key": "shared"}), json=_branch(world, "甲支部")
    )
    r2 = await client.post(
        ORGS,
        headers=world.h("secretary2", **{"Idempotency-Key": "shared"}),
        json=_branch(world, "乙支部", parent="b1"),
    )
    assert r1.status_code == r2.status_code == 201
    assert "idempotent-replayed" not in r2.headers and r1.json()["id"] != r2.json()["id"]
    # An unauthenticated request never replays someone's answer.
    r = await client.post(ORGS, headers={"Idempotency-Key": "shared"}, json=_branch(world, "甲支部"))
    assert_problem(r, 401, "not_authenticated")


async def test_key_edge_cases(client, world: World, session):
    r = await client.post(
        ORGS, headers=world.h("secretary", **{"Idempotency-Key": "k" * 201}), json=_branch(world)
    )
    body = assert_problem(r, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    r = await client.post(
        ORGS, headers=world.h("secretary", **{"Idempotency-Key": "a\tb"}), json=_branch(world)
    )
    assert_problem(r, 422, "validation_error")
    assert await _named(session, "东湖社区第二党支部") == 0
    # Without a key every POST is its own request.
    for _ in range(2):
        assert (await client.post(ORGS, headers=world.h("secretary"), json=_branch(world))).status_code == 201
    assert await _named(session, "东湖社区第二党支部") == 2
    # Reads ignore the header.
    r = await client.get(ORGS, headers=world.h("secretary", **{"Idempotency-Key": "k-5"}))
    assert r.status_code == 200 and "idempotent-replayed" not in r.headers
    assert (await session.execute(select(func.count()).select_from(IdempotencyRecord))).scalar_one() == 0
