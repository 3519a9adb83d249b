"""The organization tree through the API: kinds and parents, scope, ETags, moves, deletes,
counts, 社区大党委 members, bad input and audit."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from gongjian.core.audit import AuditEntry
from gongjian.organizations.models import ALLOWED_PARENTS, CommitteeMember, Organization, OrgKind
from tests.factories import World, build_world

API = "/api/v1/organizations"


@pytest.fixture
async def world(session):
    return await build_world(session)


@pytest.fixture
async def client2(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def _id(obj: Any) -> str:
    return str(obj.id)


async def _create(
    client, w: World, who: str, name: str, kind: str, parent: Any, **extra: Any
) -> httpx.Response:
    parent_id = parent if isinstance(parent, str | None) else _id(parent)
    return await client.post(
        API, headers=w.h(who), json={"name": name, "kind": kind, "parent_id": parent_id, **extra}
    )


async def _created(
    client, w: World, who: str, name: str, kind: str, parent: Any, **extra: Any
) -> dict[str, Any]:
    r = await _create(client, w, who, name, kind, parent, **extra)
    assert r.status_code == 201, r.text
    return r.json()


async def _count(session, model: Any = Organization) -> int:
    return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def _list_all(client, w: World, who: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        q = dict(params, limit=100, **({"cursor": cursor} if cursor else {}))
        r = await client.get(API, headers=w.h(who), params=q)
        assert r.status_code == 200, r.text
        items.extend(r.json()["items"])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items


async def _tree_is_consistent(session) -> None:
    """Every node's path is its parent's path plus its own seq, depth matches, no cycles."""
    rows = (
        await session.execute(
            select(
                Organization.id,
                Organization.parent_id,
                Organization.path,
                Organization.depth,
                Organization.seq,
            )
        )
    ).all()
    by_id = {r.id: r for r in rows}
    for r in rows:
        if r.parent_id is None:
            assert r.path == f"/{r.seq}/"
            assert r.depth == 0
        else:
            parent = by_id[r.parent_id]
            assert r.path == f"{parent.path}{r.seq}/", (r, parent)
            assert r.depth == parent.depth + 1
        seen = set()
        node = r
        while node.parent_id is not None:
            assert node.id not in seen, "cycle"
            seen.add(node.id)
            node = by_id[node.parent_id]


# --- create ---------------------------------------------------------------------------------


async def test_create_and_get_organization(client, world):
    r = await _create(client, world, "secretary", "东湖社区第二党支部", "branch", world.orgs["a1"])
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["depth"] == world.orgs["a1"].depth + 1
    assert r.headers["location"] == f"{API}/{body['id']}"
    assert r.headers["etag"] == '"1"'
    r2 = await client.get(f"{API}/{body['id']}", headers=world.h("secretary"))
    assert r2.status_code == 200
    assert r2.headers["etag"] == '"1"'
    assert r2.json()["name"] == "东湖社区第二党支部"
    assert r2.json()["parent_id"] == _id(world.orgs["a1"])


async def test_every_kind_under_every_parent_kind(client, world, session):
    general = await _created(client, world, "admin", "东湖社区党总支", "general_branch", world.orgs["a1"])
    group_parent = await _created(client, world, "admin", "东湖第一党小组", "group", world.orgs["a1_branch"])
    parents: dict[str, str] = {
        "county_committee": _id(world.orgs["county"]),
        "working_committee": _id(world.orgs["street_a"]),
        "committee": _id(world.orgs["a1"]),
        "general_branch": general["id"],
        "branch": _id(world.orgs["a1_branch"]),
        "group": group_parent["id"],
    }
    for kind in OrgKind:
        for parent_kind, parent_id in parents.items():
            before = await _count(session)
            r = await _create(client, world, "admin", f"{kind}-{parent_kind}", kind.value, parent_id)
            if OrgKind(parent_kind) in ALLOWED_PARENTS[kind]:
                assert r.status_code == 201, (kind, parent_kind, r.text)
                assert r.json()["kind"] == kind.value
                assert r.json()["parent_id"] == parent_id
                assert await _count(session) == before + 1
            else:
                assert r.status_code == 422, (kind, parent_kind, r.text)
                assert r.json()["code"] == "invalid_parent"
                assert await _count(session) == before


async def test_only_platform_admin_creates_a_root(client, world, session):
    before = await _count(session)
    for who in ("secretary", "street", "staff"):
        r = await _create(client, world, who, "另一个县委", "county_committee", None)
        assert r.status_code == 403, (who, r.text)
        assert r.json()["code"] == "forbidden"
    r = await _create(client, world, "admin", "无上级的支部", "branch", None)
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_parent"
    assert await _count(session) == before
    root = await _created(client, world, "admin", "临川县委", "county_committee", None, level="county")
    assert root["depth"] == 0 and root["parent_id"] is None
    # A county committee never sits under anything.
    r = await _create(client, world, "admin", "县委下的县委", "county_committee", world.orgs["county"])
    assert r.status_code == 422 and r.json()["code"] == "invalid_parent"


async def test_create_under_parent_out_of_scope_is_404(client, world, session):
    before = await _count(session)
    r = await _create(client, world, "secretary", "越界支部", "branch", world.orgs["b1"])
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"
    r = await _create(client, world, "secretary", "不存在的上级", "branch", str(uuid.uuid4()))
    assert r.status_code == 404
    assert await _count(session) == before


async def test_duplicate_code_is_409_and_nothing_written(client, world, session):
    await _created(client, world, "admin", "编码支部一", "branch", world.orgs["a1"], code="A1-01")
    before = await _count(session)
    r = await _create(client, world, "admin", "编码支部二", "branch", world.orgs["a1"], code="A1-01")
    assert r.status_code == 409
    assert await _count(session) == before


# --- list ------------------------------------------------------------------------------------


async def test_list_filters(client, world):
    w = world
    await _created(client, w, "admin", "东湖社区第二党支部", "branch", w.orgs["a1"])
    gb = await _created(client, w, "admin", "东湖社区党总支", "general_branch", w.orgs["a1"])
    await _created(client, w, "admin", "总支下第一支部", "branch", gb["id"])

    by_kind = await _list_all(client, w, "admin", kind="working_committee")
    assert {o["name"] for o in by_kind} == {"城中街道党工委", "城北街道党工委"}

    children = await _list_all(client, w, "admin", parent_id=_id(w.orgs["a1"]))
    assert {o["name"] for o in children} == {"东湖社区第一党支部", "东湖社区第二党支部", "东湖社区党总支"}

    under = await _list_all(client, w, "admin", under=_id(w.orgs["a1"]))
    assert {o["name"] for o in under} == {
        "东湖社区第一党支部",
        "东湖社区第二党支部",
        "东湖社区党总支",
        "总支下第一支部",
    }
    assert _id(w.orgs["a1"]) not in {o["id"] for o in under}

    both = await _list_all(client, w, "admin", under=_id(w.orgs["a1"]), kind="branch")
    assert len(both) == 3

    by_level = await _list_all(client, w, "admin", level="community")
    assert {o["name"] for o in by_level} == {"东湖社区党委", "桃源社区党委", "北门社区党委"}

    q = await _list_all(client, w, "admin", q="北门")
    assert {o["name"] for o in q} == {"北门社区党委", "北门社区第一党支部"}
    # LIKE wildcards in q are taken literally.
    assert await _list_all(client, w, "admin", q="%") == []
    assert await _list_all(client, w, "admin", q="_") == []


async def test_list_is_limited_to_scope(client, world):
    w = world
    mine = await _list_all(client, w, "secretary")
    assert {o["id"] for o in mine} == {_id(w.orgs["a1"]), _id(w.orgs["a1_branch"])}
    street = await _list_all(client, w, "street")
    assert {o["id"] for o in street} == {_id(w.orgs[k]) for k in ("street_a", "a1", "a2", "a1_branch")}
    # A filter pointing outside the scope finds nothing; `under` outside the scope is a 404.
    assert await _list_all(client, w, "secretary", parent_id=_id(w.orgs["b1"])) == []
    r = await client.get(API, headers=w.h("secretary"), params={"under": _id(w.orgs["b1"])})
    assert r.status_code == 404
    # Members and residents hold no organization subtree: the list is not theirs to read.
    r = await client.get(API, headers=w.h("resident"))
    assert r.status_code == 403


async def test_list_pagination_round_trip(client, world):
    w = world
    created = {
        (await _created(client, w, "admin", f"分页支部{i:02d}", "branch", w.orgs["a2"]))["id"]
        for i in range(23)
    }
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"parent_id": _id(w.orgs["a2"]), "limit": 10}
        if cursor:
            params["cursor"] = cursor
        r = await client.get(API, headers=w.h("admin"), params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 10
        seen.extend(o["id"] for o in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 23
    assert set(seen) == created
    # The default page size is 20.
    r = await client.get(API, headers=w.h("admin"), params={"parent_id": _id(w.orgs["a2"])})
    assert len(r.json()["items"]) == 20 and r.json()["next_cursor"]


@pytest.mark.parametrize("limit", ["101", "0", "-1", "abc"])
async def test_list_bad_limit_is_422(client, world, limit):
    r = await client.get(API, headers=world.h("admin"), params={"limit": limit})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "validation_error"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "!!!",
        _b64(b"not json"),
        _b64(b"42"),
        _b64(b'["2026-01-01T00:00:00+00:00"]'),
        _b64(b'["yesterday", "00000000-0000-0000-0000-000000000000"]'),
        _b64(b'["2026-01-01T00:00:00+00:00", "not-a-uuid"]'),
        _b64(json.dumps([1, 2]).encode()),
        _b64(json.dumps({"a": 1, "b": 2}).encode()),
        _b64(b"\xff\xfe"),
    ],
)
async def test_list_bad_cursor_is_400(client, world, cursor):
    r = await client.get(API, headers=world.h("admin"), params={"cursor": cursor})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_cursor"


async def test_list_cursor_with_naive_time_is_not_an_error(client, world):
    # Time-ordered lists (here resident units) read a naive cursor time as UTC.
    cursor = _b64(json.dumps(["2000-01-01T00:00:00", str(uuid.UUID(int=0))]).encode())
    r = await client.get("/api/v1/resident-units", headers=world.h("admin"), params={"cursor": cursor})
    assert r.status_code == 200, r.text  # read as UTC


@pytest.mark.parametrize(
    "params",
    [{"kind": "party_cell"}, {"level": "province"}, {"parent_id": "nope"}, {"under": "1"}, {"q": "x" * 101}],
)
async def test_list_bad_filters_are_422(client, world, params):
    r = await client.get(API, headers=world.h("admin"), params=params)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "validation_error"


# --- update ----------------------------------------------------------------------------------


async def test_update_with_etag(client, world):
    w = world
    url = f"{API}/{_id(w.orgs['a1'])}"
    r = await client.get(url, headers=w.h("secretary"))
    etag = r.headers["etag"]
    r = await client.patch(
        url,
        headers=w.h("secretary", **{"If-Match": etag}),
        json={"name": "东湖社区党委（新）", "short_name": "东湖", "contact_phone": "0571-8888 1234"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "东湖社区党委（新）"
    assert r.json()["version"] == 2
    new_etag = r.headers["etag"]
    assert new_etag == '"2"'
    # The stale ETag is refused and nothing changes.
    r = await client.patch(url, headers=w.h("secretary", **{"If-Match": etag}), json={"name": "覆盖"})
    assert r.status_code == 412
    assert r.json()["code"] == "precondition_failed"
    r = await client.get(url, headers=w.h("secretary"))
    assert r.json()["name"] == "东湖社区党委（新）"
    assert r.headers["etag"] == new_etag
    # Weak and listed ETags match too; `*` matches anything.
    r = await client.patch(
        url,
        headers=w.h("secretary", **{"If-Match": f'"99", W/{new_etag}'}),
        json={"description": "社区大党委"},
    )
    assert r.status_code == 200
    r = await client.patch(url, headers=w.h("secretary", **{"If-Match": "*"}), json={"description": None})
    assert r.status_code == 200
    assert r.json()["description"] is None


async def test_update_null_for_required_field_keeps_it(client, world):
    url = f"{API}/{_id(world.orgs['a1'])}"
    r = await client.patch(url, headers=world.h("secretary"), json={"name": None, "level": None})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "东湖社区党委"
    assert r.json()["level"] == "community"


async def test_concurrent_updates_with_same_if_match_one_wins(client, client2, world, session):
    w = world
    for attempt in range(3):
        org = await _created(client, w, "admin", f"并发支部{attempt}", "branch", w.orgs["a1"])
        url = f"{API}/{org['id']}"
        r1, r2 = await asyncio.gather(
            client.patch(url, headers=w.h("admin", **{"If-Match": '"1"'}), json={"name": f"甲改{attempt}"}),
            client2.patch(url, headers=w.h("street", **{"If-Match": '"1"'}), json={"name": f"乙改{attempt}"}),
        )
        assert sorted([r1.status_code, r2.status_code]) == [200, 412], (r1.text, r2.text)
        winner = r1 if r1.status_code == 200 else r2
        loser = r2 if winner is r1 else r1
        assert loser.json()["code"] == "precondition_failed"
        final = await client.get(url, headers=w.h("admin"))
        assert final.json()["name"] == winner.json()["name"]
        assert final.json()["version"] == 2
        updates = (
            await session.execute(
                select(func.count())
                .select_from(AuditEntry)
                .where(
                    AuditEntry.object_id == uuid.UUID(org["id"]), AuditEntry.action == "organization.update"
                )
            )
        ).scalar_one()
        assert updates == 1


# --- move ------------------------------------------------------------------------------------


async def _chain(client, w: World) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    gb = await _created(client, w, "admin", "东湖社区党总支", "general_branch", w.orgs["a1"])
    br = await _created(client, w, "admin", "总支第一支部", "branch", gb["id"])
    grp = await _created(client, w, "admin", "第一党小组", "group", br["id"])
    return gb, br, grp


async def _move(client, w: World, who: str, org_id: str, parent_id: str, **headers: str) -> httpx.Response:
    return await client.post(
        f"{API}/{org_id}/move", headers=w.h(who, **headers), json={"parent_id": parent_id}
    )


async def test_move_subtree_updates_paths_and_depths(client, world, session):
    w = world
    gb, br, grp = await _chain(client, w)
    assert (gb["depth"], br["depth"], grp["depth"]) == (3, 4, 5)
    # Within the street: the whole subtree follows.
    r = await _move(client, w, "street", gb["id"], _id(w.orgs["a2"]), **{"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    assert r.json()["parent_id"] == _id(w.orgs["a2"])
    assert r.json()["version"] == 2
    under_a2 = {o["id"]: o for o in await _list_all(client, w, "admin", under=_id(w.orgs["a2"]))}
    assert set(under_a2) == {gb["id"], br["id"], grp["id"]}
    assert (under_a2[gb["id"]]["depth"], under_a2[br["id"]]["depth"], under_a2[grp["id"]]["depth"]) == (
        3,
        4,
        5,
    )
    under_a1 = {o["id"] for o in await _list_all(client, w, "admin", under=_id(w.orgs["a1"]))}
    assert under_a1 == {_id(w.orgs["a1_branch"])}
    # The secretary of a1 no longer sees the moved subtree.
    r = await client.get(f"{API}/{grp['id']}", headers=w.h("secretary"))
    assert r.status_code == 404
    # Up the tree: a branch straight under a street, depths shrink.
    r = await _move(client, w, "admin", br["id"], _id(w.orgs["street_b"]))
    assert r.status_code == 200, r.text
    assert r.json()["depth"] == 2
    under_b = {o["id"]: o for o in await _list_all(client, w, "admin", under=_id(w.orgs["street_b"]))}
    assert under_b[br["id"]]["depth"] == 2 and under_b[grp["id"]]["depth"] == 3
    assert grp["id"] not in {o["id"] for o in await _list_all(client, w, "admin", under=_id(w.orgs["a2"]))}
    # secretary2 (b1) does not see it; the other street's staff neither.
    assert (await client.get(f"{API}/{grp['id']}", headers=w.h("secretary2"))).status_code == 404
    assert (await client.get(f"{API}/{grp['id']}", headers=w.h("street"))).status_code == 404
    await _tree_is_consistent(session)
    # Moving under the current parent changes nothing.
    r = await _move(client, w, "admin", br["id"], _id(w.orgs["street_b"]))
    assert r.status_code == 200 and r.json()["depth"] == 2


async def test_move_refusals(client, world, session):
    w = world
    gb, br, grp = await _chain(client, w)
    a1 = _id(w.orgs["a1"])
    r = await _move(client, w, "secretary", gb["id"], grp["id"])
    assert r.status_code == 409 and r.json()["code"] == "move_into_descendant"
    r = await _move(client, w, "secretary", gb["id"], gb["id"])
    assert r.status_code == 409 and r.json()["code"] == "move_into_descendant"
    r = await _move(client, w, "admin", _id(w.orgs["county"]), _id(w.orgs["b1"]))
    assert r.status_code == 409 and r.json()["code"] == "move_into_descendant"
    # Into someone else's scope, or moving something outside one's own scope: 404.
    r = await _move(client, w, "secretary", gb["id"], _id(w.orgs["b1"]))
    assert r.status_code == 404
    r = await _move(client, w, "secretary", _id(w.orgs["b1_branch"]), a1)
    assert r.status_code == 404
    r = await _move(client, w, "secretary", gb["id"], str(uuid.uuid4()))
    assert r.status_code == 404
    # A parent of a kind that may not hold it.
    r = await _move(client, w, "secretary", grp["id"], a1)
    assert r.status_code == 422 and r.json()["code"] == "invalid_parent"
    # Stale version.
    r = await _move(client, w, "secretary", br["id"], _id(w.orgs["a1_branch"]), **{"If-Match": '"7"'})
    assert r.status_code == 412
    # Bad bodies.
    r = await client.post(f"{API}/{gb['id']}/move", headers=w.h("secretary"), json={})
    assert r.status_code == 422
    r = await client.post(f"{API}/{gb['id']}/move", headers=w.h("secretary"), json={"parent_id": "x"})
    assert r.status_code == 422
    # Nothing moved.
    under = {o["id"]: o for o in await _list_all(client, w, "admin", under=a1)}
    assert under[gb["id"]]["parent_id"] == a1
    assert under[br["id"]]["parent_id"] == gb["id"]
    assert under[grp["id"]]["parent_id"] == br["id"]
    await _tree_is_consistent(session)


async def test_concurrent_opposite_moves_never_make_a_cycle(client, client2, world, session):
    w = world
    for attempt in range(4):
        x = await _created(client, w, "admin", f"甲委员会{attempt}", "committee", w.orgs["street_a"])
        y = await _created(client, w, "admin", f"乙委员会{attempt}", "committee", w.orgs["street_a"])
        await _created(client, w, "admin", f"甲下支部{attempt}", "branch", x["id"])
        r1, r2 = await asyncio.gather(
            _move(client, w, "admin", x["id"], y["id"]),
            _move(client2, w, "street", y["id"], x["id"]),
        )
        assert sorted([r1.status_code, r2.status_code]) == [200, 409], (r1.text, r2.text)
        loser = r1 if r1.status_code == 409 else r2
        assert loser.json()["code"] == "move_into_descendant"
        await _tree_is_consistent(session)


async def test_create_during_a_move_lands_in_the_moved_subtree(client, client2, world, session):
    w = world
    for attempt in range(4):
        gb = await _created(client, w, "admin", f"移动总支{attempt}", "general_branch", w.orgs["a1"])
        br = await _created(client, w, "admin", f"移动支部{attempt}", "branch", gb["id"])
        target = w.orgs["a2"] if attempt % 2 == 0 else w.orgs["a1"]
        if attempt % 2 == 1:
            # Bring it back from a2 first so every attempt really moves.
            await _move(client, w, "admin", gb["id"], _id(w.orgs["a2"]))
        moved, created = await asyncio.gather(
            _move(client, w, "admin", gb["id"], _id(target)),
            _create(client2, w, "admin", f"新小组{attempt}", "group", br["id"]),
        )
        assert moved.status_code == 200, moved.text
        assert created.status_code == 201, created.text
        await _tree_is_consistent(session)
        under = {o["id"] for o in await _list_all(client, w, "admin", under=_id(target))}
        assert created.json()["id"] in under


# --- delete ----------------------------------------------------------------------------------


async def test_delete(client, world, session):
    w = world
    gb, _br, grp = await _chain(client, w)
    r = await client.delete(f"{API}/{gb['id']}", headers=w.h("secretary"))
    assert r.status_code == 409 and r.json()["code"] == "has_children"
    r = await client.delete(f"{API}/{grp['id']}", headers=w.h("secretary", **{"If-Match": '"5"'}))
    assert r.status_code == 412
    r = await client.delete(f"{API}/{grp['id']}", headers=w.h("secretary", **{"If-Match": '"1"'}))
    assert r.status_code == 204
    assert (await client.get(f"{API}/{grp['id']}", headers=w.h("secretary"))).status_code == 404
    assert (await client.delete(f"{API}/{grp['id']}", headers=w.h("secretary"))).status_code == 404
    # A community with a resident unit in it is not deleted either.
    before = await _count(session)
    r = await client.delete(f"{API}/{_id(w.orgs['b1_branch'])}", headers=w.h("admin"))
    assert r.status_code == 204
    r = await client.delete(f"{API}/{_id(w.orgs['b1'])}", headers=w.h("admin"))
    assert r.status_code == 409 and r.json()["code"] == "has_children"
    assert await _count(session) == before - 1


# --- counts ----------------------------------------------------------------------------------


async def test_counts(client, world):
    w = world
    await _chain(client, w)
    r = await client.get(f"{API}/{_id(w.orgs['a1'])}/counts", headers=w.h("secretary"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["organization_id"] == _id(w.orgs["a1"])
    assert body["descendants"] == 4
    assert body["children"] == 2
    assert body["by_kind"] == {"branch": 2, "general_branch": 1, "group": 1}
    assert body["resident_units"] == 1
    r = await client.get(f"{API}/{_id(w.orgs['county'])}/counts", headers=w.h("admin"))
    body = r.json()
    assert body["descendants"] == 10
    assert body["children"] == 2
    assert body["by_kind"]["working_committee"] == 2 and body["by_kind"]["committee"] == 3
    assert body["resident_units"] == 2
    leaf = (await client.get(f"{API}/{_id(w.orgs['b1_branch'])}/counts", headers=w.h("secretary2"))).json()
    assert leaf["descendants"] == 0 and leaf["children"] == 0 and leaf["by_kind"] == {}


# --- 社区大党委 -------------------------------------------------------------------------------


async def test_committee_members(client, world, session):
    w = world
    url = f"{API}/{_id(w.orgs['a1'])}/committee-members"
    r = await client.post(
        url,
        headers=w.h("secretary"),
        json={
            "name": "王建国",
            "position": "兼职委员",
            "resident_unit_id": _id(w.units["a1"]),
            "unit_position": "所长",
            "term_start": "2026-01-01",
            "term_end": "2028-12-31",
        },
    )
    assert r.status_code == 201, r.text
    member = r.json()
    assert member["organization_id"] == _id(w.orgs["a1"])
    assert member["resident_unit_id"] == _id(w.units["a1"])
    r = await client.post(url, headers=w.h("secretary"), json={"name": "李华", "position": "兼职委员"})
    assert r.status_code == 201
    listed = await client.get(url, headers=w.h("staff"))
    assert listed.status_code == 200
    assert {m["name"] for m in listed.json()["items"]} == {"王建国", "李华"}
    # Not visible from another community.
    assert (await client.get(url, headers=w.h("secretary2"))).status_code == 404
    # Removing through another org's URL is a 404.
    wrong = f"{API}/{_id(w.orgs['a2'])}/committee-members/{member['id']}"
    assert (await client.delete(wrong, headers=w.h("admin"))).status_code == 404
    assert (await client.delete(f"{url}/{member['id']}", headers=w.h("secretary2"))).status_code == 404
    r = await client.delete(f"{url}/{member['id']}", headers=w.h("secretary"))
    assert r.status_code == 204
    assert (await client.delete(f"{url}/{member['id']}", headers=w.h("secretary"))).status_code == 404
    listed = await client.get(url, headers=w.h("secretary"))
    assert [m["name"] for m in listed.json()["items"]] == ["李华"]
    actions = (
        (
            await session.execute(
                select(AuditEntry.action)
                .where(AuditEntry.object_type == "committee_member")
                .order_by(AuditEntry.at)
            )
        )
        .scalars()
        .all()
    )
    assert actions == ["committee_member.create", "committee_member.create", "committee_member.delete"]


async def test_committee_member_refusals(client, world, session):
    w = world
    url = f"{API}/{_id(w.orgs['a1'])}/committee-members"
    before = await _count(session, CommitteeMember)
    # A unit from another community, out of the caller's scope.
    r = await client.post(
        url,
        headers=w.h("secretary"),
        json={"name": "张三", "position": "兼职委员", "resident_unit_id": _id(w.units["b1"])},
    )
    assert r.status_code == 404
    r = await client.post(
        url,
        headers=w.h("secretary"),
        json={"name": "张三", "position": "兼职委员", "term_start": "2027-01-01", "term_end": "2026-01-01"},
    )
    assert r.status_code == 422
    r = await client.post(url, headers=w.h("secretary"), json={"name": "", "position": "兼职委员"})
    assert r.status_code == 422
    r = await client.post(url, headers=w.h("secretary"), json={"name": "张三"})
    assert r.status_code == 422
    r = await client.post(url, headers=w.h("gridworker"), json={"name": "张三", "position": "兼职委员"})
    assert r.status_code == 403
    # Only a community-level organization has part-time committee members.
    r = await client.post(
        f"{API}/{_id(w.orgs['a1_branch'])}/committee-members",
        headers=w.h("secretary"),
        json={"name": "张三", "position": "兼职委员"},
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_community"
    r = await client.post(
        f"{API}/{_id(w.orgs['b1'])}/committee-members",
        headers=w.h("secretary"),
        json={"name": "张三", "position": "兼职委员"},
    )
    assert r.status_code == 404
    assert await _count(session, CommitteeMember) == before


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "x", "kind": "branch",',
        b"not json at all",
        b'{"name": "\xff"}',
    ],
)
async def test_malformed_json_is_400(client, world, session, body):
    before = await _count(session)
    headers = world.h("admin", **{"Content-Type": "application/json"})
    r = await client.post(API, headers=headers, content=body)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "malformed_request"
    r = await client.patch(f"{API}/{_id(world.orgs['a1'])}", headers=headers, content=body)
    assert r.status_code == 400
    assert await _count(session) == before


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": 123},
        {"name": ["a"]},
        {"name": ""},
        {"name": "长" * 101},
        {"kind": "party_cell"},
        {"kind": None},
        {"level": "province"},
        {"parent_id": "not-a-uuid"},
        {"parent_id": 5},
        {"code": "has space"},
        {"code": "c" * 51},
        {"short_name": "s" * 51},
        {"description": "d" * 2001},
        {"address": "a" * 201},
        {"contact_phone": "call me"},
        {"established_on": "yesterday"},
        {"external_ref": "r" * 101},
        {"unknown_field": 1},
    ],
)
async def test_bad_create_bodies_are_422_and_write_nothing(client, world, session, overrides):
    before = await _count(session)
    audits = await _count(session, AuditEntry)
    body = {"name": "坏输入支部", "kind": "branch", "parent_id": _id(world.orgs["a1"]), **overrides}
    r = await client.post(API, headers=world.h("admin"), json=body)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "validation_error"
    assert r.json()["errors"]
    assert await _count(session) == before
    assert await _count(session, AuditEntry) == audits


async def test_create_body_must_be_an_object(client, world):
    for body in ([], "x", None, 1):
        r = await client.post(API, headers=world.h("admin"), json=body)
        assert r.status_code == 422, (body, r.text)


@pytest.mark.parametrize(
    "body",
    [
        {"name": 5},
        {"name": "x" * 101},
        {"level": "galaxy"},
        {"kind": "branch"},
        {"parent_id": None},
        {"established_on": 3},
    ],
)
async def test_bad_update_bodies_are_422_and_change_nothing(client, world, body):
    url = f"{API}/{_id(world.orgs['a1'])}"
    r = await client.patch(url, headers=world.h("admin"), json=body)
    assert r.status_code == 422, r.text
    r = await client.get(url, headers=world.h("admin"))
    assert r.json()["version"] == 1 and r.json()["name"] == "东湖社区党委"


async def test_bad_ids_in_path_are_422(client, world):
    for url in (f"{API}/nope", f"{API}/nope/counts", f"{API}/123/committee-members"):
        r = await client.get(url, headers=world.h("admin"))
        assert r.status_code == 422, url


async def test_unauthenticated_is_401(client, world):
    r = await client.get(API)
    assert r.status_code == 401
    r = await client.get(API, headers={"Authorization": "Bearer garbage"})
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_token"


# --- scope and permissions -------------------------------------------------------------------


async def test_wrong_scope_is_404_everywhere(client, world, session):
    w = world
    b1 = _id(w.orgs["b1"])
    b1_branch = _id(w.orgs["b1_branch"])
    calls = [
        client.get(f"{API}/{b1}", headers=w.h("secretary")),
        client.patch(f"{API}/{b1}", headers=w.h("secretary"), json={"name": "越权"}),
        client.post(
            f"{API}/{b1_branch}/move", headers=w.h("secretary"), json={"parent_id": _id(w.orgs["a1"])}
        ),
        client.delete(f"{API}/{b1_branch}", headers=w.h("secretary")),
        client.get(f"{API}/{b1}/counts", headers=w.h("secretary")),
        client.get(f"{API}/{b1}/committee-members", headers=w.h("secretary")),
        client.post(
            f"{API}/{b1}/committee-members",
            headers=w.h("secretary"),
            json={"name": "张三", "position": "兼职委员"},
        ),
        # The street of the other side, the parent of one's own community, unknown ids.
        client.get(f"{API}/{_id(w.orgs['street_a'])}", headers=w.h("secretary")),
        client.get(f"{API}/{_id(w.orgs['a2'])}", headers=w.h("secretary")),
        client.get(f"{API}/{uuid.uuid4()}", headers=w.h("admin")),
    ]
    for r in [await c for c in calls]:
        assert r.status_code == 404, (r.request.method, r.request.url, r.text)
        assert r.json()["code"] == "not_found"
    r = await client.get(f"{API}/{b1}", headers=w.h("admin"))
    assert r.json()["name"] == "北门社区党委" and r.json()["version"] == 1
    # A liaison or a resident holds no organization permission at all: 403, whatever the id.
    for who in ("liaison", "resident"):
        for org_id in (_id(w.orgs["a1"]), b1, str(uuid.uuid4())):
            r = await client.get(f"{API}/{org_id}", headers=w.h(who))
            assert r.status_code == 403, (who, r.text)
    assert (await client.get(f"{API}/{b1_branch}", headers=w.h("secretary2"))).status_code == 200


async def test_grid_worker_and_others_cannot_write(client, world, session):
    w = world
    before = await _count(session)
    a1 = _id(w.orgs["a1"])
    branch = _id(w.orgs["a1_branch"])
    for who in ("gridworker", "liaison", "member", "resident"):
        calls = [
            _create(client, w, who, "越权支部", "branch", a1),
            client.patch(f"{API}/{branch}", headers=w.h(who), json={"name": "越权"}),
            client.post(f"{API}/{branch}/move", headers=w.h(who), json={"parent_id": _id(w.orgs["a2"])}),
            client.delete(f"{API}/{branch}", headers=w.h(who)),
        ]
        for r in [await c for c in calls]:
            assert r.status_code == 403, (who, r.request.method, r.request.url, r.text)
            assert r.json()["code"] == "forbidden"
    # The grid worker reads its community.
    assert (await client.get(f"{API}/{a1}", headers=w.h("gridworker"))).status_code == 200
    assert await _count(session) == before


async def test_english_messages(client, world):
    r = await client.get(f"{API}/{uuid.uuid4()}", headers=world.h("admin", **{"Accept-Language": "en"}))
    assert r.json()["detail"] == "Organization not found"
    r = await client.get(f"{API}/{uuid.uuid4()}", headers=world.h("admin"))
    assert r.json()["detail"] == "党组织不存在"


# --- audit -----------------------------------------------------------------------------------


async def _audit(client, w: World, object_id: str) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/audit-log", headers=w.h("admin"), params={"object_id": object_id})
    assert r.status_code == 200, r.text
    return list(reversed(r.json()["items"]))  # oldest first


async def test_audit_entries_for_every_write(client, world):
    w = world
    org = await _created(client, w, "secretary", "审计支部", "general_branch", w.orgs["a1"])
    r = await client.patch(f"{API}/{org['id']}", headers=w.h("secretary"), json={"name": "审计支部（改）"})
    assert r.status_code == 200
    r = await _move(client, w, "street", org["id"], _id(w.orgs["a2"]))
    assert r.status_code == 200
    r = await client.delete(f"{API}/{org['id']}", headers=w.h("street"))
    assert r.status_code == 204

    entries = await _audit(client, w, org["id"])
    assert [e["action"] for e in entries] == [
        "organization.create",
        "organization.update",
        "organization.move",
        "organization.delete",
    ]
    create, update, move, delete = entries
    assert create["before"] is None and create["after"]["name"] == "审计支部"
    assert create["actor_id"] == _id(w.users["secretary"]) and create["request_id"]
    assert update["before"]["name"] == "审计支部" and update["after"]["name"] == "审计支部（改）"
    assert move["before"]["parent_id"] == _id(w.orgs["a1"]) and move["after"]["parent_id"] == _id(
        w.orgs["a2"]
    )
    assert move["before"]["path"] != move["after"]["path"]
    assert move["actor_id"] == _id(w.users["street"])
    assert delete["before"]["name"] == "审计支部（改）" and delete["after"] is None
    # Refused writes leave no entry.
    r = await client.patch(
        f"{API}/{_id(w.orgs['a1'])}", headers=w.h("secretary", **{"If-Match": '"9"'}), json={"name": "x"}
    )
    assert r.status_code == 412
    assert [e["action"] for e in await _audit(client, w, _id(w.orgs["a1"]))] == ["organization.create"]


async def test_audit_log_is_scoped(client, world):
    w = world
    await _created(client, w, "secretary2", "北门第二支部", "branch", w.orgs["b1"])
    r = await client.get(
        "/api/v1/audit-log", headers=w.h("secretary"), params={"action": "organization.create"}
    )
    assert r.status_code == 200
    names = {e["after"]["name"] for e in r.json()["items"]}
    assert "北门第二支部" not in names
    assert "东湖社区第一党支部" in names
