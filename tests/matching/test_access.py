"""Who may read a need's matches, start a run and decide on a suggestion, home and away.

Home is 东湖 (a1) for everyone but secretary2, whose home is 北门 (b1); each side has a need and a
fitting resource of its own. Out of scope answers 404, a permission held nowhere 403."""

from __future__ import annotations

from datetime import date
from typing import Any, NamedTuple

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.auth.models import ApiClient
from gongjian.core.access import Perm
from gongjian.core.security import create_access_token, hash_password
from gongjian.lists.models import Need, NeedSource, Resource
from tests.factories import World, build_world


class Row(NamedTuple):
    """Expected statuses: matches home/away, run home/away, dismiss home/away."""

    matches_home: int
    matches_away: int
    run_home: int
    run_away: int
    dismiss_home: int
    dismiss_away: int


# fmt: off
EXPECTED: dict[str, Row] = {
    "admin":      Row(200, 200, 202, 202, 200, 200),
    "street":     Row(200, 404, 202, 404, 200, 404),
    "secretary":  Row(200, 404, 202, 404, 200, 404),
    "secretary2": Row(200, 404, 202, 404, 200, 404),
    "gridworker": Row(200, 404, 403, 403, 403, 403),
    "liaison":    Row(404, 404, 404, 404, 404, 404),  # a unit grant reaches no need nor organization
    "member":     Row(403, 403, 403, 403, 403, 403),
    "resident":   Row(403, 403, 403, 403, 403, 403),
    "client":     Row(200, 404, 403, 403, 403, 403),  # lists:read on 东湖
}
# fmt: on


async def _side(session: AsyncSession, org_id: Any) -> Need:
    session.add(
        Resource(
            org_id=org_id,
            provider_kind="institution",
            provider_name="卫生院",
            category="service",
            title="老年人健康体检",
            description="为老人免费体检，抽血、B超、心电图",
            quantity=50,
            quantity_unit="人",
            remaining_quantity=50,
            available_from=date(2026, 1, 1),
            available_to=date(2026, 12, 31),
            lat=30.0,
            lng=120.0,
            serves_radius_km=5,
            year=2026,
        )
    )
    need = Need(
        org_id=org_id,
        category="service",
        title="老人想做个体检",
        description="好几年没体检，想抽血做B超",
        wanted_from=date(2026, 3, 1),
        wanted_to=date(2026, 6, 30),
        lat=30.001,
        lng=120.001,
        source=NeedSource.staff,
        year=2026,
    )
    session.add(need)
    return need


@pytest.mark.parametrize("who", list(EXPECTED))
async def test_matching_access(client: httpx.AsyncClient, session: AsyncSession, who: str) -> None:
    w: World = await build_world(session)
    needs = {side: await _side(session, w.orgs[side].id) for side in ("a1", "b1")}
    row = ApiClient(
        name="数据平台",
        client_id="gjc_matching",
        secret_hash=hash_password("x-secret-1"),
        scopes=[str(Perm.lists_read)],
        org_id=w.orgs["a1"].id,
    )
    session.add(row)
    await session.commit()
    if who == "client":
        token, _ = create_access_token(
            subject=str(row.id), kind="client", roles=[], scopes=[str(Perm.lists_read)]
        )
        h = {"Authorization": f"Bearer {token}"}
    else:
        h = w.h(who)
    home, away = ("b1", "a1") if who == "secretary2" else ("a1", "b1")
    want = EXPECTED[who]

    admin = w.h("admin")
    suggestion = {}
    for side in ("a1", "b1"):
        r = await client.get(f"/api/v1/needs/{needs[side].id}/matches", headers=admin)
        assert r.status_code == 200 and r.json()["items"], r.text
        suggestion[side] = r.json()["items"][0]["id"]

    for side, expected in ((home, want.matches_home), (away, want.matches_away)):
        r = await client.get(f"/api/v1/needs/{needs[side].id}/matches", headers=h)
        assert r.status_code == expected, (who, side, r.text)
        if expected == 200:
            assert r.json()["items"][0]["id"] == suggestion[side]
    for side, expected in ((home, want.run_home), (away, want.run_away)):
        r = await client.post("/api/v1/matching/runs", json={"org_id": str(w.orgs[side].id)}, headers=h)
        assert r.status_code == expected, (who, side, r.text)
    for side, expected in ((away, want.dismiss_away), (home, want.dismiss_home)):
        url = f"/api/v1/matching/suggestions/{suggestion[side]}/dismiss"
        r = await client.post(url, json={"reason": "不合适"}, headers=h)
        assert r.status_code == expected, (who, side, r.text)
        state = (await client.get(f"/api/v1/needs/{needs[side].id}/matches", headers=admin)).json()["items"]
        assert (suggestion[side] in [i["id"] for i in state]) == (expected != 200)
