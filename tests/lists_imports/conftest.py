"""Helpers for the import tests: the sample lists, and an import run through the API to its end."""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.grids.models import GridCell
from gongjian.lists.imports.format import SECTIONS, flatten
from gongjian.lists.imports.workbook import XLSX_MEDIA_TYPE, Sheet, write_workbook
from gongjian.lists.models import Need, Resource
from gongjian.organizations.models import Organization
from tests.factories import World, build_world
from tests.matching.conftest import SHARED

ROOT = Path(__file__).resolve().parents[2]
# The canonical file, with its evaluation labels (`gold`), and the demo's copy without them.
PUBLIC = SHARED  # the shared design folder's copy when beside the checkout, else the one kept in tests
SAMPLE = ROOT / "backend" / "gongjian" / "demo" / "lists.json"
_SAMPLE = json.loads(SAMPLE.read_text(encoding="utf-8"))

RunJobs = Callable[..., Awaitable[None]]


def sample() -> dict[str, Any]:
    """A fresh copy of the sample lists (4 communities, 14 grids, 60 resources, 40 needs)."""
    return copy.deepcopy(_SAMPLE)


def small() -> dict[str, Any]:
    """One community of the sample (C1 书院社区) with its grids, 2 resources and 2 needs."""
    doc = sample()
    return {
        "communities": [c for c in doc["communities"] if c["ref"] == "C1"],
        "grids": [g for g in doc["grids"] if g["community_ref"] == "C1"],
        "resources": [r for r in doc["resources"] if r["community_ref"] == "C1"][:2],
        "needs": [n for n in doc["needs"] if n["community_ref"] == "C1"][:2],
    }


def workbook(doc: dict[str, Any]) -> bytes:
    """The document as the XLSX template holds it."""
    return write_workbook(
        [
            Sheet(name, [c.key for c in cols], [flatten(r, name) for r in doc.get(name, [])])
            for name, cols in SECTIONS.items()
        ]
    )


@pytest.fixture
async def w(session: AsyncSession) -> World:
    return await build_world(session)


async def post_import(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    parent_id: Any,
    doc: dict[str, Any] | bytes,
    *,
    xlsx: bool = False,
    **params: Any,
) -> httpx.Response:
    query = {"parent_org_id": str(parent_id), **{k: str(v).lower() for k, v in params.items()}}
    if isinstance(doc, dict):
        body = workbook(doc) if xlsx else json.dumps(doc, ensure_ascii=False).encode()
    else:
        body = doc
    content_type = XLSX_MEDIA_TYPE if xlsx else "application/json"
    return await client.post(
        "/api/v1/lists/imports",
        params=query,
        content=body,
        headers={**headers, "Content-Type": content_type},
    )


async def finish(
    client: httpx.AsyncClient,
    run_jobs: RunJobs,
    headers: dict[str, str],
    r: httpx.Response,
) -> dict[str, Any]:
    """Run the queued import's job and answer the import as the API then shows it."""
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued"
    await run_jobs()
    got = await client.get(f"/api/v1/lists/imports/{r.json()['id']}", headers=headers)
    assert got.status_code == 200, got.text
    assert got.json()["status"] in ("completed", "failed")
    return dict(got.json())


async def do_import(
    client: httpx.AsyncClient,
    run_jobs: RunJobs,
    headers: dict[str, str],
    parent_id: Any,
    doc: dict[str, Any] | bytes,
    **params: Any,
) -> dict[str, Any]:
    return await finish(
        client, run_jobs, headers, await post_import(client, headers, parent_id, doc, **params)
    )


async def counts(session: AsyncSession) -> dict[str, int]:
    """How many of each thing an import writes are stored (to show a refused one wrote nothing)."""
    out = {}
    for name, model in (
        ("orgs", Organization),
        ("cells", GridCell),
        ("resources", Resource),
        ("needs", Need),
    ):
        out[name] = (await session.execute(select(func.count()).select_from(model))).scalar_one()
    return out


def errors_of(imp: dict[str, Any]) -> set[tuple[str, str | None, str | None, str]]:
    """(section, ref, field, code) of each row error."""
    return {(e["section"], e["ref"], e["field"], e["code"]) for e in imp["errors"]}
