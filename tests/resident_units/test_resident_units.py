"""Resident units (驻区单位) through the API: credit codes, communities, party orgs, liaisons,
scope, ETags and bad input."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from gongjian.auth.models import RoleAssignment
from gongjian.core.access import Role
from gongjian.core.audit import AuditEntry
from gongjian.core.validators import credit_code_check_char
from gongjian.resident_units.models import ResidentUnit
from tests.factories import World, build_world, make_unit, make_user, token_for

API = "/api/v1/resident-units"
_codes = itertools.count(1)


def new_code() -> str:
    body = f"52330100{next(_codes):09d}"
    return body + credit_code_check_char(body)


def _id(obj: Any) -> str:
    return str(obj.id)


@pytest.fixture
async def world(session):
    return await build_world(session)


@pytest.fixture
async def client2(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def _body(w: World, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "东湖小学",
        "type": "institution",
        "credit_code": new_code(),
        "community_id": _id(w.orgs["a1"]),
        **overrides,
    }


async def _create(client, w: World, who: str = "secretary", **overrides: Any) -> httpx.Response:
    return await client.post(API, headers=w.h(who), json=_body(w, **overrides))


async def _created(client, w: World, who: str = "secretary", **overrides: Any) -> dict[str, Any]:
    r = await _create(client, w, who, **overrides)
    assert r.status_code == 201, r.text
    return r.json()


async def _count(session, model: Any = ResidentUnit) -> int:
    return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def _list(client, w: World, who: str, **params: Any) -> list[dict[str, Any]]:
    r = await client.get(API, headers=w.h(who), params={"limit": 100, **params})
    assert r.status_code == 200, r.text
    return r.json()["items"]


# --- create and read ------------------------------------------------------------------------


async def test_create_and_get(client, world, session):
    w = world
    r = await client.post(
        API,
        headers=w.h("secretary"),
        json={
            "name": "  东湖第一小学  ",
            "type": "institution",
            "credit_code": " 91330105ma2cfb3k81 ",
            "community_id": _id(w.orgs["a1"]),
            "address": "东湖路 18 号",
            "lat": 30.274085,
            "lng": 120.15507,
            "party_org_mode": "single",
            "party_org_id": _id(w.orgs["a1_branch"]),
            "contact_name": "陈老师",
            "contact_phone": "0571-8765 4321",
            "description": "公办小学",
            "external_ref": "unit-0001",
        },
    )
    assert r.status_code == 201, r.text
    unit = r.json()
    assert unit["name"] == "东湖第一小学"
    assert unit["credit_code"] == "91330105MA2CFB3K81"
    assert (unit["lat"], unit["lng"]) == (30.274085, 120.15507)
    assert unit["party_org_mode"] == "single" and unit["party_org_id"] == _id(w.orgs["a1_branch"])
    assert unit["external_ref"] == "unit-0001"
    assert unit["version"] == 1
    assert r.headers["etag"] == '"1"'
    assert r.headers["location"] == f"{API}/{unit['id']}"

    r = await client.get(f"{API}/{unit['id']}", headers=w.h("staff"))
    assert r.status_code == 200
    assert r.headers["etag"] == '"1"'
    assert r.json() == unit
    # The street above and the platform admin see it; the grid worker of the community reads it.
    for who in ("street", "admin", "gridworker"):
        assert (await client.get(f"{API}/{unit['id']}", headers=w.h(who))).status_code == 200, who

    entry = (
        await session.execute(select(AuditEntry).where(AuditEntry.object_id == uuid.UUID(unit["id"])))
    ).scalar_one()
    assert entry.action == "resident_unit.create"
    assert entry.org_id == w.orgs["a1"].id
    assert entry.after is not None and entry.after["credit_code"] == "91330105MA2CFB3K81"


async def test_every_type_and_party_org_mode(client, world):
    w = world
    for unit_type in ("agency", "soe", "institution", "private", "social_org"):
        unit = await _created(client, w, name=f"单位-{unit_type}", type=unit_type)
        assert unit["type"] == unit_type and unit["party_org_mode"] == "none" and unit["party_org_id"] is None
    for mode in ("single", "joint", "attached"):
        unit = await _created(
            client,
            w,
            name=f"党组织-{mode}",
            type="private",
            party_org_mode=mode,
            party_org_id=_id(w.orgs["a1_branch"]),
        )
        assert unit["party_org_mode"] == mode


async def test_party_org_mode_and_id_go_together(client, world, session):
    w = world
    before = await _count(session)
    for overrides in (
        {"party_org_mode": "joint"},
        {"party_org_mode": "single", "party_org_id": None},
        {"party_org_mode": "none", "party_org_id": _id(w.orgs["a1_branch"])},
        {"party_org_id": _id(w.orgs["a1_branch"])},
    ):
        r = await _create(client, w, **overrides)
        assert r.status_code == 422, (overrides, r.text)
        assert r.json()["code"] == "party_org_mismatch"
    # The party org must be within the caller's scope.
    r = await _create(client, w, party_org_mode="attached", party_org_id=_id(w.orgs["b1_branch"]))
    assert r.status_code == 404
    r = await _create(client, w, party_org_mode="attached", party_org_id=str(uuid.uuid4()))
    assert r.status_code == 404
    assert await _count(session) == before


async def test_community_must_be_a_community_in_scope(client, world, session):
    w = world
    before = await _count(session)
    for org in ("a1_branch", "street_a", "county"):
        r = await _create(client, w, "admin", community_id=_id(w.orgs[org]))
        assert r.status_code == 422, (org, r.text)
        assert r.json()["code"] == "invalid_community"
    r = await _create(client, w, "secretary", community_id=_id(w.orgs["b1"]))
    assert r.status_code == 404
    r = await _create(client, w, "secretary", community_id=str(uuid.uuid4()))
    assert r.status_code == 404
    assert await _count(session) == before
    # The street registers units in any of its communities.
    unit = await _created(client, w, "street", community_id=_id(w.orgs["a2"]))
    assert unit["community_id"] == _id(w.orgs["a2"])


# --- credit codes ----------------------------------------------------------------------------


def _with_wrong_check_char(code: str) -> str:
    return code[:17] + ("1" if code[17] != "1" else "2")


@pytest.mark.parametrize(
    "bad",
    [
        _with_wrong_check_char("91330105MA2CFB3K81"),  # wrong check character
        "91330105MA2CFB3K8",  # 17 characters
        "91330105MA2CFB3K811",  # 19 characters
        "91330105MI2CFB3K81",  # I is not in the GB 32100 alphabet
        "91330105MA2CFB3KO1",  # nor O
        "9133010SMA2CFB3K81",  # nor S
        "91330105MA2CFB-K81",  # punctuation
        "东湖小学统一社会信用代码无效值东湖小学",
        "   ",
    ],
)
async def test_bad_credit_codes_are_refused(client, world, session, bad):
    before = await _count(session)
    r = await _create(client, world, credit_code=bad)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_credit_code"
    assert r.json()["errors"][0]["loc"] == ["body", "credit_code"]
    assert await _count(session) == before
    unit = world.units["a1"]
    r = await client.patch(f"{API}/{_id(unit)}", headers=world.h("secretary"), json={"credit_code": bad})
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_credit_code"


async def test_credit_code_cap_and_empty_are_validation_errors(client, world, session):
    before = await _count(session)
    for bad in ("", "9" * 51, 91330105, None):
        r = await _create(client, world, credit_code=bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["code"] == "validation_error"
    assert await _count(session) == before


async def test_duplicate_credit_code_is_409(client, world, session):
    w = world
    code = new_code()
    await _created(client, w, credit_code=code)
    before = await _count(session)
    r = await _create(client, w, credit_code=code.lower())
    assert r.status_code == 409 and r.json()["code"] == "duplicate"
    # Unique platform-wide, even against a unit the caller cannot see.
    r = await _create(client, w, credit_code=w.units["b1"].credit_code)
    assert r.status_code == 409 and r.json()["code"] == "duplicate"
    r = await client.patch(
        f"{API}/{_id(w.units['a1'])}", headers=w.h("secretary"), json={"credit_code": code}
    )
    assert r.status_code == 409
    assert await _count(session) == before
    # Re-sending one's own code is no conflict.
    own = w.units["a1"].credit_code
    r = await client.patch(
        f"{API}/{_id(w.units['a1'])}", headers=w.h("secretary"), json={"credit_code": own.lower()}
    )
    assert r.status_code == 200, r.text


async def test_validate_credit_code_endpoint(client, world):
    w = world
    url = f"{API}/validate-credit-code"
    r = await client.get(url, headers=w.h("resident"), params={"code": " 91330105ma2cfb3k81 "})
    assert r.status_code == 200, r.text
    assert r.json() == {"valid": True, "normalized": "91330105MA2CFB3K81"}
    for bad in ("91330105MA2CFB3K82", "91330105MA2CFB3K8", "91330105MI2CFB3K81", ""):
        r = await client.get(url, headers=w.h("liaison"), params={"code": bad})
        assert r.status_code == 200
        assert r.json() == {"valid": False, "normalized": bad}
    for who in ("admin", "gridworker", "member"):
        assert (await client.get(url, headers=w.h(who), params={"code": "x"})).status_code == 200
    assert (await client.get(url, headers=w.h("admin"))).status_code == 422
    assert (await client.get(url, headers=w.h("admin"), params={"code": "9" * 51})).status_code == 422
    r = await client.get(url, params={"code": "91330105MA2CFB3K81"})
    assert r.status_code == 401


# --- list ------------------------------------------------------------------------------------


async def test_list_filters_and_scope(client, world):
    w = world
    school = await _created(client, w, name="东湖小学", type="institution", address="东湖路 1 号")
    shop = await _created(client, w, name="东湖超市", type="private")
    other = await _created(
        client, w, "street", name="桃源物业", type="private", community_id=_id(w.orgs["a2"])
    )
    a1_unit = _id(w.units["a1"])
    b1_unit = _id(w.units["b1"])

    ids = lambda items: {u["id"] for u in items}  # noqa: E731
    assert ids(await _list(client, w, "secretary")) == {a1_unit, school["id"], shop["id"]}
    assert ids(await _list(client, w, "street")) == {a1_unit, school["id"], shop["id"], other["id"]}
    assert ids(await _list(client, w, "admin")) == {a1_unit, b1_unit, school["id"], shop["id"], other["id"]}
    assert ids(await _list(client, w, "secretary2")) == {b1_unit}
    assert ids(await _list(client, w, "gridworker")) == {a1_unit, school["id"], shop["id"]}
    assert ids(await _list(client, w, "liaison")) == {a1_unit}

    assert ids(await _list(client, w, "admin", community_id=_id(w.orgs["a2"]))) == {other["id"]}
    assert await _list(client, w, "secretary", community_id=_id(w.orgs["b1"])) == []
    assert ids(await _list(client, w, "street", type="private")) == {shop["id"], other["id"]}
    assert ids(await _list(client, w, "admin", q="东湖")) == {a1_unit, school["id"], shop["id"]}
    assert ids(await _list(client, w, "admin", q="东湖路")) == {school["id"]}
    assert await _list(client, w, "admin", q="%") == []
    assert ids(await _list(client, w, "admin", credit_code=shop["credit_code"].lower())) == {shop["id"]}
    assert await _list(client, w, "secretary", credit_code=w.units["b1"].credit_code) == []

    for who in ("resident", "member"):
        r = await client.get(API, headers=w.h(who))
        assert r.status_code == 403, who


async def test_list_pagination(client, world):
    w = world
    created = {(await _created(client, w, name=f"分页单位{i}"))["id"] for i in range(12)}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 5, "type": "institution"}
        if cursor:
            params["cursor"] = cursor
        r = await client.get(API, headers=w.h("secretary"), params=params)
        assert r.status_code == 200
        seen.extend(u["id"] for u in r.json()["items"])
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 12 and set(seen) == created
    r = await client.get(API, headers=w.h("secretary"), params={"limit": 101})
    assert r.status_code == 422
    r = await client.get(API, headers=w.h("secretary"), params={"cursor": "garbage"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_cursor"
    for params in ({"type": "factory"}, {"community_id": "x"}, {"q": "q" * 101}):
        r = await client.get(API, headers=w.h("secretary"), params=params)
        assert r.status_code == 422, params


# --- update ----------------------------------------------------------------------------------


async def test_update_with_etag(client, world, session):
    w = world
    unit = await _created(client, w)
    url = f"{API}/{unit['id']}"
    r = await client.patch(
        url,
        headers=w.h("secretary", **{"If-Match": '"1"'}),
        json={
            "name": "东湖实验小学",
            "lat": 30.1,
            "lng": 120.2,
            "contact_name": "王老师",
            "party_org_mode": "joint",
            "party_org_id": _id(w.orgs["a1_branch"]),
        },
    )
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"2"'
    body = r.json()
    assert body["name"] == "东湖实验小学" and body["party_org_mode"] == "joint" and body["version"] == 2
    # Stale.
    r = await client.patch(url, headers=w.h("secretary", **{"If-Match": '"1"'}), json={"name": "旧版本"})
    assert r.status_code == 412 and r.json()["code"] == "precondition_failed"
    r = await client.get(url, headers=w.h("secretary"))
    assert r.json()["name"] == "东湖实验小学" and r.headers["etag"] == '"2"'
    # Clearing the party org takes both fields; the location goes as a pair.
    r = await client.patch(url, headers=w.h("secretary"), json={"party_org_mode": "none"})
    assert r.status_code == 422 and r.json()["code"] == "party_org_mismatch"
    r = await client.patch(url, headers=w.h("secretary"), json={"party_org_id": None})
    assert r.status_code == 422 and r.json()["code"] == "party_org_mismatch"
    r = await client.patch(url, headers=w.h("secretary"), json={"lat": None})
    assert r.status_code == 422
    r = await client.patch(
        url,
        headers=w.h("secretary"),
        json={"party_org_mode": "none", "party_org_id": None, "lat": None, "lng": None},
    )
    assert r.status_code == 200, r.text
    assert r.json()["party_org_id"] is None and r.json()["lat"] is None
    entries = (
        (
            await session.execute(
                select(AuditEntry)
                .where(AuditEntry.object_id == uuid.UUID(unit["id"]))
                .order_by(AuditEntry.at)
            )
        )
        .scalars()
        .all()
    )
    assert [e.action for e in entries] == [
        "resident_unit.create",
        "resident_unit.update",
        "resident_unit.update",
    ]
    assert entries[1].before is not None and entries[1].before["name"] == "东湖小学"
    assert entries[1].after is not None and entries[1].after["name"] == "东湖实验小学"


async def test_move_to_another_community(client, world):
    w = world
    unit = await _created(client, w)
    url = f"{API}/{unit['id']}"
    r = await client.patch(url, headers=w.h("secretary"), json={"community_id": _id(w.orgs["b1"])})
    assert r.status_code == 404
    r = await client.patch(url, headers=w.h("secretary"), json={"community_id": _id(w.orgs["a1_branch"])})
    assert r.status_code == 422 and r.json()["code"] == "invalid_community"
    r = await client.patch(url, headers=w.h("street"), json={"community_id": _id(w.orgs["a2"])})
    assert r.status_code == 200, r.text
    assert r.json()["community_id"] == _id(w.orgs["a2"])
    # The community's secretary no longer sees it.
    assert (await client.get(url, headers=w.h("secretary"))).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"name": None},
        {"type": None},
        {"credit_code": None},
        {"community_id": None},
        {"party_org_mode": None},
        {"name": ""},
        {"name": "名" * 101},
        {"type": "factory"},
        {"party_org_mode": "merged"},
        {"lat": 91, "lng": 120},
        {"lat": 30, "lng": -181},
        {"lat": "north", "lng": 120},
        {"contact_phone": "call me"},
        {"contact_name": "n" * 51},
        {"address": "a" * 201},
        {"description": "d" * 2001},
        {"external_ref": "r" * 101},
        {"id": str(uuid.uuid4())},
    ],
)
async def test_bad_update_bodies(client, world, body):
    url = f"{API}/{_id(world.units['a1'])}"
    r = await client.patch(url, headers=world.h("secretary"), json=body)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "validation_error"
    r = await client.get(url, headers=world.h("secretary"))
    assert r.json()["version"] == 1


async def test_concurrent_updates_one_wins(client, client2, world):
    w = world
    unit = await _created(client, w)
    url = f"{API}/{unit['id']}"
    r1, r2 = await asyncio.gather(
        client.patch(url, headers=w.h("secretary", **{"If-Match": '"1"'}), json={"contact_name": "甲"}),
        client2.patch(url, headers=w.h("street", **{"If-Match": '"1"'}), json={"contact_name": "乙"}),
    )
    assert sorted([r1.status_code, r2.status_code]) == [200, 412], (r1.text, r2.text)
    winner = r1 if r1.status_code == 200 else r2
    r = await client.get(url, headers=w.h("admin"))
    assert r.json()["contact_name"] == winner.json()["contact_name"] and r.json()["version"] == 2


async def test_concurrent_creates_with_one_credit_code(client, client2, world, session):
    w = world
    code = new_code()
    r1, r2 = await asyncio.gather(
        _create(client, w, "secretary", name="甲单位", credit_code=code),
        _create(client2, w, "street", name="乙单位", credit_code=code.lower()),
    )
    assert sorted([r1.status_code, r2.status_code]) == [201, 409], (r1.text, r2.text)
    rows = (await session.execute(select(ResidentUnit.name).where(ResidentUnit.credit_code == code))).all()
    assert len(rows) == 1
    audits = (
        await session.execute(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "resident_unit.create")
        )
    ).scalar_one()
    assert audits == 1


# --- delete ----------------------------------------------------------------------------------


async def test_delete(client, world, session):
    w = world
    unit = await _created(client, w)
    url = f"{API}/{unit['id']}"
    r = await client.delete(url, headers=w.h("gridworker"))
    assert r.status_code == 403
    r = await client.delete(url, headers=w.h("secretary2"))
    assert r.status_code == 404
    r = await client.delete(url, headers=w.h("secretary", **{"If-Match": '"3"'}))
    assert r.status_code == 412
    r = await client.delete(url, headers=w.h("secretary", **{"If-Match": '"1"'}))
    assert r.status_code == 204
    assert (await client.get(url, headers=w.h("secretary"))).status_code == 404
    assert (await client.delete(url, headers=w.h("secretary"))).status_code == 404
    entry = (
        await session.execute(
            select(AuditEntry).where(
                AuditEntry.object_id == uuid.UUID(unit["id"]), AuditEntry.action == "resident_unit.delete"
            )
        )
    ).scalar_one()
    assert entry.before is not None and entry.before["name"] == "东湖小学" and entry.after is None


async def test_party_org_of_a_unit_is_not_deleted_from_under_it(client, world):
    w = world
    await _created(client, w, party_org_mode="single", party_org_id=_id(w.orgs["a1_branch"]))
    r = await client.delete(f"/api/v1/organizations/{_id(w.orgs['a1_branch'])}", headers=w.h("admin"))
    assert r.status_code == 409, r.text


# --- liaisons --------------------------------------------------------------------------------


async def test_liaison_sees_and_edits_only_their_own_unit(client, world, session):
    w = world
    own = _id(w.units["a1"])
    neighbour = await _created(client, w, name="东湖邮局")
    r = await client.get(f"{API}/{own}", headers=w.h("liaison"))
    assert r.status_code == 200
    etag = r.headers["etag"]
    r = await client.patch(
        f"{API}/{own}",
        headers=w.h("liaison", **{"If-Match": etag}),
        json={
            "contact_name": "刘联络",
            "contact_phone": "13800000000",
            "address": "东湖路 99 号",
            "lat": 30.2,
            "lng": 120.1,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["contact_name"] == "刘联络"
    # Not to another community (even one that exists), not deleted.
    for community in ("a2", "a1"):
        r = await client.patch(
            f"{API}/{own}", headers=w.h("liaison"), json={"community_id": _id(w.orgs[community])}
        )
        if community == "a1":
            assert r.status_code == 200  # unchanged: nothing to refuse
        else:
            assert r.status_code == 403, r.text
    r = await client.delete(f"{API}/{own}", headers=w.h("liaison"))
    assert r.status_code == 403
    # The liaison's scope holds no organization: linking a party org is for the community's staff.
    r = await client.patch(
        f"{API}/{own}",
        headers=w.h("liaison"),
        json={"party_org_mode": "single", "party_org_id": _id(w.orgs["a1_branch"])},
    )
    assert r.status_code == 404
    # Other units, in the same community or not, do not exist for the liaison.
    for other in (neighbour["id"], _id(w.units["b1"])):
        assert (await client.get(f"{API}/{other}", headers=w.h("liaison"))).status_code == 404
        r = await client.patch(f"{API}/{other}", headers=w.h("liaison"), json={"contact_name": "越权"})
        assert r.status_code == 404
        assert (await client.delete(f"{API}/{other}", headers=w.h("liaison"))).status_code == 404
        assert (await client.get(f"{API}/{other}/liaisons", headers=w.h("liaison"))).status_code == 404
    # Nor can a liaison register units.
    before = await _count(session)
    r = await _create(client, w, "liaison")
    assert r.status_code == 404
    assert await _count(session) == before
    r = await client.get(f"{API}/{own}", headers=w.h("secretary"))
    assert r.json()["community_id"] == _id(w.orgs["a1"]) and r.json()["contact_name"] == "刘联络"


async def test_liaisons_endpoint(client, world, session):
    w = world
    second = await make_user(session, "liaison2", Role.unit_liaison, unit=w.units["a1"])
    await make_user(session, "liaison_b1", Role.unit_liaison, unit=w.units["b1"])
    await session.commit()
    url = f"{API}/{_id(w.units['a1'])}/liaisons"
    r = await client.get(url, headers=w.h("secretary"))
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert {i["username"] for i in items} == {"liaison", "liaison2"}
    assert {i["user_id"] for i in items} == {_id(w.users["liaison"]), _id(second)}
    assert all(i["is_active"] for i in items)
    # The liaison sees their colleagues on the unit.
    r = await client.get(url, headers=w.h("liaison"))
    assert {i["username"] for i in r.json()["items"]} == {"liaison", "liaison2"}
    # Paging.
    r = await client.get(url, headers=w.h("secretary"), params={"limit": 1})
    assert len(r.json()["items"]) == 1 and r.json()["next_cursor"]
    r2 = await client.get(
        url, headers=w.h("secretary"), params={"limit": 1, "cursor": r.json()["next_cursor"]}
    )
    assert len(r2.json()["items"]) == 1 and r2.json()["next_cursor"] is None
    assert r.json()["items"][0]["user_id"] != r2.json()["items"][0]["user_id"]
    # A unit with no liaison, out of scope, unknown.
    unit = await _created(client, w)
    r = await client.get(f"{API}/{unit['id']}/liaisons", headers=w.h("secretary"))
    assert r.json() == {"items": [], "next_cursor": None}
    assert (
        await client.get(f"{API}/{_id(w.units['b1'])}/liaisons", headers=w.h("secretary"))
    ).status_code == 404
    assert (await client.get(f"{API}/{uuid.uuid4()}/liaisons", headers=w.h("admin"))).status_code == 404
    assert (
        await client.get(f"{API}/{_id(w.units['a1'])}/liaisons", headers=w.h("resident"))
    ).status_code == 403


async def test_deleting_a_unit_ends_its_liaison_grants(client, world, session):
    w = world
    unit = await _created(client, w)
    user = await make_user(
        session,
        "temp_liaison",
        Role.unit_liaison,
        unit=await session.get(ResidentUnit, uuid.UUID(unit["id"])),
    )
    await session.commit()
    headers = {"Authorization": f"Bearer {token_for(user)}"}
    assert (await client.get(f"{API}/{unit['id']}", headers=headers)).status_code == 200
    assert (await client.delete(f"{API}/{unit['id']}", headers=w.h("secretary"))).status_code == 204
    remaining = (
        await session.execute(
            select(func.count()).select_from(RoleAssignment).where(RoleAssignment.user_id == user.id)
        )
    ).scalar_one()
    assert remaining == 0
    assert (await client.get(API, headers=headers)).status_code == 403


# --- scope, permissions, bad input -----------------------------------------------------------


async def test_wrong_scope_is_404(client, world):
    w = world
    b1_unit = _id(w.units["b1"])
    calls = [
        client.get(f"{API}/{b1_unit}", headers=w.h("secretary")),
        client.patch(f"{API}/{b1_unit}", headers=w.h("secretary"), json={"name": "越权"}),
        client.delete(f"{API}/{b1_unit}", headers=w.h("secretary")),
        client.get(f"{API}/{b1_unit}/liaisons", headers=w.h("secretary")),
        client.get(f"{API}/{b1_unit}", headers=w.h("gridworker")),
        client.get(f"{API}/{b1_unit}", headers=w.h("street")),
        client.get(f"{API}/{_id(w.units['a1'])}", headers=w.h("secretary2")),
        client.get(f"{API}/{uuid.uuid4()}", headers=w.h("admin")),
    ]
    for r in [await c for c in calls]:
        assert r.status_code == 404, (r.request.method, r.request.url, r.text)
        assert r.json()["code"] == "not_found"
    r = await client.get(f"{API}/{b1_unit}", headers=w.h("admin"))
    assert r.json()["name"] == "北门医院" and r.json()["version"] == 1


async def test_without_permission_is_403(client, world, session):
    w = world
    before = await _count(session)
    unit = _id(w.units["a1"])
    for who in ("gridworker", "member", "resident"):
        r = await _create(client, w, who)
        assert r.status_code == 403, (who, r.text)
        r = await client.patch(f"{API}/{unit}", headers=w.h(who), json={"name": "越权"})
        assert r.status_code == 403, (who, r.text)
        r = await client.delete(f"{API}/{unit}", headers=w.h(who))
        assert r.status_code == 403, (who, r.text)
    for who in ("member", "resident"):
        assert (await client.get(f"{API}/{unit}", headers=w.h(who))).status_code == 403
    assert await _count(session) == before


@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity"])
async def test_non_finite_location_is_422(client, world, session, value):
    before = await _count(session)
    body = json.dumps(_body(world, lat=30.0, lng=120.0)).encode().replace(b"30.0", value)
    r = await client.post(
        API, headers=world.h("secretary", **{"Content-Type": "application/json"}), content=body
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["body", "lat"]
    assert await _count(session) == before


async def test_malformed_json_is_400(client, world):
    headers = world.h("secretary", **{"Content-Type": "application/json"})
    r = await client.post(API, headers=headers, content=b'{"name": ')
    assert r.status_code == 400 and r.json()["code"] == "malformed_request"
    r = await client.patch(f"{API}/{_id(world.units['a1'])}", headers=headers, content=b"{,}")
    assert r.status_code == 400 and r.json()["code"] == "malformed_request"


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": 5},
        {"name": "  "},
        {"name": "名" * 101},
        {"type": "factory"},
        {"type": None},
        {"community_id": "a1"},
        {"party_org_mode": "merged"},
        {"party_org_id": 12},
        {"lat": 30.0},
        {"lng": 120.0},
        {"lat": -90.5, "lng": 120},
        {"lat": 30, "lng": 180.5},
        {"lat": "30", "lng": []},
        {"contact_phone": "电话"},
        {"contact_phone": "1" * 31},
        {"external_ref": "r" * 101},
        {"version": 7},
    ],
)
async def test_bad_create_bodies_are_422(client, world, session, overrides):
    before = await _count(session)
    audits = await _count(session, AuditEntry)
    r = await _create(client, world, **overrides)
    assert r.status_code == 422, (overrides, r.text)
    assert r.json()["code"] == "validation_error"
    assert await _count(session) == before
    assert await _count(session, AuditEntry) == audits


async def test_idempotent_create(client, world, session):
    w = world
    body = _body(w)
    headers = w.h("secretary", **{"Idempotency-Key": "unit-create-1"})
    r1 = await client.post(API, headers=headers, json=body)
    r2 = await client.post(API, headers=headers, json=body)
    assert r1.status_code == r2.status_code == 201
    assert r1.json()["id"] == r2.json()["id"]
    assert r2.headers.get("idempotent-replayed") == "true"
    assert (
        await session.execute(
            select(func.count())
            .select_from(ResidentUnit)
            .where(ResidentUnit.credit_code == body["credit_code"])
        )
    ).scalar_one() == 1


async def test_counts_include_units(client, world):
    w = world
    await _created(client, w)
    r = await client.get(f"/api/v1/organizations/{_id(w.orgs['a1'])}/counts", headers=w.h("secretary"))
    assert r.json()["resident_units"] == 2
    r = await client.get(f"/api/v1/organizations/{_id(w.orgs['street_a'])}/counts", headers=w.h("street"))
    assert r.json()["resident_units"] == 2


async def test_make_unit_factory_matches_api(client, world, session):
    unit = await make_unit(session, world.orgs["a2"], "桃源菜场")
    await session.commit()
    r = await client.get(f"{API}/{_id(unit)}", headers=world.h("street"))
    assert r.status_code == 200 and r.json()["party_org_mode"] == "none"
