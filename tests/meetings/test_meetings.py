"""Joint and consultation meetings: schedule, agenda, attendance, minutes, and the decisions that
approve projects (only a held meeting of the project's org or an org above it)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.projects.helpers import (
    audit_rows,
    create_project,
    decide,
    fetch,
    get_project,
    make_need,
    make_resource,
    meeting_to,
    schedule,
)


async def get_meeting(client, w, mid, who="secretary", expect=200):
    r = await client.get(f"/api/v1/meetings/{mid}", headers=w.h(who))
    assert r.status_code == expect, r.text
    return r.json()


async def held_meeting(client, w, *projects, who="secretary", org="a1"):
    m = await schedule(client, w, who, org=org, projects=projects)
    return await meeting_to(client, w, m["id"], "held", who)


# --- scheduling and reading ---------------------------------------------------------------------


async def test_schedule_with_invitations_and_agenda(client, world):
    p = await create_project(client, world)
    m = await schedule(
        client,
        world,
        projects=(p["id"],),
        kind="consultation_meeting",
        invited_org_ids=[str(world.orgs["a1_branch"].id)],
        invited_unit_ids=[str(world.units["a1"].id)],
    )
    assert m["state"] == "scheduled" and m["kind"] == "consultation_meeting" and m["version"] == 1
    assert m["scheduled_at"].startswith("2026-12-01T01:30:00")  # stored in UTC
    assert m["invited_org_ids"] == [str(world.orgs["a1_branch"].id)]
    assert m["invited_unit_ids"] == [str(world.units["a1"].id)]
    assert [(a["position"], a["project_id"]) for a in m["agenda"]] == [(1, p["id"])]
    assert m["agenda"][0]["subject_type"] is None and m["decisions"] == [] and m["minutes"] is None
    assert await get_meeting(client, world, m["id"], "gridworker") == m
    (row,) = await audit_rows("meeting", m["id"])
    assert row.action == "meeting.schedule"


async def test_street_staff_run_meetings_across_their_street(client, world):
    street = await schedule(client, world, "street", org="street_a", title="城中街道联席会议")
    a2 = await schedule(client, world, "street", org="a2")
    b1 = await schedule(client, world, "secretary2", org="b1")

    async def ids(who, **params):
        r = await client.get("/api/v1/meetings", headers=world.h(who), params=params)
        assert r.status_code == 200, r.text
        return {m["id"] for m in r.json()["items"]}

    assert await ids("street") == {street["id"], a2["id"]}
    assert await ids("secretary") == set()  # a1 sees neither its street's nor a2's meetings
    assert await ids("admin", org_id=str(world.orgs["street_b"].id)) == {b1["id"]}
    assert await ids("street", state="held") == set()
    assert await ids("street", kind="joint_meeting") == {street["id"], a2["id"]}
    await get_meeting(client, world, b1["id"], "street", expect=404)
    await get_meeting(client, world, street["id"], "secretary", expect=404)
    for who in ("liaison", "member", "resident"):
        assert (await client.get("/api/v1/meetings", headers=world.h(who))).status_code == 403
        await get_meeting(client, world, a2["id"], who, expect=403)


@pytest.mark.parametrize(
    ("who", "fields", "status", "code"),
    [
        ("secretary", {"org_id": "a1_branch"}, 422, "invalid_meeting_org"),
        ("secretary", {"org_id": "county"}, 404, "not_found"),
        ("secretary", {"org_id": "random"}, 404, "not_found"),
        ("secretary", {"scheduled_at": "2026-12-01T09:30:00"}, 422, "validation_error"),  # no zone
        ("secretary", {"kind": "party_day"}, 422, "validation_error"),
        ("secretary", {"title": ""}, 422, "validation_error"),
        ("secretary", {"invited_unit_ids": "b1"}, 404, "not_found"),
        ("secretary", {"invited_org_ids": "b1"}, 404, "not_found"),
        ("secretary", {"agenda": "b1_project"}, 404, "not_found"),
        ("street", {"agenda": "a2_project"}, 409, "project_outside_meeting_org"),
        ("gridworker", {}, 403, "forbidden"),
        ("liaison", {}, 403, "forbidden"),
        ("resident", {}, 403, "forbidden"),
    ],
)
async def test_bad_schedules_write_nothing(client, world, who, fields, status, code):
    a2_project = await create_project(client, world, "street", org="a2")
    b1_project = await create_project(client, world, "secretary2", org="b1")
    values = {
        ("org_id", "a1_branch"): str(world.orgs["a1_branch"].id),
        ("org_id", "county"): str(world.orgs["county"].id),
        ("org_id", "random"): str(uuid.uuid4()),
        ("invited_unit_ids", "b1"): [str(world.units["b1"].id)],
        ("invited_org_ids", "b1"): [str(world.orgs["b1"].id)],
        ("agenda", "b1_project"): [{"title": "x", "project_id": b1_project["id"]}],
        ("agenda", "a2_project"): [{"title": "x", "project_id": a2_project["id"]}],
    }
    body = {k: values.get((k, v), v) for k, v in fields.items()}
    r = await schedule(client, world, who, expect=status, **body)
    assert r["code"] == code, r
    assert await fetch("SELECT count(*) FROM meetings") == [(0,)]
    assert await fetch("SELECT count(*) FROM meeting_agenda_items") == [(0,)]


# --- editing and the state machine --------------------------------------------------------------


async def test_edit_while_scheduled_minutes_once_held(client, world):
    m = await schedule(client, world)
    url = f"/api/v1/meetings/{m['id']}"
    r = await client.patch(
        url,
        headers=world.h("staff", **{"If-Match": '"1"'}),
        json={"location": "二楼会议室", "invited_unit_ids": [str(world.units["a1"].id)]},
    )
    assert r.status_code == 200 and r.json()["location"] == "二楼会议室" and r.json()["version"] == 2
    r = await client.patch(url, headers=world.h("staff", **{"If-Match": '"1"'}), json={"location": "x"})
    assert r.status_code == 412
    r = await client.patch(url, headers=world.h("staff"), json={"minutes": "纪要"})
    assert r.status_code == 409 and r.json()["code"] == "illegal_transition"
    r = await client.patch(url, headers=world.h("staff"), json={"title": None})
    assert r.status_code == 422
    await meeting_to(client, world, m["id"], "held")
    r = await client.patch(url, headers=world.h("staff"), json={"location": "x"})
    assert r.status_code == 409
    r = await meeting_to(client, world, m["id"], "minutes_published", expect=409)
    assert r["code"] == "minutes_required"
    r = await client.patch(url, headers=world.h("staff"), json={"minutes": "会议同意立项。"})
    assert r.status_code == 200 and r.json()["minutes"] == "会议同意立项。"
    done = await meeting_to(client, world, m["id"], "minutes_published")
    assert done["published_at"] is not None and done["held_at"] is not None
    r = await client.patch(url, headers=world.h("staff"), json={"minutes": "改写"})
    assert r.status_code == 409
    assert (await client.patch(url, headers=world.h("gridworker"), json={"location": "x"})).status_code == 403
    assert (await client.patch(url, headers=world.h("secretary2"), json={"location": "x"})).status_code == 404
    actions = [r.action for r in await audit_rows("meeting", m["id"])]
    assert actions == [
        "meeting.schedule",
        "meeting.update",
        "meeting.hold",
        "meeting.update",
        "meeting.publish_minutes",
    ]


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ([], "minutes_published"),
        ([], "scheduled"),
        (["held"], "cancelled"),
        (["held"], "held"),
        (["held"], "scheduled"),
        (["held", "minutes_published"], "held"),
        (["held", "minutes_published"], "cancelled"),
        (["cancelled"], "held"),
        (["cancelled"], "scheduled"),
    ],
)
async def test_illegal_meeting_transitions_are_409(client, world, path, target):
    m = await schedule(client, world)
    for step in path:
        if step == "minutes_published":
            await client.patch(
                f"/api/v1/meetings/{m['id']}", headers=world.h("staff"), json={"minutes": "纪要"}
            )
        await meeting_to(client, world, m["id"], step, reason="改期")
    before = await get_meeting(client, world, m["id"])
    r = await meeting_to(client, world, m["id"], target, expect=409, reason="理由")
    assert r["code"] == "illegal_transition"
    assert await get_meeting(client, world, m["id"]) == before


async def test_cancel_needs_a_reason(client, world):
    m = await schedule(client, world)
    r = await meeting_to(client, world, m["id"], "cancelled", expect=422)
    assert r["errors"][0]["loc"] == ["body", "reason"]
    done = await meeting_to(client, world, m["id"], "cancelled", reason="台风停会")
    assert done["state"] == "cancelled" and done["state_reason"] == "台风停会"


# --- agenda and attendance ----------------------------------------------------------------------


async def test_agenda_items(client, world):
    p, q = await create_project(client, world), await create_project(client, world, title="助餐点")
    m = await schedule(client, world, projects=(p["id"],))
    url = f"/api/v1/meetings/{m['id']}/agenda-items"
    r = await client.post(url, headers=world.h("staff"), json={"title": "助餐点立项", "project_id": q["id"]})
    assert r.status_code == 201 and [a["position"] for a in r.json()["agenda"]] == [1, 2]
    r = await client.post(url, headers=world.h("staff"), json={"title": "其他事项"})
    assert r.status_code == 201 and r.json()["agenda"][2]["project_id"] is None
    r = await client.post(url, headers=world.h("staff"), json={"title": "x", "project_id": str(uuid.uuid4())})
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    item = (await get_meeting(client, world, m["id"]))["agenda"][1]
    r = await client.delete(f"{url}/{item['id']}", headers=world.h("staff"))
    assert r.status_code == 200 and [a["title"] for a in r.json()["agenda"]] == ["议题1", "其他事项"]
    assert (await client.delete(f"{url}/{item['id']}", headers=world.h("staff"))).status_code == 404
    # A decided item stays; a published meeting's agenda is fixed.
    await meeting_to(client, world, m["id"], "held")
    agenda = (await get_meeting(client, world, m["id"]))["agenda"]
    await decide(client, world, m["id"], agenda[0]["id"], "defer")
    r = await client.delete(f"{url}/{agenda[0]['id']}", headers=world.h("staff"))
    assert r.status_code == 409 and r.json()["code"] == "decision_exists"
    await client.patch(f"/api/v1/meetings/{m['id']}", headers=world.h("staff"), json={"minutes": "纪要"})
    await meeting_to(client, world, m["id"], "minutes_published")
    r = await client.post(url, headers=world.h("staff"), json={"title": "补充"})
    assert r.status_code == 409


async def test_attendance(client, world):
    m = await schedule(client, world)
    url = f"/api/v1/meetings/{m['id']}/attendance"
    entries = [
        {
            "attendee_kind": "user",
            "user_id": str(world.users["secretary"].id),
            "name": "王书记",
            "status": "present",
        },
        {
            "attendee_kind": "unit",
            "unit_id": str(world.units["a1"].id),
            "name": "李经理",
            "status": "present",
        },
        {
            "attendee_kind": "org",
            "org_id": str(world.orgs["a1_branch"].id),
            "name": "张支书",
            "status": "excused",
            "note": "出差",
        },
        {"attendee_kind": "user", "name": "居民代表赵某", "status": "absent"},
    ]
    r = await client.put(url, headers=world.h("staff"), json={"entries": entries})
    assert r.status_code == 200, r.text
    got = r.json()["attendance"]
    assert sorted((a["name"], a["status"]) for a in got) == [
        ("居民代表赵某", "absent"),
        ("张支书", "excused"),
        ("李经理", "present"),
        ("王书记", "present"),
    ]
    bad_entries = [
        [{"attendee_kind": "unit", "name": "x", "status": "present"}],
        [
            {
                "attendee_kind": "unit",
                "user_id": str(world.users["staff"].id),
                "name": "x",
                "status": "present",
            }
        ],
        [{"attendee_kind": "user", "name": "x", "status": "late"}],
        [entries[0], entries[0]],
    ]
    for bad in bad_entries:
        r = await client.put(url, headers=world.h("staff"), json={"entries": bad})
        assert r.status_code == 422, r.text
    r = await client.put(
        url,
        headers=world.h("staff"),
        json={
            "entries": [
                {
                    "attendee_kind": "unit",
                    "unit_id": str(world.units["b1"].id),
                    "name": "x",
                    "status": "present",
                }
            ]
        },
    )
    assert r.status_code == 404
    assert len((await get_meeting(client, world, m["id"]))["attendance"]) == 4
    await meeting_to(client, world, m["id"], "cancelled", reason="改期")
    r = await client.put(url, headers=world.h("staff"), json={"entries": []})
    assert r.status_code == 409


# --- decisions ----------------------------------------------------------------------------------


async def test_only_a_held_meeting_decides(client, world):
    p = await create_project(client, world)
    m = await schedule(client, world, projects=(p["id"],))
    item = m["agenda"][0]["id"]
    r = await decide(client, world, m["id"], item, expect=409)
    assert r.json()["code"] == "illegal_transition"
    await meeting_to(client, world, m["id"], "held")
    await client.patch(f"/api/v1/meetings/{m['id']}", headers=world.h("staff"), json={"minutes": "纪要"})
    await meeting_to(client, world, m["id"], "minutes_published")
    r = await decide(client, world, m["id"], item, expect=409)
    assert r.json()["code"] == "illegal_transition"
    assert (await get_project(client, world, p["id"]))["state"] == "proposed"
    assert await fetch("SELECT count(*) FROM meeting_decisions") == [(0,)]


async def test_approval_is_traceable_from_the_project(client, world, session):
    need = await make_need(session, world)
    p = await create_project(client, world, need_ids=[str(need.id)])
    m = await held_meeting(client, world, p["id"])
    r = await decide(
        client,
        world,
        m["id"],
        m["agenda"][0]["id"],
        "approve",
        note="同意立项",
        votes_for=9,
        votes_against=1,
        votes_abstain=1,
    )
    (decision,) = r.json()["decisions"]
    assert decision["project_id"] == p["id"] and decision["votes_for"] == 9
    project = await get_project(client, world, p["id"])
    assert project["state"] == "approved" and project["state_reason"] == "同意立项"
    trace = project["decision"]
    assert trace["decision_id"] == decision["id"] and trace["outcome"] == "approve"
    assert trace["meeting"]["id"] == m["id"] and trace["meeting"]["title"] == m["title"]
    assert (
        trace["meeting"]["held_at"] == m["held_at"] and trace["meeting"]["scheduled_at"] == m["scheduled_at"]
    )
    assert project["decisions"] == [trace] and project["needs"][0]["id"] == str(need.id)
    row = (await audit_rows("project", p["id"]))[-1]
    assert row.action == "project.approve" and row.after["decision_id"] == decision["id"]
    assert row.actor_id == world.users["secretary"].id
    # Decided once: the item is closed, and the project is no longer proposed.
    r = await decide(client, world, m["id"], m["agenda"][0]["id"], "reject", expect=409)
    assert r.json()["code"] == "decision_exists"
    other = await held_meeting(client, world, p["id"])
    r = await decide(client, world, other["id"], other["agenda"][0]["id"], "approve", expect=409)
    assert r.json()["code"] == "illegal_transition"


async def test_defer_then_reject(client, world, session):
    need = await make_need(session, world)
    resource = await make_resource(session, world, quantity=4)
    p = await create_project(
        client, world, need_ids=[str(need.id)], commitments=[{"resource_id": str(resource.id), "quantity": 4}]
    )
    m = await held_meeting(client, world, p["id"])
    await decide(client, world, m["id"], m["agenda"][0]["id"], "defer", note="补充材料后再议")
    assert (await get_project(client, world, p["id"]))["state"] == "proposed"
    later = await held_meeting(client, world, p["id"])
    await decide(client, world, later["id"], later["agenda"][0]["id"], "reject", note="与已有项目重复")
    project = await get_project(client, world, p["id"])
    assert project["state"] == "rejected" and project["decision"]["meeting"]["id"] == later["id"]
    assert [d["outcome"] for d in project["decisions"]] == ["defer", "reject"]
    assert project["commitments"][0]["released_at"] is not None
    assert await fetch("SELECT remaining_quantity FROM resources") == [(4,)]
    assert await fetch("SELECT state FROM needs") == [("accepted",)]


async def test_a_decision_needs_a_project_to_approve(client, world):
    m = await schedule(client, world, agenda=[{"title": "工作通报"}])
    await meeting_to(client, world, m["id"], "held")
    r = await decide(client, world, m["id"], m["agenda"][0]["id"], "approve", expect=422)
    assert r.json()["code"] == "agenda_item_without_project"
    await decide(client, world, m["id"], m["agenda"][0]["id"], "defer")
    r = await decide(client, world, m["id"], str(uuid.uuid4()), "defer", expect=404)
    for bad in ({"votes_for": -1}, {"outcome": "maybe"}):
        r = await client.post(
            f"/api/v1/meetings/{m['id']}/decisions",
            headers=world.h("secretary"),
            json={"agenda_item_id": m["agenda"][0]["id"], "outcome": "defer", **bad},
        )
        assert r.status_code == 422


async def test_a_street_meeting_decides_its_communities_projects(client, world):
    p = await create_project(client, world, "street", org="a2")
    m = await held_meeting(client, world, p["id"], who="street", org="street_a")
    await decide(client, world, m["id"], m["agenda"][0]["id"], "approve", "street")
    assert (await get_project(client, world, p["id"], "street"))["state"] == "approved"


async def test_a_meeting_of_another_org_cannot_decide(client, world):
    """The street's staff hold an a2 meeting and try an a1 project: refused at the agenda. A project
    whose community moved to another street after being put on the agenda: refused at the decision."""
    a1 = await create_project(client, world)
    a2_meeting = await schedule(client, world, "street", org="a2")
    r = await client.post(
        f"/api/v1/meetings/{a2_meeting['id']}/agenda-items",
        headers=world.h("street"),
        json={"title": "东湖项目", "project_id": a1["id"]},
    )
    assert r.status_code == 409 and r.json()["code"] == "project_outside_meeting_org"

    m = await held_meeting(client, world, a1["id"], who="admin", org="street_a")
    r = await client.post(
        f"/api/v1/organizations/{world.orgs['a1'].id}/move",
        headers=world.h("admin"),
        json={"parent_id": str(world.orgs["street_b"].id)},
    )
    assert r.status_code == 200, r.text
    r = await decide(client, world, m["id"], m["agenda"][0]["id"], "approve", "admin", expect=409)
    assert r.json()["code"] == "project_outside_meeting_org"
    assert (await get_project(client, world, a1["id"], "admin"))["state"] == "proposed"
    assert await fetch("SELECT count(*) FROM meeting_decisions") == [(0,)]


async def test_two_decisions_at_once_on_one_project_approve_once(client, world):
    p = await create_project(client, world)
    first = await held_meeting(client, world, p["id"])
    second = await held_meeting(client, world, p["id"], who="street", org="street_a")
    results = await asyncio.gather(
        decide(client, world, first["id"], first["agenda"][0]["id"], "approve", "secretary", expect=None),
        decide(client, world, second["id"], second["agenda"][0]["id"], "approve", "street", expect=None),
    )
    assert sorted(r.status_code for r in results) == [201, 409], [r.text for r in results]
    assert next(r for r in results if r.status_code == 409).json()["code"] == "illegal_transition"
    assert await fetch("SELECT outcome FROM meeting_decisions") == [("approve",)]
    project = await get_project(client, world, p["id"])
    assert project["state"] == "approved" and project["version"] == 2
    assert [r.action for r in await audit_rows("project", p["id"])] == ["project.propose", "project.approve"]


async def test_two_decisions_at_once_on_one_agenda_item(client, world):
    p = await create_project(client, world)
    m = await held_meeting(client, world, p["id"])
    item = m["agenda"][0]["id"]
    results = await asyncio.gather(
        decide(client, world, m["id"], item, "approve", "secretary", expect=None),
        decide(client, world, m["id"], item, "reject", "staff", expect=None),
    )
    assert sorted(r.status_code for r in results) == [201, 409], [r.text for r in results]
    assert await fetch("SELECT count(*) FROM meeting_decisions") == [(1,)]
