"""The XLSX side: the template, importing a workbook (raw or multipart, typed as people type in Excel),
and the exports, which re-import as they are."""

from __future__ import annotations

import io
from datetime import date, datetime
from typing import Any

from openpyxl import Workbook, load_workbook
from sqlalchemy import select

from gongjian.lists.imports.format import SECTIONS
from gongjian.lists.imports.workbook import XLSX_MEDIA_TYPE, read_workbook
from gongjian.lists.models import Need, Resource
from gongjian.matching.text import index_tokens
from gongjian.organizations.models import OrgKind, OrgLevel
from tests.factories import make_org
from tests.lists_imports.conftest import counts, do_import, finish, sample, small, workbook


async def _street(session: Any, w: Any, name: str) -> Any:
    street = await make_org(session, w.orgs["county"], OrgKind.working_committee, name, OrgLevel.street)
    await session.commit()
    return street.id


async def test_template_has_the_sections_columns_and_notes(client, w):
    r = await client.get("/api/v1/lists/imports/template.xlsx", headers=w.h("street"))
    assert r.status_code == 200
    assert r.headers["content-type"] == XLSX_MEDIA_TYPE
    assert "attachment" in r.headers["content-disposition"]
    wb = load_workbook(io.BytesIO(r.content))
    assert wb.sheetnames == ["communities", "grids", "resources", "needs", "填写说明"]
    for name, columns in SECTIONS.items():
        rows = list(wb[name].iter_rows(values_only=True))
        assert rows == [tuple(c.key for c in columns)]  # the header only
    header = [c.key for c in SECTIONS["resources"]]
    assert header[:3] == ["ref", "provider.name", "provider.kind"]
    assert {"available.from", "available.to", "available.weekdays", "location.lat", "location.lng"} <= set(
        header
    )
    notes = [row for row in wb["填写说明"].iter_rows(values_only=True)]
    assert any("必填" in str(v) for row in notes for v in row)
    assert any(row[1] == "available.weekdays" and "周一" in row[3] for row in notes)
    # Only who may import gets it.
    assert (
        await client.get("/api/v1/lists/imports/template.xlsx", headers=w.h("gridworker"))
    ).status_code == 403
    assert (await client.get("/api/v1/lists/imports/template.xlsx")).status_code == 401


async def test_the_filled_in_template_imports(client, session, w, run_jobs):
    template = (await client.get("/api/v1/lists/imports/template.xlsx", headers=w.h("street"))).content
    wb = load_workbook(io.BytesIO(template))
    doc = small()
    wb["communities"].append(["C1", "书院社区", "城中街道", 25.421, 103.178])
    for g in doc["grids"]:
        wb["grids"].append([g["ref"], "C1", g["name"], g["center"]["lat"], g["center"]["lng"]])
    n = doc["needs"][0]
    # As typed in Excel: the dates as date cells, the count as text.
    wb["needs"].append(
        [
            n["ref"],
            "C1",
            n["grid_ref"],
            n["category"],
            n["title"],
            n["description"],
            str(n["beneficiaries"]),
            n["urgency"],
            date(2026, 3, 1),
            datetime(2026, 12, 31),
            n["location"]["lat"],
            n["location"]["lng"],
        ]
    )
    r = doc["resources"][0]
    # The weekdays as text with Chinese separators, the quantity as a float cell, no radius.
    wb["resources"].append(
        [
            r["ref"],
            r["provider"]["name"],
            r["provider"]["kind"],
            "C1",
            r["grid_ref"],
            r["category"],
            r["title"],
            r["description"],
            12.0,
            r["unit"],
            "2026-01-01",
            "2026-12-31",
            "2、4，6",
            25.42,
            103.18,
            None,
        ]
    )
    out = io.BytesIO()
    wb.save(out)
    imp = await do_import(
        client, run_jobs, w.h("street"), w.orgs["street_a"].id, out.getvalue(), xlsx=True, create_missing=True
    )
    assert imp["status"] == "completed", imp["errors"]
    assert imp["format"] == "xlsx"
    assert imp["counts"]["needs"]["created"] == 1 and imp["counts"]["resources"]["created"] == 1
    need = (await session.execute(select(Need))).scalar_one()
    assert (need.beneficiaries, need.wanted_from, need.wanted_to) == (
        24,
        date(2026, 3, 1),
        date(2026, 12, 31),
    )
    resource = (await session.execute(select(Resource))).scalar_one()
    assert (resource.quantity, resource.weekdays, resource.serves_radius_km) == (12, [2, 4, 6], None)


async def test_a_workbook_imports_as_the_json_does(client, session, w, run_jobs):
    imp = await do_import(
        client,
        run_jobs,
        w.h("admin"),
        await _street(session, w, "东城街道党工委"),
        sample(),
        xlsx=True,
        create_missing=True,
    )
    assert imp["status"] == "completed", imp["errors"]
    assert imp["progress"] == {"done": 118, "total": 118}
    assert [imp["counts"][s]["created"] for s in SECTIONS] == [4, 14, 60, 40]
    stored = {r.external_ref: r for r in (await session.execute(select(Resource))).scalars()}
    for src in sample()["resources"]:
        res = stored[src["ref"]]
        assert (res.title, res.quantity, res.weekdays, res.serves_radius_km) == (
            src["title"],
            src["quantity"],
            src["available"]["weekdays"],
            src["serves_radius_km"],
        )


async def test_multipart_upload_of_either_form(client, session, w, run_jobs):
    for name, content, kind in (
        ("清单.xlsx", workbook(small()), XLSX_MEDIA_TYPE),
        ("lists.json", json_bytes(small()), "application/json"),
    ):
        r = await client.post(
            "/api/v1/lists/imports",
            params={"parent_org_id": str(w.orgs["street_a"].id), "create_missing": "true"},
            files={"file": (name, content, kind)},
            headers=w.h("street"),
        )
        imp = await finish(client, run_jobs, w.h("street"), r)
        assert imp["status"] == "completed", imp["errors"]
        assert imp["filename"] == name
    assert (await counts(session))["resources"] == 2
    # A form without the file part is refused.
    r = await client.post(
        "/api/v1/lists/imports",
        params={"parent_org_id": str(w.orgs["street_a"].id)},
        data={"other": "x"},
        files={"attachment": ("a.txt", b"x", "text/plain")},
        headers=w.h("street"),
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_import_file"


def json_bytes(doc: dict[str, Any]) -> bytes:
    import json

    return json.dumps(doc, ensure_ascii=False).encode()


async def test_workbook_errors_name_the_sheet_row(client, session, w, run_jobs):
    wb = Workbook()
    wb.remove(wb.active)
    doc = small()
    for name, columns in SECTIONS.items():
        ws = wb.create_sheet({"needs": "需求清单"}.get(name, name))  # a sheet may carry its Chinese name
        ws.append([c.key for c in columns])
        for i, row in enumerate(doc[name]):
            if name == "needs" and i == 1:
                ws.append([])  # a blank line between rows is skipped
                row = {**row, "urgency": "very"}
            ws.append([_cell(row, c.key) for c in columns])
    out = io.BytesIO()
    wb.save(out)
    imp = await do_import(
        client, run_jobs, w.h("street"), w.orgs["street_a"].id, out.getvalue(), xlsx=True, create_missing=True
    )
    assert imp["status"] == "failed"
    assert [(e["section"], e["index"], e["row"], e["ref"], e["field"]) for e in imp["errors"]] == [
        ("needs", 1, 4, "N002", "urgency")
    ]


def _cell(row: dict[str, Any], key: str) -> Any:
    value: Any = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return ",".join(map(str, value)) if isinstance(value, list) else value


async def test_export_reimports_as_it_is(client, session, w, run_jobs):
    street = await _street(session, w, "东城街道党工委")
    await do_import(client, run_jobs, w.h("admin"), street, sample(), create_missing=True)
    before = await counts(session)
    exported = {}
    for section in ("resources", "needs"):
        r = await client.get(
            f"/api/v1/{section}/export.xlsx", params={"org_id": str(street)}, headers=w.h("admin")
        )
        assert r.status_code == 200 and r.headers["content-type"] == XLSX_MEDIA_TYPE
        assert ".xlsx" in r.headers["content-disposition"]
        exported[section] = r.content
        sheets = read_workbook(r.content)
        assert sheets[section].columns == [c.key for c in SECTIONS[section]]
        assert len(sheets[section].rows) == {"resources": 60, "needs": 40}[section]
        assert len(sheets["communities"].rows) == 4

        # Into the same street: everything is already there, exactly.
        again = await do_import(client, run_jobs, w.h("admin"), street, r.content, xlsx=True)
        assert again["status"] == "completed", again["errors"]
        assert again["counts"][section] == {
            "created": 0,
            "updated": 0,
            "unchanged": len(sheets[section].rows),
            "skipped": 0,
        }
        assert again["counts"]["communities"]["unchanged"] == 4
    assert await counts(session) == before

    # Into another street: the same lists again, field for field.
    other = await _street(session, w, "西城街道党工委")
    for section, model in (("resources", Resource), ("needs", Need)):
        imp = await do_import(
            client, run_jobs, w.h("admin"), other, exported[section], xlsx=True, create_missing=True
        )
        assert imp["status"] == "completed", imp["errors"]
        assert imp["counts"][section]["created"] == {"resources": 60, "needs": 40}[section]
        rows = list((await session.execute(select(model))).scalars())
        by_ref: dict[str, list[Any]] = {}
        for row in rows:
            by_ref.setdefault(row.external_ref, []).append(row)
        fields = (
            [
                "title",
                "description",
                "category",
                "quantity",
                "quantity_unit",
                "available_from",
                "available_to",
                "weekdays",
                "lat",
                "lng",
                "serves_radius_km",
                "provider_name",
                "provider_kind",
            ]
            if model is Resource
            else [
                "title",
                "description",
                "category",
                "beneficiaries",
                "urgency",
                "wanted_from",
                "wanted_to",
                "lat",
                "lng",
            ]
        )
        for ref, pair in by_ref.items():
            assert len(pair) == 2, ref
            assert [getattr(pair[0], f) for f in fields] == [getattr(pair[1], f) for f in fields], ref
            assert (pair[0].grid_id is None) == (pair[1].grid_id is None)


async def test_rows_without_external_ref_export_by_id_and_update_on_reimport(client, session, w, run_jobs):
    a1 = w.orgs["a1"]
    resource = Resource(
        org_id=a1.id,
        unit_id=w.units["a1"].id,  # published by its liaison, under another provider name: kept
        provider_kind="organization",
        provider_name="东湖社区党委",
        category="venue",
        title="=社区活动室",
        description="+可容纳30人",
        quantity=4,
        quantity_unit="次",
        remaining_quantity=4,
        available_from=date(2026, 1, 1),
        available_to=date(2026, 12, 31),
        year=2026,
        lat=25.4,
        lng=103.2,
        search_tokens=index_tokens("=社区活动室", "+可容纳30人"),
    )
    session.add(resource)
    await session.commit()
    r = await client.get("/api/v1/resources/export.xlsx", headers=w.h("secretary"))
    assert r.status_code == 200
    sheets = read_workbook(r.content)
    row = sheets["resources"].rows[0][1]
    assert row["ref"] == str(resource.id) and row["title"] == "=社区活动室"  # text, not a formula
    assert sheets["communities"].rows[0][1]["name"] == a1.name
    imp = await do_import(client, run_jobs, w.h("secretary"), a1.id, r.content, xlsx=True)
    assert imp["status"] == "completed", imp["errors"]
    assert imp["counts"]["resources"] == {"created": 0, "updated": 0, "unchanged": 1, "skipped": 0}


async def test_export_shows_only_what_the_caller_may_see(client, session, w, run_jobs):
    await do_import(client, run_jobs, w.h("admin"), w.orgs["street_a"].id, sample(), create_missing=True)
    doc = small()
    doc["communities"][0]["name"] = "北门社区党委"  # b1, in the other street
    other = await do_import(client, run_jobs, w.h("admin"), w.orgs["street_b"].id, doc, create_missing=True)
    assert other["counts"]["communities"]["unchanged"] == 1
    all_needs = len(
        read_workbook((await client.get("/api/v1/needs/export.xlsx", headers=w.h("admin"))).content)[
            "needs"
        ].rows
    )
    assert all_needs == 42

    r = await client.get("/api/v1/needs/export.xlsx", headers=w.h("secretary"))
    assert r.status_code == 200
    mine = read_workbook(r.content)
    a1_needs = sum(1 for n in sample()["needs"] if n["community_ref"] == "C4")
    assert len(mine["needs"].rows) == a1_needs
    assert {row["name"] for _, row in mine["communities"].rows} == {w.orgs["a1"].name}
    # Another street's community: as if it did not exist.
    r = await client.get(
        "/api/v1/needs/export.xlsx", params={"org_id": str(w.orgs["b1"].id)}, headers=w.h("secretary")
    )
    assert r.status_code == 404
    r = await client.get(
        "/api/v1/resources/export.xlsx", params={"org_id": str(w.orgs["b1"].id)}, headers=w.h("secretary2")
    )
    assert r.status_code == 200 and len(read_workbook(r.content)["resources"].rows) == 2
    assert (await client.get("/api/v1/needs/export.xlsx", headers=w.h("gridworker"))).status_code == 200
    assert (await client.get("/api/v1/needs/export.xlsx", headers=w.h("resident"))).status_code == 403
