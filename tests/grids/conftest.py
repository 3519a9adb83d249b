"""Fixtures and helpers for the grids domain tests."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text

from gongjian.core import db
from tests.factories import World, build_world

# 东湖社区 lies around (120.10, 30.20); 北门社区 around (120.30, 30.40).
A1_LNG, A1_LAT = 120.10, 30.20
B1_LNG, B1_LAT = 120.30, 30.40


def square(lng: float, lat: float, size: float = 0.01) -> dict[str, Any]:
    """A GeoJSON Polygon: the square with its south-west corner at (lng, lat)."""
    ring = [[lng, lat], [lng + size, lat], [lng + size, lat + size], [lng, lat + size], [lng, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


async def fetch(sql: str, **params: Any) -> list[Any]:
    """Rows straight from the database, outside any test session."""
    async with db.get_engine().connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def count(table: str) -> int:
    return int((await fetch(f"SELECT count(*) FROM {table}"))[0][0])


@pytest.fixture
async def world(session: Any) -> World:
    return await build_world(session)


async def create_cell(
    client: httpx.AsyncClient,
    world: World,
    who: str = "secretary",
    *,
    code: str = "DH-01",
    community: str = "a1",
    boundary: dict[str, Any] | None = None,
    expect: int = 201,
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "community_id": str(world.orgs[community].id),
        "code": code,
        "name": f"{code}网格",
        "boundary": boundary or square(A1_LNG, A1_LAT),
    }
    body.update(fields)
    r = await client.post("/api/v1/grid-cells", headers=world.h(who), json=body)
    assert r.status_code == expect, r.text
    return dict(r.json())


async def create_building(
    client: httpx.AsyncClient,
    world: World,
    cell_id: str,
    who: str = "secretary",
    *,
    expect: int = 201,
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "1幢", "households": 24, "floors": 6, "units": 2}
    body.update(fields)
    r = await client.post(f"/api/v1/grid-cells/{cell_id}/buildings", headers=world.h(who), json=body)
    assert r.status_code == expect, r.text
    return dict(r.json())
