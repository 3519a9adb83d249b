"""GET /grid-cells/locate: which cell contains a point, else the nearest in scope."""

from __future__ import annotations

import math

import pytest

from tests.grids.conftest import A1_LAT, A1_LNG, B1_LAT, B1_LNG, create_cell, square

M_PER_DEG = math.pi / 180 * 6_371_008.8


async def locate(client, world, who: str, lat: float, lng: float) -> dict:
    r = await client.get("/api/v1/grid-cells/locate", headers=world.h(who), params={"lat": lat, "lng": lng})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_point_inside_a_cell(client, world):
    east = await create_cell(client, world, code="DH-01", boundary=square(A1_LNG, A1_LAT))
    west = await create_cell(
        client,
        world,
        code="DH-02",
        boundary=square(A1_LNG - 0.01, A1_LAT),
        leader_id=str(world.users["gridworker"].id),
    )
    got = await locate(client, world, "secretary", A1_LAT + 0.005, A1_LNG + 0.005)
    assert got["cell"]["id"] == east["id"]
    assert got["nearest"] is None
    assert got["distance_m"] is None
    got = await locate(client, world, "gridworker", A1_LAT + 0.005, A1_LNG - 0.005)
    assert got["cell"]["id"] == west["id"]
    assert got["cell"]["leader"]["display_name"] == "gridworker"
    # On an edge counts as inside.
    got = await locate(client, world, "secretary", A1_LAT + 0.005, A1_LNG + 0.01)
    assert got["cell"]["id"] == east["id"]


async def test_point_outside_answers_nearest_with_distance(client, world):
    cell = await create_cell(client, world, code="DH-01", boundary=square(A1_LNG, A1_LAT))
    await create_cell(client, world, code="DH-02", boundary=square(A1_LNG + 0.05, A1_LAT))
    # 0.001° east of the first cell's east edge, level with its middle.
    got = await locate(client, world, "secretary", A1_LAT + 0.005, A1_LNG + 0.011)
    assert got["cell"] is None
    assert got["nearest"]["id"] == cell["id"]
    expected = 0.001 * math.cos(math.radians(A1_LAT + 0.005)) * M_PER_DEG
    assert got["distance_m"] == pytest.approx(expected, rel=0.005)
    # South-west of the corner: diagonal distance.
    got = await locate(client, world, "secretary", A1_LAT - 0.001, A1_LNG - 0.001)
    dx = 0.001 * math.cos(math.radians(A1_LAT - 0.001)) * M_PER_DEG
    dy = 0.001 * M_PER_DEG
    assert got["nearest"]["id"] == cell["id"]
    assert got["distance_m"] == pytest.approx(math.hypot(dx, dy), rel=0.005)


async def test_nearest_is_by_polygon_not_by_bounding_box(client, world):
    # A thin triangle whose bounding box almost touches the point while its area lies far away,
    # and a small square a little further than that box but much closer than the triangle.
    lng, lat = A1_LNG, A1_LAT
    triangle = {
        "type": "Polygon",
        "coordinates": [[[lng, lat], [lng + 0.009, lat], [lng, lat + 0.009], [lng, lat]]],
    }
    far_box = await create_cell(client, world, code="T-1", boundary=triangle)
    near = await create_cell(client, world, code="S-1", boundary=square(lng + 0.012, lat + 0.010, 0.001))
    got = await locate(client, world, "secretary", lat + 0.010, lng + 0.010)
    assert got["cell"] is None
    assert got["nearest"]["id"] == near["id"], (got["nearest"]["code"], far_box["code"])
    assert got["distance_m"] == pytest.approx(
        0.002 * math.cos(math.radians(lat + 0.010)) * M_PER_DEG, rel=0.005
    )


async def test_nearest_beyond_the_first_candidate_batch(client, world):
    # Many cells whose boxes are nearer than the answer's box but whose areas are far: the search must
    # keep going past the first batch of candidates to find the true nearest.
    lng, lat = A1_LNG, A1_LAT
    for i in range(36):
        d = 0.009 - i * 0.00001
        await create_cell(
            client,
            world,
            code=f"T-{i:02d}",
            boundary={
                "type": "Polygon",
                "coordinates": [[[lng, lat], [lng + d, lat], [lng, lat + d], [lng, lat]]],
            },
        )
    near = await create_cell(client, world, code="S-1", boundary=square(lng + 0.012, lat + 0.010, 0.001))
    got = await locate(client, world, "secretary", lat + 0.010, lng + 0.010)
    assert got["nearest"]["id"] == near["id"]
    assert got["distance_m"] == pytest.approx(
        0.002 * math.cos(math.radians(lat + 0.010)) * M_PER_DEG, rel=0.005
    )
    # Inside every triangle: the smallest (most specific) one answers.
    got = await locate(client, world, "secretary", lat + 0.001, lng + 0.001)
    assert got["cell"]["code"] == "T-35"


async def test_hole_is_outside(client, world):
    lng, lat = A1_LNG, A1_LAT
    shell = square(lng, lat, 0.03)["coordinates"][0]
    hole = [
        [lng + 0.01, lat + 0.01],
        [lng + 0.01, lat + 0.02],
        [lng + 0.02, lat + 0.02],
        [lng + 0.02, lat + 0.01],
        [lng + 0.01, lat + 0.01],
    ]
    ring = await create_cell(
        client, world, code="R-1", boundary={"type": "Polygon", "coordinates": [shell, hole]}
    )
    got = await locate(client, world, "secretary", lat + 0.015, lng + 0.015)
    assert got["cell"] is None
    assert got["nearest"]["id"] == ring["id"]
    # The hole's east and west edges are nearer than its north and south ones (a degree of longitude
    # is shorter than one of latitude).
    assert got["distance_m"] == pytest.approx(
        0.005 * math.cos(math.radians(lat + 0.015)) * M_PER_DEG, rel=0.005
    )
    got = await locate(client, world, "secretary", lat + 0.005, lng + 0.005)
    assert got["cell"]["id"] == ring["id"]


async def test_locate_stays_in_scope(client, world):
    await create_cell(client, world, code="DH-01", boundary=square(A1_LNG, A1_LAT))
    b1 = await create_cell(
        client, world, "admin", code="BM-01", community="b1", boundary=square(B1_LNG, B1_LAT)
    )
    # secretary2 cannot see the a1 cell that contains the point: the nearest in their scope answers.
    got = await locate(client, world, "secretary2", A1_LAT + 0.005, A1_LNG + 0.005)
    assert got["cell"] is None
    assert got["nearest"]["id"] == b1["id"]
    assert got["distance_m"] > 20_000
    # Street staff of street A, standing in b1's cell, are pointed to the nearest cell of their street.
    got = await locate(client, world, "street", B1_LAT + 0.005, B1_LNG + 0.005)
    assert got["cell"] is None
    assert got["nearest"]["community_id"] == str(world.orgs["a1"].id)
    got = await locate(client, world, "admin", B1_LAT + 0.005, B1_LNG + 0.005)
    assert got["cell"]["id"] == b1["id"]


async def test_locate_with_no_cells(client, world):
    got = await locate(client, world, "secretary", A1_LAT, A1_LNG)
    assert got == {"cell": None, "nearest": None, "distance_m": None}


async def test_locate_bad_input(client, world):
    for params in (
        {"lat": 91, "lng": 120},
        {"lat": 30, "lng": -181},
        {"lat": "north", "lng": 120},
        {"lat": 30},
        {"lat": "nan", "lng": 120},
        {"lat": 30, "lng": "inf"},
    ):
        r = await client.get("/api/v1/grid-cells/locate", headers=world.h("secretary"), params=params)
        assert r.status_code == 422, params
        assert r.json()["code"] == "validation_error"
    r = await client.get(
        "/api/v1/grid-cells/locate", headers=world.h("resident"), params={"lat": 30, "lng": 120}
    )
    assert r.status_code == 403
