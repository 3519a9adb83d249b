"""A whole cycle through the API: the lists → a proposed project → a meeting approves it → the work,
with progress → completion resolves the needs → evaluation; the trail readable from the project."""

from __future__ import annotations

from tests.projects.helpers import WHEN, audit_rows, fetch


async def test_from_needs_and_resources_to_an_evaluated_project(client, world):
    w = world

    async def call(method, url, who, expect, **kwargs):
        r = await client.request(method, url, headers=w.h(who), **kwargs)
        assert r.status_code == expect, (method, url, r.text)
        return r.json() if r.content else None

    # The lists: a grid's needs raised by staff, a unit's resource published by its liaison.
    needs = [
        await call(
            "POST",
            "/api/v1/needs",
            "secretary",
            201,
            json={
                "org_id": str(w.orgs["a1"].id),
                "category": "service",
                "title": title,
                "description": text,
                "wanted_from": "2026-03-01",
                "wanted_to": "2026-09-30",
                "beneficiaries": n,
            },
        )
        for title, text, n in (
            ("独居老人上门体检", "东湖小区独居老人行动不便，需要上门测血压血糖", 24),
            ("社区助餐点缺少厨师", "老年食堂午餐需要志愿厨师", 60),
        )
    ]
    resource = await call(
        "POST",
        "/api/v1/resources",
        "liaison",
        201,
        json={
            "category": "service",
            "title": "供电所党员志愿服务队",
            "quantity": 20,
            "quantity_unit": "人次",
            "available_from": "2026-01-01",
            "available_to": "2026-12-31",
        },
    )
    assert resource["unit_id"] == str(w.units["a1"].id)

    # Proposed with both needs and a commitment, led by the unit (assigned by the community).
    project = await call(
        "POST",
        "/api/v1/projects",
        "secretary",
        201,
        json={
            "org_id": str(w.orgs["a1"].id),
            "title": "东湖社区为老服务项目",
            "need_ids": [n["id"] for n in needs],
            "commitments": [{"resource_id": resource["id"], "quantity": 12}],
            "lead_unit_id": str(w.units["a1"].id),
            "responsible_name": "王书记",
            "budget": 30000,
            "plan_from": "2026-03-01",
            "plan_to": "2026-09-30",
            "milestones": [{"title": "完成入户摸底", "due_on": "2026-03-31"}],
        },
    )
    pid = project["id"]
    assert project["state"] == "proposed" and project["claim_method"] == "assigned"
    assert {n["state"] for n in project["needs"]} == {"in_project"}
    r = await call("GET", f"/api/v1/resources/{resource['id']}", "liaison", 200)
    assert r["remaining_quantity"] == 8 and r["state"] == "partly_committed"

    # The joint meeting: scheduled with the project on the agenda, held, attendance, decision.
    meeting = await call(
        "POST",
        "/api/v1/meetings",
        "secretary",
        201,
        json={
            "org_id": str(w.orgs["a1"].id),
            "kind": "joint_meeting",
            "title": "2026年第一次社区联席会议",
            "scheduled_at": WHEN,
            "location": "社区党群服务中心",
            "invited_unit_ids": [str(w.units["a1"].id)],
            "agenda": [{"title": "为老服务项目立项", "project_id": pid}],
        },
    )
    mid, item = meeting["id"], meeting["agenda"][0]["id"]
    await call("POST", f"/api/v1/meetings/{mid}/transitions", "secretary", 200, json={"to": "held"})
    await call(
        "PUT",
        f"/api/v1/meetings/{mid}/attendance",
        "secretary",
        200,
        json={
            "entries": [
                {
                    "attendee_kind": "user",
                    "user_id": str(w.users["secretary"].id),
                    "name": "王书记",
                    "status": "present",
                },
                {
                    "attendee_kind": "unit",
                    "unit_id": str(w.units["a1"].id),
                    "name": "供电所李经理",
                    "status": "present",
                },
            ]
        },
    )
    decided = await call(
        "POST",
        f"/api/v1/meetings/{mid}/decisions",
        "secretary",
        201,
        json={
            "agenda_item_id": item,
            "outcome": "approve",
            "note": "同意立项",
            "votes_for": 7,
            "votes_against": 0,
        },
    )
    decision_id = decided["decisions"][0]["id"]
    await call(
        "PATCH", f"/api/v1/meetings/{mid}", "secretary", 200, json={"minutes": "会议审议通过为老服务项目。"}
    )
    await call(
        "POST", f"/api/v1/meetings/{mid}/transitions", "secretary", 200, json={"to": "minutes_published"}
    )

    # The work: started by the community, reported by the lead unit's liaison with photos.
    approved = await call("GET", f"/api/v1/projects/{pid}", "secretary", 200)
    assert approved["state"] == "approved" and approved["decision"]["decision_id"] == decision_id
    await call("POST", f"/api/v1/projects/{pid}/transitions", "secretary", 200, json={"to": "in_progress"})
    for note, percent in (("完成入户摸底24户", 30), ("完成上门体检并建立健康档案", 100)):
        await call(
            "POST",
            f"/api/v1/projects/{pid}/progress",
            "liaison",
            201,
            json={
                "note": note,
                "percent": percent,
                "photos": ["https://img.example/visit.jpg"],
            },
        )
    milestone = approved["milestones"][0]["id"]
    await call("PATCH", f"/api/v1/projects/{pid}/milestones/{milestone}", "staff", 200, json={"done": True})

    # Completed: the needs are resolved. Then evaluated.
    done = await call(
        "POST",
        f"/api/v1/projects/{pid}/transitions",
        "secretary",
        200,
        json={
            "to": "completed",
            "note": "为24位老人完成体检，助餐点厨师到位",
        },
    )
    assert done["state"] == "completed"
    for need in needs:
        assert (await call("GET", f"/api/v1/needs/{need['id']}", "secretary", 200))["state"] == "resolved"
    await call(
        "POST",
        f"/api/v1/projects/{pid}/transitions",
        "secretary",
        200,
        json={
            "to": "evaluated",
            "rating": 5,
            "note": "居民满意",
        },
    )

    # The trail, read from the project: needs → meeting decision → project → result.
    final = await call("GET", f"/api/v1/projects/{pid}", "liaison", 200)
    assert final["state"] == "evaluated" and final["progress_percent"] == 100
    assert {n["id"] for n in final["needs"]} == {n["id"] for n in needs}
    assert {n["state"] for n in final["needs"]} == {"resolved"}
    assert final["decision"]["meeting"] == {
        "id": mid,
        "org_id": str(w.orgs["a1"].id),
        "kind": "joint_meeting",
        "title": "2026年第一次社区联席会议",
        "scheduled_at": final["decision"]["meeting"]["scheduled_at"],
        "held_at": final["decision"]["meeting"]["held_at"],
    }
    assert final["decision"]["outcome"] == "approve" and final["decision"]["votes_for"] == 7
    assert final["result"]["completion_note"] == "为24位老人完成体检，助餐点厨师到位"
    assert final["result"]["evaluation_rating"] == 5 and final["result"]["evaluation_note"] == "居民满意"
    assert final["commitments"][0]["quantity"] == 12 and final["commitments"][0]["released_at"] is None
    assert final["milestones"][0]["done_at"] is not None
    progress = await call("GET", f"/api/v1/projects/{pid}/progress", "gridworker", 200)
    assert [e["percent"] for e in progress["items"]] == [30, 100]
    meetings = await call("GET", "/api/v1/meetings", "street", 200, params={"project_id": pid})
    assert [m["state"] for m in meetings["items"]] == ["minutes_published"]

    actions = [r.action for r in await audit_rows("project", pid)]
    assert actions == [
        "project.propose",
        "project.approve",
        "project.start",
        "project.progress",
        "project.progress",
        "project.update_milestone",
        "project.complete",
        "project.evaluate",
    ]
    assert await fetch("SELECT remaining_quantity FROM resources") == [(8,)]
