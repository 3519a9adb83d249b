"""Unit and community standings: every figure computed from agreements, projects, reportings and
evaluations written as the domains write them; the street ranking's order; who sees what."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.core.validators import id_number_check_char
from gongjian.evaluations.service import local_year
from gongjian.members.models import Reporting, ReportingKind, ReportingState
from gongjian.projects.models import ClaimMethod, Project, ProjectState, ResourceCommitment
from tests.evaluations.helpers import (
    execute,
    local,
    make_agreement,
    open_window,
    rate_community,
    rate_unit,
)
from tests.factories import World, make_unit
from tests.projects.helpers import add_unit_with_liaison, make_resource

YEAR = 2025


async def project(
    session: AsyncSession,
    w: World,
    lead: str,
    method: ClaimMethod,
    claimed: datetime,
    completed: datetime | None = None,
    *,
    org: str = "a1",
    state: ProjectState | None = None,
) -> Project:
    p = Project(
        org_id=w.orgs[org].id,
        title=f"{lead}项目",
        state=state or (ProjectState.completed if completed else ProjectState.in_progress),
        lead_unit_id=w.units[lead].id,
        claim_method=method,
        claimed_at=claimed,
        street_opens_at=claimed,
        completed_at=completed,
    )
    session.add(p)
    await session.commit()
    return p


_seq = iter(range(10, 100))


async def member(client: httpx.AsyncClient, w: World, employer: str, community: str = "a1") -> str:
    body = f"33020319900101{next(_seq):02d}1"
    r = await client.post(
        "/api/v1/members",
        headers=w.h("admin"),
        json={
            "name": "在职党员",
            "id_number": body + id_number_check_char(body),
            "org_id": str(w.orgs["a1_branch"].id),
            "category": "in_service",
            "employer_unit_id": str(w.units[employer].id),
            "residence_community_id": str(w.orgs[community].id),
        },
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def reporting(
    session: AsyncSession,
    w: World,
    *,
    member_id: str | None = None,
    unit: str | None = None,
    community: str = "a1",
    decided: datetime,
    state: ReportingState = ReportingState.accepted,
    deregistered: datetime | None = None,
) -> None:
    session.add(
        Reporting(
            kind=ReportingKind.member if member_id else ReportingKind.unit,
            member_id=uuid.UUID(member_id) if member_id else None,
            resident_unit_id=w.units[unit].id if unit else None,
            community_id=w.orgs[community].id,
            state=state,
            decided_at=decided,
            deregistered_at=deregistered,
        )
    )
    await session.commit()


@dataclass
class County:
    w: World
    p2: Project


@pytest.fixture
async def county(client: httpx.AsyncClient, session: AsyncSession, world: World) -> County:
    """Street a: 东湖 (a1) with the units a1 and a1x, 桃源 (a2) with a2u, a2v, a2w; b1 elsewhere."""
    w = world
    await add_unit_with_liaison(session, w, "a1x", "a1", "东湖中学")
    for key, name in (("a2u", "桃源银行"), ("a2v", "桃源物业"), ("a2w", "桃源超市")):
        w.units[key] = await make_unit(session, w.orgs["a2"], name)
    await session.commit()

    # Unit a1: projects taken in 2025 — P1 paired and done in the year, P2 in the hall and still
    # going, P4 paired in December and done next January; P3 assigned in 2024 and done in 2025.
    p1 = await project(session, w, "a1", ClaimMethod.paired, local(YEAR, 3), local(YEAR, 9))
    p2 = await project(session, w, "a1", ClaimMethod.hall, local(YEAR, 4))
    await project(session, w, "a1", ClaimMethod.assigned, local(YEAR - 1, 11), local(YEAR, 2))
    await project(session, w, "a1", ClaimMethod.paired, local(YEAR, 12, 20), local(YEAR + 1, 1, 10))
    await project(session, w, "a1x", ClaimMethod.hall, local(YEAR, 2), local(YEAR, 6))
    await project(session, w, "a2u", ClaimMethod.assigned, local(YEAR, 5), local(YEAR, 8), org="a2")
    # A cancelled claim still counts as taken, never as completed.
    await project(session, w, "b1", ClaimMethod.hall, local(YEAR, 5), org="b1", state=ProjectState.cancelled)

    r1 = await make_resource(session, w, unit="a1", title="会议室", quantity=10)
    r2 = await make_resource(session, w, unit="a1", title="电工服务", quantity=10)
    r3 = await make_resource(session, w, title="社区活动室", quantity=2)
    session.add_all(
        [
            ResourceCommitment(project_id=p1.id, resource_id=r1.id, quantity=5, created_at=local(YEAR, 5)),
            ResourceCommitment(project_id=p2.id, resource_id=r2.id, quantity=2, created_at=local(YEAR, 5)),
            # Released before the year ended: it does not count.
            ResourceCommitment(
                project_id=p2.id,
                resource_id=r2.id,
                quantity=5,
                created_at=local(YEAR, 5),
                released_at=local(YEAR, 7),
            ),
        ]
    )
    await session.commit()

    # Members employed by a1: two reported in 2025, one only in 2026, one deregistered late 2024,
    # one returned; one employed by a1x.
    for _ in range(2):
        await reporting(session, w, member_id=await member(client, w, "a1"), decided=local(YEAR, 4))
    await reporting(session, w, member_id=await member(client, w, "a1"), decided=local(YEAR + 1, 2))
    await reporting(
        session,
        w,
        member_id=await member(client, w, "a1"),
        decided=local(YEAR - 1, 3),
        deregistered=local(YEAR - 1, 12),
    )
    await reporting(
        session,
        w,
        member_id=await member(client, w, "a1"),
        decided=local(YEAR, 4),
        state=ReportingState.returned,
    )
    await reporting(session, w, member_id=await member(client, w, "a1x"), decided=local(YEAR, 6))
    await reporting(session, w, unit="a1", decided=local(YEAR, 1, 15))

    agreement = await make_agreement(
        session,
        w,
        term_from=date(YEAR, 1, 1),
        term_to=date(YEAR + 1, 12, 31),
        activated_at=local(YEAR, 1, 10),
        commitments=[
            {"kind": "project", "project_id": p1.id},  # kept
            {"kind": "project", "project_id": p2.id},  # not yet
            {"kind": "resource", "resource_id": r1.id, "quantity": 3},  # 5 committed: kept
            {"kind": "resource", "resource_id": r2.id, "quantity": 4},  # 2 standing: not kept
            {"kind": "members_report", "members_count": 2},  # 2 reported: kept
            {"kind": "activity", "description": "每月统一活动日"},  # not checkable
            {"side": "community", "kind": "resource", "resource_id": r3.id, "quantity": 1},
            {"side": "community", "kind": "other", "description": "为职工子女提供托管"},
        ],
    )
    second = await make_agreement(
        session,
        w,
        unit="a1x",
        term_from=date(YEAR, 1, 1),
        term_to=date(YEAR, 12, 31),
        commitments=[{"kind": "members_report", "members_count": 3}],  # 1 reported: not kept
    )
    # Both years' evaluations: a1 rated 80 by its community and rated it 70; a1x rated 90, the
    # window closed before the school answered.
    window = await open_window(client, w, agreement.id, year=YEAR)
    await rate_unit(client, w, window["id"], 8)
    await rate_community(client, w, window["id"], 7)
    other = await open_window(client, w, second.id, year=YEAR)
    await rate_unit(client, w, other["id"], 9)
    await execute(
        "UPDATE evaluation_windows SET opens_at = now() - interval '2 days',"
        " closes_at = now() - interval '1 day' WHERE id = :id",
        id=uuid.UUID(other["id"]),
    )
    return County(w, p2)


async def ranking(client, w, who="street", expect=200, **params) -> dict[str, Any]:
    params.setdefault("year", YEAR)
    params = {k: str(v) for k, v in params.items()}
    r = await client.get("/api/v1/standings/units", headers=w.h(who), params=params)
    assert r.status_code == expect, r.text
    return dict(r.json())


async def standing(client, w, unit: str, who="street", expect=200, **params) -> dict[str, Any]:
    params.setdefault("year", YEAR)
    r = await client.get(f"/api/v1/standings/units/{w.units[unit].id}", headers=w.h(who), params=params)
    assert r.status_code == expect, r.text
    return dict(r.json())


def _figures(s: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in s.items() if k not in ("unit_id", "unit_name", "community_id", "year", "rank")}


async def test_a_units_standing_is_computed_from_the_records(client, county):
    w = county.w
    got = await standing(client, w, "a1", who="liaison")
    assert _figures(got["standing"]) == {
        "agreements_active": 1,
        "commitments_promised": 5,
        "commitments_kept": 3,
        "commitments_other": 1,
        "projects_taken": 3,
        "projects_taken_paired": 2,
        "projects_taken_hall": 1,
        "projects_taken_assigned": 0,
        "projects_completed": 2,
        "completion_rate": 0.3333,
        "evaluation_score": 80.0,
        "members_reported": 2,
    }
    assert got["rank"] == 2 and got["ranked"] == 5 and got["street_id"] == str(w.orgs["street_a"].id)
    # History: 2024 (the project taken then, the member reported then), then 2025.
    assert [h["year"] for h in got["history"]] == [YEAR - 1, YEAR]
    assert _figures(got["history"][0]) == {
        "agreements_active": 0,
        "commitments_promised": 0,
        "commitments_kept": 0,
        "commitments_other": 0,
        "projects_taken": 1,
        "projects_taken_paired": 0,
        "projects_taken_hall": 0,
        "projects_taken_assigned": 1,
        "projects_completed": 0,
        "completion_rate": 0.0,
        "evaluation_score": None,
        "members_reported": 1,
    }
    # 2026: the agreement runs on, P4 was completed in January, a third member reported in February.
    now = (await standing(client, w, "a1", year=YEAR + 1))["standing"]
    assert now["agreements_active"] == 1 and now["projects_completed"] == 1 and now["projects_taken"] == 0
    assert now["completion_rate"] is None and now["members_reported"] == 3 and now["evaluation_score"] is None


async def test_standings_follow_the_records(client, session, county):
    w = county.w
    county.p2.state, county.p2.completed_at = ProjectState.completed, local(YEAR, 10)
    await session.commit()
    got = (await standing(client, w, "a1"))["standing"]
    assert (
        got["commitments_kept"] == 4 and got["projects_completed"] == 3 and got["completion_rate"] == 0.6667
    )


async def test_the_street_ranking(client, county):
    w = county.w
    got = await ranking(client, w, street_id=w.orgs["street_a"].id)
    assert got["org_id"] == str(w.orgs["street_a"].id) and got["year"] == YEAR and got["next_cursor"] is None
    ranked = [(s["rank"], s["unit_name"]) for s in got["items"]]
    # a1x (rated 90) before a1 (80); then the unrated: a2u completed a project; a2v and a2w tie.
    assert ranked[:3] == [(1, "东湖中学"), (2, "东湖供电所"), (3, "桃源银行")]
    assert sorted(ranked[3:]) == [(4, "桃源物业"), (4, "桃源超市")]
    assert got["items"][0]["evaluation_score"] == 90.0 and got["items"][0]["commitments_promised"] == 1
    assert got["items"][0]["commitments_kept"] == 0 and got["items"][0]["members_reported"] == 1
    assert got["items"][2]["projects_taken_assigned"] == 1 and got["items"][2]["completion_rate"] == 1.0
    # Another street's units never appear.
    assert str(w.units["b1"].id) not in {s["unit_id"] for s in got["items"]}

    # Paged: ranks run on across pages.
    first = await ranking(client, w, street_id=w.orgs["street_a"].id, limit=2)
    second = await ranking(client, w, street_id=w.orgs["street_a"].id, limit=2, cursor=first["next_cursor"])
    third = await ranking(client, w, street_id=w.orgs["street_a"].id, limit=2, cursor=second["next_cursor"])
    assert [s["rank"] for s in first["items"] + second["items"] + third["items"]] == [1, 2, 3, 4, 4]
    assert third["next_cursor"] is None
    bad = await ranking(client, w, street_id=w.orgs["street_a"].id, cursor="not-a-cursor", expect=400)
    assert bad["code"] == "invalid_cursor"

    # The other street: the cancelled claim counts as taken, never completed.
    other = await ranking(client, w, who="admin", street_id=w.orgs["street_b"].id)
    (b1,) = other["items"]
    assert b1["projects_taken_hall"] == 1 and b1["projects_completed"] == 0 and b1["completion_rate"] == 0.0


async def test_community_standings(client, county):
    w = county.w
    r = await client.get(
        "/api/v1/standings/communities",
        headers=w.h("street"),
        params={"street_id": str(w.orgs["street_a"].id), "year": YEAR},
    )
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [(c["rank"], c["community_name"]) for c in items] == [(1, "东湖社区党委"), (2, "桃源社区党委")]
    a1 = items[0]
    assert {k: a1[k] for k in a1 if k not in ("community_id", "community_name", "year", "rank")} == {
        "agreements_active": 2,
        "commitments_promised": 1,
        "commitments_kept": 0,
        "commitments_other": 1,
        "projects_completed": 3,  # P1, P3 and a1x's
        "evaluation_score": 70.0,
        "members_reported": 3,
        "units_reported": 1,
    }
    r = await client.get(
        f"/api/v1/standings/communities/{w.orgs['a1'].id}", headers=w.h("secretary"), params={"year": YEAR}
    )
    assert r.status_code == 200 and r.json()["standing"]["evaluation_score"] == 70.0
    assert [h["year"] for h in r.json()["history"]] == [YEAR]


async def test_who_sees_which_standings(client, county):
    w = county.w
    street_a, street_b = w.orgs["street_a"].id, w.orgs["street_b"].id
    a1, a2 = w.orgs["a1"].id, w.orgs["a2"].id
    # Street staff: their street, and any community in it.
    await ranking(client, w, "street", street_id=street_a)
    await ranking(client, w, "street", street_id=street_b, expect=404)
    await ranking(client, w, "street", community_id=a2)
    # Community staff: their community's units only.
    got = await ranking(client, w, "secretary", community_id=a1)
    assert {s["unit_name"] for s in got["items"]} == {"东湖供电所", "东湖中学"}
    assert [s["rank"] for s in got["items"]] == [1, 2]
    for params in ({"street_id": street_a}, {"community_id": a2}):
        await ranking(client, w, "secretary", expect=404, **params)
    await ranking(client, w, "secretary2", street_id=street_a, expect=404)
    # A liaison: its own unit's standing, nothing else.
    await ranking(client, w, "liaison", street_id=street_a, expect=404)
    await ranking(client, w, "liaison", community_id=a1, expect=404)
    await standing(client, w, "a1", "liaison")
    await standing(client, w, "a1x", "liaison", expect=404)
    await standing(client, w, "a1", "a1x", expect=404)
    await standing(client, w, "a1x", "a1x")
    await standing(client, w, "a2u", "secretary", expect=404)
    await standing(client, w, "a1", "secretary2", expect=404)
    await standing(client, w, "a2u", "street")
    for who in ("gridworker", "member", "resident"):
        await ranking(client, w, who, street_id=street_a, expect=403)
        await standing(client, w, "a1", who, expect=403)
    r = await client.get(f"/api/v1/standings/communities/{a2}", headers=w.h("secretary"))
    assert r.status_code == 404
    r = await client.get(f"/api/v1/standings/communities/{a1}", headers=w.h("liaison"))
    assert r.status_code == 404
    r = await client.get(f"/api/v1/standings/units/{uuid.uuid4()}", headers=w.h("street"))
    assert r.status_code == 404


async def test_bad_ranking_requests(client, county):
    w = county.w
    for params, code in (
        ({}, "validation_error"),
        ({"street_id": w.orgs["street_a"].id, "community_id": w.orgs["a1"].id}, "validation_error"),
        ({"street_id": w.orgs["a1"].id}, "not_a_street"),
        ({"community_id": w.orgs["street_a"].id}, "not_a_community"),
        ({"street_id": "东湖"}, "validation_error"),
        ({"street_id": w.orgs["street_a"].id, "year": 1900}, "validation_error"),
    ):
        got = await ranking(client, w, expect=422, **params)
        assert got["code"] == code, params


async def test_the_current_year_by_default(client, county):
    w = county.w
    r = await client.get(
        "/api/v1/standings/units", headers=w.h("street"), params={"street_id": str(w.orgs["street_a"].id)}
    )
    assert r.status_code == 200 and r.json()["year"] == local_year()
