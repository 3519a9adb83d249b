"""Matching through the API: runs, a need's matches, accepting and dismissing suggestions."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.lists.models import Need, Resource
from gongjian.matching.evaluation import metrics
from gongjian.matching.models import Suggestion
from tests.factories import World
from tests.matching.conftest import load_public, public_data


async def _run(
    client: httpx.AsyncClient, w: World, run_jobs: Any, org: str, who: str = "street"
) -> dict[str, Any]:
    r = await client.post("/api/v1/matching/runs", json={"org_id": str(w.orgs[org].id)}, headers=w.h(who))
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued"
    await run_jobs()
    r = await client.get(f"/api/v1/matching/runs/{r.json()['id']}", headers=w.h(who))
    assert r.status_code == 200
    return r.json()


async def _matches(
    client: httpx.AsyncClient, w: World, need: Need, who: str = "street", **params: Any
) -> Any:
    return await client.get(f"/api/v1/needs/{need.id}/matches", params=params, headers=w.h(who))


async def test_a_bulk_run_then_each_need_reads_its_ranking(
    client: httpx.AsyncClient, session: AsyncSession, w: World, run_jobs: Any
) -> None:
    resources, needs = await load_public(session, w)
    run = await _run(client, w, run_jobs, "street_a")
    assert run["status"] == "completed"
    assert run["progress"] == {"done": 40, "total": 40}
    assert run["suggestions_count"] > 40
    assert run["needs_without_match"] >= 1
    by_id = {r.id: ref for ref, r in resources.items()}
    ranked: dict[str, list[str]] = {}
    for ref, need in needs.items():
        r = await _matches(client, w, need, limit=5)
        assert r.status_code == 200
        items = r.json()["items"]
        assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
        for item in items:
            assert item["resource"]["external_ref"] == by_id[_uuid(item["resource"]["id"])]
            assert item["explanation"]["summary"]
            assert not item["weak"]
        ranked[ref] = [i["resource"]["external_ref"] for i in items]
    figures = metrics(ranked, public_data()["gold"])
    assert figures["ndcg_at_k"] >= 0.92 and figures["recall_at_k"] >= 0.95, figures


def _uuid(value: str) -> Any:
    import uuid

    return uuid.UUID(value)


async def test_matches_are_computed_on_first_read_and_refreshed_after_an_edit(
    client: httpx.AsyncClient, session: AsyncSession, w: World
) -> None:
    resources, needs = await load_public(session, w)
    need = needs["N001"]
    first = (await _matches(client, w, need, who="secretary")).json()["items"]
    assert [i["resource"]["external_ref"] for i in first][:1] == ["R034"]
    # The only fitting resource is withdrawn: the next read no longer offers it.
    resource = resources["R034"]
    resource.state = "withdrawn"
    await session.commit()
    again = (await _matches(client, w, need, who="secretary")).json()["items"]
    assert "R034" not in [i["resource"]["external_ref"] for i in again]


async def test_weak_suggestions_only_when_asked_and_last(
    client: httpx.AsyncClient, session: AsyncSession, w: World
) -> None:
    _, needs = await load_public(session, w)
    need = needs["N011"]  # 化粪池清掏: nothing in the file does it
    strong = (await _matches(client, w, need)).json()["items"]
    assert strong == []
    weak = (await _matches(client, w, need, include_weak="true")).json()["items"]
    assert weak and all(i["weak"] for i in weak)


async def test_bad_input(client: httpx.AsyncClient, session: AsyncSession, w: World) -> None:
    _, needs = await load_public(session, w)
    r = await _matches(client, w, needs["N001"], limit=0)
    assert r.status_code == 422
    r = await client.get("/api/v1/needs/not-a-uuid/matches", headers=w.h("street"))
    assert r.status_code == 422
    r = await client.post("/api/v1/matching/runs", json={}, headers=w.h("street"))
    assert r.status_code == 422
    r = await client.post("/api/v1/matching/runs", json={"org_id": "x"}, headers=w.h("street"))
    assert r.status_code == 422
    assert await session.scalar(select(func.count()).select_from(Suggestion)) == 0


async def test_wrong_scope_is_not_found(
    client: httpx.AsyncClient, session: AsyncSession, w: World, run_jobs: Any
) -> None:
    _, needs = await load_public(session, w)
    need = needs["N001"]
    for who in ("secretary2",):
        assert (await _matches(client, w, need, who=who)).status_code == 404
    assert (await _matches(client, w, need, who="resident")).status_code == 403
    assert (await _matches(client, w, need, who="member")).status_code == 403
    r = await client.post(
        "/api/v1/matching/runs", json={"org_id": str(w.orgs["street_a"].id)}, headers=w.h("secretary2")
    )
    assert r.status_code == 404
    r = await client.post(
        "/api/v1/matching/runs", json={"org_id": str(w.orgs["a1"].id)}, headers=w.h("gridworker")
    )
    assert r.status_code == 403
    run = await _run(client, w, run_jobs, "a1", who="secretary")
    r = await client.get(f"/api/v1/matching/runs/{run['id']}", headers=w.h("secretary2"))
    assert r.status_code == 404
    listed = (await client.get("/api/v1/matching/runs", headers=w.h("secretary2"))).json()["items"]
    assert listed == []


async def test_a_community_run_matches_only_its_own_needs(
    client: httpx.AsyncClient, session: AsyncSession, w: World, run_jobs: Any
) -> None:
    _, needs = await load_public(session, w)
    run = await _run(client, w, run_jobs, "a1", who="secretary")
    in_a1 = sum(1 for n in needs.values() if n.org_id == w.orgs["a1"].id)
    assert run["progress"]["total"] == in_a1
    orgs = set((await session.execute(select(Suggestion.org_id).distinct())).scalars())
    assert orgs == {w.orgs["a1"].id}


async def _first_suggestion(client: httpx.AsyncClient, w: World, need: Need) -> dict[str, Any]:
    items = (await _matches(client, w, need, who="secretary")).json()["items"]
    assert items
    return items[0]


async def test_dismissed_pairs_are_not_proposed_again(
    client: httpx.AsyncClient, session: AsyncSession, w: World, run_jobs: Any
) -> None:
    _, needs = await load_public(session, w)
    need = needs["N001"]
    top = await _first_suggestion(client, w, need)
    r = await client.post(
        f"/api/v1/matching/suggestions/{top['id']}/dismiss", json={"reason": ""}, headers=w.h("secretary")
    )
    assert r.status_code == 422
    r = await client.post(
        f"/api/v1/matching/suggestions/{top['id']}/dismiss",
        json={"reason": "已有其他安排"},
        headers=w.h("secretary"),
    )
    assert r.status_code == 200 and r.json()["state"] == "dismissed"
    await _run(client, w, run_jobs, "street_a")
    again = (await _matches(client, w, need, who="secretary")).json()["items"]
    assert top["resource"]["id"] not in [i["resource"]["id"] for i in again]
    # Dismissed is final: neither dismissed again nor accepted.
    r = await client.post(
        f"/api/v1/matching/suggestions/{top['id']}/dismiss",
        json={"reason": "again"},
        headers=w.h("secretary"),
    )
    assert r.status_code == 409
    r = await client.post(
        f"/api/v1/matching/suggestions/{top['id']}/accept", json={}, headers=w.h("secretary")
    )
    assert r.status_code == 409
    r = await client.post(
        f"/api/v1/matching/suggestions/{top['id']}/dismiss", json={"reason": "x"}, headers=w.h("secretary2")
    )
    assert r.status_code == 404


async def test_accepting_proposes_one_project_even_when_two_staff_accept_at_once(
    client: httpx.AsyncClient, session: AsyncSession, w: World
) -> None:
    resources, needs = await load_public(session, w)
    need = needs["N001"]
    top = await _first_suggestion(client, w, need)
    url = f"/api/v1/matching/suggestions/{top['id']}/accept"
    first, second = await asyncio.gather(
        client.post(url, json={"quantity": 2}, headers=w.h("secretary")),
        client.post(url, json={"quantity": 2}, headers=w.h("staff")),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 409], (first.text, second.text)
    won = first if first.status_code == 200 else second
    assert won.json()["state"] == "accepted" and won.json()["project_id"]
    from gongjian.projects.models import Project

    assert await session.scalar(select(func.count()).select_from(Project)) == 1
    await session.refresh(need)
    assert need.state in ("matched", "in_project")
    resource = await session.get(Resource, resources["R034"].id)
    assert resource is not None
    await session.refresh(resource)
    assert resource.remaining_quantity == resource.quantity - 2


async def test_accepting_more_than_is_left_writes_nothing(
    client: httpx.AsyncClient, session: AsyncSession, w: World
) -> None:
    _, needs = await load_public(session, w)
    need = needs["N001"]
    top = await _first_suggestion(client, w, need)
    r = await client.post(
        f"/api/v1/matching/suggestions/{top['id']}/accept", json={"quantity": 10**9}, headers=w.h("secretary")
    )
    assert r.status_code == 409
    from gongjian.projects.models import Project

    assert await session.scalar(select(func.count()).select_from(Project)) == 0
    await session.refresh(need)
    assert need.state == "collected"
    r = await client.post(
        f"/api/v1/matching/suggestions/{top['id']}/accept", json={"quantity": -1}, headers=w.h("secretary")
    )
    assert r.status_code == 422


async def test_the_pool_is_the_street_another_streets_resources_stay_out(
    client: httpx.AsyncClient, session: AsyncSession, w: World
) -> None:
    from tests.matching.conftest import resource_row

    _, needs = await load_public(session, w)
    item = next(r for r in public_data()["resources"] if r["ref"] == "R034")
    twin = resource_row({**item, "ref": "B-R034"}, w.orgs["b1"].id)
    session.add(twin)
    await session.commit()
    refs = [i["resource"]["external_ref"] for i in (await _matches(client, w, needs["N001"])).json()["items"]]
    assert refs[:1] == ["R034"] and "B-R034" not in refs
