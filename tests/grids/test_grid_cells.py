"""Grid cells: create, read, list, edit, delete; boundaries; scope and permissions; concurrency."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.grids.conftest import (
    A1_LAT,
    A1_LNG,
    B1_LAT,
    B1_LNG,
    count,
    create_building,
    create_cell,
    fetch,
    square,
)


async def test_create_and_get_cell(client, world):
    cell = await create_cell(
        client,
        world,
        layers=["party", "public_order", "sanitation", "party"],
        party_branch_id=str(world.orgs["a1_branch"].id),
        leader_id=str(world.users["staff"].id),
        worker_ids=[str(world.users["gridworker"].id)],
        external_ref="grid-dh-01",
    )
    assert cell["community_id"] == str(world.orgs["a1"].id)
    assert cell["layers"] == ["party", "public_order", "sanitation"]
    assert cell["bbox"] == [A1_LNG, A1_LAT, A1_LNG + 0.01, A1_LAT + 0.01]
    assert cell["boundary"] == square(A1_LNG, A1_LAT)
    assert cell["leader"]["user_id"] == str(world.users["staff"].id)
    assert cell["leader"]["display_name"] == "staff"
    assert cell["external_ref"] == "grid-dh-01"
    assert cell["version"] == 1

    r = await client.get(f"/api/v1/grid-cells/{cell['id']}", headers=world.h("secretary"))
    assert r.status_code == 200
    assert r.headers["etag"] == '"1"'
    assert r.json() == cell

    rows = await fetch(
        "SELECT action, org_id FROM audit_log WHERE object_id = :id ORDER BY at", id=cell["id"]
    )
    assert [a for a, _ in rows] == ["grid_cell.create", "grid_cell.assign", "grid_cell.assign"]
    assert {str(o) for _, o in rows} == {cell["community_id"]}


async def test_create_answers_location_and_etag(client, world):
    r = await client.post(
        "/api/v1/grid-cells",
        headers=world.h("street"),
        json={
            "community_id": str(world.orgs["a2"].id),
            "code": "TY-01",
            "name": "桃源一网格",
            "boundary": square(120.2, 30.2),
        },
    )
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/api/v1/grid-cells/{r.json()['id']}"
    assert r.headers["etag"] == '"1"'
    assert r.json()["layers"] == ["party"]
    assert r.json()["leader"] is None


async def test_list_cells_in_scope_with_filters(client, world):
    c1 = await create_cell(client, world, code="DH-01", name="东湖一网格", layers=["party", "sanitation"])
    c2 = await create_cell(
        client,
        world,
        code="DH-02",
        name="湖滨网格",
        boundary=square(A1_LNG + 0.01, A1_LAT),
        layers=["public_order"],
        worker_ids=[str(world.users["gridworker"].id)],
    )
    c3 = await create_cell(
        client, world, "admin", code="BM-01", community="b1", boundary=square(B1_LNG, B1_LAT)
    )

    async def ids(who: str, **params: Any) -> list[str]:
        r = await client.get("/api/v1/grid-cells", headers=world.h(who), params=params)
        assert r.status_code == 200, r.text
        return [c["id"] for c in r.json()["items"]]

    assert await ids("secretary") == [c1["id"], c2["id"]]
    assert await ids("secretary2") == [c3["id"]]
    assert await ids("street") == [c1["id"], c2["id"]]
    assert await ids("admin") == [c1["id"], c2["id"], c3["id"]]
    assert await ids("gridworker") == [c1["id"], c2["id"]]
    assert await ids("admin", community_id=str(world.orgs["b1"].id)) == [c3["id"]]
    assert await ids("secretary", community_id=str(world.orgs["b1"].id)) == []
    assert await ids("secretary", layer="sanitation") == [c1["id"]]
    assert await ids("secretary", layer="public_order") == [c2["id"]]
    assert await ids("secretary", q="湖滨") == [c2["id"]]
    assert await ids("secretary", q="dh-01") == [c1["id"]]
    assert await ids("secretary", q="%") == []
    assert await ids("gridworker", mine="true") == [c2["id"]]

    r = await client.get("/api/v1/grid-cells", headers=world.h("secretary"), params={"limit": 1})
    page1 = r.json()
    assert [c["id"] for c in page1["items"]] == [c1["id"]]
    r = await client.get(
        "/api/v1/grid-cells",
        headers=world.h("secretary"),
        params={"limit": 1, "cursor": page1["next_cursor"]},
    )
    assert [c["id"] for c in r.json()["items"]] == [c2["id"]]
    assert r.json()["next_cursor"] is None


async def test_list_bad_filters(client, world):
    for params in ({"layer": "fire"}, {"limit": 101}, {"community_id": "nope"}, {"q": "x" * 101}):
        r = await client.get("/api/v1/grid-cells", headers=world.h("secretary"), params=params)
        assert r.status_code == 422, params
        assert r.headers["content-type"].startswith("application/problem+json")
    r = await client.get("/api/v1/grid-cells", headers=world.h("secretary"), params={"cursor": "garbage!"})
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_cursor"


async def test_update_cell_with_etag(client, world):
    cell = await create_cell(client, world)
    url = f"/api/v1/grid-cells/{cell['id']}"
    r = await client.patch(
        url,
        headers={**world.h("secretary"), "If-Match": '"1"'},
        json={
            "name": "东湖新网格",
            "boundary": square(A1_LNG, A1_LAT, 0.02),
            "layers": ["sanitation"],
            "party_branch_id": str(world.orgs["a1_branch"].id),
        },
    )
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"2"'
    body = r.json()
    assert body["name"] == "东湖新网格"
    assert body["bbox"] == [A1_LNG, A1_LAT, A1_LNG + 0.02, A1_LAT + 0.02]
    assert body["layers"] == ["sanitation"]
    assert body["party_branch_id"] == str(world.orgs["a1_branch"].id)
    assert body["code"] == "DH-01"

    # A stale version is refused and changes nothing.
    r = await client.patch(url, headers={**world.h("secretary"), "If-Match": '"1"'}, json={"name": "过期"})
    assert r.status_code == 412
    assert r.json()["code"] == "precondition_failed"
    r = await client.patch(url, headers=world.h("secretary"), json={"party_branch_id": None})
    assert r.status_code == 200
    assert r.json()["party_branch_id"] is None
    assert r.json()["name"] == "东湖新网格"
    assert r.json()["version"] == 3
    actions = await fetch("SELECT action FROM audit_log WHERE object_id = :id ORDER BY at", id=cell["id"])
    assert [a for (a,) in actions] == ["grid_cell.create", "grid_cell.update", "grid_cell.update"]


async def test_update_cell_bad_input(client, world):
    cell = await create_cell(client, world)
    await create_cell(client, world, code="DH-02", boundary=square(A1_LNG + 0.01, A1_LAT))
    url = f"/api/v1/grid-cells/{cell['id']}"
    h = world.h("secretary")
    cases = [
        ({"name": None}, 422, "validation_error"),
        ({"layers": []}, 422, "validation_error"),
        ({"layers": None}, 422, "validation_error"),
        ({"community_id": str(world.orgs["a2"].id)}, 422, "validation_error"),
        ({"code": "DH 02"}, 422, "validation_error"),
        ({"name": "x" * 101}, 422, "validation_error"),
        ({"boundary": None}, 422, "invalid_geometry"),
        (
            {"boundary": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}},
            422,
            "invalid_geometry",
        ),
        ({"code": "DH-02"}, 409, "duplicate"),
        ({"party_branch_id": str(world.orgs["a1"].id)}, 422, "invalid_party_branch"),
        ({"party_branch_id": str(world.orgs["b1_branch"].id)}, 404, "not_found"),
    ]
    for body, status, code in cases:
        r = await client.patch(url, headers=h, json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["code"] == code, body
    r = await client.patch(
        url,
        headers=h,
        content=b"{not json",
    )
    assert r.status_code in (400, 422)
    r = await client.get(url, headers=h)
    assert r.json()["version"] == 1
    assert r.json()["boundary"] == square(A1_LNG, A1_LAT)


async def test_delete_cell(client, world):
    cell = await create_cell(client, world, worker_ids=[str(world.users["gridworker"].id)])
    url = f"/api/v1/grid-cells/{cell['id']}"
    building = await create_building(client, world, cell["id"])
    r = await client.delete(url, headers=world.h("secretary"))
    assert r.status_code == 409
    assert r.json()["code"] == "grid_cell_not_empty"
    r = await client.delete(f"/api/v1/buildings/{building['id']}", headers=world.h("secretary"))
    assert r.status_code == 204
    r = await client.delete(url, headers={**world.h("secretary"), "If-Match": '"7"'})
    assert r.status_code == 412
    r = await client.delete(url, headers={**world.h("secretary"), "If-Match": '"1"'})
    assert r.status_code == 204
    assert (await client.get(url, headers=world.h("secretary"))).status_code == 404
    assert await count("grid_cells") == 0
    assert await count("grid_assignments") == 0


async def test_duplicate_code_in_community_is_409(client, world):
    await create_cell(client, world, code="DH-01")
    r = await client.post(
        "/api/v1/grid-cells",
        headers=world.h("secretary"),
        json={
            "community_id": str(world.orgs["a1"].id),
            "code": "DH-01",
            "name": "重复",
            "boundary": square(A1_LNG + 0.05, A1_LAT),
        },
    )
    assert r.status_code == 409
    assert r.json()["code"] == "duplicate"
    assert await count("grid_cells") == 1
    # The same code in another community is fine.
    await create_cell(client, world, "street", code="DH-01", community="a2", boundary=square(120.2, 30.2))


async def test_community_must_be_a_community(client, world):
    for org in ("street_a", "a1_branch", "county"):
        r = await client.post(
            "/api/v1/grid-cells",
            headers=world.h("admin"),
            json={
                "community_id": str(world.orgs[org].id),
                "code": "X-1",
                "name": "x",
                "boundary": square(120, 30),
            },
        )
        assert r.status_code == 422, org
        assert r.json()["code"] == "not_a_community"
    r = await client.post(
        "/api/v1/grid-cells",
        headers=world.h("admin"),
        json={
            "community_id": "00000000-0000-4000-8000-000000000000",
            "code": "X-1",
            "name": "x",
            "boundary": square(120, 30),
        },
    )
    assert r.status_code == 404
    assert await count("grid_cells") == 0


async def test_party_branch_must_be_in_the_community(client, world):
    # In scope but not a branch of this community (admin sees everything).
    for org, code in (
        ("b1_branch", "invalid_party_branch"),
        ("a1", "invalid_party_branch"),
        ("street_a", "invalid_party_branch"),
    ):
        r = await client.post(
            "/api/v1/grid-cells",
            headers=world.h("admin"),
            json={
                "community_id": str(world.orgs["a1"].id),
                "code": "X-1",
                "name": "x",
                "boundary": square(120, 30),
                "party_branch_id": str(world.orgs[org].id),
            },
        )
        assert r.status_code == 422, org
        assert r.json()["code"] == code
    # Out of the caller's scope: as if it did not exist.
    r = await client.post(
        "/api/v1/grid-cells",
        headers=world.h("secretary"),
        json={
            "community_id": str(world.orgs["a1"].id),
            "code": "X-1",
            "name": "x",
            "boundary": square(120, 30),
            "party_branch_id": str(world.orgs["b1_branch"].id),
        },
    )
    assert r.status_code == 404
    assert await count("grid_cells") == 0


async def test_create_bad_input(client, world):
    base = {"community_id": str(world.orgs["a1"].id), "code": "X-1", "name": "x", "boundary": square(120, 30)}
    cases: list[dict[str, Any]] = [
        {**base, "layers": ["fire"]},
        {**base, "layers": []},
        {**base, "code": ""},
        {**base, "code": "网格一"},
        {**base, "name": "x" * 101},
        {**base, "extra": 1},
        {k: v for k, v in base.items() if k != "boundary"},
        {k: v for k, v in base.items() if k != "community_id"},
        {**base, "community_id": 5},
    ]
    for body in cases:
        r = await client.post("/api/v1/grid-cells", headers=world.h("secretary"), json=body)
        assert r.status_code == 422, body
        assert r.json()["code"] == "validation_error"
    r = await client.post(
        "/api/v1/grid-cells",
        headers={**world.h("secretary"), "Content-Type": "application/json"},
        content=b'{"code": ',
    )
    assert r.status_code == 400
    assert r.json()["code"] == "malformed_request"
    assert await count("grid_cells") == 0


def _ring(*points: tuple[Any, Any]) -> list[list[Any]]:
    return [list(p) for p in points]


INVALID_BOUNDARIES: list[tuple[str, Any, str]] = [
    (
        "open ring",
        {"type": "Polygon", "coordinates": [_ring((120, 30), (120.01, 30), (120.01, 30.01), (120, 30.01))]},
        "not closed",
    ),
    (
        "bow-tie",
        {
            "type": "Polygon",
            "coordinates": [_ring((120, 30), (120.01, 30.01), (120.01, 30), (120, 30.01), (120, 30))],
        },
        "Self-intersection",
    ),
    (
        "longitude out of bounds",
        {
            "type": "Polygon",
            "coordinates": [_ring((179.99, 30), (180.5, 30), (180.5, 30.01), (179.99, 30.01), (179.99, 30))],
        },
        "outside WGS-84",
    ),
    (
        "latitude out of bounds",
        {
            "type": "Polygon",
            "coordinates": [_ring((120, 89.99), (120.01, 89.99), (120.01, 91), (120, 91), (120, 89.99))],
        },
        "outside WGS-84",
    ),
    (
        "lat/lng swapped far out",
        {
            "type": "Polygon",
            "coordinates": [_ring((30, 120), (30.01, 120), (30.01, 120.01), (30, 120.01), (30, 120))],
        },
        "outside WGS-84",
    ),
    (
        "MultiPolygon",
        {"type": "MultiPolygon", "coordinates": [square(120, 30)["coordinates"]]},
        "MultiPolygon",
    ),
    ("Point", {"type": "Point", "coordinates": [120, 30]}, "Point"),
    ("Feature", {"type": "Feature", "geometry": square(120, 30), "properties": {}}, "Feature"),
    ("missing type", {"coordinates": square(120, 30)["coordinates"]}, "type must be Polygon"),
    (
        "too few points",
        {"type": "Polygon", "coordinates": [_ring((120, 30), (120.01, 30), (120, 30))]},
        "at least 4",
    ),
    ("no rings", {"type": "Polygon", "coordinates": []}, "non-empty"),
    ("coordinates not a list", {"type": "Polygon", "coordinates": "120,30"}, "non-empty"),
    ("ring not a list", {"type": "Polygon", "coordinates": [5]}, "ring 0"),
    (
        "non-numeric",
        {
            "type": "Polygon",
            "coordinates": [_ring((120, 30), ("120.01", 30), (120.01, 30.01), (120, 30.01), (120, 30))],
        },
        "numbers",
    ),
    (
        "boolean coordinate",
        {
            "type": "Polygon",
            "coordinates": [_ring((120, 30), (True, 30), (120.01, 30.01), (120, 30.01), (120, 30))],
        },
        "numbers",
    ),
    (
        "null coordinate",
        {
            "type": "Polygon",
            "coordinates": [_ring((120, 30), (None, 30), (120.01, 30.01), (120, 30.01), (120, 30))],
        },
        "numbers",
    ),
    (
        "position of one number",
        {"type": "Polygon", "coordinates": [[[120], [120.01, 30], [120, 30.01], [120]]]},
        "[lng, lat]",
    ),
    (
        "collinear",
        {"type": "Polygon", "coordinates": [_ring((120, 30), (120.01, 30), (120.02, 30), (120, 30))]},
        "polygon",
    ),
    (
        "hole outside the shell",
        {
            "type": "Polygon",
            "coordinates": [square(120, 30)["coordinates"][0], square(121, 31, 0.001)["coordinates"][0]],
        },
        "Hole lies outside shell",
    ),
    ("not an object", "POLYGON((120 30, 121 30, 121 31, 120 30))", "GeoJSON object"),
    ("null", None, "GeoJSON object"),
]


@pytest.mark.parametrize(
    ("label", "boundary", "reason"), INVALID_BOUNDARIES, ids=[c[0] for c in INVALID_BOUNDARIES]
)
async def test_invalid_boundary_is_422_and_writes_nothing(client, world, label, boundary, reason):
    r = await client.post(
        "/api/v1/grid-cells",
        headers=world.h("secretary"),
        json={
            "community_id": str(world.orgs["a1"].id),
            "code": "X-1",
            "name": "x",
            "boundary": boundary,
            "leader_id": str(world.users["staff"].id),
        },
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["code"] == "invalid_geometry"
    assert reason in problem["detail"], problem["detail"]
    assert await count("grid_cells") == 0
    assert await count("grid_assignments") == 0
    assert await fetch("SELECT 1 FROM audit_log WHERE object_type = 'grid_cell'") == []


async def test_invalid_boundary_message_in_english(client, world):
    r = await client.post(
        "/api/v1/grid-cells",
        headers=world.h("secretary", **{"Accept-Language": "en"}),
        json={
            "community_id": str(world.orgs["a1"].id),
            "code": "X-1",
            "name": "x",
            "boundary": {"type": "MultiPolygon", "coordinates": []},
        },
    )
    assert r.status_code == 422
    assert r.json()["detail"] == "Invalid boundary: type must be Polygon, not MultiPolygon"
    r = await client.post(
        "/api/v1/grid-cells",
        headers=world.h("secretary"),
        json={
            "community_id": str(world.orgs["a1"].id),
            "code": "X-1",
            "name": "x",
            "boundary": {"type": "MultiPolygon", "coordinates": []},
        },
    )
    assert r.json()["detail"].startswith("地理边界无效")


async def test_boundary_with_hole_and_altitude_is_normalised(client, world):
    shell = [[120, 30, 5], [120.02, 30, 5], [120.02, 30.02, 5], [120, 30.02, 5], [120, 30, 5]]
    hole = [[120.005, 30.005], [120.005, 30.015], [120.015, 30.015], [120.015, 30.005], [120.005, 30.005]]
    cell = await create_cell(
        client, world, boundary={"type": "Polygon", "coordinates": [shell, hole], "bbox": [0, 0, 0, 0]}
    )
    assert cell["boundary"]["coordinates"][0][0] == [120.0, 30.0]
    assert len(cell["boundary"]["coordinates"]) == 2
    assert cell["bbox"] == [120.0, 30.0, 120.02, 30.02]


async def test_too_many_positions_is_refused(client, world):
    import math

    n = 6000
    ring = [
        [120 + 0.01 * math.cos(2 * math.pi * i / n), 30 + 0.01 * math.sin(2 * math.pi * i / n)]
        for i in range(n)
    ]
    ring.append(ring[0])
    r = await client.post(
        "/api/v1/grid-cells",
        headers=world.h("secretary"),
        json={
            "community_id": str(world.orgs["a1"].id),
            "code": "X-1",
            "name": "x",
            "boundary": {"type": "Polygon", "coordinates": [ring]},
        },
    )
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_geometry"


async def test_wrong_scope_is_404(client, world):
    cell = await create_cell(client, world)
    building = await create_building(client, world, cell["id"])
    url = f"/api/v1/grid-cells/{cell['id']}"
    h = world.h("secretary2")
    checks = [
        await client.get(url, headers=h),
        await client.patch(url, headers=h, json={"name": "越权"}),
        await client.delete(url, headers=h),
        await client.get(f"{url}/workers", headers=h),
        await client.post(f"{url}/workers", headers=h, json={"user_id": str(world.users["secretary2"].id)}),
        await client.delete(f"{url}/workers/{world.users['gridworker'].id}", headers=h),
        await client.get(f"{url}/buildings", headers=h),
        await client.post(f"{url}/buildings", headers=h, json={"name": "越权楼"}),
        await client.get(f"/api/v1/buildings/{building['id']}", headers=h),
        await client.patch(f"/api/v1/buildings/{building['id']}", headers=h, json={"households": 1}),
        await client.delete(f"/api/v1/buildings/{building['id']}", headers=h),
    ]
    for r in checks:
        assert r.status_code == 404, (r.request.method, r.request.url, r.text)
        assert r.json()["code"] == "not_found"
    # Creating a cell in someone else's community: that community does not exist for them.
    await create_cell(client, world, "secretary2", code="X-9", expect=404)
    r = await client.get(url, headers=world.h("secretary"))
    assert r.json()["name"] == cell["name"]
    assert r.json()["version"] == 1
    assert await count("grid_cells") == 1
    assert await count("buildings") == 1


async def test_permissions(client, world):
    cell = await create_cell(client, world)
    url = f"/api/v1/grid-cells/{cell['id']}"
    # A grid worker reads cells but does not draw them.
    assert (await client.get(url, headers=world.h("gridworker"))).status_code == 200
    assert (await client.get("/api/v1/grid-cells", headers=world.h("gridworker"))).status_code == 200
    await create_cell(client, world, "gridworker", code="GW-1", expect=403)
    for r in (
        await client.patch(url, headers=world.h("gridworker"), json={"name": "改"}),
        await client.delete(url, headers=world.h("gridworker")),
        await client.post(
            f"{url}/workers",
            headers=world.h("gridworker"),
            json={"user_id": str(world.users["gridworker"].id)},
        ),
    ):
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "forbidden"
    # Residents, members and liaisons hold no grid permission at all.
    for who in ("resident", "member", "liaison"):
        assert (await client.get(url, headers=world.h(who))).status_code == 403
        assert (await client.get("/api/v1/grid-cells", headers=world.h(who))).status_code == 403
    # No token, a bad token.
    assert (await client.get(url)).status_code == 401
    assert (await client.get(url, headers={"Authorization": "Bearer nope"})).status_code == 401
    assert await count("grid_cells") == 1


async def test_concurrent_patch_one_wins(app, client, world):
    cell = await create_cell(client, world)
    url = f"/api/v1/grid-cells/{cell['id']}"
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as other:
        results = await asyncio.gather(
            client.patch(
                url,
                headers={**world.h("secretary"), "If-Match": '"1"'},
                json={"name": "甲", "boundary": square(A1_LNG, A1_LAT, 0.02)},
            ),
            other.patch(url, headers={**world.h("staff"), "If-Match": '"1"'}, json={"name": "乙"}),
        )
    assert sorted(r.status_code for r in results) == [200, 412]
    winner = next(r for r in results if r.status_code == 200).json()
    r = await client.get(url, headers=world.h("secretary"))
    assert r.json()["name"] == winner["name"]
    assert r.json()["version"] == 2
    updates = await fetch("SELECT 1 FROM audit_log WHERE action = 'grid_cell.update'")
    assert len(updates) == 1


async def test_idempotent_create(client, world):
    body = {
        "community_id": str(world.orgs["a1"].id),
        "code": "DH-01",
        "name": "东湖一网格",
        "boundary": square(A1_LNG, A1_LAT),
    }
    h = world.h("secretary", **{"Idempotency-Key": "grid-create-1"})
    first = await client.post("/api/v1/grid-cells", headers=h, json=body)
    again = await client.post("/api/v1/grid-cells", headers=h, json=body)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert await count("grid_cells") == 1


async def test_organization_counts_include_grid_cells(client, world):
    await create_cell(client, world, code="DH-01")
    await create_cell(client, world, code="DH-02", boundary=square(A1_LNG + 0.01, A1_LAT))
    await create_cell(client, world, "admin", code="BM-01", community="b1", boundary=square(B1_LNG, B1_LAT))
    r = await client.get(f"/api/v1/organizations/{world.orgs['a1'].id}/counts", headers=world.h("secretary"))
    assert r.status_code == 200
    assert r.json()["grid_cells"] == 2
    r = await client.get(f"/api/v1/organizations/{world.orgs['county'].id}/counts", headers=world.h("admin"))
    assert r.json()["grid_cells"] == 3


async def test_huge_numbers_and_nul_characters_are_refused(client, world):
    ring = "[[120, 30], [1" + "0" * 400 + ", 30], [120.01, 30.01], [120, 30]]"
    community = world.orgs["a1"].id
    body = (
        f'{{"community_id": "{community}", "code": "X-1", "name": "x",'
        f' "boundary": {{"type": "Polygon", "coordinates": [{ring}]}}}}'
    )
    r = await client.post(
        "/api/v1/grid-cells",
        headers={**world.h("secretary"), "Content-Type": "application/json"},
        content=body.encode(),
    )
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_geometry"
    r = await client.post(
        "/api/v1/grid-cells",
        headers=world.h("secretary"),
        json={
            "community_id": str(world.orgs["a1"].id),
            "code": "X-1",
            "name": "a\x00b",
            "boundary": square(120, 30),
        },
    )
    assert r.status_code == 422, r.text
    assert await count("grid_cells") == 0
