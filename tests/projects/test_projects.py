"""The project list: proposing, editing, needs and commitments, the state machine, export."""

from __future__ import annotations

import asyncio
import io
import uuid

import pytest
from openpyxl import load_workbook

from tests.projects.helpers import (
    approve,
    audit_rows,
    create_project,
    fetch,
    get_project,
    make_need,
    make_resource,
    move,
)


async def _counts() -> tuple[int, int, int, int]:
    (row,) = await fetch(
        "SELECT (SELECT count(*) FROM projects), (SELECT count(*) FROM project_needs),"
        " (SELECT count(*) FROM resource_commitments), (SELECT count(*) FROM project_milestones)"
    )
    return tuple(row)  # type: ignore[return-value]


async def _remaining(resource_id: uuid.UUID) -> tuple[int, str]:
    (row,) = await fetch("SELECT remaining_quantity, state FROM resources WHERE id = :id", id=resource_id)
    return row[0], row[1]


async def _need_state(need_id: uuid.UUID | str) -> str:
    (row,) = await fetch("SELECT state FROM needs WHERE id = :id", id=uuid.UUID(str(need_id)))
    return str(row[0])


# --- proposing ----------------------------------------------------------------------------------


async def test_propose_with_needs_commitments_units_and_plan(client, world, session):
    need = await make_need(session, world)
    resource = await make_resource(session, world, quantity=10, unit="a1")
    p = await create_project(
        client,
        world,
        description="每月一次上门体检",
        need_ids=[str(need.id)],
        commitments=[{"resource_id": str(resource.id), "quantity": 4}],
        joint_unit_ids=[str(world.units["a1"].id)],
        responsible_name="王书记",
        responsible_user_id=str(world.users["secretary"].id),
        budget=5000,
        plan_from="2026-03-01",
        plan_to="2026-06-30",
        milestones=[{"title": "摸底", "due_on": "2026-03-15"}, {"title": "完成体检"}],
    )
    assert p["state"] == "proposed" and p["version"] == 1
    assert p["org_id"] == str(world.orgs["a1"].id)
    assert p["joint_unit_ids"] == [str(world.units["a1"].id)] and p["lead_unit_id"] is None
    assert p["budget"] == 5000 and p["plan_from"] == "2026-03-01" and p["plan_to"] == "2026-06-30"
    assert [n["id"] for n in p["needs"]] == [str(need.id)] and p["needs"][0]["state"] == "in_project"
    (c,) = p["commitments"]
    assert c["resource_id"] == str(resource.id) and c["quantity"] == 4 and c["released_at"] is None
    assert c["quantity_unit"] == "次" and c["provider_name"] == "东湖供电所"
    assert [m["title"] for m in p["milestones"]] == ["摸底", "完成体检"]
    assert p["decision"] is None and p["decisions"] == [] and p["result"]["completed_at"] is None
    assert p["created_by"] == str(world.users["secretary"].id)

    assert await _remaining(resource.id) == (6, "partly_committed")
    assert await _need_state(need.id) == "in_project"
    (row,) = await audit_rows("project", p["id"])
    assert row.action == "project.propose" and row.after["need_ids"] == [str(need.id)]
    assert [r.action for r in await audit_rows("need", need.id)] == ["need.take_into_project"]

    r = await client.get(f"/api/v1/projects/{p['id']}", headers=world.h("staff"))
    assert r.status_code == 200 and r.headers["etag"] == '"1"' and r.json() == p


async def test_street_staff_propose_for_the_street_and_its_communities(client, world, session):
    need = await make_need(session, world, "a2")
    street = await create_project(client, world, "street", org="street_a", need_ids=[str(need.id)])
    assert street["needs"][0]["id"] == str(need.id)
    await create_project(client, world, "street", org="a2")
    # ...but not for a branch, nor for the other street.
    r = await create_project(client, world, "street", org="a1_branch", expect=422)
    assert r["code"] == "invalid_project_org"
    r = await create_project(client, world, "street", org="b1", expect=404)
    assert r["code"] == "not_found"


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"plan_from": "2026-06-01", "plan_to": "2026-05-01"}, 422, "validation_error"),
        ({"budget": -1}, 422, "validation_error"),
        ({"title": "  "}, 422, "validation_error"),
        ({"commitments": "quantity0"}, 422, "validation_error"),
        ({"commitments": "quantity-3"}, 422, "validation_error"),
        ({"commitments": "over"}, 409, "insufficient_quantity"),
        ({"commitments": "foreign"}, 404, "not_found"),
        ({"commitments": "withdrawn"}, 409, "illegal_transition"),
        ({"need_ids": "foreign"}, 404, "not_found"),
        ({"need_ids": "twice"}, 422, "validation_error"),
        ({"need_ids": "closed"}, 409, "illegal_transition"),
        ({"lead_unit_id": "other_street"}, 404, "not_found"),
        ({"joint_unit_ids": "lead_too"}, 422, "validation_error"),
        ({"responsible_user_id": str(uuid.uuid4())}, 404, "not_found"),
        ({"org_id": str(uuid.uuid4())}, 404, "not_found"),
        ({"state": "approved"}, 422, "validation_error"),
    ],
)
async def test_bad_input_writes_nothing(client, world, session, fields, status, code):
    need = await make_need(session, world)
    resource = await make_resource(session, world, quantity=5)
    foreign_need = await make_need(session, world, "b1")
    foreign_resource = await make_resource(session, world, "b1")
    closed = await make_need(session, world, title="已办结", state="resolved")
    withdrawn = await make_resource(session, world, state="withdrawn")
    body = {"need_ids": [str(need.id)], "commitments": [{"resource_id": str(resource.id), "quantity": 2}]}
    special = {
        ("commitments", "quantity0"): [{"resource_id": str(resource.id), "quantity": 0}],
        ("commitments", "quantity-3"): [{"resource_id": str(resource.id), "quantity": -3}],
        # The first commitment is fine, the second takes more than is left: nothing stays reserved.
        ("commitments", "over"): [
            {"resource_id": str(resource.id), "quantity": 2},
            {"resource_id": str(resource.id), "quantity": 4},
        ],
        ("commitments", "foreign"): [{"resource_id": str(foreign_resource.id), "quantity": 1}],
        ("commitments", "withdrawn"): [{"resource_id": str(withdrawn.id), "quantity": 1}],
        ("need_ids", "foreign"): [str(need.id), str(foreign_need.id)],
        ("need_ids", "twice"): [str(need.id), str(need.id)],
        ("need_ids", "closed"): [str(need.id), str(closed.id)],
        ("lead_unit_id", "other_street"): str(world.units["b1"].id),
        ("joint_unit_ids", "lead_too"): [str(world.units["a1"].id)],
    }
    for key, value in fields.items():
        body[key] = special.get((key, value), value)
    if "joint_unit_ids" in fields:
        body["lead_unit_id"] = str(world.units["a1"].id)
    r = await create_project(client, world, expect=status, **body)
    assert r["code"] == code, r
    assert await _counts() == (0, 0, 0, 0)
    assert await _remaining(resource.id) == (5, "available")
    assert await _need_state(need.id) == "accepted"
    assert await audit_rows("project") == []


async def test_street_staff_cannot_link_a_need_of_another_community(client, world, session):
    need = await make_need(session, world, "a2")
    r = await create_project(client, world, "street", need_ids=[str(need.id)], expect=422)
    assert r["code"] == "need_outside_project_org"
    assert await _counts() == (0, 0, 0, 0)


async def test_who_may_propose(client, world):
    for who, status in (("gridworker", 403), ("liaison", 403), ("member", 403), ("resident", 403)):
        r = await create_project(client, world, who, expect=status)
        assert r["code"] == "forbidden"
    r = await create_project(client, world, "secretary2", expect=404)
    assert await _counts() == (0, 0, 0, 0)


# --- reading ------------------------------------------------------------------------------------


async def test_list_filters_and_scope(client, world, session):
    a1 = await create_project(client, world, title="社区义诊")
    a2 = await create_project(client, world, "street", org="a2", title="四点半课堂")
    b1 = await create_project(client, world, "secretary2", org="b1", title="适老化改造")

    async def ids(who, **params):
        r = await client.get("/api/v1/projects", headers=world.h(who), params=params)
        assert r.status_code == 200, r.text
        return {p["id"] for p in r.json()["items"]}

    assert await ids("secretary") == {a1["id"]}
    assert await ids("street") == {a1["id"], a2["id"]}
    assert await ids("admin") == {a1["id"], a2["id"], b1["id"]}
    assert await ids("gridworker") == {a1["id"]}
    assert await ids("street", org_id=str(world.orgs["a2"].id)) == {a2["id"]}
    assert await ids("street", q="课堂") == {a2["id"]}
    assert await ids("admin", state="approved") == set()
    await move(client, world, a1["id"], "cancelled", reason="重复立项")
    assert await ids("secretary", state="cancelled") == {a1["id"]}
    # A liaison sees nothing until its unit works on a project or may claim it.
    assert await ids("liaison") == set()
    for who in ("member", "resident"):
        r = await client.get("/api/v1/projects", headers=world.h(who))
        assert r.status_code == 403
    for who, status in (("secretary2", 404), ("liaison", 404), ("member", 403), ("resident", 403)):
        r = await client.get(f"/api/v1/projects/{a1['id']}", headers=world.h(who))
        assert r.status_code == status, (who, r.text)
    r = await client.get(f"/api/v1/projects/{uuid.uuid4()}", headers=world.h("admin"))
    assert r.status_code == 404 and r.json()["code"] == "not_found"


# --- editing ------------------------------------------------------------------------------------


async def test_patch_with_etag(client, world):
    p = await create_project(client, world, budget=100)
    url = f"/api/v1/projects/{p['id']}"
    r = await client.patch(
        url,
        headers=world.h("staff", **{"If-Match": '"1"'}),
        json={"title": "上门体检（第一批）", "budget": 2000, "joint_unit_ids": [str(world.units["a1"].id)]},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["title"] == "上门体检（第一批）" and body["budget"] == 2000 and body["version"] == 2
    assert body["joint_unit_ids"] == [str(world.units["a1"].id)] and r.headers["etag"] == '"2"'
    # A stale version: 412, nothing changed.
    r = await client.patch(url, headers=world.h("staff", **{"If-Match": '"1"'}), json={"budget": 1})
    assert r.status_code == 412 and r.json()["code"] == "precondition_failed"
    assert (await get_project(client, world, p["id"]))["budget"] == 2000
    # The plan window is checked against the stored half too.
    await client.patch(url, headers=world.h("staff"), json={"plan_from": "2026-05-01"})
    r = await client.patch(url, headers=world.h("staff"), json={"plan_to": "2026-04-01"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "plan_to"]
    r = await client.patch(url, headers=world.h("staff"), json={"budget": -5})
    assert r.status_code == 422
    r = await client.patch(url, headers=world.h("staff"), json={"title": None})
    assert r.status_code == 422
    r = await client.patch(
        url, headers=world.h("staff"), json={"joint_unit_ids": [str(world.units["b1"].id)]}
    )
    assert r.status_code == 404
    # Only staff edit; out of scope is 404.
    assert (await client.patch(url, headers=world.h("gridworker"), json={"budget": 1})).status_code == 403
    assert (await client.patch(url, headers=world.h("secretary2"), json={"budget": 1})).status_code == 404
    # A finished project is not edited.
    await move(client, world, p["id"], "cancelled", reason="取消")
    r = await client.patch(url, headers=world.h("staff"), json={"budget": 1})
    assert r.status_code == 409 and r.json()["code"] == "illegal_transition"
    assert [row.action for row in await audit_rows("project", p["id"])] == [
        "project.propose",
        "project.update",
        "project.update",
        "project.cancel",
    ]


async def test_link_and_unlink_needs(client, world, session):
    first, second = await make_need(session, world), await make_need(session, world, title="助餐")
    p = await create_project(client, world, need_ids=[str(first.id)])
    url = f"/api/v1/projects/{p['id']}/needs"
    r = await client.post(url, headers=world.h("staff"), json={"need_id": str(second.id)})
    assert r.status_code == 201 and {n["id"] for n in r.json()["needs"]} == {str(first.id), str(second.id)}
    assert r.json()["version"] == 2
    # Linked already (here), or taken by another project: 409.
    r = await client.post(url, headers=world.h("staff"), json={"need_id": str(second.id)})
    assert r.status_code == 409 and r.json()["code"] == "duplicate"
    other = await create_project(client, world)
    r = await client.post(
        f"/api/v1/projects/{other['id']}/needs", headers=world.h("staff"), json={"need_id": str(second.id)}
    )
    assert r.status_code == 409 and r.json()["code"] == "illegal_transition"
    foreign = await make_need(session, world, "b1")
    r = await client.post(url, headers=world.h("staff"), json={"need_id": str(foreign.id)})
    assert r.status_code == 404
    # Unlinked, the need goes back to the list.
    r = await client.delete(f"{url}/{first.id}", headers=world.h("staff"))
    assert r.status_code == 200 and [n["id"] for n in r.json()["needs"]] == [str(second.id)]
    assert await _need_state(first.id) == "accepted"
    r = await client.delete(f"{url}/{first.id}", headers=world.h("staff"))
    assert r.status_code == 404


async def test_commitments_reserve_and_release(client, world, session):
    resource = await make_resource(session, world, quantity=5)
    p = await create_project(client, world)
    url = f"/api/v1/projects/{p['id']}/commitments"
    r = await client.post(
        url, headers=world.h("staff"), json={"resource_id": str(resource.id), "quantity": 5}
    )
    assert r.status_code == 201, r.text
    commitment = r.json()["commitments"][0]
    assert await _remaining(resource.id) == (0, "exhausted")
    r = await client.post(
        url, headers=world.h("staff"), json={"resource_id": str(resource.id), "quantity": 1}
    )
    assert r.status_code == 409 and r.json()["code"] == "insufficient_quantity"
    for bad in (0, -1, "x"):
        r = await client.post(
            url, headers=world.h("staff"), json={"resource_id": str(resource.id), "quantity": bad}
        )
        assert r.status_code == 422
    r = await client.delete(
        f"{url}/{commitment['id']}", headers=world.h("staff"), params={"reason": "改用其他资源"}
    )
    assert r.status_code == 200
    (released,) = r.json()["commitments"]
    assert released["released_at"] is not None and released["release_reason"] == "改用其他资源"
    assert await _remaining(resource.id) == (5, "available")
    r = await client.delete(f"{url}/{commitment['id']}", headers=world.h("staff"))
    assert r.status_code == 409 and r.json()["code"] == "illegal_transition"
    r = await client.delete(f"{url}/{uuid.uuid4()}", headers=world.h("staff"))
    assert r.status_code == 404
    assert await _remaining(resource.id) == (5, "available")


async def test_two_commitments_racing_for_the_last_units(client, world, session):
    resource = await make_resource(session, world, quantity=5)
    first, second = await create_project(client, world), await create_project(client, world)
    body = {"resource_id": str(resource.id), "quantity": 3}
    results = await asyncio.gather(
        *(
            client.post(f"/api/v1/projects/{p['id']}/commitments", headers=world.h(who), json=body)
            for p, who in ((first, "secretary"), (second, "staff"))
        )
    )
    assert sorted(r.status_code for r in results) == [201, 409], [r.text for r in results]
    loser = next(r for r in results if r.status_code == 409)
    assert loser.json()["code"] == "insufficient_quantity"
    assert await _remaining(resource.id) == (2, "partly_committed")
    assert (await fetch("SELECT count(*) FROM resource_commitments"))[0][0] == 1


async def test_milestones(client, world):
    p = await create_project(client, world)
    url = f"/api/v1/projects/{p['id']}/milestones"
    r = await client.post(url, headers=world.h("staff"), json={"title": "入户摸底", "due_on": "2026-03-10"})
    assert r.status_code == 201 and r.headers["etag"] == '"1"'
    m = r.json()
    r = await client.patch(
        f"{url}/{m['id']}", headers=world.h("staff", **{"If-Match": '"1"'}), json={"done": True}
    )
    assert r.status_code == 200 and r.json()["done_at"] is not None
    assert r.json()["done_by"] == str(world.users["staff"].id)
    r = await client.patch(
        f"{url}/{m['id']}", headers=world.h("staff", **{"If-Match": '"1"'}), json={"done": False}
    )
    assert r.status_code == 412
    r = await client.patch(f"{url}/{m['id']}", headers=world.h("staff"), json={"title": ""})
    assert r.status_code == 422
    r = await client.post(url, headers=world.h("staff"), json={"due_on": "2026-03-10"})
    assert r.status_code == 422
    assert (await client.post(url, headers=world.h("liaison"), json={"title": "x"})).status_code == 403
    assert (await client.post(url, headers=world.h("secretary2"), json={"title": "x"})).status_code == 404
    detail = await get_project(client, world, p["id"])
    assert [x["title"] for x in detail["milestones"]] == ["入户摸底"]
    assert (await client.delete(f"{url}/{m['id']}", headers=world.h("staff"))).status_code == 204
    assert (await client.delete(f"{url}/{m['id']}", headers=world.h("staff"))).status_code == 404
    assert (await get_project(client, world, p["id"]))["milestones"] == []


# --- the state machine --------------------------------------------------------------------------


async def test_approving_outside_a_meeting_is_refused(client, world):
    p = await create_project(client, world)
    for target in ("approved", "rejected"):
        r = await move(client, world, p["id"], target, "admin", expect=409)
        assert r["code"] == "decision_required"
    r = await client.patch(
        f"/api/v1/projects/{p['id']}", headers=world.h("admin"), json={"state": "approved"}
    )
    assert r.status_code == 422
    assert (await get_project(client, world, p["id"]))["state"] == "proposed"


async def _project_in(client, world, session, state: str) -> dict:
    p = await create_project(client, world)
    steps = {
        "proposed": [],
        "approved": ["approve"],
        "in_progress": ["approve", "in_progress"],
        "completed": ["approve", "in_progress", "completed"],
        "evaluated": ["approve", "in_progress", "completed", "evaluated"],
        "cancelled": ["cancelled"],
        "rejected": ["reject"],
    }[state]
    for step in steps:
        if step == "approve":
            await approve(client, world, p["id"])
        elif step == "reject":
            from tests.projects.helpers import decide, meeting_to, schedule

            m = await schedule(client, world, projects=(p["id"],))
            await meeting_to(client, world, m["id"], "held")
            await decide(client, world, m["id"], m["agenda"][0]["id"], "reject")
        else:
            await move(client, world, p["id"], step, reason="理由", note="说明", rating=5)
    return await get_project(client, world, p["id"])


ILLEGAL = [
    ("proposed", "in_progress"),
    ("proposed", "completed"),
    ("proposed", "evaluated"),
    ("approved", "completed"),
    ("approved", "evaluated"),
    ("approved", "proposed"),
    ("in_progress", "evaluated"),
    ("in_progress", "proposed"),
    ("completed", "cancelled"),
    ("completed", "in_progress"),
    ("evaluated", "cancelled"),
    ("evaluated", "completed"),
    ("cancelled", "in_progress"),
    ("cancelled", "proposed"),
    ("rejected", "in_progress"),
    ("rejected", "cancelled"),
]


@pytest.mark.parametrize(("state", "target"), ILLEGAL)
async def test_illegal_transitions_are_409(client, world, session, state, target):
    p = await _project_in(client, world, session, state)
    assert p["state"] == state
    r = await move(client, world, p["id"], target, expect=409, reason="理由", note="说明", rating=3)
    assert r["code"] == "illegal_transition"
    r = await client.post(
        f"/api/v1/projects/{p['id']}/transitions",
        headers=world.h("secretary", **{"Accept-Language": "en"}),
        json={"to": target, "reason": "理由", "note": "说明", "rating": 3},
    )
    assert r.json()["detail"].startswith("Cannot ")
    after = await get_project(client, world, p["id"])
    assert after["state"] == state and after["version"] == p["version"]


async def test_transitions_need_their_reasons(client, world):
    p = await create_project(client, world)
    r = await move(client, world, p["id"], "cancelled", expect=422)
    assert r["errors"][0]["loc"] == ["body", "reason"]
    await approve(client, world, p["id"])
    r = await client.post(
        f"/api/v1/projects/{p['id']}/transitions",
        headers=world.h("secretary", **{"If-Match": '"1"'}),
        json={"to": "in_progress"},
    )
    assert r.status_code == 412
    await move(client, world, p["id"], "in_progress")
    r = await move(client, world, p["id"], "completed", expect=422)
    assert r["errors"][0]["loc"] == ["body", "note"]
    await move(client, world, p["id"], "completed", note="体检完成42人")
    r = await move(client, world, p["id"], "evaluated", expect=422)
    assert r["errors"][0]["loc"] == ["body", "rating"]
    assert (await move(client, world, p["id"], "evaluated", rating=6, expect=422))[
        "code"
    ] == "validation_error"
    assert await move(client, world, p["id"], "evaluated", "gridworker", rating=5, expect=403)


async def test_cancel_releases_commitments_and_gives_needs_back(client, world, session):
    need = await make_need(session, world)
    resource = await make_resource(session, world, quantity=8)
    p = await create_project(
        client, world, need_ids=[str(need.id)], commitments=[{"resource_id": str(resource.id), "quantity": 8}]
    )
    await approve(client, world, p["id"])
    assert await _remaining(resource.id) == (0, "exhausted")
    done = await move(client, world, p["id"], "cancelled", reason="资金未落实")
    assert done["state"] == "cancelled" and done["state_reason"] == "资金未落实"
    assert done["state_changed_by"] == str(world.users["secretary"].id)
    assert done["commitments"][0]["released_at"] is not None
    assert await _remaining(resource.id) == (8, "available")
    assert await _need_state(need.id) == "accepted"
    row = (await audit_rows("project", p["id"]))[-1]
    assert row.action == "project.cancel" and row.reason == "资金未落实"
    assert row.before["state"] == "approved" and row.after["state"] == "cancelled"
    # Nothing more can be committed or linked to it.
    r = await client.post(
        f"/api/v1/projects/{p['id']}/commitments",
        headers=world.h("staff"),
        json={"resource_id": str(resource.id), "quantity": 1},
    )
    assert r.status_code == 409
    r = await client.post(
        f"/api/v1/projects/{p['id']}/needs", headers=world.h("staff"), json={"need_id": str(need.id)}
    )
    assert r.status_code == 409


# --- export -------------------------------------------------------------------------------------


async def test_export_xlsx_has_what_the_caller_sees(client, world, session):
    need = await make_need(session, world, title="楼道照明")
    resource = await make_resource(session, world, quantity=3, title="电工服务")
    a1 = await create_project(
        client,
        world,
        title="楼道灯修缮",
        need_ids=[str(need.id)],
        commitments=[{"resource_id": str(resource.id), "quantity": 2}],
        budget=800,
    )
    await approve(client, world, a1["id"])
    await create_project(client, world, "secretary2", org="b1", title="北门项目")
    r = await client.get("/api/v1/projects/export.xlsx", headers=world.h("secretary"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert "attachment" in r.headers["content-disposition"]
    ws = load_workbook(io.BytesIO(r.content)).active
    rows = list(ws.iter_rows(values_only=True))
    header, body = rows[0], rows[1:]
    assert header[:4] == ("id", "title", "org", "state")
    assert len(body) == 1
    row = dict(zip(header, body[0], strict=True))
    assert row["title"] == "楼道灯修缮" and row["state"] == "approved" and row["budget"] == 800
    assert row["needs"] == "楼道照明" and row["commitments"] == "电工服务 × 2次"
    assert row["decision.outcome"] == "approve" and row["decision.meeting"] == "东湖社区联席会议"
    r = await client.get("/api/v1/projects/export.xlsx", headers=world.h("resident"))
    assert r.status_code == 403
