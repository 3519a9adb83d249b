"""Two-way evaluation: both sides rate, each sees the other's rating only once revealed, the window
and the once-only rule hold (also under concurrency), scores are checked against the rubric."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from gongjian.core.access import Role
from tests.evaluations.helpers import (
    COMMUNITY_KEYS,
    UNIT_KEYS,
    execute,
    fetch,
    get_window,
    make_agreement,
    open_window,
    rate_community,
    rate_unit,
    scores,
    side,
    submit,
)
from tests.factories import make_unit, make_user, token_for

MIXED = {
    "commitments_kept": 10,
    "activities_joined": 5,
    "members_reported": 8,
    "responsiveness": 6,
    "resources_shared": 9,
}  # 30·1 + 20·0.5 + 20·0.8 + 15·0.6 + 15·0.9 = 78.5


@pytest.fixture
async def window(client, world, session):
    agreement = await make_agreement(session, world)
    return await open_window(client, world, agreement.id)


async def submissions() -> list:
    return await fetch("SELECT side, total, submitted_by FROM evaluation_submissions ORDER BY side")


async def test_both_sides_rate_and_see_each_other_once_both_have(client, world, session):
    agreement = await make_agreement(session, world)
    window = await open_window(client, world, agreement.id)
    assert window["status"] == "open" and window["revealed"] is False and window["year"] == 2026
    assert window["agreement_number"] == agreement.number and window["opened_by"] == str(
        world.users["secretary"].id
    )
    community, unit = side(window, "community"), side(window, "unit")
    assert community["rates"] == "unit" and unit["rates"] == "community"
    assert [i["key"] for i in community["rubric"]["items"]] == COMMUNITY_KEYS
    assert [i["key"] for i in unit["rubric"]["items"]] == UNIT_KEYS
    assert sum(i["weight"] for i in community["rubric"]["items"]) == 100
    assert window["can_submit"] == ["community"]

    sub = await submit(client, world, window["id"], "staff", scores=MIXED, comment="积极参与统一活动日")
    assert sub["side"] == "community" and sub["total"] == 78.5
    assert sub["submitted_by"] == str(world.users["staff"].id) and sub["scores"] == MIXED

    # The unit learns that the community has rated it, not how.
    seen = await get_window(client, world, window["id"], "liaison")
    assert side(seen, "community")["submitted"] is True and side(seen, "community")["submission"] is None
    assert "78.5" not in json.dumps(seen) and "积极参与" not in json.dumps(seen)
    assert seen["can_submit"] == ["unit"] and seen["revealed"] is False
    r = await client.get("/api/v1/evaluation-windows", headers=world.h("liaison"))
    assert r.status_code == 200 and [w["id"] for w in r.json()["items"]] == [window["id"]]
    assert "78.5" not in r.text and "积极参与" not in r.text
    # The community side sees its own rating; nobody counts it yet.
    own = await get_window(client, world, window["id"], "secretary")
    assert side(own, "community")["submission"]["total"] == 78.5 and own["can_submit"] == []
    r = await client.get(
        f"/api/v1/evaluation-results/units/{world.units['a1'].id}", headers=world.h("liaison")
    )
    assert r.status_code == 200, r.text
    assert r.json()["items"] == [{"year": 2026, "score": None, "ratings": 0, "windows": 1}]

    back = await submit(
        client, world, window["id"], "liaison", scores=scores(UNIT_KEYS, 9), comment="沟通顺畅"
    )
    assert back["side"] == "unit" and back["total"] == 90.0

    for who in ("liaison", "secretary", "street", "admin"):
        both = await get_window(client, world, window["id"], who)
        assert both["revealed"] is True, who
        assert side(both, "community")["submission"]["comment"] == "积极参与统一活动日", who
        assert side(both, "unit")["submission"]["total"] == 90.0, who

    r = await client.get(
        f"/api/v1/evaluation-results/units/{world.units['a1'].id}", headers=world.h("liaison")
    )
    assert r.json() == {
        "subject": "unit",
        "subject_id": str(world.units["a1"].id),
        "items": [{"year": 2026, "score": 78.5, "ratings": 1, "windows": 1}],
    }
    r = await client.get(
        f"/api/v1/evaluation-results/communities/{world.orgs['a1'].id}", headers=world.h("street")
    )
    assert r.json()["items"] == [{"year": 2026, "score": 90.0, "ratings": 1, "windows": 1}]

    # The audit log says who rated for which side, never the scores (the community reads its log).
    rows = await fetch(
        "SELECT action, actor_id, after FROM audit_log WHERE object_type = 'evaluation_window' ORDER BY at"
    )
    assert [r.action for r in rows] == ["evaluation_window.open", "evaluation.submit", "evaluation.submit"]
    assert [r.after["side"] for r in rows[1:]] == ["community", "unit"]
    assert "78.5" not in json.dumps([r.after for r in rows]) and "90" not in json.dumps(rows[2].after)


async def test_a_closed_window_reveals_what_was_submitted(client, world, window):
    await submit(client, world, window["id"], "liaison", scores=scores(UNIT_KEYS, 7), comment="还需加强沟通")
    before = await get_window(client, world, window["id"], "secretary")
    assert side(before, "unit")["submitted"] is True and side(before, "unit")["submission"] is None
    r = await client.get(
        f"/api/v1/evaluation-results/communities/{world.orgs['a1'].id}", headers=world.h("secretary")
    )
    assert r.json()["items"] == [{"year": 2026, "score": None, "ratings": 0, "windows": 1}]

    await execute(
        "UPDATE evaluation_windows"
        " SET opens_at = now() - interval '2 days', closes_at = now() - interval '1 second'"
    )
    after = await get_window(client, world, window["id"], "secretary")
    assert after["status"] == "closed" and after["revealed"] is True and after["can_submit"] == []
    assert side(after, "unit")["submission"]["comment"] == "还需加强沟通"
    assert side(after, "community")["submitted"] is False
    r = await client.get(
        f"/api/v1/evaluation-results/communities/{world.orgs['a1'].id}", headers=world.h("secretary")
    )
    assert r.json()["items"] == [{"year": 2026, "score": 70.0, "ratings": 1, "windows": 1}]
    # Too late for the community now.
    r = await client.post(
        f"/api/v1/evaluation-windows/{window['id']}/submissions",
        headers=world.h("secretary", **{"Accept-Language": "en"}),
        json={"scores": MIXED},
    )
    assert r.status_code == 409 and r.json()["code"] == "evaluation_window_closed", r.text
    assert len(await submissions()) == 1


async def test_before_the_window_opens(client, world, session):
    agreement = await make_agreement(session, world)
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    window = await open_window(client, world, agreement.id, opens_at=later)
    assert window["status"] == "scheduled" and window["can_submit"] == []
    r = await client.post(
        f"/api/v1/evaluation-windows/{window['id']}/submissions",
        headers=world.h("staff"),
        json={"scores": MIXED},
    )
    assert r.status_code == 409 and r.json()["code"] == "evaluation_window_not_open", r.text
    assert await submissions() == []


async def test_each_side_rates_once(client, world, window):
    await rate_unit(client, world, window["id"], 8, who="staff")
    for who in ("staff", "secretary"):  # the other staff member of the same side, too
        r = await client.post(
            f"/api/v1/evaluation-windows/{window['id']}/submissions",
            headers=world.h(who),
            json={"scores": scores(COMMUNITY_KEYS, 1)},
        )
        assert r.status_code == 409 and r.json()["code"] == "evaluation_already_submitted", r.text
    await rate_community(client, world, window["id"], 6)
    await submit(client, world, window["id"], "liaison", expect=409, scores=scores(UNIT_KEYS, 6))
    assert [(s.side, float(s.total)) for s in await submissions()] == [("community", 80.0), ("unit", 60.0)]


@pytest.mark.parametrize(
    ("given", "locs"),
    [
        ({k: 5 for k in COMMUNITY_KEYS[:-1]}, [["body", "scores", "resources_shared"]]),
        ({**MIXED, "punctuality": 5}, [["body", "scores", "punctuality"]]),
        ({**MIXED, "responsiveness": 11}, [["body", "scores", "responsiveness"]]),
        (
            {**MIXED, "commitments_kept": -0.5, "responsiveness": 10.01},
            [
                ["body", "scores", "commitments_kept"],
                ["body", "scores", "responsiveness"],
            ],
        ),
        ({}, [["body", "scores", k] for k in sorted(COMMUNITY_KEYS)]),
    ],
)
async def test_scores_must_fit_the_rubric(client, world, window, given, locs):
    r = await client.post(
        f"/api/v1/evaluation-windows/{window['id']}/submissions",
        headers=world.h("staff"),
        json={"scores": given},
    )
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_scores"
    assert [e["loc"] for e in r.json()["errors"]] == locs
    assert await submissions() == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"scores": {"commitments_kept": "很好"}},
        {"scores": MIXED, "comment": "长" * 2001},
        {"scores": MIXED, "side": "street"},
        {"scores": MIXED, "extra": 1},
        {"scores": {"Bad Key": 1}},
    ],
)
async def test_malformed_submissions_are_422(client, world, window, body):
    r = await client.post(
        f"/api/v1/evaluation-windows/{window['id']}/submissions", headers=world.h("staff"), json=body
    )
    assert r.status_code == 422 and r.json()["code"] == "validation_error", r.text
    assert await submissions() == []


async def test_who_may_rate(client, world, session, window):
    url = f"/api/v1/evaluation-windows/{window['id']}/submissions"
    body = {"scores": MIXED}
    # Outside every grant: as if the window did not exist.
    other = await make_unit(session, world.orgs["b1"], "北门超市")
    user = await make_user(session, "liaison_b1", Role.unit_liaison, unit=other)
    await session.commit()
    foreign = {"Authorization": f"Bearer {token_for(user, ['unit_liaison'])}"}
    for headers in (world.h("secretary2"), foreign):
        assert (
            await client.get(f"/api/v1/evaluation-windows/{window['id']}", headers=headers)
        ).status_code == 404
        r = await client.post(url, headers=headers, json=body)
        assert r.status_code == 404 and r.json()["code"] == "not_found", r.text
    # In scope but not a rater: the street above the community, the platform admin, a staff member
    # naming the unit's side.
    for who, extra in (
        ("street", {}),
        ("admin", {}),
        ("staff", {"side": "unit"}),
        ("liaison", {"side": "community"}),
    ):
        r = await client.post(url, headers=world.h(who), json={**body, **extra})
        assert r.status_code == 403 and r.json()["code"] == "evaluation_not_rater", (who, r.text)
    # No evaluation rights at all.
    for who in ("gridworker", "member", "resident"):
        r = await client.post(url, headers=world.h(who), json=body)
        assert r.status_code == 403 and r.json()["code"] == "forbidden", (who, r.text)
    assert await submissions() == []
    # A random id is a 404 too.
    r = await client.post(
        f"/api/v1/evaluation-windows/{uuid.uuid4()}/submissions", headers=world.h("staff"), json=body
    )
    assert r.status_code == 404


async def test_two_raters_of_one_side_at_once_one_wins(client, world, window):
    url = f"/api/v1/evaluation-windows/{window['id']}/submissions"
    results = await asyncio.gather(
        client.post(url, headers=world.h("secretary"), json={"scores": scores(COMMUNITY_KEYS, 4)}),
        client.post(url, headers=world.h("staff"), json={"scores": scores(COMMUNITY_KEYS, 6)}),
    )
    assert sorted(r.status_code for r in results) == [201, 409], [r.text for r in results]
    loser = next(r for r in results if r.status_code == 409)
    assert loser.json()["code"] == "evaluation_already_submitted"
    winner = next(r for r in results if r.status_code == 201).json()
    (row,) = await submissions()
    assert float(row.total) == winner["total"] and str(row.submitted_by) == winner["submitted_by"]
    rows = await fetch("SELECT id FROM audit_log WHERE action = 'evaluation.submit'")
    assert len(rows) == 1


async def test_both_sides_at_once_both_count(client, world, window):
    url = f"/api/v1/evaluation-windows/{window['id']}/submissions"
    results = await asyncio.gather(
        client.post(url, headers=world.h("staff"), json={"scores": scores(COMMUNITY_KEYS, 10)}),
        client.post(url, headers=world.h("liaison"), json={"scores": scores(UNIT_KEYS, 10)}),
    )
    assert [r.status_code for r in results] == [201, 201], [r.text for r in results]
    assert (await get_window(client, world, window["id"], "liaison"))["revealed"] is True
