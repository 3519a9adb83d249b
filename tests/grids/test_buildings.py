"""Buildings under grid cells."""

from __future__ import annotations

import asyncio

import httpx

from tests.grids.conftest import A1_LAT, A1_LNG, count, create_building, create_cell, fetch, square


async def test_create_get_list_buildings(client, world):
    cell = await create_cell(client, world)
    r = await client.post(
        f"/api/v1/grid-cells/{cell['id']}/buildings",
        headers=world.h("secretary"),
        json={
            "name": "3幢",
            "address": "东湖路12号3幢",
            "households": 36,
            "floors": 6,
            "units": 3,
            "building_leader_user_id": str(world.users["gridworker"].id),
            "lat": A1_LAT + 0.005,
            "lng": A1_LNG + 0.005,
            "external_ref": "bld-3",
        },
    )
    assert r.status_code == 201, r.text
    assert r.headers["etag"] == '"1"'
    b = r.json()
    assert r.headers["location"] == f"/api/v1/buildings/{b['id']}"
    assert b["grid_cell_id"] == cell["id"]
    assert b["community_id"] == cell["community_id"]
    assert b["building_leader_name"] == "gridworker"
    assert (b["households"], b["floors"], b["units"]) == (36, 6, 3)
    other = await create_building(client, world, cell["id"], name="5幢", building_leader_name="王阿姨")
    assert other["building_leader_user_id"] is None
    assert other["building_leader_name"] == "王阿姨"

    r = await client.get(f"/api/v1/buildings/{b['id']}", headers=world.h("gridworker"))
    assert r.status_code == 200
    assert r.headers["etag"] == '"1"'
    assert r.json() == b
    r = await client.get(f"/api/v1/grid-cells/{cell['id']}/buildings", headers=world.h("staff"))
    assert [x["name"] for x in r.json()["items"]] == ["3幢", "5幢"]
    r = await client.get(
        f"/api/v1/grid-cells/{cell['id']}/buildings", headers=world.h("staff"), params={"q": "东湖路"}
    )
    assert [x["name"] for x in r.json()["items"]] == ["3幢"]
    rows = await fetch("SELECT org_id FROM audit_log WHERE action = 'building.create'")
    assert {str(o) for (o,) in rows} == {cell["community_id"]}


async def test_grid_worker_edits_buildings_but_not_cells(client, world):
    cell = await create_cell(client, world)
    await create_cell(client, world, "gridworker", code="GW-1", expect=403)
    b = await create_building(client, world, cell["id"], "gridworker", name="7幢")
    url = f"/api/v1/buildings/{b['id']}"
    r = await client.patch(
        url,
        headers={**world.h("gridworker"), "If-Match": '"1"'},
        json={"households": 40, "building_leader_name": "李师傅"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["households"] == 40
    assert r.headers["etag"] == '"2"'
    r = await client.delete(url, headers=world.h("gridworker"))
    assert r.status_code == 204
    assert await count("buildings") == 0
    # Residents and liaisons may not touch buildings.
    for who in ("resident", "liaison", "member"):
        r = await client.post(
            f"/api/v1/grid-cells/{cell['id']}/buildings", headers=world.h(who), json={"name": "x"}
        )
        assert r.status_code == 403, who


async def test_update_building(client, world):
    cell = await create_cell(client, world)
    other_cell = await create_cell(client, world, code="DH-02", boundary=square(A1_LNG + 0.01, A1_LAT))
    b = await create_building(client, world, cell["id"])
    url = f"/api/v1/buildings/{b['id']}"
    h = world.h("secretary")
    r = await client.patch(
        url,
        headers={**h, "If-Match": '"1"'},
        json={
            "grid_cell_id": other_cell["id"],
            "building_leader_user_id": str(world.users["staff"].id),
            "lat": A1_LAT,
            "lng": A1_LNG + 0.015,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["grid_cell_id"] == other_cell["id"]
    assert body["building_leader_name"] == "staff"
    assert (body["lat"], body["lng"]) == (A1_LAT, A1_LNG + 0.015)
    r = await client.get(f"/api/v1/grid-cells/{other_cell['id']}/buildings", headers=h)
    assert [x["id"] for x in r.json()["items"]] == [b["id"]]
    # Stale version.
    r = await client.patch(url, headers={**h, "If-Match": '"1"'}, json={"households": 1})
    assert r.status_code == 412
    # Clearing lat and lng together is fine.
    r = await client.patch(url, headers=h, json={"lat": None, "lng": None, "floors": None})
    assert r.status_code == 200
    assert (r.json()["lat"], r.json()["lng"], r.json()["floors"]) == (None, None, None)


async def test_building_bad_input(client, world):
    cell = await create_cell(client, world)
    b = await create_building(client, world, cell["id"], name="1幢")
    await create_building(client, world, cell["id"], name="2幢")
    cells_url = f"/api/v1/grid-cells/{cell['id']}/buildings"
    h = world.h("secretary")
    create_cases = [
        ({"name": "9幢", "households": -1}, 422, "validation_error"),
        ({"name": "9幢", "households": "many"}, 422, "validation_error"),
        ({"name": "9幢", "floors": 0}, 422, "validation_error"),
        ({"name": "9幢", "lat": 30.2}, 422, "validation_error"),
        ({"name": "9幢", "lat": 91, "lng": 120}, 422, "validation_error"),
        ({"name": ""}, 422, "validation_error"),
        ({"households": 3}, 422, "validation_error"),
        ({"name": "9幢", "building_leader_user_id": str(world.users["secretary2"].id)}, 404, "not_found"),
        ({"name": "1幢"}, 409, "duplicate"),
    ]
    for body, status, code in create_cases:
        r = await client.post(cells_url, headers=h, json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["code"] == code, body
    url = f"/api/v1/buildings/{b['id']}"
    update_cases = [
        ({"households": -5}, 422, "validation_error"),
        ({"households": None}, 422, "validation_error"),
        ({"name": None}, 422, "validation_error"),
        ({"grid_cell_id": None}, 422, "validation_error"),
        ({"lng": 120.1}, 422, "validation_error"),
        ({"name": "2幢"}, 409, "duplicate"),
        ({"grid_cell_id": "00000000-0000-4000-8000-000000000000"}, 404, "not_found"),
        ({"community_id": str(world.orgs["b1"].id)}, 422, "validation_error"),
    ]
    for body, status, code in update_cases:
        r = await client.patch(url, headers=h, json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["code"] == code, body
    r = await client.get(url, headers=h)
    assert r.json() == b
    assert await count("buildings") == 2


async def test_building_cannot_move_out_of_scope(client, world):
    cell = await create_cell(client, world)
    b1_cell = await create_cell(
        client, world, "admin", code="BM-01", community="b1", boundary=square(120.3, 30.4)
    )
    b = await create_building(client, world, cell["id"])
    r = await client.patch(
        f"/api/v1/buildings/{b['id']}", headers=world.h("secretary"), json={"grid_cell_id": b1_cell["id"]}
    )
    assert r.status_code == 404
    # The admin may move it; its scope follows the cell.
    r = await client.patch(
        f"/api/v1/buildings/{b['id']}", headers=world.h("admin"), json={"grid_cell_id": b1_cell["id"]}
    )
    assert r.status_code == 200
    assert r.json()["community_id"] == str(world.orgs["b1"].id)
    assert (await client.get(f"/api/v1/buildings/{b['id']}", headers=world.h("secretary"))).status_code == 404
    assert (
        await client.get(f"/api/v1/buildings/{b['id']}", headers=world.h("secretary2"))
    ).status_code == 200


async def test_concurrent_building_edits_one_wins(app, client, world):
    cell = await create_cell(client, world)
    b = await create_building(client, world, cell["id"])
    url = f"/api/v1/buildings/{b['id']}"
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as other:
        results = await asyncio.gather(
            client.patch(url, headers={**world.h("gridworker"), "If-Match": '"1"'}, json={"households": 30}),
            other.patch(url, headers={**world.h("secretary"), "If-Match": '"1"'}, json={"households": 31}),
        )
    assert sorted(r.status_code for r in results) == [200, 412]
    r = await client.get(url, headers=world.h("secretary"))
    assert r.json()["version"] == 2
