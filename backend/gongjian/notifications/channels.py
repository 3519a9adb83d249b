"""Where a notification goes besides the in-app inbox: the seam for WeChat and later channels.

The inbox row is the notification; a channel delivers a copy elsewhere. `notify` hands every
newly written notification (never a deduplicated one) to each registered channel inside the same
transaction, so a channel should only enqueue its delivery (`jobs.enqueue`), which then exists if
and only if the notification does, and sends it from a job, retried on failure:

    class WeChatChannel:
        name = "wechat"

        async def deliver(self, session, notifications):
            for n in notifications:
                await jobs.enqueue(session, "notifications.wechat_send", notification_id=str(n.id))

    register(WeChatChannel())

No channel is registered yet: the mini-program issue adds WeChat subscription messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from gongjian.notifications.models import Notification


class Channel(Protocol):
    name: str

    async def deliver(self, session: AsyncSession, notifications: Sequence[Notification]) -> None: ...


CHANNELS: list[Channel] = []


def register(channel: Channel) -> None:
    if any(c.name == channel.name for c in CHANNELS):
        raise ValueError(f"a channel named {channel.name!r} is already registered")
    CHANNELS.append(channel)
