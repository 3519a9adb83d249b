"""Rubrics: a county or street sets them per side, the nearest one applies, a window keeps the one it
opened with, the built-in default applies when none is set."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.evaluations.helpers import COMMUNITY_KEYS, fetch, make_agreement, open_window, side, submit

ITEMS = [
    {"key": "commitments_kept", "label": "履行承诺", "weight": 60, "max_score": 5},
    {
        "key": "volunteering",
        "label": "志愿服务",
        "description": "职工参加社区志愿服务",
        "weight": 40,
        "max_score": 5,
    },
]


async def create_rubric(
    client,
    w,
    who: str = "street",
    org: str = "street_a",
    side: str = "community",
    expect: int = 201,
    **fields: Any,
) -> dict[str, Any]:
    body = {"org_id": str(w.orgs[org].id), "side": side, "name": "城中街道评议细则", "items": ITEMS, **fields}
    r = await client.post("/api/v1/evaluation-rubrics", headers=w.h(who), json=body)
    assert r.status_code == expect, r.text
    return dict(r.json())


async def effective(client, w, org: str, side: str = "community", who: str = "admin") -> dict[str, Any]:
    r = await client.get(
        "/api/v1/evaluation-rubrics/effective",
        headers=w.h(who),
        params={"org_id": str(w.orgs[org].id), "side": side},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_the_nearest_rubric_applies(client, world, session):
    # None set: the built-in default, not yet saved.
    default = await effective(client, world, "a1")
    assert default["id"] is None and [i["key"] for i in default["items"]] == COMMUNITY_KEYS

    street = await create_rubric(client, world)
    assert street["org_id"] == str(world.orgs["street_a"].id) and street["retired_at"] is None
    assert [(i["key"], i["weight"], i["max_score"]) for i in street["items"]] == [
        ("commitments_kept", 60, 5),
        ("volunteering", 40, 5),
    ]
    county = await create_rubric(client, world, who="admin", org="county", name="县评议细则", items=ITEMS[:1])
    assert (await effective(client, world, "a1", who="secretary"))["id"] == street["id"]
    assert (await effective(client, world, "b1", who="secretary2"))["id"] == county["id"]
    # The other side is untouched.
    assert (await effective(client, world, "a1", side="unit"))["id"] is None

    a1 = await open_window(client, world, (await make_agreement(session, world)).id)
    b1 = await open_window(
        client, world, (await make_agreement(session, world, community="b1", unit="b1")).id, who="secretary2"
    )
    assert side(a1, "community")["rubric"]["id"] == street["id"]
    assert side(b1, "community")["rubric"]["id"] == county["id"]
    # The unit side took the built-in default, saved once for every window to share.
    assert side(a1, "unit")["rubric"]["id"] == side(b1, "unit")["rubric"]["id"] is not None
    assert side(a1, "unit")["rubric"]["org_id"] is None

    # Scored on the window's own rubric: 0 to 5 here.
    r = await client.post(
        f"/api/v1/evaluation-windows/{a1['id']}/submissions",
        headers=world.h("staff"),
        json={"scores": {"commitments_kept": 6, "volunteering": 5}},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "scores", "commitments_kept"]
    sub = await submit(client, world, a1["id"], "staff", scores={"commitments_kept": 5, "volunteering": 2.5})
    assert sub["total"] == 80.0 and sub["rubric_id"] == street["id"]  # 60·1 + 40·0.5


async def test_a_new_rubric_retires_the_old_one_but_not_for_open_windows(client, world, session):
    old = await create_rubric(client, world)
    window = await open_window(client, world, (await make_agreement(session, world)).id)
    new = await create_rubric(client, world, name="新细则", items=[{**ITEMS[0], "weight": 100}])
    assert (await effective(client, world, "a1"))["id"] == new["id"]
    r = await client.get(f"/api/v1/evaluation-rubrics/{old['id']}", headers=world.h("street"))
    assert r.status_code == 200 and r.json()["retired_at"] is not None
    r = await client.get(f"/api/v1/evaluation-windows/{window['id']}", headers=world.h("staff"))
    assert side(r.json(), "community")["rubric"]["id"] == old["id"]
    r = await client.get("/api/v1/evaluation-rubrics", headers=world.h("street"), params={"current": True})
    assert [x["id"] for x in r.json()["items"]] == [new["id"]]
    r = await client.get("/api/v1/evaluation-rubrics", headers=world.h("street"))
    assert [x["id"] for x in r.json()["items"]] == [old["id"], new["id"]]


async def test_two_new_rubrics_at_once_leave_one_current(client, world):
    results = await asyncio.gather(
        client.post(
            "/api/v1/evaluation-rubrics",
            headers=world.h("street"),
            json={"org_id": str(world.orgs["street_a"].id), "side": "unit", "name": "甲", "items": ITEMS},
        ),
        client.post(
            "/api/v1/evaluation-rubrics",
            headers=world.h("admin"),
            json={"org_id": str(world.orgs["street_a"].id), "side": "unit", "name": "乙", "items": ITEMS},
        ),
    )
    assert [r.status_code for r in results] == [201, 201], [r.text for r in results]
    rows = await fetch("SELECT name FROM evaluation_rubrics WHERE retired_at IS NULL")
    assert len(rows) == 1


async def test_who_sets_rubrics(client, world):
    # Counties and streets set rubrics; a community does not.
    r = await create_rubric(client, world, who="secretary", org="a1", expect=422)
    assert r["code"] == "invalid_rubric_org"
    # Out of scope: as if the organization did not exist.
    await create_rubric(client, world, who="secretary", org="street_a", expect=404)
    await create_rubric(client, world, who="secretary2", org="street_a", expect=404)
    for who in ("liaison", "gridworker", "member"):
        await create_rubric(client, world, who=who, expect=403)
    r = await client.get("/api/v1/evaluation-rubrics", headers=world.h("gridworker"))
    assert r.status_code == 403
    rubric = await create_rubric(client, world)
    for who, status in (
        ("street", 200),
        ("admin", 200),
        ("secretary2", 404),
        ("secretary", 404),
        ("member", 403),
    ):
        r = await client.get(f"/api/v1/evaluation-rubrics/{rubric['id']}", headers=world.h(who))
        assert r.status_code == status, (who, r.text)
    r = await client.get(
        "/api/v1/evaluation-rubrics/effective",
        headers=world.h("secretary2"),
        params={"org_id": str(world.orgs["a1"].id), "side": "unit"},
    )
    assert r.status_code == 404


@pytest.mark.parametrize(
    "change",
    [
        {"items": []},
        {"items": [ITEMS[0], ITEMS[0]]},
        {"items": [{**ITEMS[0], "weight": 0}]},
        {"items": [{**ITEMS[0], "max_score": 101}]},
        {"items": [{**ITEMS[0], "key": "Commitments Kept"}]},
        {"items": [{**ITEMS[0], "label": " "}]},
        {"side": "street"},
        {"name": ""},
    ],
)
async def test_bad_rubrics_are_422(client, world, change):
    await create_rubric(client, world, expect=422, **change)
    assert await fetch("SELECT id FROM evaluation_rubrics") == []
