"""`notify`, the service other packages call: deduplication, recipients, channels."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import func, select

from gongjian.core import db
from gongjian.notifications import channels, service
from gongjian.notifications.models import Notification
from tests.notifications.conftest import send


async def _count(session: Any, **where: Any) -> int:
    await session.rollback()  # a fresh snapshot
    stmt = select(func.count()).select_from(Notification).filter_by(**where)
    return int(await session.scalar(stmt) or 0)


async def test_the_same_dedupe_key_notifies_once_per_user(session, world):
    staff, liaison = world.users["staff"].id, world.users["liaison"].id
    first = await send(session, [staff], dedupe_key="agreement:1:expiring")
    again = await send(session, [staff, liaison], dedupe_key="agreement:1:expiring")
    assert len(first) == 1
    assert [n.user_id for n in again] == [liaison]  # the staff member already has it
    assert await _count(session, user_id=staff) == 1
    assert await _count(session, user_id=liaison) == 1
    # Another key, or none, is another notification.
    await send(session, [staff], dedupe_key="agreement:2:expiring")
    await send(session, [staff])
    await send(session, [staff])
    assert await _count(session, user_id=staff) == 4


async def test_recipients_once_each_and_none_is_nothing(session, world):
    staff = world.users["staff"].id
    assert await send(session, []) == []
    created = await send(session, [staff, staff, staff])
    assert len(created) == 1
    assert await _count(session) == 1


async def test_two_jobs_at_once_notify_once(session, world):
    users = [world.users[name].id for name in ("staff", "liaison", "secretary")]

    async def job() -> int:
        async with db.sessionmaker()() as s:
            created = await service.notify(
                s, users, kind="test.race", title="提醒", body="同时运行", dedupe_key="race:1"
            )
            await asyncio.sleep(0.05)  # both inserts in flight before either commits
            await s.commit()
            return len(created)

    results = await asyncio.gather(job(), job(), job())
    assert sorted(results) == [0, 0, 3]
    assert await _count(session, dedupe_key="race:1") == 3


async def test_nothing_is_written_when_the_callers_transaction_rolls_back(session, world):
    await service.notify(session, [world.users["staff"].id], kind="test.x", title="t", body="b")
    await session.rollback()
    assert await _count(session) == 0


class _Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.delivered: list[list[str]] = []

    async def deliver(self, session: Any, notifications: Sequence[Notification]) -> None:
        self.delivered.append([n.title for n in notifications])


@pytest.fixture
def recorder():
    channel = _Recorder()
    channels.register(channel)
    yield channel
    channels.CHANNELS.remove(channel)


async def test_channels_get_each_new_notification_once(session, world, recorder):
    staff, liaison = world.users["staff"].id, world.users["liaison"].id
    await send(session, [staff], title="一", dedupe_key="k")
    await send(session, [staff, liaison], title="二", dedupe_key="k")  # only the liaison's is new
    await send(session, [staff], title="三", dedupe_key="k")  # nothing new: nothing delivered
    assert recorder.delivered == [["一"], ["二"]]
    with pytest.raises(ValueError, match="already registered"):
        channels.register(_Recorder())


async def test_a_title_or_body_too_long_is_cut_not_refused(session, world):
    [n] = await send(session, [world.users["staff"].id], title="协议待签署：" + "长" * 200, body="文" * 3000)
    assert len(n.title) == 200 and n.title.endswith("…") and n.title.startswith("协议待签署：长")
    assert len(n.body) == 2000 and n.body.endswith("…")
