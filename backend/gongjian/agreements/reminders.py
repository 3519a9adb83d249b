"""Agreement notifications: what happens to an agreement, reminders, expiry and the year-end
evaluation, in the in-app inbox of the people asked to act (`signers.signers_for`, `raters_for`).

Events (`agreements.service` hooks, in the acting request's transaction): a version sent for
signature, activated, declined, terminated or expired tells both sides' signers.

The sweep (a periodic job), each step idempotent (a notification's `dedupe_key`, a state already
changed), so running it twice, or two at once, does no more than running it once:
- a side that has not signed a version sent more than SIGNATURE_REMINDER_AFTER_HOURS ago: its
  signers are reminded, then once every 24 hours while it stays unsigned (keyed by the round:
  a version declined and sent again starts over);
- an active agreement within AGREEMENT_EXPIRY_NOTICE_DAYS of its last day: both sides, once per
  agreement number and end date (an amendment keeping the term does not remind again);
- an active agreement past its last day (`term_to`): expired (`agreements.service.expire_due`);
- from December 1: the year's evaluation windows opened (`evaluations.service.open_windows`), the
  raters of both sides told.

Every step takes an explicit `now` (aware) or `today` (Asia/Shanghai date), so tests can call it
with any date. The tasks run each step in a transaction of its own: one failing does not hold
back the others, and the task is retried.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.agreements import service as agreements
from gongjian.agreements.models import Agreement, AgreementSignature, AgreementState, Side
from gongjian.agreements.signers import raters_for, signers_for
from gongjian.core import jobs
from gongjian.core.config import get_settings
from gongjian.notifications.service import notify

__all__ = [
    "ACTIVATED",
    "DECLINED",
    "EVALUATION_OPEN",
    "EVALUATION_OPENS",
    "EXPIRED",
    "EXPIRING",
    "SENT",
    "SIGNATURE_PENDING",
    "TERMINATED",
    "expire_agreements",
    "local_date",
    "open_evaluation_windows",
    "raters_for",
    "remind_expiring",
    "remind_pending_signatures",
    "signers_for",
    "sweep",
]

log = logging.getLogger("gongjian.agreements.reminders")

LOCAL_TZ = ZoneInfo("Asia/Shanghai")

# Notification kinds.
SENT = "agreement.sent"
SIGNATURE_PENDING = "agreement.signature_pending"
ACTIVATED = "agreement.activated"
DECLINED = "agreement.declined"
TERMINATED = "agreement.terminated"
EXPIRING = "agreement.expiring"
EXPIRED = "agreement.expired"
EVALUATION_OPEN = "evaluation.window_open"

# (month, day) from which the year's evaluation windows are opened.
EVALUATION_OPENS = (12, 1)

SIDE_NAMES = {Side.community: "甲方（社区）", Side.unit: "乙方（驻区单位）"}


def local_date(now: datetime) -> date:
    return now.astimezone(LOCAL_TZ).date()


def _link(agreement: Agreement) -> str:
    return f"/api/v1/agreements/{agreement.id}"


def _label(agreement: Agreement) -> str:
    return f"《{agreement.title}》（{agreement.number} 第{agreement.version_no}版）"


def _payload(agreement: Agreement, **extra: Any) -> dict[str, Any]:
    return {
        "agreement_id": str(agreement.id),
        "number": agreement.number,
        "version_no": agreement.version_no,
        "community_id": str(agreement.community_id),
        "unit_id": str(agreement.unit_id),
        **extra,
    }


async def _both_sides(session: AsyncSession, agreement: Agreement) -> list[uuid.UUID]:
    return [
        *await signers_for(session, agreement, Side.community),
        *await signers_for(session, agreement, Side.unit),
    ]


def _stamp(at: datetime | None) -> str:
    """An instant in a dedupe key: one round of an agreement (sent, declined) from another."""
    return "" if at is None else f"{at.timestamp():.6f}"


async def _tell_both_sides(
    session: AsyncSession, agreement: Agreement, kind: str, title: str, body: str, key: str, **extra: Any
) -> int:
    created = await notify(
        session,
        await _both_sides(session, agreement),
        kind=kind,
        title=f"{title}：{agreement.title}",
        body=f"{_label(agreement)}{body}",
        link=_link(agreement),
        payload=_payload(agreement, **extra),
        dedupe_key=f"{kind}:{key}",
    )
    return len(created)


# --- what happens to an agreement (hooks of agreements.service) ---------------------------------


@agreements.on_event("sent")
async def _sent(session: AsyncSession, agreement: Agreement) -> None:
    await _tell_both_sides(
        session,
        agreement,
        SENT,
        "协议待签署",
        "已发送签署，请核对协议内容后签署。",
        f"{agreement.id}:{_stamp(agreement.sent_at)}",
        content_hash=agreement.content_hash,
    )


@agreements.on_event("activated")
async def _activated(session: AsyncSession, agreement: Agreement) -> None:
    await _tell_both_sides(
        session,
        agreement,
        ACTIVATED,
        "协议已生效",
        f"双方已签署完毕，自{agreement.term_from:%Y年%m月%d日}至{agreement.term_to:%Y年%m月%d日}有效。",
        str(agreement.id),
    )


@agreements.on_event("declined")
async def _declined(session: AsyncSession, agreement: Agreement) -> None:
    await _tell_both_sides(
        session,
        agreement,
        DECLINED,
        "协议被退回修改",
        f"被退回修改，原因：{agreement.decline_reason or '未说明'}。修改后需重新发送签署。",
        f"{agreement.id}:{_stamp(agreement.declined_at)}",
        reason=agreement.decline_reason,
    )


@agreements.on_event("terminated")
async def _terminated(session: AsyncSession, agreement: Agreement) -> None:
    await _tell_both_sides(
        session,
        agreement,
        TERMINATED,
        "协议已提前终止",
        f"已提前终止，原因：{agreement.termination_reason or '未说明'}。",
        str(agreement.id),
        reason=agreement.termination_reason,
    )


@agreements.on_event("expired")
async def _expired(session: AsyncSession, agreement: Agreement) -> None:
    await _tell_both_sides(
        session,
        agreement,
        EXPIRED,
        "协议已到期",
        f"已于{agreement.term_to:%Y年%m月%d日}期满，协议状态已变为“已到期”。",
        str(agreement.id),
        term_to=agreement.term_to.isoformat(),
    )


# --- pending signatures ------------------------------------------------------------------------


async def remind_pending_signatures(session: AsyncSession, now: datetime) -> int:
    """Remind the signers of each side that has not signed a version long enough in signing;
    returns how many notifications were written."""
    after = timedelta(hours=get_settings().signature_reminder_after_hours)
    stmt = (
        select(Agreement)
        .where(Agreement.state == AgreementState.pending_signatures, Agreement.sent_at <= now - after)
        .order_by(Agreement.sent_at, Agreement.id)
    )
    agreements = list((await session.execute(stmt)).scalars().all())
    if not agreements:
        return 0
    rows = await session.execute(
        select(AgreementSignature.agreement_id, AgreementSignature.side).where(
            AgreementSignature.agreement_id.in_([a.id for a in agreements])
        )
    )
    signed = {(agreement_id, str(side)) for agreement_id, side in rows}
    written = 0
    for agreement in agreements:
        assert agreement.sent_at is not None  # pending_signatures: sent
        # The n-th reminder of this round falls n days after the first: at most one a day however
        # often the sweep runs, and none lost when a run is missed.
        nth = (now - agreement.sent_at - after) // timedelta(days=1)
        for side in Side:
            if (agreement.id, side.value) in signed:
                continue
            created = await notify(
                session,
                await signers_for(session, agreement, side),
                kind=SIGNATURE_PENDING,
                title=f"协议待签署：{agreement.title}",
                body=f"{_label(agreement)}已于{local_date(agreement.sent_at):%Y年%m月%d日}发送签署，"
                f"{SIDE_NAMES[side]}尚未签署，请核对协议内容后签署。",
                link=_link(agreement),
                payload=_payload(
                    agreement,
                    side=side.value,
                    sent_at=agreement.sent_at.isoformat(),
                    content_hash=agreement.content_hash,
                    reminder=nth + 1,
                ),
                dedupe_key=f"{SIGNATURE_PENDING}:{agreement.id}:{side.value}:"
                f"{_stamp(agreement.sent_at)}:{nth}",
            )
            written += len(created)
    return written


# --- the end of the term ---------------------------------------------------------------------


async def remind_expiring(session: AsyncSession, today: date) -> int:
    """Tell both sides of each active agreement whose last day is near; returns notifications
    written."""
    horizon = today + timedelta(days=get_settings().agreement_expiry_notice_days)
    stmt = (
        select(Agreement)
        .where(
            Agreement.state == AgreementState.active,
            Agreement.term_to >= today,
            Agreement.term_to <= horizon,
        )
        .order_by(Agreement.term_to, Agreement.id)
    )
    written = 0
    for agreement in (await session.execute(stmt)).scalars().all():
        days_left = (agreement.term_to - today).days
        created = await notify(
            session,
            await _both_sides(session, agreement),
            kind=EXPIRING,
            title=f"协议即将到期：{agreement.title}",
            body=f"{_label(agreement)}将于{agreement.term_to:%Y年%m月%d日}到期（还有{days_left}天），"
            "如需继续共建，请及时商议续签。",
            link=_link(agreement),
            payload=_payload(agreement, term_to=agreement.term_to.isoformat(), days_left=days_left),
            dedupe_key=f"{EXPIRING}:{agreement.number}:{agreement.term_to.isoformat()}",
        )
        written += len(created)
    return written


async def expire_agreements(session: AsyncSession, today: date) -> int:
    """Expire the active agreements whose last day is before `today` (both sides are told by the
    `expired` hook); returns how many expired."""
    return len(await agreements.expire_due(session, today))


# --- the year-end evaluation -----------------------------------------------------------------


async def open_evaluation_windows(session: AsyncSession, today: date) -> int:
    """From EVALUATION_OPENS on, open the year's evaluation windows (the evaluations service
    decides which agreements get one, and opens each once) and tell both sides' raters; returns
    how many windows it opened."""
    month, day = EVALUATION_OPENS
    if today < date(today.year, month, day):
        return 0
    from gongjian.evaluations import service as evaluations  # it builds on agreements: not at import

    opened = await evaluations.open_windows(session, today.year, today=today)
    for window in opened:
        raters = [
            *await raters_for(session, window, Side.community),
            *await raters_for(session, window, Side.unit),
        ]
        closes = local_date(window.closes_at - timedelta(microseconds=1))  # the last day it is open
        await notify(
            session,
            raters,
            kind=EVALUATION_OPEN,
            title=f"{window.year}年度共建双向评议已开始",
            body=f"共建协议{window.agreement_number}的{window.year}年度双向评议已开始，"
            f"请于{closes:%Y年%m月%d日}前完成评议。",
            link=f"/api/v1/evaluation-windows/{window.id}",
            payload={
                "window_id": str(window.id),
                "agreement_id": str(window.agreement_id),
                "number": window.agreement_number,
                "year": window.year,
                "community_id": str(window.community_id),
                "unit_id": str(window.unit_id),
                "closes_at": window.closes_at.isoformat(),
            },
            dedupe_key=f"{EVALUATION_OPEN}:{window.id}",
        )
    return len(opened)


# --- the sweep ---------------------------------------------------------------------------------

Step = Callable[[AsyncSession, datetime], Awaitable[int]]

STEPS: dict[str, Step] = {
    "expire": lambda s, now: expire_agreements(s, local_date(now)),
    "signatures": remind_pending_signatures,
    "expiring": lambda s, now: remind_expiring(s, local_date(now)),
    "evaluation_windows": lambda s, now: open_evaluation_windows(s, local_date(now)),
}


async def sweep(session: AsyncSession, now: datetime) -> dict[str, int]:
    """Every step in `session`'s one transaction (for tests and one-off runs): what each did."""
    return {name: await step(session, now) for name, step in STEPS.items()}


async def _run_steps(now: datetime, names: list[str]) -> None:
    failed: list[str] = []
    for name in names:
        try:
            async with jobs.task_session() as session:
                done = await STEPS[name](session, now)
            log.info("agreements sweep %s at %s: %d", name, now.isoformat(), done)
        except Exception:
            log.exception("agreements sweep %s at %s failed", name, now.isoformat())
            failed.append(name)
    if failed:
        raise RuntimeError(f"agreements sweep steps failed: {', '.join(failed)} (retried)")


def _at(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


SWEEP_TASK = "agreements.sweep"
EXPIRE_TASK = "agreements.expire"


# Every hour from 08:05 to 21:05 in Shanghai (the cron is UTC): reminders in the working day, and
# a run missed while no worker was up is made good by the next one.
@jobs.app.periodic(cron="5 0-13 * * *", periodic_id=SWEEP_TASK)
@jobs.job(SWEEP_TASK, lock=SWEEP_TASK)
async def sweep_task(timestamp: int) -> None:
    await _run_steps(_at(timestamp), list(STEPS))


# Just after midnight in Shanghai, so an agreement is not shown active on the day after its term.
@jobs.app.periodic(cron="1 16 * * *", periodic_id=EXPIRE_TASK)
@jobs.job(EXPIRE_TASK, lock=SWEEP_TASK)
async def expire_task(timestamp: int) -> None:
    await _run_steps(_at(timestamp), ["expire"])
