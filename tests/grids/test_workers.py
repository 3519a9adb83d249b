"""A cell's grid leader and grid workers."""

from __future__ import annotations

import asyncio

import httpx

from tests.grids.conftest import count, create_cell, fetch


async def test_add_list_remove_workers(client, world):
    cell = await create_cell(client, world)
    url = f"/api/v1/grid-cells/{cell['id']}/workers"
    h = world.h("secretary")
    r = await client.post(url, headers=h, json={"user_id": str(world.users["staff"].id), "role": "leader"})
    assert r.status_code == 201, r.text
    assert r.json()["role"] == "leader"
    assert r.json()["display_name"] == "staff"
    r = await client.post(url, headers=h, json={"user_id": str(world.users["gridworker"].id)})
    assert r.status_code == 201
    assert r.json()["role"] == "worker"

    r = await client.get(url, headers=world.h("gridworker"))
    assert r.status_code == 200
    assert [(p["display_name"], p["role"]) for p in r.json()["items"]] == [
        ("staff", "leader"),
        ("gridworker", "worker"),
    ]
    r = await client.get(f"/api/v1/grid-cells/{cell['id']}", headers=h)
    assert r.json()["leader"]["user_id"] == str(world.users["staff"].id)
    r = await client.get("/api/v1/grid-cells", headers=world.h("gridworker"), params={"mine": True})
    assert [c["id"] for c in r.json()["items"]] == [cell["id"]]

    r = await client.delete(f"{url}/{world.users['staff'].id}", headers=h)
    assert r.status_code == 204
    r = await client.delete(f"{url}/{world.users['staff'].id}", headers=h)
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"
    r = await client.get(f"/api/v1/grid-cells/{cell['id']}", headers=h)
    assert r.json()["leader"] is None
    actions = await fetch("SELECT action FROM audit_log WHERE object_type = 'grid_cell' ORDER BY at")
    assert [a for (a,) in actions] == [
        "grid_cell.create",
        "grid_cell.assign",
        "grid_cell.assign",
        "grid_cell.unassign",
    ]


async def test_worker_rules(client, world):
    cell = await create_cell(client, world, leader_id=str(world.users["staff"].id))
    url = f"/api/v1/grid-cells/{cell['id']}/workers"
    h = world.h("secretary")
    cases = [
        # A second leader.
        ({"user_id": str(world.users["gridworker"].id), "role": "leader"}, 409, "grid_leader_taken"),
        # The same person twice.
        ({"user_id": str(world.users["staff"].id), "role": "worker"}, 409, "duplicate"),
        # Someone outside the caller's scope, or nobody at all.
        ({"user_id": str(world.users["secretary2"].id)}, 404, "not_found"),
        ({"user_id": "00000000-0000-4000-8000-000000000000"}, 404, "not_found"),
        ({"user_id": str(world.users["gridworker"].id), "role": "chief"}, 422, "validation_error"),
        ({"user_id": "someone"}, 422, "validation_error"),
        ({}, 422, "validation_error"),
    ]
    for body, status, code in cases:
        r = await client.post(url, headers=h, json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["code"] == code
    assert await count("grid_assignments") == 1
    # Creating a cell with a bad leader writes nothing at all.
    await create_cell(client, world, code="DH-02", leader_id=str(world.users["secretary2"].id), expect=404)
    await create_cell(
        client,
        world,
        code="DH-02",
        leader_id=str(world.users["staff"].id),
        worker_ids=[str(world.users["staff"].id)],
        expect=409,
    )
    assert await count("grid_cells") == 1
    assert await count("grid_assignments") == 1


async def test_concurrent_leaders_one_wins(app, client, world):
    cell = await create_cell(client, world)
    url = f"/api/v1/grid-cells/{cell['id']}/workers"
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as other:
        results = await asyncio.gather(
            client.post(
                url,
                headers=world.h("secretary"),
                json={"user_id": str(world.users["staff"].id), "role": "leader"},
            ),
            other.post(
                url,
                headers=world.h("street"),
                json={"user_id": str(world.users["gridworker"].id), "role": "leader"},
            ),
        )
    assert sorted(r.status_code for r in results) == [201, 409]
    assert await count("grid_assignments") == 1
