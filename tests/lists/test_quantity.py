"""What projects commit of a resource: reserve and release, never below zero."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from gongjian.core import db
from gongjian.core.errors import ERRORS, ProblemError
from gongjian.lists import service
from gongjian.lists.models import Resource, ResourceState
from tests.lists.conftest import create_resource, fetch


async def _reserve(resource_id: str, quantity: int) -> Resource | ProblemError:
    """One commitment in a session (and transaction) of its own, as a request would make it."""
    async with db.sessionmaker()() as session:
        try:
            resource = await service.reserve_quantity(session, uuid.UUID(resource_id), quantity)
        except ProblemError as exc:
            await session.rollback()
            return exc
        await session.commit()
        return resource


async def _release(resource_id: str, quantity: int) -> Resource | ProblemError:
    async with db.sessionmaker()() as session:
        try:
            resource = await service.release_quantity(session, uuid.UUID(resource_id), quantity)
        except ProblemError as exc:
            await session.rollback()
            return exc
        await session.commit()
        return resource


async def _row(resource_id: str):
    (row,) = await fetch(
        "SELECT quantity, remaining_quantity, state, version FROM resources WHERE id = :id", id=resource_id
    )
    return row


async def test_reserve_and_release_move_remaining_and_state(client, k):
    res = await create_resource(client, k, quantity=12)
    done = await _reserve(res["id"], 5)
    assert isinstance(done, Resource)
    assert done.remaining_quantity == 7 and done.state == ResourceState.partly_committed and done.version == 2
    done = await _reserve(res["id"], 7)
    assert done.remaining_quantity == 0 and done.state == ResourceState.exhausted

    refused = await _reserve(res["id"], 1)
    assert (
        isinstance(refused, ProblemError)
        and refused.code == "insufficient_quantity"
        and refused.status == 409
    )
    r = await client.get(f"/api/v1/resources/{res['id']}", headers=k.h("staff"))
    assert (
        r.json()["state"] == "exhausted"
        and r.json()["remaining_quantity"] == 0
        and r.headers["etag"] == '"3"'
    )

    done = await _release(res["id"], 3)
    assert done.remaining_quantity == 3 and done.state == ResourceState.partly_committed
    refused = await _release(res["id"], 10)
    assert isinstance(refused, ProblemError) and refused.code == "release_exceeds_committed"
    assert refused.params == {"committed": 9, "unit": "次"}
    done = await _release(res["id"], 9)
    assert done.remaining_quantity == 12 and done.state == ResourceState.available
    rows = await fetch("SELECT action, after FROM audit_log WHERE object_id = :id ORDER BY at", id=res["id"])
    assert [r.action for r in rows] == [
        "resource.create",
        "resource.reserve",
        "resource.reserve",
        "resource.release",
        "resource.release",
    ]
    assert rows[1].after == {"reserved": 5, "remaining_quantity": 7}


async def test_insufficient_quantity_says_how_much_is_left(client, k):
    res = await create_resource(client, k, quantity=4, quantity_unit="人")
    refused = await _reserve(res["id"], 5)
    assert refused.params == {"remaining": 4, "unit": "人"}
    spec = ERRORS[refused.code]
    assert "仅剩4人" in spec.zh.format(**refused.params)
    assert "only 4 人" in spec.en.format(**refused.params)
    assert (await _row(res["id"])).remaining_quantity == 4


async def test_withdrawn_unknown_and_bad_quantities(client, k):
    res = await create_resource(client, k, quantity=4)
    await _reserve(res["id"], 1)
    r = await client.post(f"/api/v1/resources/{res['id']}/withdraw", headers=k.h("staff"))
    assert r.status_code == 200
    refused = await _reserve(res["id"], 1)
    assert isinstance(refused, ProblemError) and refused.code == "illegal_transition"
    # Giving back what was committed leaves it withdrawn; restoring it then finds it whole.
    done = await _release(res["id"], 1)
    assert done.remaining_quantity == 4 and done.state == ResourceState.withdrawn
    r = await client.post(f"/api/v1/resources/{res['id']}/restore", headers=k.h("staff"))
    assert r.json()["state"] == "available"

    refused = await _reserve(str(uuid.uuid4()), 1)
    assert refused.code == "not_found" and refused.status == 404
    for bad in (0, -2):
        refused = await _reserve(res["id"], bad)
        assert refused.code == "validation_error"
        refused = await _release(res["id"], bad)
        assert refused.code == "validation_error"
    assert (await _row(res["id"])).remaining_quantity == 4


async def test_reserve_refreshes_the_loaded_object(client, k):
    res = await create_resource(client, k, quantity=10)
    async with db.sessionmaker()() as session:
        loaded = await session.get(Resource, uuid.UUID(res["id"]))
        assert loaded is not None and loaded.remaining_quantity == 10
        same = await service.reserve_quantity(session, loaded.id, 4)
        assert same is loaded and loaded.remaining_quantity == 6 and loaded.version == 2
        # The object and the row agree, so an ORM edit after it is not a stale write.
        loaded.title = "改个标题"
        await session.commit()
    row = await _row(res["id"])
    assert row.remaining_quantity == 6 and row.version == 3


@pytest.mark.parametrize(("remaining", "callers", "each"), [(5, 10, 1), (7, 6, 2)])
async def test_parallel_commitments_never_go_below_zero(client, k, remaining, callers, each):
    res = await create_resource(client, k, quantity=remaining)
    results = await asyncio.gather(*(_reserve(res["id"], each) for _ in range(callers)))
    won = [r for r in results if isinstance(r, Resource)]
    lost = [r for r in results if isinstance(r, ProblemError)]
    assert len(won) == remaining // each and len(lost) == callers - len(won)
    assert {e.code for e in lost} == {"insufficient_quantity"}
    row = await _row(res["id"])
    assert row.remaining_quantity == remaining % each
    assert row.state == ("exhausted" if remaining % each == 0 else "partly_committed")
    # Every success is one version, and one audit entry.
    assert row.version == 1 + len(won)
    entries = await fetch("SELECT count(*) AS n FROM audit_log WHERE action = 'resource.reserve'")
    assert entries[0].n == len(won)


async def test_parallel_reserve_and_release(client, k):
    res = await create_resource(client, k, quantity=3)
    await _reserve(res["id"], 3)
    # Releases and reserves racing: whatever the order, the row stays within 0 … quantity.
    results = await asyncio.gather(
        *(_release(res["id"], 1) for _ in range(3)), *(_reserve(res["id"], 1) for _ in range(5))
    )
    released = sum(1 for r in results[:3] if isinstance(r, Resource))
    reserved = sum(1 for r in results[3:] if isinstance(r, Resource))
    assert released == 3
    row = await _row(res["id"])
    assert row.remaining_quantity == released - reserved >= 0


async def test_patch_quantity_keeps_what_is_committed(client, k):
    res = await create_resource(client, k, quantity=12)
    await _reserve(res["id"], 5)
    url = f"/api/v1/resources/{res['id']}"
    r = await client.patch(url, headers=k.h("staff"), json={"quantity": 8})
    assert (
        r.status_code == 200
        and r.json()["remaining_quantity"] == 3
        and r.json()["state"] == "partly_committed"
    )
    r = await client.patch(
        url, headers=k.h("staff", **{"Accept-Language": "en"}), json={"quantity": 4, "title": "x"}
    )
    assert r.status_code == 409 and r.json()["code"] == "quantity_below_committed"
    assert "5 次" in r.json()["detail"]
    row = await _row(res["id"])
    assert (row.quantity, row.remaining_quantity) == (8, 3)
    r = await client.patch(url, headers=k.h("staff"), json={"quantity": 5})
    assert r.json()["remaining_quantity"] == 0 and r.json()["state"] == "exhausted"
    r = await client.patch(url, headers=k.h("staff"), json={"quantity": 20})
    assert r.json()["remaining_quantity"] == 15 and r.json()["state"] == "partly_committed"
    await _release(res["id"], 5)
    r = await client.get(url, headers=k.h("staff"))
    assert r.json()["remaining_quantity"] == 20 and r.json()["state"] == "available"
    # A commitment since the read makes the read stale.
    etag = r.headers["etag"]
    await _reserve(res["id"], 1)
    r = await client.patch(url, headers=k.h("staff", **{"If-Match": etag}), json={"quantity": 30})
    assert r.status_code == 412
