"""Fixtures for the auth tests (tokens, refresh rotation, lockout, API clients)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.factories import World, build_world


@pytest.fixture
async def world(session: Any) -> World:
    return await build_world(session)


@pytest.fixture
async def client2(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A second client, for two callers acting at once."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c
