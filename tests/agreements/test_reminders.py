"""Agreement reminders, expiry and the year-end evaluation: each step with explicit dates, run
twice (and at once) to show it is idempotent, and the tasks through the job queue."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from gongjian.agreements import reminders
from gongjian.agreements.models import Agreement, AgreementSignature, AgreementState, AuthMethod, Side
from gongjian.agreements.signers import raters_for, signers_for
from gongjian.core import db, jobs
from gongjian.core.access import Role
from gongjian.notifications.models import Notification
from tests.factories import World, build_world, make_user, token_for

# 10:00 in Shanghai on 10 June 2026.
NOW = datetime(2026, 6, 10, 2, 0, tzinfo=UTC)
TODAY = date(2026, 6, 10)

_numbers = iter(range(1, 10_000))


@pytest.fixture
async def world(session: Any) -> World:
    w = await build_world(session)
    # A second signer for the community; an org_admin above it, one disabled, and staff are not.
    w.users["secretary_b"] = await make_user(session, "secretary_b", Role.org_admin, w.orgs["a1"])
    w.users["street_admin"] = await make_user(session, "street_admin", Role.org_admin, w.orgs["street_a"])
    gone = await make_user(session, "gone_admin", Role.org_admin, w.orgs["a1"])
    gone.is_active = False
    w.users["liaison_b"] = await make_user(session, "liaison_b", Role.unit_liaison, unit=w.units["a1"])
    await make_user(session, "other_liaison", Role.unit_liaison, unit=w.units["b1"])
    await session.commit()
    for name in ("secretary_b", "liaison_b", "street_admin"):
        w.tokens[name] = token_for(w.users[name])
    return w


def community_signers(w: World) -> set[uuid.UUID]:
    return {w.users["secretary"].id, w.users["secretary_b"].id}


def unit_signers(w: World) -> set[uuid.UUID]:
    return {w.users["liaison"].id, w.users["liaison_b"].id}


async def make_agreement(
    session: Any,
    w: World,
    *,
    state: AgreementState,
    term_to: date,
    term_from: date = date(2025, 1, 1),
    sent_at: datetime | None = None,
    number: str | None = None,
    version_no: int = 1,
) -> Agreement:
    frozen = state != AgreementState.draft
    content = f'{{"n":{next(_numbers)}}}'
    agreement = Agreement(
        number=number or f"GJ-2026-{next(_numbers):04d}",
        version_no=version_no,
        community_id=w.orgs["a1"].id,
        unit_id=w.units["a1"].id,
        title="东湖社区与东湖供电所共建协议",
        clauses=[],
        term_from=term_from,
        term_to=term_to,
        state=state,
        canonical_content=content if frozen else None,
        content_hash=hashlib.sha256(content.encode()).hexdigest() if frozen else None,
        sent_at=sent_at or (NOW - timedelta(days=40) if frozen else None),
        activated_at=NOW - timedelta(days=39) if state == AgreementState.active else None,
    )
    session.add(agreement)
    await session.commit()
    return agreement


async def active(session: Any, w: World, term_to: date, **fields: Any) -> Agreement:
    return await make_agreement(session, w, state=AgreementState.active, term_to=term_to, **fields)


async def sign(session: Any, agreement: Agreement, side: Side, user_id: uuid.UUID) -> None:
    session.add(
        AgreementSignature(
            agreement_id=agreement.id,
            side=side,
            signer_user_id=user_id,
            signer_name="签署人",
            signed_at=NOW,
            content_hash=agreement.content_hash,
            auth_method=AuthMethod.password,
        )
    )
    await session.commit()


async def inbox(kind: str | None = None) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """Every user's notifications (of a kind), read straight from the database."""
    async with db.sessionmaker()() as s:
        stmt = select(Notification).order_by(Notification.created_at)
        if kind:
            stmt = stmt.where(Notification.kind == kind)
        out: dict[uuid.UUID, list[dict[str, Any]]] = {}
        for n in (await s.execute(stmt)).scalars():
            out.setdefault(n.user_id, []).append(
                {"kind": n.kind, "title": n.title, "body": n.body, "link": n.link, "payload": n.payload}
            )
        return out


async def run(step: Any, *args: Any) -> Any:
    """A step in a transaction of its own, committed (as the task runs it)."""
    async with db.sessionmaker()() as s:
        result = await step(s, *args)
        await s.commit()
        return result


# --- who signs ----------------------------------------------------------------------------------


@dataclass
class Sides:
    community_id: uuid.UUID
    unit_id: uuid.UUID


async def test_signers_are_the_communitys_own_admins_and_the_units_liaisons(session, world):
    agreement = await make_agreement(session, world, state=AgreementState.draft, term_to=date(2026, 12, 31))
    # Not staff, nor the org_admin of the street above (while the community has its own), nor a
    # disabled admin, nor a platform admin, nor another community's or unit's.
    assert set(await signers_for(session, agreement, Side.community)) == community_signers(world)
    assert set(await signers_for(session, agreement, Side.unit)) == unit_signers(world)


async def test_a_community_without_its_own_admin_is_signed_for_by_the_nearest_above(session, world):
    # 桃源社区 (a2) has no org_admin: the street's signs for it (not the county's, nor a platform admin).
    await make_user(session, "county_admin", Role.org_admin, world.orgs["county"])
    await session.commit()
    sides = Sides(community_id=world.orgs["a2"].id, unit_id=uuid.uuid4())
    assert await signers_for(session, sides, Side.community) == [world.users["street_admin"].id]
    assert await signers_for(session, sides, Side.unit) == []


async def test_raters_are_the_communitys_own_staff_and_the_units_liaisons(session, world):
    sides = Sides(community_id=world.orgs["a1"].id, unit_id=world.units["a1"].id)
    staff = community_signers(world) | {world.users["staff"].id}
    assert set(await raters_for(session, sides, Side.community)) == staff
    assert set(await raters_for(session, sides, Side.unit)) == unit_signers(world)


# --- pending signatures -------------------------------------------------------------------------


async def test_unsigned_sides_are_reminded_once_a_day(session, world):
    sent = NOW - timedelta(hours=25)
    agreement = await make_agreement(
        session, world, state=AgreementState.pending_signatures, term_to=date(2026, 12, 31), sent_at=sent
    )
    fresh = await make_agreement(  # sent 20 hours ago: not yet
        session, world, state=AgreementState.pending_signatures, term_to=date(2026, 12, 31),
        sent_at=NOW - timedelta(hours=20),
    )

    assert await run(reminders.remind_pending_signatures, NOW) == 4
    got = await inbox(reminders.SIGNATURE_PENDING)
    assert set(got) == community_signers(world) | unit_signers(world)
    [note] = got[world.users["liaison"].id]
    assert note["link"] == f"/api/v1/agreements/{agreement.id}"
    assert note["payload"]["side"] == "unit" and note["payload"]["reminder"] == 1
    assert note["payload"]["content_hash"] == agreement.content_hash
    assert "乙方" in note["body"] and agreement.number in note["body"]
    assert all(n["payload"]["agreement_id"] == str(agreement.id) for ns in got.values() for n in ns)
    assert str(fresh.id) not in str(got)

    # Run again, the same day, and an hour later: nothing new.
    assert await run(reminders.remind_pending_signatures, NOW) == 0
    assert await run(reminders.remind_pending_signatures, NOW + timedelta(hours=1)) == 0

    # The community signs; a day later only the unit's liaisons are reminded again (and the
    # fresh agreement's four signers for the first time).
    await sign(session, agreement, Side.community, world.users["secretary"].id)
    assert await run(reminders.remind_pending_signatures, NOW + timedelta(hours=24)) == 2 + 4
    got = await inbox(reminders.SIGNATURE_PENDING)
    for user in unit_signers(world):
        mine = [n for n in got[user] if n["payload"]["agreement_id"] == str(agreement.id)]
        assert [n["payload"]["reminder"] for n in mine] == [1, 2]
    for user in community_signers(world):
        mine = [n for n in got[user] if n["payload"]["agreement_id"] == str(agreement.id)]
        assert len(mine) == 1


async def test_a_version_sent_again_after_a_decline_starts_a_new_round(session, world):
    agreement = await make_agreement(
        session, world, state=AgreementState.pending_signatures, term_to=date(2026, 12, 31),
        sent_at=NOW - timedelta(hours=30),
    )
    assert await run(reminders.remind_pending_signatures, NOW) == 4
    # Declined (back to draft), edited, and sent again two hours ago.
    agreement.state = AgreementState.draft
    await session.commit()
    assert await run(reminders.remind_pending_signatures, NOW + timedelta(days=1)) == 0
    agreement.state = AgreementState.pending_signatures
    agreement.sent_at = NOW + timedelta(days=1) - timedelta(hours=2)
    await session.commit()
    later = NOW + timedelta(days=2)
    assert await run(reminders.remind_pending_signatures, later) == 4
    got = await inbox(reminders.SIGNATURE_PENDING)
    assert all(len(ns) == 2 for ns in got.values())
    assert {n["payload"]["reminder"] for ns in got.values() for n in ns} == {1}


async def test_agreements_in_other_states_get_no_signature_reminder(session, world):
    for state in (AgreementState.draft, AgreementState.active, AgreementState.terminated):
        await make_agreement(session, world, state=state, term_to=date(2026, 12, 31))
    assert await run(reminders.remind_pending_signatures, NOW) == 0
    assert await inbox() == {}


# --- the end of the term ------------------------------------------------------------------------


async def test_both_sides_hear_30_days_before_the_last_day_once(session, world):
    due = await active(session, world, TODAY + timedelta(days=30))
    await active(session, world, TODAY + timedelta(days=31))
    await make_agreement(  # not active: no notice
        session, world, state=AgreementState.terminated, term_to=TODAY + timedelta(days=10)
    )

    assert await run(reminders.remind_expiring, TODAY) == 4
    got = await inbox(reminders.EXPIRING)
    assert set(got) == community_signers(world) | unit_signers(world)
    note = got[world.users["secretary"].id][0]
    assert note["payload"]["days_left"] == 30 and note["payload"]["term_to"] == due.term_to.isoformat()
    assert note["link"] == f"/api/v1/agreements/{due.id}" and "30天" in note["body"]

    # The next days: the same agreement is not announced again; the other one now is.
    assert await run(reminders.remind_expiring, TODAY) == 0
    assert await run(reminders.remind_expiring, TODAY + timedelta(days=1)) == 4
    assert await run(reminders.remind_expiring, TODAY + timedelta(days=2)) == 0

    # An amendment keeping the term replaces the version: its signers are not told again.
    amendment = await make_agreement(
        session, world, state=AgreementState.active, term_to=due.term_to, number=due.number, version_no=2
    )
    due.state = AgreementState.superseded
    due.superseded_by_id = amendment.id
    await session.commit()
    assert await run(reminders.remind_expiring, TODAY + timedelta(days=3)) == 0
    # Each signer heard once of each of the two ends.
    assert all(len(ns) == 2 for ns in (await inbox(reminders.EXPIRING)).values())


async def test_active_agreements_past_their_last_day_expire(session, world):
    past = await active(session, world, TODAY - timedelta(days=1))
    last_day = await active(session, world, TODAY)
    terminated = await make_agreement(
        session, world, state=AgreementState.terminated, term_to=TODAY - timedelta(days=5)
    )

    assert await run(reminders.expire_agreements, TODAY) == 1
    rows = await session.execute(select(Agreement.id, Agreement.state))
    states = {agreement_id: state for agreement_id, state in rows}
    assert states == {past.id: "expired", last_day.id: "active", terminated.id: "terminated"}
    await session.refresh(past)
    assert past.expired_at is not None and past.version == 2

    rows = (
        await session.execute(
            text(
                "SELECT action, object_id, actor_kind, org_id, after FROM audit_log"
                " WHERE object_type = 'agreement'"
            )
        )
    ).all()
    [row] = rows
    assert (row.action, row.object_id, row.actor_kind) == ("agreement.expire", past.id, "system")
    assert row.org_id == world.orgs["a1"].id and row.after["state"] == "expired"

    got = await inbox(reminders.EXPIRED)
    assert set(got) == community_signers(world) | unit_signers(world)
    assert got[world.users["liaison"].id][0]["payload"]["agreement_id"] == str(past.id)

    # Again: nothing more expires, nobody is told twice; the last day's agreement expires tomorrow.
    assert await run(reminders.expire_agreements, TODAY) == 0
    assert await run(reminders.expire_agreements, TODAY + timedelta(days=1)) == 1
    got = await inbox(reminders.EXPIRED)
    assert all(len(ns) == 2 for ns in got.values())
    count = await session.scalar(text("SELECT count(*) FROM audit_log WHERE action = 'agreement.expire'"))
    assert count == 2


async def test_two_sweeps_at_once_expire_and_notify_once(session, world):
    await active(session, world, TODAY - timedelta(days=1))
    await active(session, world, TODAY + timedelta(days=20))
    await make_agreement(
        session, world, state=AgreementState.pending_signatures, term_to=date(2026, 12, 31),
        sent_at=NOW - timedelta(days=2),
    )

    results = await asyncio.gather(*(run(reminders.sweep, NOW) for _ in range(3)))

    assert sorted(r["expire"] for r in results) == [0, 0, 1]
    assert sum(r["expiring"] for r in results) == 4
    assert sum(r["signatures"] for r in results) == 4
    got = await inbox()
    kinds = sorted(n["kind"] for ns in got.values() for n in ns)
    assert kinds == sorted(
        [reminders.EXPIRED] * 4 + [reminders.EXPIRING] * 4 + [reminders.SIGNATURE_PENDING] * 4
    )
    count = await session.scalar(text("SELECT count(*) FROM audit_log WHERE action = 'agreement.expire'"))
    assert count == 1


# --- the tasks on the queue ---------------------------------------------------------------------


def test_the_sweeps_are_registered_as_periodic_tasks():
    periodic = jobs.app.periodic_registry.periodic_tasks
    assert ("agreements.sweep", "agreements.sweep") in periodic
    assert ("agreements.expire", "agreements.expire") in periodic


async def test_the_sweep_task_runs_every_step_at_its_scheduled_time(session, world, run_jobs):
    await active(session, world, TODAY - timedelta(days=1))
    await active(session, world, TODAY + timedelta(days=1))
    await make_agreement(
        session, world, state=AgreementState.pending_signatures, term_to=date(2026, 12, 31),
        sent_at=NOW - timedelta(days=2),
    )
    for _ in range(2):  # the periodic run and a manual one for the same time
        await jobs.enqueue(session, reminders.SWEEP_TASK, timestamp=int(NOW.timestamp()))
    await session.commit()

    await run_jobs()

    got = await inbox()
    assert sorted({n["kind"] for ns in got.values() for n in ns}) == [
        reminders.EXPIRED, reminders.EXPIRING, reminders.SIGNATURE_PENDING
    ]
    assert all(len(ns) == 3 for ns in got.values())  # one of each kind, whatever ran twice
    statuses = (await session.execute(text("SELECT status FROM procrastinate_jobs"))).scalars().all()
    assert statuses == ["succeeded", "succeeded"]


async def test_the_midnight_task_only_expires(session, world, run_jobs):
    past = await active(session, world, TODAY - timedelta(days=1))
    await active(session, world, TODAY + timedelta(days=1))
    midnight = datetime(2026, 6, 9, 16, 1, tzinfo=UTC)  # 00:01 on 10 June in Shanghai
    await jobs.enqueue(session, reminders.EXPIRE_TASK, timestamp=int(midnight.timestamp()))
    await session.commit()

    await run_jobs()

    await session.refresh(past)
    assert past.state == "expired"
    assert set((await inbox()).keys()) == community_signers(world) | unit_signers(world)
    assert {n["kind"] for ns in (await inbox()).values() for n in ns} == {reminders.EXPIRED}


def test_today_is_the_date_in_shanghai():
    assert reminders.local_date(datetime(2026, 6, 9, 16, 1, tzinfo=UTC)) == date(2026, 6, 10)
    assert reminders.local_date(datetime(2026, 6, 9, 15, 59, tzinfo=UTC)) == date(2026, 6, 9)


# --- the year-end evaluation --------------------------------------------------------------------


async def test_evaluation_windows_open_from_december_and_raters_are_told_once(session, world):
    in_force = await active(session, world, date(2027, 6, 30))

    assert await run(reminders.open_evaluation_windows, date(2026, 11, 30)) == 0
    assert await inbox() == {}

    assert await run(reminders.open_evaluation_windows, date(2026, 12, 1)) == 1
    got = await inbox(reminders.EVALUATION_OPEN)
    raters = community_signers(world) | {world.users["staff"].id} | unit_signers(world)
    assert set(got) == raters
    [note] = got[world.users["liaison"].id]
    window_id = note["payload"]["window_id"]
    assert note["link"] == f"/api/v1/evaluation-windows/{window_id}"
    assert note["payload"]["agreement_id"] == str(in_force.id) and note["payload"]["year"] == 2026
    assert "2026年12月30日" in note["body"]  # open for 30 days from 1 December

    # The next days: nothing opens twice, nobody is told twice.
    assert await run(reminders.open_evaluation_windows, date(2026, 12, 2)) == 0
    assert all(len(ns) == 1 for ns in (await inbox()).values())
    count = await session.scalar(text("SELECT count(*) FROM evaluation_windows"))
    assert count == 1


# --- what happens to an agreement, through the API -----------------------------------------------


async def _kinds(client: Any, w: World, who: str) -> list[str]:
    r = await client.get("/api/v1/notifications", params={"limit": 100}, headers=w.h(who))
    assert r.status_code == 200, r.text
    return [n["kind"] for n in reversed(r.json()["items"])]  # oldest first


async def test_both_sides_hear_of_send_decline_activation_and_termination(client, world):
    h = world.h("secretary")
    r = await client.post(
        "/api/v1/agreements",
        headers=h,
        json={
            "community_id": str(world.orgs["a1"].id),
            "unit_id": str(world.units["a1"].id),
            "title": "东湖社区与东湖供电所2026年共建协议",
            "clauses": [
                {"key": "co_organization", "title": "组织共建", "body": "双方党组织每季度共建一次。"}
            ],
            "term_from": "2026-01-01",
            "term_to": "2026-12-31",
        },
    )
    assert r.status_code == 201, r.text
    agreement_id = r.json()["id"]
    url = f"/api/v1/agreements/{agreement_id}"

    async def act(who: str, action: str, **body: Any) -> dict[str, Any]:
        r = await client.post(f"{url}/{action}", headers=world.h(who), json=body or None)
        assert r.status_code in (200, 201), r.text
        return dict(r.json())

    sent = await act("secretary", "send")
    await act("liaison", "decline", reason="资源数量需要调整")
    sent_again = await act("secretary", "send")
    await act("secretary", "signatures", content_hash=sent_again["content_hash"], password="Demo@2026")
    await act("liaison", "signatures", content_hash=sent_again["content_hash"], password="Demo@2026")
    await act("liaison", "terminate", reason="单位搬迁")

    expected = [reminders.SENT, reminders.DECLINED, reminders.SENT, reminders.ACTIVATED, reminders.TERMINATED]
    for who in ("secretary", "secretary_b", "liaison", "liaison_b"):
        assert await _kinds(client, world, who) == expected, who
    for who in ("staff", "street", "street_admin", "secretary2", "admin"):
        assert await _kinds(client, world, who) == [], who

    r = await client.get("/api/v1/notifications", headers=world.h("liaison_b"))
    latest = {n["kind"]: n for n in r.json()["items"]}
    assert latest[reminders.TERMINATED]["payload"]["reason"] == "单位搬迁"
    assert "单位搬迁" in latest[reminders.TERMINATED]["body"]
    assert latest[reminders.SENT]["payload"]["content_hash"] == sent_again["content_hash"]
    assert latest[reminders.SENT]["link"] == url
    assert sent["content_hash"]  # each round was announced with its own hash
    assert latest[reminders.DECLINED]["payload"]["reason"] == "资源数量需要调整"
