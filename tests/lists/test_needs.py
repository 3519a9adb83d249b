"""The needs list: raising needs (staff, grid workers on a visit, hotline clients), reading,
editing, and the state machine."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import date

import pytest

from gongjian.core import db
from gongjian.core.errors import ProblemError
from gongjian.lists import service
from gongjian.lists.models import Need, NeedState
from gongjian.matching.text import index_tokens
from tests.lists.conftest import PHOTO, client_headers, count, create_need, fetch, need_body

VISIT = {"source": "visit", "photos": [PHOTO]}


async def test_staff_raise_a_need(client, k):
    r = await client.post("/api/v1/needs", headers=k.h("staff"), json=need_body(k, external_ref="N001"))
    assert r.status_code == 201, r.text
    need = r.json()
    assert r.headers["etag"] == '"1"' and r.headers["location"] == f"/api/v1/needs/{need['id']}"
    assert need["source"] == "staff" and need["state"] == "collected" and need["raised_by"] == k.user("staff")
    assert (
        need["org_id"] == k.org("a1")
        and need["grid_id"] == k.cells["a1_1"]
        and need["external_ref"] == "N001"
    )
    assert need["beneficiaries"] == 24 and need["urgency"] == "high" and need["year"] == 2026
    assert need["wanted_from"] == "2026-03-01" and need["wanted_to"] == "2026-12-31"
    assert need["location"] == {"lat": pytest.approx(30.204), "lng": pytest.approx(120.104)}
    assert need["photos"] == [] and need["duplicate_of_id"] is None and need["state_changed_at"] is None
    (row,) = await fetch("SELECT search_tokens FROM needs WHERE id = :id", id=need["id"])
    assert row.search_tokens == index_tokens(need["title"], need["description"])
    (entry,) = await fetch(
        "SELECT action, actor_id, org_id FROM audit_log WHERE object_id = :id", id=need["id"]
    )
    assert entry.action == "need.create" and str(entry.org_id) == k.org("a1")
    got = await client.get(f"/api/v1/needs/{need['id']}", headers=k.h("gridworker"))
    assert got.status_code == 200 and got.json() == need and got.headers["etag"] == '"1"'


async def test_defaults(client, k):
    need = await create_need(
        client, k, grid_id=None, location=None, wanted_from=None, wanted_to=None, urgency=None
    )
    start = date.fromisoformat(need["wanted_from"])
    assert need["wanted_to"] == f"{start.year}-12-31" and need["year"] == start.year
    assert need["urgency"] == "normal" and need["grid_id"] is None and need["location"] is None
    assert abs((start - date.today()).days) <= 1


async def test_grid_worker_records_a_visit_in_their_cell(client, k):
    need = await create_need(client, k, "gridworker", photos=[PHOTO])
    assert (
        need["source"] == "visit" and need["photos"] == [PHOTO] and need["raised_by"] == k.user("gridworker")
    )
    # A visit needs its grid cell, its location and a photo.
    for missing in ("photos", "location", "grid_id"):
        body = need_body(k, **VISIT, title=f"缺{missing}")
        body.pop(missing)
        r = await client.post("/api/v1/needs", headers=k.h("gridworker"), json=body)
        assert r.status_code == 422, r.text
        assert [e["loc"] for e in r.json()["errors"]] == [["body", missing]]
    # Only in the cells assigned to them, only in their community, only as a visit.
    r = await client.post(
        "/api/v1/needs", headers=k.h("gridworker"), json=need_body(k, **VISIT, grid_id=k.cells["a1_2"])
    )
    assert r.status_code == 403 and r.json()["code"] == "grid_not_assigned"
    r = await client.post(
        "/api/v1/needs",
        headers=k.h("gridworker"),
        json=need_body(k, **VISIT, org_id=k.org("b1"), grid_id=k.cells["b1_1"]),
    )
    assert r.status_code == 404
    r = await client.post(
        "/api/v1/needs", headers=k.h("gridworker"), json=need_body(k, photos=[PHOTO], source="staff")
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "source"]
    assert await count("needs") == 1


async def test_staff_may_record_a_visit_in_any_cell_of_their_scope(client, k):
    need = await create_need(client, k, "street", **VISIT, grid_id=k.cells["a1_2"], title="楼道堆物")
    assert need["source"] == "visit"
    r = await client.post(
        "/api/v1/needs", headers=k.h("staff"), json=need_body(k, source="visit", title="另一件")
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "photos"]
    r = await client.post("/api/v1/needs", headers=k.h("staff"), json=need_body(k, source="hotline"))
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "source"]


async def test_hotline_client_raises_within_its_org(client, session, k):
    h = await client_headers(session, k, "street_a", ["lists:read", "lists:write"])
    r = await client.post("/api/v1/needs", headers=h, json=need_body(k, external_ref="12345-0001"))
    assert r.status_code == 201, r.text
    need = r.json()
    assert need["source"] == "hotline" and need["external_ref"] == "12345-0001"
    r = await client.post("/api/v1/needs", headers=h, json=need_body(k, source="staff", title="别的"))
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "source"]
    r = await client.post("/api/v1/needs", headers=h, json=need_body(k, org_id=k.org("b1"), grid_id=None))
    assert r.status_code == 404
    (entry,) = await fetch(
        "SELECT actor_kind, actor_name FROM audit_log WHERE object_id = :id", id=need["id"]
    )
    assert entry.actor_kind == "client" and entry.actor_name == "12345热线-street_a"
    read_only = await client_headers(session, k, "a1", ["lists:read"])
    r = await client.post("/api/v1/needs", headers=read_only, json=need_body(k, title="只读客户端"))
    assert r.status_code == 403
    assert await count("needs") == 1


async def test_who_may_not_raise(client, k):
    # A liaison's grant reaches its unit, never a community's needs.
    await create_need(client, k, "liaison", expect=404)
    for who in ("member", "resident"):
        await create_need(client, k, who, expect=403)
    await create_need(client, k, "secretary2", expect=404)
    assert await count("needs") == 0


UNKNOWN = "00000000-0000-4000-8000-000000000001"
BAD_NEEDS = [
    ({"wanted_from": "2026-06-01", "wanted_to": "2026-05-01"}, "wanted_to"),
    ({"beneficiaries": -1}, "beneficiaries"),
    ({"category": "weapons"}, "category"),
    ({"urgency": "yesterday"}, "urgency"),
    ({"title": ""}, "title"),
    ({"title": "x" * 201}, "title"),
    ({"photos": ["file:///etc/passwd"]}, "photos"),
    ({"photos": ["https://a.cn/x.jpg"] * 10}, "photos"),
    ({"location": {"lat": 30.2, "lng": 200}}, "location"),
    ({"source": "import"}, "source"),
    ({"source": "wish"}, "source"),
    ({"org_id": "not-a-uuid"}, "org_id"),
    ({"year": 3000}, "year"),
    ({"state": "resolved"}, "state"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_NEEDS)
async def test_bad_input_is_refused_and_nothing_written(client, k, fields, field):
    r = await client.post("/api/v1/needs", headers=k.h("secretary"), json=need_body(k, **fields))
    assert r.status_code == 422, r.text
    assert any(field in e["loc"] for e in r.json()["errors"]), r.json()
    assert await count("needs") == 0
    assert await count("audit_log WHERE object_type = 'need'") == 0


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"grid_id": UNKNOWN}, "invalid_grid"),
        ({"grid_id": "b1_1"}, "invalid_grid"),  # a cell of another community
        ({"org_id": "a2", "grid_id": "a1_1"}, "invalid_grid"),  # a cell of a neighbouring community
        ({"org_id": "street_a", "grid_id": None}, "not_a_community"),
        ({"org_id": "a1_branch", "grid_id": None}, "not_a_community"),
        ({"duplicate_of_id": UNKNOWN}, "invalid_duplicate_of"),
    ],
)
async def test_wrong_places_are_refused(client, k, fields, code):
    resolved = {
        key: (k.cells.get(v) or (k.org(v) if v in k.w.orgs else v)) if isinstance(v, str) else v
        for key, v in fields.items()
    }
    r = await client.post("/api/v1/needs", headers=k.h("street"), json=need_body(k, **resolved))
    assert r.status_code == 422 and r.json()["code"] == code, r.text
    assert await count("needs") == 0


async def test_external_ref_is_unique_per_community(client, k):
    await create_need(client, k, external_ref="N1")
    r = await client.post(
        "/api/v1/needs", headers=k.h("secretary"), json=need_body(k, external_ref="N1", title="另一条")
    )
    assert r.status_code == 409 and r.json()["code"] == "duplicate"
    other = await create_need(client, k, "street", org_id=k.org("a2"), grid_id=None, external_ref="N1")
    assert other["external_ref"] == "N1"


async def test_idempotent_post(client, k):
    headers = {"Idempotency-Key": "visit-2026-0001"}
    first = await create_need(client, k, "gridworker", photos=[PHOTO], headers=headers)
    r = await client.post(
        "/api/v1/needs", headers={**k.h("gridworker"), **headers}, json=need_body(k, photos=[PHOTO])
    )
    assert r.status_code == 201 and r.headers["idempotent-replayed"] == "true"
    assert r.json()["id"] == first["id"]
    assert await count("needs") == 1
    # The same key for another body is refused.
    r = await client.post(
        "/api/v1/needs",
        headers={**k.h("gridworker"), **headers},
        json=need_body(k, photos=[PHOTO], title="别的"),
    )
    assert r.status_code == 422 and r.json()["code"] == "idempotency_mismatch"


async def _all(client, k, who="admin", **params):
    items, cursor = [], None
    while True:
        query = {"limit": 2, **params, **({"cursor": cursor} if cursor else {})}
        r = await client.get("/api/v1/needs", headers=k.h(who), params=query)
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return sorted(i["external_ref"] for i in items)


async def test_list_filters_subtree_and_paging(client, k, session):
    await create_need(client, k, external_ref="A1-1")
    await create_need(
        client, k, "gridworker", photos=[PHOTO], external_ref="A1-2", title="楼道灯坏了", category="goods"
    )
    await create_need(
        client, k, grid_id=k.cells["a1_2"], external_ref="A1-3", title="孩子放学没人管", urgency="low"
    )
    await create_need(client, k, "street", org_id=k.org("a2"), grid_id=None, external_ref="A2-1", year=2027)
    await create_need(
        client, k, "secretary2", org_id=k.org("b1"), grid_id=k.cells["b1_1"], external_ref="B1-1"
    )
    h = await client_headers(session, k, "a1", ["lists:write"])
    r = await client.post(
        "/api/v1/needs", headers=h, json=need_body(k, external_ref="H-1", title="噪音扰民", grid_id=None)
    )
    assert r.status_code == 201

    # The external checker's walk: a street's needs, page by page, with their refs.
    assert await _all(client, k, org_id=k.org("street_a")) == ["A1-1", "A1-2", "A1-3", "A2-1", "H-1"]
    assert await _all(client, k, org_id=k.org("a1")) == ["A1-1", "A1-2", "A1-3", "H-1"]
    assert await _all(client, k, org_id=k.org("county")) == ["A1-1", "A1-2", "A1-3", "A2-1", "B1-1", "H-1"]
    assert await _all(client, k, org_id=UNKNOWN) == []
    assert await _all(client, k, grid_id=k.cells["a1_2"]) == ["A1-3"]
    assert await _all(client, k, category="goods") == ["A1-2"]
    assert await _all(client, k, source="visit") == ["A1-2"]
    assert await _all(client, k, source="hotline") == ["H-1"]
    assert await _all(client, k, urgency="low") == ["A1-3"]
    assert await _all(client, k, year=2027) == ["A2-1"]
    assert await _all(client, k, q="灯") == ["A1-2"]
    assert await _all(client, k, state="collected", org_id=k.org("b1")) == ["B1-1"]
    assert await _all(client, k, state="accepted") == []
    # Scope.
    assert await _all(client, k, "gridworker") == ["A1-1", "A1-2", "A1-3", "H-1"]
    assert await _all(client, k, "street") == ["A1-1", "A1-2", "A1-3", "A2-1", "H-1"]
    assert await _all(client, k, "secretary2", org_id=k.org("street_a")) == []
    assert await _all(client, k, "liaison") == []
    for who in ("member", "resident"):
        r = await client.get("/api/v1/needs", headers=k.h(who))
        assert r.status_code == 403
    r = await client.get("/api/v1/needs", headers=k.h("admin"), params={"limit": 101})
    assert r.status_code == 422


async def test_get_out_of_scope(client, k):
    need = await create_need(client, k)
    for who in ("secretary2", "liaison"):
        r = await client.get(f"/api/v1/needs/{need['id']}", headers=k.h(who))
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    for who in ("member", "resident"):
        r = await client.get(f"/api/v1/needs/{need['id']}", headers=k.h(who))
        assert r.status_code == 403
    r = await client.get(f"/api/v1/needs/{UNKNOWN}", headers=k.h("admin"))
    assert r.status_code == 404


async def test_patch(client, k):
    need = await create_need(client, k, "gridworker", photos=[PHOTO])
    url = f"/api/v1/needs/{need['id']}"
    body = {"title": "独居老人送餐", "grid_id": k.cells["a1_2"], "photos": [PHOTO, PHOTO + "?2"]}
    r = await client.patch(url, headers=k.h("staff", **{"If-Match": '"1"'}), json=body)
    assert r.status_code == 200, r.text
    assert (
        r.json()["title"] == "独居老人送餐"
        and r.json()["grid_id"] == k.cells["a1_2"]
        and r.json()["version"] == 2
    )
    (row,) = await fetch("SELECT search_tokens FROM needs WHERE id = :id", id=need["id"])
    assert row.search_tokens == index_tokens("独居老人送餐", need["description"])
    r = await client.patch(url, headers=k.h("staff", **{"If-Match": '"1"'}), json={"title": "旧"})
    assert r.status_code == 412
    # A visit's record keeps its location and photo.
    for bad in ({"location": None}, {"photos": []}, {"grid_id": None}):
        r = await client.patch(url, headers=k.h("staff"), json=bad)
        assert r.status_code == 422, (bad, r.text)
    for bad in (
        {"grid_id": k.cells["b1_1"]},
        {"wanted_to": "2026-01-01"},
        {"title": None},
        {"source": "staff"},
    ):
        r = await client.patch(url, headers=k.h("staff"), json=bad)
        assert r.status_code == 422, (bad, r.text)
    # The grid worker raised it, but edits are staff's; out of scope is 404.
    r = await client.patch(url, headers=k.h("gridworker"), json={"title": "改"})
    assert r.status_code == 403
    r = await client.patch(url, headers=k.h("secretary2"), json={"title": "改"})
    assert r.status_code == 404
    assert (await client.get(url, headers=k.h("staff"))).json()["version"] == 2


async def _force_state(need_id: str, state: NeedState) -> None:
    async with db.sessionmaker()() as session:
        need = await session.get(Need, uuid.UUID(need_id))
        assert need is not None
        need.state = state
        await session.commit()


ENDPOINT_TARGETS = {
    "accept": NeedState.accepted,
    "reject": NeedState.rejected,
    "withdraw": NeedState.withdrawn,
}


@pytest.mark.parametrize("state", list(NeedState))
@pytest.mark.parametrize("action", list(ENDPOINT_TARGETS))
async def test_every_state_against_every_endpoint(client, k, state, action):
    need = await create_need(client, k)
    await _force_state(need["id"], state)
    r = await client.post(
        f"/api/v1/needs/{need['id']}/{action}",
        headers=k.h("staff", **{"Accept-Language": "en"}),
        json={"reason": "理由"},
    )
    allowed = ENDPOINT_TARGETS[action] in service.NEED_TRANSITIONS[state]
    if allowed:
        assert r.status_code == 200, r.text
        assert r.json()["state"] == ENDPOINT_TARGETS[action]
    else:
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "illegal_transition"
        assert r.json()["detail"] == f"Cannot {action} while {state.value}"
        (row,) = await fetch("SELECT state, version FROM needs WHERE id = :id", id=need["id"])
        assert row.state == state.value


async def test_the_table_itself():
    closed = {NeedState.resolved, NeedState.rejected, NeedState.withdrawn}
    for state in closed:
        assert service.NEED_TRANSITIONS[state] == frozenset()
    # Forward along the design's chain; never into `collected`, never resolved but from a project.
    chain = [
        NeedState.collected,
        NeedState.accepted,
        NeedState.matched,
        NeedState.in_project,
        NeedState.resolved,
    ]
    for before, after in itertools.pairwise(chain):
        assert after in service.NEED_TRANSITIONS[before]
    assert all(NeedState.collected not in t for t in service.NEED_TRANSITIONS.values())
    assert [s for s, t in service.NEED_TRANSITIONS.items() if NeedState.resolved in t] == [
        NeedState.in_project
    ]
    # Nothing a project holds is withdrawn or rejected from under it.
    assert not {NeedState.withdrawn, NeedState.rejected} & service.NEED_TRANSITIONS[NeedState.in_project]


async def test_transitions_record_who_when_why(client, k):
    need = await create_need(client, k)
    url = f"/api/v1/needs/{need['id']}"
    r = await client.post(f"{url}/accept", headers=k.h("secretary", **{"If-Match": '"1"'}))
    assert r.status_code == 200, r.text
    accepted = r.json()
    assert accepted["state"] == "accepted" and accepted["state_changed_by"] == k.user("secretary")
    assert (
        accepted["state_changed_at"] is not None
        and accepted["state_reason"] is None
        and accepted["version"] == 2
    )
    r = await client.post(f"{url}/reject", headers=k.h("secretary"), json={})
    assert r.status_code == 422
    r = await client.post(f"{url}/reject", headers=k.h("secretary"), json={"reason": "  "})
    assert r.status_code == 422
    r = await client.post(
        f"{url}/reject", headers=k.h("secretary", **{"If-Match": '"1"'}), json={"reason": "不属实"}
    )
    assert r.status_code == 412
    r = await client.post(f"{url}/reject", headers=k.h("staff"), json={"reason": "经核实已由物业解决"})
    assert r.status_code == 200 and r.json()["state"] == "rejected"
    assert r.json()["state_reason"] == "经核实已由物业解决" and r.json()["state_changed_by"] == k.user(
        "staff"
    )
    rows = await fetch(
        "SELECT action, actor_id, before, after, reason FROM audit_log WHERE object_id = :id ORDER BY at",
        id=need["id"],
    )
    assert [row.action for row in rows] == ["need.create", "need.accept", "need.reject"]
    assert rows[2].before == {"state": "accepted"} and rows[2].after == {"state": "rejected"}
    assert rows[2].reason == "经核实已由物业解决" and str(rows[2].actor_id) == k.user("staff")
    # A closed need is not edited.
    r = await client.patch(url, headers=k.h("staff"), json={"title": "改"})
    assert r.status_code == 409 and r.json()["code"] == "illegal_transition"


async def test_who_may_move_needs(client, k):
    need = await create_need(client, k)
    url = f"/api/v1/needs/{need['id']}"
    assert (await client.post(f"{url}/accept", headers=k.h("gridworker"))).status_code == 403
    assert (await client.post(f"{url}/accept", headers=k.h("secretary2"))).status_code == 404
    assert (await client.post(f"{url}/accept", headers=k.h("liaison"))).status_code == 404
    assert (await client.post(f"{url}/withdraw", headers=k.h("member"))).status_code == 403
    r = await client.post(f"{url}/withdraw", headers=k.h("street"), json={"reason": "居民已搬离"})
    assert r.status_code == 200 and r.json()["state"] == "withdrawn"


async def test_two_staff_accept_at_once(client, k):
    need = await create_need(client, k)
    results = await asyncio.gather(
        client.post(f"/api/v1/needs/{need['id']}/accept", headers=k.h("secretary")),
        client.post(f"/api/v1/needs/{need['id']}/accept", headers=k.h("staff")),
    )
    assert sorted(r.status_code for r in results) == [200, 409]
    rows = await fetch("SELECT count(*) AS n FROM audit_log WHERE action = 'need.accept'")
    assert rows[0].n == 1


async def test_set_need_state_for_other_packages(client, k):
    need = await create_need(client, k)
    staff_id = k.w.users["staff"].id
    async with db.sessionmaker()() as session:
        loaded = await session.get(Need, uuid.UUID(need["id"]))
        assert loaded is not None
        # Matching: a user's id; projects: the system (None).
        await service.set_need_state(session, loaded, NeedState.matched, by=staff_id, reason="采纳匹配建议")
        await service.set_need_state(session, loaded, NeedState.in_project, by=None)
        with pytest.raises(ProblemError) as refused:
            await service.set_need_state(session, loaded, NeedState.withdrawn, by=None)
        assert refused.value.code == "illegal_transition" and refused.value.status == 409
        assert refused.value.params == {"state": "in_project", "action": "withdraw"}
        await service.set_need_state(session, loaded, NeedState.resolved, by=None, reason="项目完成")
        with pytest.raises(ProblemError):
            await service.set_need_state(session, loaded, NeedState.in_project, by=None)
        with pytest.raises(ProblemError) as no_reason:
            await service.set_need_state(session, loaded, NeedState.rejected, by=None)
        assert no_reason.value.code == "illegal_transition"
        await session.commit()
    r = await client.get(f"/api/v1/needs/{need['id']}", headers=k.h("staff"))
    assert r.json()["state"] == "resolved" and r.json()["state_reason"] == "项目完成"
    assert r.json()["state_changed_by"] is None
    rows = await fetch(
        "SELECT action, actor_kind, actor_id, actor_name, reason FROM audit_log"
        " WHERE object_id = :id ORDER BY at",
        id=need["id"],
    )
    assert [r.action for r in rows] == ["need.create", "need.match", "need.take_into_project", "need.resolve"]
    assert rows[1].actor_id == staff_id and rows[1].actor_name == "staff" and rows[1].reason == "采纳匹配建议"
    assert rows[2].actor_kind == "system"


async def test_rejecting_needs_a_reason_in_the_service_too(client, k):
    need = await create_need(client, k)
    async with db.sessionmaker()() as session:
        loaded = await session.get(Need, uuid.UUID(need["id"]))
        with pytest.raises(ProblemError) as refused:
            await service.set_need_state(session, loaded, NeedState.rejected, by=None, reason=" ")
        assert refused.value.code == "validation_error"
