"""Helpers for the agreements tests: templates, drafts, sending and signing through the API, and
agreements written straight into a state (for other domains' tests)."""

from __future__ import annotations

import base64
import hashlib
import io
import uuid
from datetime import date
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.agreements.models import Agreement, AgreementState
from gongjian.core import db
from tests.factories import PASSWORD, World

CLAUSES = [
    {
        "key": "co_organization",
        "title": "组织共建",
        "body": "{{community}}与{{unit}}结对共建，联合开展组织生活。",
    },
    {"key": "co_resources", "title": "资源共享", "body": "{{unit}}向{{community}}开放活动场地。"},
    {"key": "term", "title": "协议期限", "body": "自{{term_from}}起至{{term_to}}止。"},
]


def image_b64(fmt: str = "PNG", size: tuple[int, int] = (120, 40)) -> str:
    """A small handwritten-signature-like image, base64."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).line([(5, 30), (40, 8), (80, 32), (115, 10)], fill="black", width=3)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


_numbers = iter(range(1, 1_000_000))


async def fetch(sql: str, **params: Any) -> list[Any]:
    """Rows straight from the database, outside any test session."""
    async with db.get_engine().connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def create_template(
    client: httpx.AsyncClient,
    w: World,
    who: str = "street",
    org: str = "street_a",
    expect: int = 201,
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "org_id": str(w.orgs[org].id),
        "name": "社区与驻区单位共建协议（范本）",
        "clauses": CLAUSES,
    }
    body.update(fields)
    r = await client.post("/api/v1/agreement-templates", headers=w.h(who), json=body)
    assert r.status_code == expect, r.text
    return dict(r.json())


async def create_draft(
    client: httpx.AsyncClient,
    w: World,
    who: str = "secretary",
    *,
    community: str = "a1",
    unit: str = "a1",
    template_id: str | None = None,
    expect: int = 201,
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "community_id": str(w.orgs[community].id),
        "unit_id": str(w.units[unit].id),
        "term_from": "2026-01-01",
        "term_to": "2027-12-31",
        "commitments": [
            {
                "side": "unit",
                "kind": "activity",
                "recurrence": "monthly",
                "description": "每月参加统一活动日",
            },
            {"side": "unit", "kind": "members_report", "members_count": 12},
        ],
    }
    if template_id is not None:
        body["template_id"] = template_id
    else:
        body["clauses"] = CLAUSES
    body.update(fields)
    r = await client.post("/api/v1/agreements", headers=w.h(who), json=body)
    assert r.status_code == expect, r.text
    return dict(r.json())


async def send(
    client: httpx.AsyncClient, w: World, aid: str, who: str = "secretary", expect: int = 200
) -> dict[str, Any]:
    r = await client.post(f"/api/v1/agreements/{aid}/send", headers=w.h(who))
    assert r.status_code == expect, r.text
    return dict(r.json())


async def sign(
    client: httpx.AsyncClient,
    w: World,
    aid: str,
    who: str,
    content_hash: str,
    expect: int | None = 201,
    **fields: Any,
) -> httpx.Response:
    body: dict[str, Any] = {"content_hash": content_hash}
    if "one_time_code" not in fields:
        body["password"] = PASSWORD
    body.update(fields)
    r = await client.post(f"/api/v1/agreements/{aid}/signatures", headers=w.h(who), json=body)
    if expect is not None:
        assert r.status_code == expect, r.text
    return r


async def active_agreement(client: httpx.AsyncClient, w: World, **draft: Any) -> dict[str, Any]:
    """Drafted, sent and signed by the secretary (甲方) and the liaison (乙方)."""
    a = await create_draft(client, w, **draft)
    a = await send(client, w, a["id"])
    await sign(client, w, a["id"], "secretary", a["content_hash"])
    r = await sign(client, w, a["id"], "liaison", a["content_hash"])
    assert r.json()["state"] == "active"
    return dict(r.json())


async def insert_agreement(
    session: AsyncSession,
    community_id: uuid.UUID,
    unit_id: uuid.UUID,
    state: AgreementState = AgreementState.active,
    *,
    term_from: date = date(2026, 1, 1),
    term_to: date = date(2026, 12, 31),
) -> Agreement:
    """An agreement written straight into `state` (not superseded), committed."""
    n = next(_numbers)
    frozen = state != AgreementState.draft
    content = f'{{"test":{n}}}'
    agreement = Agreement(
        number=f"GJ-TEST-{n:06d}",
        version_no=1,
        community_id=community_id,
        unit_id=unit_id,
        title="测试协议",
        clauses=[],
        term_from=term_from,
        term_to=term_to,
        state=state,
        canonical_content=content if frozen else None,
        content_hash=hashlib.sha256(content.encode()).hexdigest() if frozen else None,
    )
    session.add(agreement)
    await session.commit()
    return agreement
