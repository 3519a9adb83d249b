"""The whole three-lists cycle through the API, as a street runs it: import the lists, match, accept a
suggestion, a joint meeting approves the project, commitments, progress, completion, needs resolved."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import build_world
from tests.matching.conftest import SHARED


async def test_import_match_accept_decide_carry_out_resolve(
    client: httpx.AsyncClient, session: Any, run_jobs: Any
) -> None:
    w = await build_world(session)
    street = str(w.orgs["street_a"].id)

    async def call(method: str, url: str, expect: int, **kwargs: Any) -> Any:
        headers = {**w.h("street"), **kwargs.pop("headers", {})}
        r = await client.request(method, url, headers=headers, **kwargs)
        assert r.status_code == expect, (method, url, r.text)
        return r.json() if r.content else None

    # 1. Import the interchange file under the street, creating its communities and grids.
    started = await call(
        "POST",
        f"/api/v1/lists/imports?parent_org_id={street}&create_missing=true",
        202,
        content=SHARED.read_bytes(),
        headers={"Content-Type": "application/json"},
    )
    await run_jobs()
    imported = await call("GET", f"/api/v1/lists/imports/{started['id']}", 200)
    assert imported["status"] == "completed", imported

    needs: dict[str, Any] = {}
    cursor = None
    while True:
        page = await call(
            "GET",
            "/api/v1/needs",
            200,
            params={"org_id": street, "limit": 100, **({"cursor": cursor} if cursor else {})},
        )
        needs.update({n["external_ref"]: n for n in page["items"]})
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(needs) == 40

    # 2. The street's bulk matching run.
    run = await call("POST", "/api/v1/matching/runs", 202, json={"org_id": street})
    await run_jobs()
    run = await call("GET", f"/api/v1/matching/runs/{run['id']}", 200)
    assert run["status"] == "completed" and run["progress"] == {"done": 40, "total": 40}

    # 3. 书院巷's elderly meals (N001): the 长者助餐 kitchen is the top suggestion; accept it with 20 meals.
    need = needs["N001"]
    matches = await call("GET", f"/api/v1/needs/{need['id']}/matches", 200, params={"limit": 5})
    top = matches["items"][0]
    assert top["resource"]["external_ref"] == "R034", matches
    accepted = await call(
        "POST", f"/api/v1/matching/suggestions/{top['id']}/accept", 200, json={"quantity": 20}
    )
    pid = accepted["project_id"]
    project = await call("GET", f"/api/v1/projects/{pid}", 200)
    assert project["state"] == "proposed"
    assert [n["id"] for n in project["needs"]] == [need["id"]]
    resource = await call("GET", f"/api/v1/resources/{top['resource']['id']}", 200)
    assert resource["remaining_quantity"] == resource["quantity"] - 20

    # 4. Not approvable outside a meeting; the street's joint meeting decides it.
    await call("POST", f"/api/v1/projects/{pid}/transitions", 409, json={"to": "approved"})
    meeting = await call(
        "POST",
        "/api/v1/meetings",
        201,
        json={
            "org_id": street,
            "kind": "joint_meeting",
            "title": "城中街道2026年区域化党建联席会议",
            "scheduled_at": "2026-03-10T09:00:00+08:00",
            "location": "街道党群服务中心",
            "agenda": [{"title": "书院巷长者助餐项目", "project_id": pid}],
        },
    )
    await call("POST", f"/api/v1/meetings/{meeting['id']}/transitions", 200, json={"to": "held"})
    decided = await call(
        "POST",
        f"/api/v1/meetings/{meeting['id']}/decisions",
        201,
        json={"agenda_item_id": meeting["agenda"][0]["id"], "outcome": "approve", "note": "同意立项"},
    )

    # 5. Carried out, with progress; completing it resolves the need.
    await call("POST", f"/api/v1/projects/{pid}/transitions", 200, json={"to": "in_progress"})
    await call(
        "POST",
        f"/api/v1/projects/{pid}/progress",
        201,
        json={"note": "首批20位老人已送餐上门", "percent": 100},
    )
    await call(
        "POST", f"/api/v1/projects/{pid}/transitions", 200, json={"to": "completed", "note": "送餐到户"}
    )
    assert (await call("GET", f"/api/v1/needs/{need['id']}", 200))["state"] == "resolved"

    # The trail from the project: need → meeting decision → project → result.
    final = await call("GET", f"/api/v1/projects/{pid}", 200)
    assert final["decision"]["decision_id"] == decided["decisions"][0]["id"]
    assert final["decision"]["meeting"]["id"] == meeting["id"]
    assert final["result"]["completion_note"] == "送餐到户"
