"""Fixtures for the notification inbox tests."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from gongjian.notifications import service
from tests.factories import World, build_world


@pytest.fixture
async def world(session: Any) -> World:
    return await build_world(session)


async def send(session: Any, user_ids: list[uuid.UUID], **fields: Any) -> list[Any]:
    """`notify`, committed, as a job would leave it."""
    fields.setdefault("kind", "test.hello")
    fields.setdefault("title", "您有一条新通知")
    fields.setdefault("body", "请及时处理。")
    created = await service.notify(session, user_ids, **fields)
    await session.commit()
    return created
