"""Helpers for the evaluations and standings tests: agreements written straight into a signed
state, windows opened and ratings submitted through the API."""

from __future__ import annotations

import hashlib
import uuid
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.agreements.models import Agreement, AgreementCommitment, AgreementState, CommitmentKind, Side
from gongjian.core import db
from tests.factories import World

LOCAL = ZoneInfo("Asia/Shanghai")

# Full marks on the built-in default rubrics, and a middling rating.
COMMUNITY_KEYS = [
    "commitments_kept",
    "activities_joined",
    "members_reported",
    "responsiveness",
    "resources_shared",
]
UNIT_KEYS = ["commitments_kept", "support", "responsiveness", "activities_organised"]

_numbers = iter(range(1, 1_000_000))


def local(year: int, month: int = 1, day: int = 1, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=LOCAL)


async def fetch(sql: str, **params: Any) -> list[Any]:
    """Rows straight from the database, outside any test session."""
    async with db.get_engine().connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def execute(sql: str, **params: Any) -> None:
    async with db.get_engine().begin() as conn:
        await conn.execute(text(sql), params)


async def make_agreement(
    session: AsyncSession,
    w: World,
    *,
    community: str = "a1",
    unit: str = "a1",
    term_from: date = date(2026, 1, 1),
    term_to: date = date(2026, 12, 31),
    state: AgreementState = AgreementState.active,
    activated_at: datetime | None = None,
    number: str | None = None,
    version_no: int = 1,
    commitments: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> Agreement:
    """One signed agreement version, written as the agreements service leaves it."""
    number = number or f"GJ-T-{next(_numbers):05d}"
    content = f"{number}/{version_no}"
    agreement = Agreement(
        number=number,
        version_no=version_no,
        community_id=w.orgs[community].id,
        unit_id=w.units[unit].id,
        title="共建协议",
        clauses=[],
        term_from=term_from,
        term_to=term_to,
        state=state,
        canonical_content=content,
        content_hash=hashlib.sha256(content.encode()).hexdigest(),
        activated_at=activated_at or datetime.combine(term_from, datetime.min.time(), LOCAL),
        **fields,
    )
    session.add(agreement)
    await session.flush()
    for n, spec in enumerate(commitments or []):
        session.add(
            AgreementCommitment(
                agreement_id=agreement.id,
                side=spec.get("side", Side.unit),
                kind=CommitmentKind(spec["kind"]),
                resource_id=spec.get("resource_id"),
                project_id=spec.get("project_id"),
                quantity=spec.get("quantity"),
                members_count=spec.get("members_count"),
                description=spec.get("description", ""),
                position=n,
            )
        )
    await session.commit()
    return agreement


def scores(keys: list[str], value: float) -> dict[str, float]:
    return dict.fromkeys(keys, value)


async def open_window(
    client: httpx.AsyncClient,
    w: World,
    agreement_id: uuid.UUID | str,
    who: str = "secretary",
    expect: int = 201,
    **body: Any,
) -> dict[str, Any]:
    body.setdefault("year", 2026)
    r = await client.post(
        f"/api/v1/agreements/{agreement_id}/evaluation-windows", headers=w.h(who), json=body
    )
    assert r.status_code == expect, r.text
    return dict(r.json())


async def submit(
    client: httpx.AsyncClient, w: World, window_id: str, who: str, expect: int = 201, **body: Any
) -> dict[str, Any]:
    r = await client.post(f"/api/v1/evaluation-windows/{window_id}/submissions", headers=w.h(who), json=body)
    assert r.status_code == expect, r.text
    return dict(r.json())


async def rate_unit(
    client: httpx.AsyncClient, w: World, window_id: str, value: float, who: str = "staff"
) -> None:
    await submit(client, w, window_id, who, scores=scores(COMMUNITY_KEYS, value))


async def rate_community(
    client: httpx.AsyncClient, w: World, window_id: str, value: float, who: str = "liaison"
) -> None:
    await submit(client, w, window_id, who, scores=scores(UNIT_KEYS, value))


async def get_window(client: httpx.AsyncClient, w: World, window_id: str, who: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/evaluation-windows/{window_id}", headers=w.h(who))
    assert r.status_code == 200, r.text
    return dict(r.json())


def side(window: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in window["sides"] if s["side"] == name)
