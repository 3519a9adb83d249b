"""Evaluation windows: which agreements the year-end job opens one for (once), staff opening one,
moving one, and who may."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

from gongjian.agreements.models import AgreementState
from gongjian.core import db
from gongjian.evaluations.service import WINDOW_DAYS, open_windows
from tests.agreements.helpers import active_agreement
from tests.evaluations.helpers import fetch, local, make_agreement, open_window, rate_unit


async def _open(year: int, today: date) -> list:
    async with db.sessionmaker()() as s:
        opened = await open_windows(s, year, today=today)
        await s.commit()
        return [(w.agreement_number, w.agreement_id) for w in opened]


async def test_year_end_opens_one_window_per_agreement_in_force(session, world):
    plain = await make_agreement(session, world)
    # Amended in the year: one window, on the version in force last.
    first = await make_agreement(session, world, number="GJ-AMEND")
    second = await make_agreement(session, world, number="GJ-AMEND", version_no=2, previous_id=first.id)
    first.state, first.superseded_by_id, first.superseded_at = (
        AgreementState.superseded,
        second.id,
        local(2026, 6),
    )
    await session.commit()
    # Terminated during the year: it was in force, it is evaluated.
    ended = await make_agreement(
        session,
        world,
        unit="b1",
        community="b1",
        state=AgreementState.terminated,
        terminated_at=local(2026, 3),
    )
    # Not of 2026: last year's, terminated before the year began, starting next year, never signed.
    await make_agreement(
        session, world, term_from=date(2025, 1, 1), term_to=date(2025, 12, 31), state=AgreementState.expired
    )
    await make_agreement(
        session,
        world,
        term_from=date(2025, 6, 1),
        term_to=date(2026, 5, 31),
        state=AgreementState.terminated,
        terminated_at=local(2025, 12, 1),
    )
    await make_agreement(session, world, term_from=date(2027, 1, 1), term_to=date(2027, 12, 31))
    await make_agreement(session, world, state=AgreementState.pending_signatures)

    # Two runs at once (two workers): each agreement is opened by exactly one of them.
    first_run, second_run = await asyncio.gather(
        _open(2026, date(2026, 12, 1)), _open(2026, date(2026, 12, 1))
    )
    assert sorted(first_run + second_run) == sorted(
        [(plain.number, plain.id), ("GJ-AMEND", second.id), (ended.number, ended.id)]
    )
    rows = await fetch("SELECT year, opens_at, closes_at, opened_by FROM evaluation_windows")
    assert {(r.year, r.opens_at, r.closes_at, r.opened_by) for r in rows} == {
        (2026, local(2026, 12, 1), local(2026, 12, 1) + timedelta(days=WINDOW_DAYS), None)
    }
    # Idempotent: a later run opens nothing more.
    assert await _open(2026, date(2026, 12, 2)) == []
    assert len(await fetch("SELECT id FROM evaluation_windows")) == 3
    audit = await fetch("SELECT actor_kind FROM audit_log WHERE action = 'evaluation_window.open'")
    assert [a.actor_kind for a in audit] == ["system"] * 3
    # The last year's agreement gets its own window for 2025.
    assert len(await _open(2025, date(2026, 1, 5))) == 2


async def test_a_window_staff_opened_is_not_opened_again(client, world, session):
    agreement = await make_agreement(session, world)
    window = await open_window(client, world, agreement.id)
    assert await _open(2026, date(2026, 12, 1)) == []
    assert [str(r.id) for r in await fetch("SELECT id FROM evaluation_windows")] == [window["id"]]


async def test_opening_by_hand(client, world, session):
    agreement = await make_agreement(session, world)
    opens = datetime.now(UTC) - timedelta(hours=1)
    window = await open_window(client, world, agreement.id, who="staff", opens_at=opens.isoformat())
    assert datetime.fromisoformat(window["closes_at"]) == opens + timedelta(days=WINDOW_DAYS)
    r = await client.get(f"/api/v1/evaluation-windows/{window['id']}", headers=world.h("liaison"))
    assert r.status_code == 200 and r.headers["etag"] == '"1"'

    # Once per agreement and year.
    r = await client.post(
        f"/api/v1/agreements/{agreement.id}/evaluation-windows",
        headers=world.h("secretary"),
        json={"year": 2026},
    )
    assert r.status_code == 409 and r.json()["code"] == "evaluation_window_exists"
    # Only for a year the agreement was in force, and only a signed one.
    r = await client.post(
        f"/api/v1/agreements/{agreement.id}/evaluation-windows",
        headers=world.h("secretary"),
        json={"year": 2025},
    )
    assert r.status_code == 409 and r.json()["code"] == "agreement_not_in_force"
    pending = await make_agreement(session, world, state=AgreementState.pending_signatures)
    await open_window(client, world, pending.id, expect=409)
    # Listed under the agreement, by any of its versions.
    r = await client.get(f"/api/v1/agreements/{agreement.id}/evaluation-windows", headers=world.h("liaison"))
    assert r.status_code == 200 and [w["id"] for w in r.json()["items"]] == [window["id"]]
    assert len(await fetch("SELECT id FROM evaluation_windows")) == 1


async def test_who_opens_windows(client, world, session):
    agreement = await make_agreement(session, world)
    url = f"/api/v1/agreements/{agreement.id}/evaluation-windows"
    for who, status in (("liaison", 403), ("gridworker", 403), ("member", 403), ("secretary2", 404)):
        r = await client.post(url, headers=world.h(who), json={"year": 2026})
        assert r.status_code == status, (who, r.text)
    r = await client.get(url, headers=world.h("secretary2"))
    assert r.status_code == 404
    bad = [
        {"year": 1999},
        {},
        {"year": 2026, "opens_at": "2026-12-10T00:00:00+08:00", "closes_at": "2026-12-01T00:00:00+08:00"},
        {"year": 2026, "closes_at": "2020-01-01T00:00:00+08:00"},
        {"year": 2026, "opens_at": "2026-12-01T00:00:00"},  # no time zone
        {"year": 2026, "opens_at": "9999-12-31T23:59:59+08:00"},
    ]
    for body in bad:
        r = await client.post(url, headers=world.h("secretary"), json=body)
        assert r.status_code == 422, (body, r.text)
    assert await fetch("SELECT id FROM evaluation_windows") == []
    # The street above the community opens it too.
    await open_window(client, world, agreement.id, who="street")


async def test_moving_a_window(client, world, session):
    agreement = await make_agreement(session, world)
    window = await open_window(client, world, agreement.id)
    url = f"/api/v1/evaluation-windows/{window['id']}"
    later = (datetime.now(UTC) + timedelta(days=60)).isoformat()
    r = await client.patch(
        url, headers=world.h("secretary", **{"If-Match": '"1"'}), json={"closes_at": later}
    )
    assert r.status_code == 200 and r.json()["version"] == 2 and r.headers["etag"] == '"2"', r.text
    r = await client.patch(
        url, headers=world.h("secretary", **{"If-Match": '"1"'}), json={"closes_at": later}
    )
    assert r.status_code == 412
    for who, status in (("liaison", 403), ("secretary2", 404), ("gridworker", 403)):
        r = await client.patch(url, headers=world.h(who), json={"closes_at": later})
        assert r.status_code == status, (who, r.text)
    for body in ({"closes_at": window["opens_at"]}, {"opens_at": None}, {"closes_at": "明天"}):
        r = await client.patch(url, headers=world.h("secretary"), json=body)
        assert r.status_code == 422, (body, r.text)

    await rate_unit(client, world, window["id"], 9)
    earlier = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    r = await client.patch(url, headers=world.h("secretary"), json={"opens_at": earlier})
    assert r.status_code == 409 and r.json()["code"] == "evaluation_window_started"
    # Closing early is allowed: it reveals what was submitted.
    r = await client.patch(url, headers=world.h("staff"), json={"closes_at": datetime.now(UTC).isoformat()})
    assert r.status_code == 200 and r.json()["status"] == "closed" and r.json()["revealed"] is True
    (row,) = await fetch("SELECT version FROM evaluation_windows")
    assert row.version == 3
    actions = await fetch("SELECT action FROM audit_log WHERE object_type = 'evaluation_window' ORDER BY at")
    assert [a.action for a in actions] == [
        "evaluation_window.open",
        "evaluation_window.update",
        "evaluation.submit",
        "evaluation_window.update",
    ]


async def test_an_agreement_signed_through_the_api_is_evaluated(client, world):
    agreement = await active_agreement(client, world)
    assert await _open(2026, date(2026, 12, 1)) == [(agreement["number"], uuid.UUID(agreement["id"]))]
    (window,) = (await client.get("/api/v1/evaluation-windows", headers=world.h("liaison"))).json()["items"]
    assert window["agreement_id"] == agreement["id"] and window["unit_id"] == str(world.units["a1"].id)
