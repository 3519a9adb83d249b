"""Fixtures and helpers for the members domain tests."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from gongjian.core import db
from gongjian.core.validators import id_number_check_char
from tests.factories import World, build_world

PHONE = "13812345678"


def make_id_number(seq: int = 1, birth: str = "19850312", male: bool = True, area: str = "330203") -> str:
    """A valid GB 11643 ID number; the 17th digit's parity carries the gender."""
    body = f"{area}{birth}{seq % 100:02d}{1 if male else 2}"
    return body + id_number_check_char(body)


async def fetch(sql: str, **params: Any) -> list[Any]:
    """Rows straight from the database, outside any test session (no identity-map staleness)."""
    async with db.get_engine().connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def audit_rows(*object_types: str) -> list[Any]:
    return await fetch(
        "SELECT action, object_id, actor_id, before, after, reason FROM audit_log"
        " WHERE object_type = ANY(:types) ORDER BY at",
        types=list(object_types),
    )


def audit_text(rows: list[Any]) -> str:
    return json.dumps([[r.before, r.after, r.reason] for r in rows], ensure_ascii=False)


@pytest.fixture
async def world(session: Any) -> World:
    return await build_world(session)


async def create_member(
    client: httpx.AsyncClient,
    world: World,
    who: str = "secretary",
    *,
    seq: int = 1,
    org: str = "a1_branch",
    expect: int = 201,
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"党员{seq}",
        "id_number": make_id_number(seq),
        "phone": PHONE[:-2] + f"{seq % 100:02d}",
        "org_id": str(world.orgs[org].id),
        "category": "in_service",
        "residence_community_id": str(world.orgs["a1"].id),
        "joined_party_on": "2010-07-01",
    }
    body.update(fields)
    r = await client.post("/api/v1/members", headers=world.h(who), json=body)
    assert r.status_code == expect, r.text
    return dict(r.json())
