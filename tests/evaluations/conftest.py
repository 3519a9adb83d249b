from __future__ import annotations

from typing import Any

import pytest

from tests.factories import World, build_world


@pytest.fixture
async def world(session: Any) -> World:
    return await build_world(session)
