"""Importing the lists: the public file end to end, re-imports that update, matching existing
communities and units, progress, size, and two imports at once."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from types import SimpleNamespace
from typing import Any

from shapely.geometry import shape
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import undefer

from gongjian.core.access import Perm
from gongjian.grids.models import GridCell
from gongjian.lists.imports.format import parse_json
from gongjian.lists.imports.models import ListImport
from gongjian.lists.imports.service import GRID_HALF_SIDE, Importer, run_import
from gongjian.lists.models import Need, Resource
from gongjian.matching.text import index_tokens
from gongjian.organizations.models import Organization, OrgKind, OrgLevel
from tests.factories import SYSTEM, make_org
from tests.lists_imports.conftest import (
    PUBLIC,
    counts,
    do_import,
    finish,
    post_import,
    sample,
    small,
)


async def _new_street(session: Any, w: Any, name: str = "东城街道党工委") -> Any:
    """A new, empty street (its id and path: tests expire the session's objects)."""
    street = await make_org(session, w.orgs["county"], OrgKind.working_committee, name, OrgLevel.street)
    await session.commit()
    return SimpleNamespace(id=street.id, path=street.path, depth=street.depth, org=street)


async def test_public_file_imports_into_a_new_street(client, session, w, run_jobs):
    street = await _new_street(session, w)
    body = PUBLIC.read_bytes()
    assert "gold" in json.loads(body)  # the evaluation labels are in the file, and ignored
    r = await post_import(client, w.h("admin"), street.id, body, create_missing=True)
    assert r.status_code == 202 and r.headers["location"] == f"/api/v1/lists/imports/{r.json()['id']}"
    imp = await finish(client, run_jobs, w.h("admin"), r)

    assert imp["status"] == "completed", imp["errors"]
    assert imp["errors"] == [] and imp["error_count"] == 0
    assert imp["progress"] == {"done": 118, "total": 118}
    assert imp["counts"] == {
        "communities": {"created": 4, "updated": 0, "unchanged": 0, "skipped": 0},
        "grids": {"created": 14, "updated": 0, "unchanged": 0, "skipped": 0},
        "resources": {"created": 60, "updated": 0, "unchanged": 0, "skipped": 0},
        "needs": {"created": 40, "updated": 0, "unchanged": 0, "skipped": 0},
    }
    assert imp["parent_org_id"] == str(street.id) and imp["format"] == "json" and imp["created_by"] == "admin"

    # Communities: created under the street, at community level, on the street's path.
    communities = list(
        (await session.execute(select(Organization).where(Organization.parent_id == street.id))).scalars()
    )
    assert sorted(c.name for c in communities) == ["东湖社区", "书院社区", "北门社区", "桃源社区"]
    for c in communities:
        assert c.level == OrgLevel.community and c.kind == OrgKind.committee
        assert c.path == f"{street.path}{c.seq}/" and c.depth == street.depth + 1
    by_ref = {c.external_ref: c for c in communities}

    # Grid cells: a square of ±0.002° around each center, in its community, keeping the ref.
    doc = json.loads(body)
    cells = {c.external_ref: c for c in (await session.execute(select(GridCell))).scalars()}
    assert set(cells) == {g["ref"] for g in doc["grids"]}
    for g in doc["grids"]:
        cell = cells[g["ref"]]
        assert cell.community_id == by_ref[g["community_ref"]].id and cell.name == g["name"]
        centroid = shape(cell.boundary).centroid
        assert abs(centroid.y - g["center"]["lat"]) < 1e-9 and abs(centroid.x - g["center"]["lng"]) < 1e-9
        assert abs(cell.max_lat - cell.min_lat - 2 * GRID_HALF_SIDE) < 1e-9

    # Resources and needs: every field, external_ref kept, search tokens filled.
    resources = {r.external_ref: r for r in (await session.execute(select(Resource))).scalars()}
    assert set(resources) == {r["ref"] for r in doc["resources"]}
    for src in doc["resources"]:
        res = resources[src["ref"]]
        assert res.org_id == by_ref[src["community_ref"]].id
        assert (res.grid_id == cells[src["grid_ref"]].id) if src.get("grid_ref") else res.grid_id is None
        assert (res.provider_name, res.provider_kind) == (src["provider"]["name"], src["provider"]["kind"])
        assert res.unit_id is None  # no resident unit of that name in the community
        assert (res.category, res.title, res.description) == (
            src["category"],
            src["title"],
            src["description"],
        )
        assert res.quantity == res.remaining_quantity == src["quantity"] and res.quantity_unit == src["unit"]
        assert str(res.available_from) == src["available"]["from"]
        assert str(res.available_to) == src["available"]["to"]
        assert res.weekdays == src["available"]["weekdays"] and res.year == 2026
        assert (res.lat, res.lng) == (src["location"]["lat"], src["location"]["lng"])
        assert res.serves_radius_km == src["serves_radius_km"] and res.state == "available"
        assert res.search_tokens == index_tokens(src["title"], src["description"])
    needs = {n.external_ref: n for n in (await session.execute(select(Need))).scalars()}
    assert set(needs) == {n["ref"] for n in doc["needs"]}
    for src in doc["needs"]:
        need = needs[src["ref"]]
        assert need.org_id == by_ref[src["community_ref"]].id and need.grid_id == cells[src["grid_ref"]].id
        assert (need.title, need.beneficiaries, need.urgency) == (
            src["title"],
            src["beneficiaries"],
            src["urgency"],
        )
        assert (str(need.wanted_from), str(need.wanted_to)) == (src["wanted"]["from"], src["wanted"]["to"])
        assert (need.source, need.state, need.year) == ("import", "collected", 2026)
        assert need.raised_by == w.users["admin"].id and need.search_tokens

    # The lists API shows them under the street, with their external_ref.
    listed: list[str] = []
    cursor = None
    while True:
        params = {"org_id": str(street.id), "limit": 100, **({"cursor": cursor} if cursor else {})}
        page = await client.get("/api/v1/needs", params=params, headers=w.h("admin"))
        assert page.status_code == 200, page.text
        listed += [n["external_ref"] for n in page.json()["items"]]
        if not (cursor := page.json()["next_cursor"]):
            break
    assert sorted(listed) == sorted(needs)


async def test_reimport_updates_and_never_duplicates(client, session, w, run_jobs):
    street = await _new_street(session, w)
    first = await do_import(client, run_jobs, w.h("admin"), street.id, sample(), create_missing=True)
    assert first["status"] == "completed"
    before = await counts(session)

    again = await do_import(client, run_jobs, w.h("admin"), street.id, sample(), create_missing=True)
    assert again["status"] == "completed"
    assert again["counts"]["communities"] == {"created": 0, "updated": 0, "unchanged": 4, "skipped": 0}
    assert again["counts"]["grids"] == {"created": 0, "updated": 0, "unchanged": 14, "skipped": 0}
    assert again["counts"]["resources"] == {"created": 0, "updated": 0, "unchanged": 60, "skipped": 0}
    assert again["counts"]["needs"] == {"created": 0, "updated": 0, "unchanged": 40, "skipped": 0}
    assert await counts(session) == before

    # Two of R001 are committed to a project meanwhile; a need moves on in its workflow.
    r001_id = (await session.execute(select(Resource.id).where(Resource.external_ref == "R001"))).scalar_one()
    await session.execute(update(Resource).where(Resource.id == r001_id).values(remaining_quantity=10))
    await session.execute(update(Need).where(Need.external_ref == "N001").values(state="accepted"))
    await session.commit()
    version = (await session.execute(select(Resource.version).where(Resource.id == r001_id))).scalar_one()

    doc = sample()
    r = next(x for x in doc["resources"] if x["ref"] == "R001")
    r["title"], r["quantity"] = "专家团队下社区义诊（扩大）", 20
    n = next(x for x in doc["needs"] if x["ref"] == "N001")
    n["urgency"], n["beneficiaries"] = "urgent", 30
    changed = await do_import(client, run_jobs, w.h("admin"), street.id, doc, create_missing=True)
    assert changed["status"] == "completed"
    assert changed["counts"]["resources"] == {"created": 0, "updated": 1, "unchanged": 59, "skipped": 0}
    assert changed["counts"]["needs"] == {"created": 0, "updated": 1, "unchanged": 39, "skipped": 0}
    assert await counts(session) == before
    session.expire_all()
    row = (await session.execute(select(Resource).where(Resource.id == r001_id))).scalar_one()
    assert (row.title, row.quantity, row.remaining_quantity) == ("专家团队下社区义诊（扩大）", 20, 18)
    assert row.state == "partly_committed" and row.version == version + 1
    assert row.search_tokens == index_tokens(row.title, row.description)
    need = (await session.execute(select(Need).where(Need.external_ref == "N001"))).scalar_one()
    assert (need.urgency, need.beneficiaries, need.state) == ("urgent", 30, "accepted")  # state kept

    # The quantity cannot go below what is committed: a row error, nothing written.
    r["quantity"] = 1
    refused = await do_import(client, run_jobs, w.h("admin"), street.id, doc)
    assert refused["status"] == "failed"
    assert {(e["ref"], e["field"], e["code"]) for e in refused["errors"]} == {
        ("R001", "quantity", "quantity_below_committed")
    }
    session.expire_all()
    assert (await session.get_one(Resource, r001_id)).quantity == 20


async def test_existing_communities_are_matched_by_name_and_units_linked(client, session, w, run_jobs):
    # Under 城中街道 (street_a): 东湖社区党委 and 桃源社区党委 are the file's 东湖社区 and 桃源社区;
    # 北门社区党委 is in the other street, so the file's 北门社区 is created here.
    doc = sample()
    r = next(x for x in doc["resources"] if x["community_ref"] == "C4")
    r["provider"]["name"] = "东湖供电所"  # a resident unit of 东湖 (tests/factories.py)
    imp = await do_import(client, run_jobs, w.h("street"), w.orgs["street_a"].id, doc, create_missing=True)
    assert imp["status"] == "completed", imp["errors"]
    assert imp["counts"]["communities"] == {"created": 2, "updated": 0, "unchanged": 2, "skipped": 0}
    needs_a1 = (
        await session.execute(select(func.count()).select_from(Need).where(Need.org_id == w.orgs["a1"].id))
    ).scalar_one()
    assert needs_a1 == sum(1 for n in doc["needs"] if n["community_ref"] == "C4")
    linked = (await session.execute(select(Resource).where(Resource.external_ref == r["ref"]))).scalar_one()
    assert linked.org_id == w.orgs["a1"].id and linked.unit_id == w.units["a1"].id
    created = (
        (
            await session.execute(
                select(Organization.name).where(
                    Organization.parent_id == w.orgs["street_a"].id, Organization.external_ref.is_not(None)
                )
            )
        )
        .scalars()
        .all()
    )
    assert sorted(created) == ["书院社区", "北门社区"]


async def test_import_under_a_community_itself(client, session, w, run_jobs):
    doc = small()
    doc["communities"][0]["name"] = "东湖社区"  # the parent, 东湖社区党委
    imp = await do_import(client, run_jobs, w.h("secretary"), w.orgs["a1"].id, doc, create_missing=True)
    assert imp["status"] == "completed", imp["errors"]
    assert imp["counts"]["communities"]["unchanged"] == 1
    assert imp["counts"]["grids"]["created"] == 4
    org_ids = set((await session.execute(select(Resource.org_id))).scalars())
    assert org_ids == {w.orgs["a1"].id}

    # Another community cannot be created under a community: a row error.
    doc = small()
    refused = await do_import(client, run_jobs, w.h("secretary"), w.orgs["a1"].id, doc, create_missing=True)
    assert refused["status"] == "failed"
    assert ("communities", "C1", "name", "community_parent_invalid") in {
        (e["section"], e["ref"], e["field"], e["code"]) for e in refused["errors"]
    }


async def test_rows_may_name_existing_communities_and_grids_without_listing_them(
    client, session, w, run_jobs
):
    street = await _new_street(session, w)
    await do_import(client, run_jobs, w.h("admin"), street.id, small(), create_missing=True)
    # A later file of needs only: its community_ref and grid_ref name what the first import made.
    need = dict(small()["needs"][0], ref="N900")
    imp = await do_import(
        client,
        run_jobs,
        w.h("admin"),
        street.id,
        {"communities": [], "grids": [], "resources": [], "needs": [need]},
    )
    assert imp["status"] == "completed", imp["errors"]
    assert imp["counts"]["needs"]["created"] == 1


async def test_progress_is_reported_in_batches(session, w):
    street = await _new_street(session, w)
    doc = sample()
    base = doc["needs"][0]
    doc["needs"] = [dict(base, ref=f"N{i:04d}") for i in range(1200)]
    seen: list[int] = []

    async def progress(done: int) -> None:
        seen.append(done)

    importer = Importer(session, SYSTEM, street.org, create_missing=True, partial=False, progress=progress)
    report = await importer.run(parse_json(json.dumps(doc).encode()))
    assert not report.failed
    total = 4 + 14 + 60 + 1200
    assert seen == sorted(seen) and seen[-1] == total and len(seen) >= 5
    await session.rollback()


async def test_two_thousand_rows_import_in_seconds(client, session, w, run_jobs):
    street = await _new_street(session, w)
    doc = sample()
    doc["resources"] = [dict(r, ref=f"{r['ref']}-{k}") for k in range(17) for r in sample()["resources"]]
    doc["needs"] = [dict(n, ref=f"{n['ref']}-{k}") for k in range(25) for n in sample()["needs"]]
    assert len(doc["resources"]) + len(doc["needs"]) == 2020
    started = time.monotonic()
    imp = await do_import(client, run_jobs, w.h("admin"), street.id, doc, create_missing=True)
    elapsed = time.monotonic() - started
    assert imp["status"] == "completed" and imp["counts"]["resources"]["created"] == 1020
    assert elapsed < 30, f"{elapsed:.1f} s"
    started = time.monotonic()
    again = await do_import(client, run_jobs, w.h("admin"), street.id, doc, create_missing=True)
    assert again["counts"]["needs"]["unchanged"] == 1000 and time.monotonic() - started < 30


async def test_two_imports_of_one_file_at_once_make_one_set(client, session, w, run_jobs):
    street = await _new_street(session, w)
    posted = await asyncio.gather(
        *(post_import(client, w.h("admin"), street.id, sample(), create_missing=True) for _ in range(2))
    )
    assert [r.status_code for r in posted] == [202, 202]
    await run_jobs(workers=2)
    results = []
    for r in posted:
        got = await client.get(f"/api/v1/lists/imports/{r.json()['id']}", headers=w.h("admin"))
        results.append(got.json())
    assert [x["status"] for x in results] == ["completed", "completed"]
    assert sorted(x["counts"]["communities"]["created"] for x in results) == [0, 4]
    assert sorted(x["counts"]["resources"]["created"] for x in results) == [0, 60]
    c = await counts(session)
    assert (c["cells"], c["resources"], c["needs"]) == (14, 60, 40)


async def test_the_import_is_stored_and_acts_with_the_uploaders_rights(client, session, w, run_jobs):
    r = await post_import(client, w.h("street"), w.orgs["street_a"].id, small(), create_missing=True)
    import_id = uuid.UUID(r.json()["id"])
    imp = await session.get_one(ListImport, import_id, options=[undefer(ListImport.payload)])
    assert imp.actor_name == "street" and imp.actor_kind == "user"
    assert set(imp.perms) >= {Perm.lists_write, Perm.organizations_write, Perm.grids_write}
    assert json.loads(imp.payload)["communities"][0]["ref"] == "C1"
    # A job delivered twice runs once.
    await run_jobs()
    await run_import(import_id)
    session.expire_all()
    assert (await session.get_one(ListImport, import_id)).status == "completed"
    assert (await counts(session))["resources"] == 2


async def test_a_run_in_progress_is_not_doubled_and_a_crashed_one_is_rerun(client, session, w):
    from gongjian.core import db
    from gongjian.lists.imports.service import _IMPORT_LOCK_KEY

    r = await post_import(client, w.h("street"), w.orgs["street_a"].id, small(), create_missing=True)
    import_id = uuid.UUID(r.json()["id"])
    key = int.from_bytes(import_id.bytes[:4], "big", signed=True)
    # Another worker is running it (its transaction holds the import's lock): this delivery does nothing.
    async with db.sessionmaker()() as other, other.begin():
        await other.execute(
            text("SELECT pg_advisory_xact_lock(:ns, :key)"), {"ns": _IMPORT_LOCK_KEY, "key": key}
        )
        await run_import(import_id)
        assert (await session.get_one(ListImport, import_id)).status == "queued"
    # A worker died mid-run: the row says running, but nobody holds the lock any more.
    await session.execute(update(ListImport).where(ListImport.id == import_id).values(status="running"))
    await session.commit()
    await run_import(import_id)
    session.expire_all()
    assert (await session.get_one(ListImport, import_id)).status == "completed"
    assert (await counts(session))["resources"] == 2


async def test_a_retried_upload_with_its_idempotency_key_makes_one_import(client, session, w):
    headers = w.h("street", **{"Idempotency-Key": "upload-1"})
    first = await post_import(client, headers, w.orgs["street_a"].id, small(), create_missing=True)
    again = await post_import(client, headers, w.orgs["street_a"].id, small(), create_missing=True)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert (await session.execute(select(func.count()).select_from(ListImport))).scalar_one() == 1
