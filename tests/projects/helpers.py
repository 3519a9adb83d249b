"""Helpers shared by the projects and meetings tests: list items, liaisons, pairing, meetings."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.core import db
from gongjian.core.access import Role
from gongjian.lists.models import (
    ListCategory,
    Need,
    NeedSource,
    NeedState,
    ProviderKind,
    Resource,
    ResourceState,
)
from gongjian.resident_units.models import ResidentUnit
from tests.factories import World, make_unit, make_user, token_for

WHEN = "2026-12-01T09:30:00+08:00"


async def fetch(sql: str, **params: Any) -> list[Any]:
    """Rows straight from the database, outside any test session."""
    async with db.get_engine().connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def audit_rows(object_type: str, object_id: str | uuid.UUID | None = None) -> list[Any]:
    sql = "SELECT action, object_id, actor_id, before, after, reason FROM audit_log WHERE object_type = :t"
    params: dict[str, Any] = {"t": object_type}
    if object_id is not None:
        sql += " AND object_id = :id"
        params["id"] = uuid.UUID(str(object_id))
    return await fetch(sql + " ORDER BY at, id", **params)


async def make_resource(
    session: AsyncSession,
    w: World,
    org: str = "a1",
    *,
    quantity: int = 10,
    unit: str | None = None,
    title: str = "义诊服务",
    state: ResourceState = ResourceState.available,
) -> Resource:
    resource = Resource(
        org_id=w.orgs[org].id,
        unit_id=w.units[unit].id if unit else None,
        provider_kind=ProviderKind.institution if unit else ProviderKind.organization,
        provider_name=w.units[unit].name if unit else w.orgs[org].name,
        category=ListCategory.service,
        title=title,
        description="",
        quantity=quantity,
        quantity_unit="次",
        remaining_quantity=quantity,
        available_from=date(2026, 1, 1),
        available_to=date(2026, 12, 31),
        year=2026,
        state=state,
    )
    session.add(resource)
    await session.commit()
    return resource


async def make_need(
    session: AsyncSession,
    w: World,
    org: str = "a1",
    *,
    title: str = "老人需要上门体检",
    state: NeedState = NeedState.accepted,
) -> Need:
    need = Need(
        org_id=w.orgs[org].id,
        category=ListCategory.service,
        title=title,
        description="独居老人行动不便",
        wanted_from=date(2026, 3, 1),
        wanted_to=date(2026, 6, 30),
        source=NeedSource.staff,
        year=2026,
        state=state,
    )
    session.add(need)
    await session.commit()
    return need


async def add_unit_with_liaison(
    session: AsyncSession, w: World, key: str, community: str, name: str
) -> ResidentUnit:
    """A resident unit in `community` and a liaison for it (`w.h(key)`)."""
    unit = await make_unit(session, w.orgs[community], name)
    user = await make_user(session, key, Role.unit_liaison, unit=unit)
    w.units[key] = unit
    w.users[key] = user
    w.tokens[key] = token_for(user, [Role.unit_liaison.value])
    await session.commit()
    return unit


async def pair(session: AsyncSession, w: World, unit: str, community: str) -> None:
    """An active co-building agreement between the unit and the community: the unit counts as paired."""
    from tests.agreements.helpers import insert_agreement

    await insert_agreement(session, w.orgs[community].id, w.units[unit].id)


async def open_hall(project_id: str) -> None:
    """Let the claim window pass: the project opens to every unit of its street."""
    async with db.get_engine().begin() as conn:
        await conn.execute(
            text("UPDATE projects SET street_opens_at = now() - interval '1 minute' WHERE id = :id"),
            {"id": uuid.UUID(project_id)},
        )


async def create_project(
    client: httpx.AsyncClient,
    w: World,
    who: str = "secretary",
    *,
    expect: int = 201,
    org: str = "a1",
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"org_id": str(w.orgs[org].id), "title": "为独居老人上门体检", **fields}
    r = await client.post("/api/v1/projects", headers=w.h(who), json=body)
    assert r.status_code == expect, r.text
    return dict(r.json())


async def get_project(
    client: httpx.AsyncClient, w: World, pid: str, who: str = "secretary"
) -> dict[str, Any]:
    r = await client.get(f"/api/v1/projects/{pid}", headers=w.h(who))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def move(
    client: httpx.AsyncClient,
    w: World,
    pid: str,
    to: str,
    who: str = "secretary",
    *,
    expect: int = 200,
    **fields: Any,
) -> dict[str, Any]:
    r = await client.post(f"/api/v1/projects/{pid}/transitions", headers=w.h(who), json={"to": to, **fields})
    assert r.status_code == expect, r.text
    return dict(r.json())


async def schedule(
    client: httpx.AsyncClient,
    w: World,
    who: str = "secretary",
    *,
    org: str = "a1",
    expect: int = 201,
    projects: tuple[str, ...] = (),
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "org_id": str(w.orgs[org].id),
        "kind": "joint_meeting",
        "title": "东湖社区联席会议",
        "scheduled_at": WHEN,
        "location": "社区党群服务中心",
        "agenda": [{"title": f"议题{i + 1}", "project_id": p} for i, p in enumerate(projects)],
        **fields,
    }
    r = await client.post("/api/v1/meetings", headers=w.h(who), json=body)
    assert r.status_code == expect, r.text
    return dict(r.json())


async def meeting_to(
    client: httpx.AsyncClient,
    w: World,
    mid: str,
    to: str,
    who: str = "secretary",
    *,
    expect: int = 200,
    **fields: Any,
) -> dict[str, Any]:
    r = await client.post(f"/api/v1/meetings/{mid}/transitions", headers=w.h(who), json={"to": to, **fields})
    assert r.status_code == expect, r.text
    return dict(r.json())


async def decide(
    client: httpx.AsyncClient,
    w: World,
    mid: str,
    item_id: str,
    outcome: str = "approve",
    who: str = "secretary",
    *,
    expect: int | None = 201,
    **fields: Any,
) -> httpx.Response:
    r = await client.post(
        f"/api/v1/meetings/{mid}/decisions",
        headers=w.h(who),
        json={"agenda_item_id": item_id, "outcome": outcome, **fields},
    )
    if expect is not None:
        assert r.status_code == expect, r.text
    return r


async def approve(client: httpx.AsyncClient, w: World, pid: str, who: str = "secretary") -> dict[str, Any]:
    """Through a held meeting of the project's community: the only way a project is approved."""
    meeting = await schedule(client, w, who, projects=(pid,))
    await meeting_to(client, w, meeting["id"], "held", who)
    await decide(client, w, meeting["id"], meeting["agenda"][0]["id"], "approve", who, note="同意立项")
    return await get_project(client, w, pid, who)
