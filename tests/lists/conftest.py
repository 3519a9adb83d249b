"""Fixtures and helpers for the resources and needs tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from gongjian.core import db
from tests.factories import World, build_world

# 东湖社区 (a1) lies around (120.10, 30.20); 北门社区 (b1) around (120.30, 30.40).
A1_LNG, A1_LAT = 120.10, 30.20
B1_LNG, B1_LAT = 120.30, 30.40
PHOTO = "https://img.example.cn/visit/1.jpg"


def square(lng: float, lat: float, size: float = 0.01) -> dict[str, Any]:
    ring = [[lng, lat], [lng + size, lat], [lng + size, lat + size], [lng, lat + size], [lng, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


async def fetch(sql: str, **params: Any) -> list[Any]:
    """Rows straight from the database, outside any test session."""
    async with db.get_engine().connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def count(table: str) -> int:
    return int((await fetch(f"SELECT count(*) FROM {table}"))[0][0])


@dataclass
class Lists:
    """The world, with grid cells: a1 has two (the grid worker serves `a1_1`), b1 one."""

    w: World
    cells: dict[str, str]

    def h(self, who: str, **extra: str) -> dict[str, str]:
        return self.w.h(who, **extra)

    def org(self, name: str) -> str:
        return str(self.w.orgs[name].id)

    def unit(self, name: str) -> str:
        return str(self.w.units[name].id)

    def user(self, name: str) -> str:
        return str(self.w.users[name].id)


async def _cell(
    client: httpx.AsyncClient, w: World, community: str, code: str, lng: float, lat: float
) -> str:
    body = {
        "community_id": str(w.orgs[community].id),
        "code": code,
        "name": f"{code}网格",
        "boundary": square(lng, lat),
    }
    r = await client.post("/api/v1/grid-cells", headers=w.h("admin"), json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.fixture
async def k(client: httpx.AsyncClient, session: Any) -> Lists:
    w = await build_world(session)
    cells = {
        "a1_1": await _cell(client, w, "a1", "A1-01", A1_LNG, A1_LAT),
        "a1_2": await _cell(client, w, "a1", "A1-02", A1_LNG + 0.02, A1_LAT),
        "b1_1": await _cell(client, w, "b1", "B1-01", B1_LNG, B1_LAT),
    }
    r = await client.post(
        f"/api/v1/grid-cells/{cells['a1_1']}/workers",
        headers=w.h("admin"),
        json={"user_id": str(w.users["gridworker"].id), "role": "worker"},
    )
    assert r.status_code == 201, r.text
    return Lists(w=w, cells=cells)


def resource_body(k: Lists, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "org_id": k.org("a1"),
        "category": "service",
        "title": "专家团队下社区义诊",
        "description": "每月安排心内科专家下社区义诊一次，量血压、测血糖",
        "quantity": 12,
        "quantity_unit": "次",
        "available_from": "2026-01-01",
        "available_to": "2026-12-31",
        "weekdays": [2, 4],
        "location": {"lat": A1_LAT + 0.005, "lng": A1_LNG + 0.005},
        "serves_radius_km": 8,
        "external_ref": None,
    }
    body.update(fields)
    return {key: v for key, v in body.items() if v is not None}


def need_body(k: Lists, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "org_id": k.org("a1"),
        "grid_id": k.cells["a1_1"],
        "category": "service",
        "title": "高龄独居老人吃饭难",
        "description": "80岁以上独居老人有20多个，希望就近吃午饭或者送餐上门",
        "beneficiaries": 24,
        "urgency": "high",
        "wanted_from": "2026-03-01",
        "wanted_to": "2026-12-31",
        "location": {"lat": A1_LAT + 0.004, "lng": A1_LNG + 0.004},
    }
    if "title" in fields and "description" not in fields:
        body["description"] = ""  # another need, not the default one retold
    body.update(fields)
    return {key: v for key, v in body.items() if v is not None}


async def create_resource(
    client: httpx.AsyncClient, k: Lists, who: str = "secretary", *, expect: int = 201, **fields: Any
) -> dict[str, Any]:
    r = await client.post("/api/v1/resources", headers=k.h(who), json=resource_body(k, **fields))
    assert r.status_code == expect, r.text
    return dict(r.json())


async def create_need(
    client: httpx.AsyncClient,
    k: Lists,
    who: str = "secretary",
    *,
    expect: int = 201,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    r = await client.post(
        "/api/v1/needs", headers={**k.h(who), **(headers or {})}, json=need_body(k, **fields)
    )
    assert r.status_code == expect, r.text
    return dict(r.json())


async def client_headers(session: Any, k: Lists, org: str, scopes: list[str]) -> dict[str, str]:
    """An API client (a 12345 hotline integration) registered on `org` with `scopes`."""
    from gongjian.auth.models import ApiClient
    from gongjian.core.security import create_access_token, hash_password

    row = ApiClient(
        name=f"12345热线-{org}",
        client_id=f"gjc_hotline_{org}",
        secret_hash=hash_password("hotline-secret"),
        scopes=scopes,
        org_id=k.w.orgs[org].id,
    )
    session.add(row)
    await session.commit()
    token, _ = create_access_token(subject=str(row.id), kind="client", roles=[], scopes=scopes)
    return {"Authorization": f"Bearer {token}"}
