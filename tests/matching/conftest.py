"""Lists for the matching tests: the public labeled file, loaded straight into the database."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.lists.models import Need, NeedSource, Resource
from gongjian.matching.text import index_tokens
from tests.factories import World, build_world

HERE = Path(__file__).resolve().parent / "data"
# The shared design folder's copy when it sits beside the checkout, else the one kept here.
_SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "matching" / "public.json"
SHARED = _SHARED if _SHARED.exists() else HERE / "public.json"


def public_data() -> dict[str, Any]:
    return json.loads(SHARED.read_text(encoding="utf-8"))


def resource_row(item: dict[str, Any], org_id: Any) -> Resource:
    return Resource(
        org_id=org_id,
        provider_kind=item["provider"]["kind"],
        provider_name=item["provider"]["name"],
        category=item["category"],
        title=item["title"],
        description=item["description"],
        quantity=item["quantity"],
        quantity_unit=item["unit"],
        remaining_quantity=item["quantity"],
        available_from=date.fromisoformat(item["available"]["from"]),
        available_to=date.fromisoformat(item["available"]["to"]),
        weekdays=item["available"].get("weekdays") or [1, 2, 3, 4, 5, 6, 7],
        lat=item["location"]["lat"],
        lng=item["location"]["lng"],
        serves_radius_km=item["serves_radius_km"],
        year=int(item["available"]["from"][:4]),
        external_ref=item["ref"],
        search_tokens=index_tokens(item["title"], item["description"]),
    )


def need_row(item: dict[str, Any], org_id: Any) -> Need:
    return Need(
        org_id=org_id,
        category=item["category"],
        title=item["title"],
        description=item["description"],
        beneficiaries=item["beneficiaries"],
        urgency=item["urgency"],
        wanted_from=date.fromisoformat(item["wanted"]["from"]),
        wanted_to=date.fromisoformat(item["wanted"]["to"]),
        lat=item["location"]["lat"],
        lng=item["location"]["lng"],
        source=NeedSource.import_,
        year=int(item["wanted"]["from"][:4]),
        external_ref=item["ref"],
        search_tokens=index_tokens(item["title"], item["description"]),
    )


async def load_public(session: AsyncSession, w: World) -> tuple[dict[str, Resource], dict[str, Need]]:
    """The public file's four communities folded into street A's two (a1, a2): one pool."""
    data = public_data()
    home = {"C1": w.orgs["a1"].id, "C2": w.orgs["a2"].id, "C3": w.orgs["a1"].id, "C4": w.orgs["a2"].id}
    resources = {r["ref"]: resource_row(r, home[r["community_ref"]]) for r in data["resources"]}
    needs = {n["ref"]: need_row(n, home[n["community_ref"]]) for n in data["needs"]}
    session.add_all([*resources.values(), *needs.values()])
    await session.commit()
    return resources, needs


@pytest.fixture
async def w(session: AsyncSession) -> World:
    return await build_world(session)
