"""The claim hall (领办大厅): paired units first, then every unit of the street; race-safe claims."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from gongjian.core.config import get_settings
from tests.projects.helpers import (
    add_unit_with_liaison,
    approve,
    audit_rows,
    create_project,
    fetch,
    get_project,
    move,
    open_hall,
    pair,
)


@pytest.fixture
async def units(world, session):
    """Besides the a1 unit (liaison `liaison`): one more in a1, one in a2 (same street), one in b1."""
    await add_unit_with_liaison(session, world, "liaison_a1b", "a1", "东湖小学")
    await add_unit_with_liaison(session, world, "liaison_a2", "a2", "桃源物业")
    await add_unit_with_liaison(session, world, "liaison_b1", "b1", "北门超市")
    return world


async def hall(client, w, who):
    r = await client.get("/api/v1/projects/hall", headers=w.h(who))
    assert r.status_code == 200, r.text
    return {p["id"] for p in r.json()["items"]}


async def claim(client, w, who, pid, expect=200, **body):
    r = await client.post(f"/api/v1/projects/{pid}/claim", headers=w.h(who), json=body or None)
    if expect is not None:
        assert r.status_code == expect, r.text
    return r.json()


async def test_paired_units_claim_first_then_the_street(client, units, session):
    w = units
    await pair(session, w, "a1", "a1")
    p = await create_project(client, w)
    opens = datetime.fromisoformat(p["street_opens_at"]) - datetime.fromisoformat(p["created_at"])
    assert abs(opens - timedelta(hours=72)) < timedelta(seconds=5)

    # Within the window: only the paired unit sees it in the hall (and may read it).
    assert await hall(client, w, "liaison") == {p["id"]}
    for who in ("liaison_a1b", "liaison_a2", "liaison_b1"):
        assert await hall(client, w, who) == set()
        r = await client.get(f"/api/v1/projects/{p['id']}", headers=w.h(who))
        assert r.status_code == 404
    r = await claim(client, w, "liaison_a1b", p["id"], expect=409)
    assert r["code"] == "claim_not_open" and "向全街道开放" in r["detail"]
    await claim(client, w, "liaison_b1", p["id"], expect=404)

    # After it: every unit of the street, not the other street.
    await open_hall(p["id"])
    assert await hall(client, w, "liaison_a1b") == {p["id"]}
    assert await hall(client, w, "liaison_a2") == {p["id"]}
    assert await hall(client, w, "liaison_b1") == set()
    r = await client.get(f"/api/v1/projects/{p['id']}", headers=w.h("liaison_a2"))
    assert r.status_code == 200

    done = await claim(client, w, "liaison_a2", p["id"])
    assert done["lead_unit_id"] == str(w.units["liaison_a2"].id) and done["claim_method"] == "hall"
    assert done["claimed_by"] == str(w.users["liaison_a2"].id) and done["claimed_at"] is not None
    # Claimed: out of the hall; the lead unit's liaison still sees it, the others no longer do.
    assert await hall(client, w, "liaison") == set()
    assert (await client.get(f"/api/v1/projects/{p['id']}", headers=w.h("liaison_a2"))).status_code == 200
    assert (await client.get(f"/api/v1/projects/{p['id']}", headers=w.h("liaison_a1b"))).status_code == 404
    r = await claim(client, w, "liaison", p["id"], expect=409)
    assert r["code"] == "project_claimed"
    (row,) = [r for r in await audit_rows("project", p["id"]) if r.action == "project.claim"]
    assert row.reason == "hall" and row.actor_id == w.users["liaison_a2"].id


async def test_paired_claim_is_recorded_as_paired(client, units, session):
    w = units
    await pair(session, w, "a1", "a1")
    p = await create_project(client, w)
    done = await claim(client, w, "liaison", p["id"], unit_id=str(w.units["a1"].id))
    assert done["claim_method"] == "paired" and done["lead_unit_id"] == str(w.units["a1"].id)
    (row,) = await fetch("SELECT lead_unit_id, claim_method, claimed_by FROM projects")
    assert row == (w.units["a1"].id, "paired", w.users["liaison"].id)


async def test_only_an_active_agreement_pairs(client, units, session):
    w = units
    from gongjian.agreements.models import AgreementState
    from gongjian.members.models import Reporting, ReportingKind, ReportingState
    from tests.agreements.helpers import insert_agreement

    for state in (
        AgreementState.draft,
        AgreementState.pending_signatures,
        AgreementState.terminated,
        AgreementState.expired,
    ):
        await insert_agreement(session, w.orgs["a1"].id, w.units["a1"].id, state)
    # An accepted 双报到 reporting is not a pairing (it was, before agreements).
    session.add(
        Reporting(
            kind=ReportingKind.unit,
            resident_unit_id=w.units["a1"].id,
            community_id=w.orgs["a1"].id,
            state=ReportingState.accepted,
        )
    )
    await session.commit()
    p = await create_project(client, w)
    assert await hall(client, w, "liaison") == set()
    # Paired with another community does not count either.
    await pair(session, w, "liaison_a2", "a1")
    other = await create_project(client, w, "street", org="a2")
    assert await hall(client, w, "liaison_a2") == {p["id"]}
    assert other["id"] not in await hall(client, w, "liaison_a2")


async def test_the_window_is_a_setting(client, units, monkeypatch):
    w = units
    monkeypatch.setattr(get_settings(), "project_claim_window_hours", 0)
    p = await create_project(client, w)
    assert await hall(client, w, "liaison_a2") == {p["id"]}
    assert (await claim(client, w, "liaison_a2", p["id"]))["claim_method"] == "hall"


async def test_staff_assign_and_hall_for_staff(client, units):
    w = units
    p = await create_project(client, w)
    assert await hall(client, w, "secretary") == {p["id"]}
    assert await hall(client, w, "street") == {p["id"]}
    assert await hall(client, w, "secretary2") == set()
    r = await claim(client, w, "secretary", p["id"], expect=422)
    assert r["errors"][0]["loc"] == ["body", "unit_id"]
    r = await claim(client, w, "secretary", p["id"], expect=404, unit_id=str(w.units["liaison_b1"].id))
    done = await claim(client, w, "secretary", p["id"], unit_id=str(w.units["liaison_a2"].id))
    assert done["claim_method"] == "assigned" and done["claimed_by"] == str(w.users["secretary"].id)
    assert await hall(client, w, "secretary") == set()
    r = await claim(client, w, "secretary", p["id"], expect=409, unit_id=str(w.units["a1"].id))
    assert r["code"] == "project_claimed"
    # Assigned at proposal time too.
    q = await create_project(client, w, lead_unit_id=str(w.units["a1"].id))
    assert q["claim_method"] == "assigned" and q["lead_unit_id"] == str(w.units["a1"].id)
    # Neither a grid worker nor a liaison assigns another unit, nor does the other community.
    await claim(client, w, "gridworker", p["id"], expect=403, unit_id=str(w.units["a1"].id))
    await claim(client, w, "liaison", p["id"], expect=403, unit_id=str(w.units["liaison_a2"].id))
    await claim(client, w, "secretary2", p["id"], expect=404, unit_id=str(w.units["a1"].id))
    for who in ("member", "resident"):
        assert (await client.get("/api/v1/projects/hall", headers=w.h(who))).status_code == 403


async def test_a_joint_unit_taking_the_lead_leaves_the_joint_units(client, units):
    w = units
    p = await create_project(
        client, w, joint_unit_ids=[str(w.units["a1"].id), str(w.units["liaison_a1b"].id)]
    )
    # A joint unit's liaison sees the project, but claims it only when the hall lets it.
    assert (await client.get(f"/api/v1/projects/{p['id']}", headers=w.h("liaison"))).status_code == 200
    await claim(client, w, "liaison", p["id"], expect=409)
    await open_hall(p["id"])
    done = await claim(client, w, "liaison", p["id"])
    assert done["lead_unit_id"] == str(w.units["a1"].id)
    assert done["joint_unit_ids"] == [str(w.units["liaison_a1b"].id)]


async def test_claimable_only_while_proposed_or_approved(client, units):
    w = units
    p = await create_project(client, w)
    await open_hall(p["id"])
    await approve(client, w, p["id"])
    assert await hall(client, w, "liaison_a2") == {p["id"]}
    await move(client, w, p["id"], "in_progress")
    assert await hall(client, w, "liaison_a2") == set()
    await claim(client, w, "liaison_a2", p["id"], expect=409)
    r = await claim(client, w, "secretary", p["id"], expect=409, unit_id=str(w.units["a1"].id))
    assert r["code"] == "illegal_transition"


async def test_two_units_claim_at_once_one_wins(client, units):
    w = units
    p = await create_project(client, w)
    await open_hall(p["id"])
    results = await asyncio.gather(
        claim(client, w, "liaison_a1b", p["id"], expect=None),
        claim(client, w, "liaison_a2", p["id"], expect=None),
    )
    (project,) = await fetch("SELECT lead_unit_id, claim_method, version FROM projects")
    assert project.claim_method == "hall" and project.version == 2
    codes = sorted(r.get("code", "ok") for r in results)
    assert codes == ["ok", "project_claimed"], results
    winner = next(r for r in results if "code" not in r)
    assert winner["lead_unit_id"] == str(project.lead_unit_id)
    claims = [r for r in await audit_rows("project", p["id"]) if r.action == "project.claim"]
    assert len(claims) == 1


async def test_liaisons_report_progress_on_their_projects_only(client, units):
    w = units
    p = await create_project(
        client, w, lead_unit_id=str(w.units["a1"].id), joint_unit_ids=[str(w.units["liaison_a2"].id)]
    )
    url = f"/api/v1/projects/{p['id']}/progress"
    body = {"note": "完成第一批12户体检", "percent": 30, "photos": ["https://img.example/1.jpg"]}
    r = await client.post(url, headers=w.h("liaison"), json=body)
    assert r.status_code == 409 and r.json()["code"] == "illegal_transition"  # not started yet
    await approve(client, w, p["id"])
    await move(client, w, p["id"], "in_progress")
    r = await client.post(url, headers=w.h("liaison"), json=body)
    assert r.status_code == 201, r.text
    entry = r.json()
    assert entry["unit_id"] == str(w.units["a1"].id) and entry["created_by"] == str(w.users["liaison"].id)
    assert entry["photos"] == body["photos"] and entry["percent"] == 30
    r = await client.post(url, headers=w.h("liaison_a2"), json={"note": "协助组织", "percent": 50})
    assert r.status_code == 201 and r.json()["unit_id"] == str(w.units["liaison_a2"].id)
    # Staff report for a working unit, or for the project itself.
    r = await client.post(
        url, headers=w.h("staff"), json={"note": "社区跟进", "unit_id": str(w.units["a1"].id)}
    )
    assert r.status_code == 201 and r.json()["unit_id"] == str(w.units["a1"].id)
    r = await client.post(
        url, headers=w.h("staff"), json={"note": "x", "unit_id": str(w.units["liaison_b1"].id)}
    )
    assert r.status_code == 422
    # Units not on the project: not theirs (404); a grid worker reads but does not report.
    assert (await client.post(url, headers=w.h("liaison_a1b"), json={"note": "x"})).status_code == 404
    assert (await client.post(url, headers=w.h("liaison_b1"), json={"note": "x"})).status_code == 404
    assert (await client.post(url, headers=w.h("gridworker"), json={"note": "x"})).status_code == 403
    assert (await client.post(url, headers=w.h("secretary2"), json={"note": "x"})).status_code == 404
    for bad in (
        {"note": ""},
        {"note": "x", "percent": 101},
        {"note": "x", "photos": ["ftp://x/1.jpg"]},
        {"note": "x", "photos": ["https://a/b.jpg"] * 10},
    ):
        assert (await client.post(url, headers=w.h("liaison"), json=bad)).status_code == 422
    r = await client.get(url, headers=w.h("gridworker"))
    assert r.status_code == 200 and [e["note"] for e in r.json()["items"]] == [
        "完成第一批12户体检",
        "协助组织",
        "社区跟进",
    ]
    assert (await get_project(client, w, p["id"]))["progress_percent"] == 50
    assert (await client.get(url, headers=w.h("liaison_b1"))).status_code == 404


async def test_a_phone_retrying_a_progress_report_records_it_once(client, units):
    w = units
    p = await create_project(client, w, lead_unit_id=str(w.units["a1"].id))
    await approve(client, w, p["id"])
    await move(client, w, p["id"], "in_progress")
    url = f"/api/v1/projects/{p['id']}/progress"
    headers = w.h("liaison", **{"Idempotency-Key": "progress-0001"})
    body = {"note": "入户走访8户", "photos": ["https://img.example/2.jpg"]}
    first = await client.post(url, headers=headers, json=body)
    again = await client.post(url, headers=headers, json=body)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert await fetch("SELECT count(*) FROM project_progress") == [(1,)]
