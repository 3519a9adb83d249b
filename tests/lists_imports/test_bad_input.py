"""Bad input: every faulty row is reported (section, row, ref, field, code, message) and nothing at all
is written, unless `partial` asks for the valid rows; a file that cannot be read at all is refused."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from openpyxl import Workbook

from gongjian.lists.imports import service
from tests.lists_imports.conftest import counts, do_import, errors_of, post_import, small

Doc = dict[str, Any]


def _r(doc: Doc, i: int = 0) -> dict[str, Any]:
    return dict(doc["resources"][i])


def _set(section: str, i: int, path: str, value: Any) -> Callable[[Doc], None]:
    """Set (or, with value ..., delete) a dotted key of one row."""

    def change(doc: Doc) -> None:
        node = doc[section][i]
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        if value is ...:
            del node[last]
        else:
            node[last] = value

    return change


def _duplicate(doc: Doc) -> None:
    doc["needs"][1]["ref"] = doc["needs"][0]["ref"]


def _not_an_object(doc: Doc) -> None:
    doc["needs"].append(["N777", "not", "an", "object"])


def _section_not_a_list(doc: Doc) -> None:
    doc["resources"] = {"R002": doc["resources"][0]}


# (case, change to small(), an expected (section, ref, field, code))
CASES: list[tuple[str, Callable[[Doc], None], tuple[str, str | None, str | None, str]]] = [
    ("missing title", _set("resources", 0, "title", ...), ("resources", "R002", "title", "missing")),
    ("blank title", _set("needs", 0, "title", "   "), ("needs", "N001", "title", "blank")),
    (
        "quantity as text",
        _set("resources", 0, "quantity", "12"),
        ("resources", "R002", "quantity", "wrong_type"),
    ),
    (
        "fractional quantity",
        _set("resources", 0, "quantity", 1.5),
        ("resources", "R002", "quantity", "wrong_type"),
    ),
    ("title not text", _set("needs", 1, "title", 42), ("needs", "N002", "title", "wrong_type")),
    (
        "missing provider",
        _set("resources", 1, "provider", ...),
        ("resources", "R003", "provider.name", "missing"),
    ),
    ("missing ref", _set("needs", 0, "ref", ...), ("needs", None, "ref", "missing")),
    ("row not an object", _not_an_object, ("needs", None, None, "not_an_object")),
    ("section not a list", _section_not_a_list, ("resources", None, None, "not_a_list")),
    ("duplicated ref", _duplicate, ("needs", "N001", "ref", "duplicate_ref")),
    (
        "duplicated grid ref",
        lambda d: d["grids"][1].update(ref="C1-G1"),
        ("grids", "C1-G1", "ref", "duplicate_ref"),
    ),
    (
        "unknown community",
        _set("needs", 0, "community_ref", "C9"),
        ("needs", "N001", "community_ref", "unknown_community"),
    ),
    ("unknown grid", _set("needs", 1, "grid_ref", "C1-G9"), ("needs", "N002", "grid_ref", "unknown_grid")),
    (
        "grid of another community",
        lambda d: (
            d["communities"].append({"ref": "C7", "name": "新建社区"}),
            d["needs"][0].update(community_ref="C7"),
        ),
        ("needs", "N001", "grid_ref", "grid_not_in_community"),
    ),
    (
        "negative quantity",
        _set("resources", 0, "quantity", -3),
        ("resources", "R002", "quantity", "negative"),
    ),
    (
        "negative beneficiaries",
        _set("needs", 0, "beneficiaries", -1),
        ("needs", "N001", "beneficiaries", "negative"),
    ),
    (
        "negative radius",
        _set("resources", 0, "serves_radius_km", -1),
        ("resources", "R002", "serves_radius_km", "negative"),
    ),
    (
        "window ends before it starts",
        _set("resources", 1, "available.to", "2025-12-31"),
        ("resources", "R003", "available.to", "window_order"),
    ),
    (
        "wanted window ends before it starts",
        _set("needs", 0, "wanted.from", "2027-01-01"),
        ("needs", "N001", "wanted.to", "window_order"),
    ),
    (
        "not a date",
        _set("needs", 1, "wanted.to", "2026-02-30"),
        ("needs", "N002", "wanted.to", "invalid_date"),
    ),
    (
        "date of another form",
        _set("needs", 1, "wanted.to", "2026/12/31"),
        ("needs", "N002", "wanted.to", "invalid_date"),
    ),
    (
        "missing location",
        _set("resources", 0, "location", ...),
        ("resources", "R002", "location", "invalid_location"),
    ),
    ("missing lat", _set("needs", 0, "location.lat", ...), ("needs", "N001", "location", "invalid_location")),
    (
        "lat out of range",
        _set("needs", 1, "location.lat", 95.0),
        ("needs", "N002", "location", "invalid_location"),
    ),
    (
        "lng out of range",
        _set("resources", 1, "location.lng", -181),
        ("resources", "R003", "location", "invalid_location"),
    ),
    (
        "lng as text",
        _set("resources", 1, "location.lng", "103.1"),
        ("resources", "R003", "location", "invalid_location"),
    ),
    (
        "bad center",
        _set("communities", 0, "center.lat", 123),
        ("communities", "C1", "center", "invalid_location"),
    ),
    (
        "bad category",
        _set("resources", 0, "category", "money"),
        ("resources", "R002", "category", "invalid_choice"),
    ),
    ("bad urgency", _set("needs", 0, "urgency", "asap"), ("needs", "N001", "urgency", "invalid_choice")),
    (
        "bad provider kind",
        _set("resources", 1, "provider.kind", "company"),
        ("resources", "R003", "provider.kind", "invalid_choice"),
    ),
    (
        "weekday out of range",
        _set("resources", 0, "available.weekdays", [0, 8]),
        ("resources", "R002", "available.weekdays", "invalid_weekdays"),
    ),
    (
        "no weekdays",
        _set("resources", 0, "available.weekdays", []),
        ("resources", "R002", "available.weekdays", "invalid_weekdays"),
    ),
    (
        "weekdays as text",
        _set("resources", 1, "available.weekdays", "1,2"),
        ("resources", "R003", "available.weekdays", "invalid_weekdays"),
    ),
    ("title too long", _set("needs", 0, "title", "长" * 201), ("needs", "N001", "title", "too_long")),
    (
        "NUL in a text",
        _set("needs", 0, "description", "a\u0000b"),
        ("needs", "N001", "description", "invalid_characters"),
    ),
    (
        "huge quantity",
        _set("resources", 0, "quantity", 10**30),
        ("resources", "R002", "quantity", "too_large"),
    ),
]


@pytest.mark.parametrize(("case", "change", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_a_bad_row_fails_the_import_and_writes_nothing(
    client, session, w, run_jobs, case, change, expected
):
    before = await counts(session)
    doc = small()
    change(doc)
    imp = await do_import(client, run_jobs, w.h("street"), w.orgs["street_a"].id, doc, create_missing=True)
    assert imp["status"] == "failed", imp
    assert expected in errors_of(imp), imp["errors"]
    error = next(e for e in imp["errors"] if (e["section"], e["ref"], e["field"], e["code"]) == expected)
    assert error["message"]
    assert error["index"] is None or isinstance(error["index"], int)
    assert imp["counts"]["resources"]["created"] == 0 and imp["counts"]["needs"]["created"] == 0
    assert await counts(session) == before  # not even the communities and grids


async def test_every_faulty_row_is_reported_with_its_position(client, session, w, run_jobs):
    doc = small()
    doc["resources"][0]["quantity"] = -1
    doc["resources"][1]["available"]["to"] = "2020-01-01"
    doc["needs"][1]["urgency"] = "soon"
    doc["needs"][1]["location"] = {"lat": 200, "lng": 0}
    imp = await do_import(client, run_jobs, w.h("street"), w.orgs["street_a"].id, doc, create_missing=True)
    assert imp["status"] == "failed" and imp["error_count"] == 4
    where = {(e["section"], e["index"], e["row"], e["ref"], e["field"]) for e in imp["errors"]}
    assert where == {
        ("resources", 0, 1, "R002", "quantity"),
        ("resources", 1, 2, "R003", "available.to"),
        ("needs", 1, 2, "N002", "urgency"),
        ("needs", 1, 2, "N002", "location"),
    }
    messages = {e["field"]: e["message"] for e in imp["errors"]}
    assert messages["quantity"] == "不能为负数" and messages["available.to"] == "结束日期早于开始日期"
    english = await client.get(
        f"/api/v1/lists/imports/{imp['id']}", headers=w.h("street", **{"Accept-Language": "en"})
    )
    assert {e["message"] for e in english.json()["errors"]} >= {
        "must not be negative",
        "the window ends before it starts",
    }


async def test_unknown_communities_without_create_missing(client, session, w, run_jobs):
    before = await counts(session)
    imp = await do_import(client, run_jobs, w.h("street"), w.orgs["street_a"].id, small())
    assert imp["status"] == "failed"
    errors = errors_of(imp)
    assert ("communities", "C1", "name", "unknown_community") in errors
    # The rows of that community cannot land anywhere either.
    assert ("resources", "R002", "community_ref", "unknown_community") in errors
    assert ("grids", "C1-G1", "community_ref", "unknown_community") in errors
    assert await counts(session) == before


async def test_partial_imports_the_valid_rows_and_reports_the_others(client, session, w, run_jobs):
    doc = small()
    doc["resources"][0]["quantity"] = -1  # R002
    doc["needs"][1]["community_ref"] = "C9"  # N002
    doc["grids"][2]["center"] = {"lat": "north"}  # C1-G3, which R002 also names
    imp = await do_import(
        client, run_jobs, w.h("street"), w.orgs["street_a"].id, doc, create_missing=True, partial=True
    )
    assert imp["status"] == "completed"
    assert imp["counts"]["communities"]["created"] == 1
    assert imp["counts"]["grids"] == {"created": 3, "updated": 0, "unchanged": 0, "skipped": 1}
    assert imp["counts"]["resources"] == {"created": 1, "updated": 0, "unchanged": 0, "skipped": 1}
    assert imp["counts"]["needs"] == {"created": 1, "updated": 0, "unchanged": 0, "skipped": 1}
    assert errors_of(imp) == {
        ("grids", "C1-G3", "center", "invalid_location"),
        ("resources", "R002", "quantity", "negative"),
        ("needs", "N002", "community_ref", "unknown_community"),
    }
    assert imp["progress"]["done"] == imp["progress"]["total"]
    c = await counts(session)
    assert (c["resources"], c["needs"], c["cells"]) == (1, 1, 3)


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"", "application/json", "not valid JSON"),
        (b"{not json", "application/json", "not valid JSON"),
        (b"[1, 2]", "application/json", "must be an object"),
        (b'{"needs": NaN}', "application/json", "not valid JSON"),
        (b"\xff\xfe garbage", "application/octet-stream", "not valid JSON"),
        (
            b"PK\x03\x04 not really a zip",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "XLSX",
        ),
    ],
)
async def test_an_unreadable_file_is_refused_at_once(client, session, w, body, content_type, reason):
    r = await client.post(
        "/api/v1/lists/imports",
        params={"parent_org_id": str(w.orgs["a1"].id)},
        content=body,
        headers=w.h("secretary", **{"Content-Type": content_type, "Accept-Language": "en"}),
    )
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_import_file" and reason in r.json()["detail"]
    assert (await counts(session))["resources"] == 0


async def test_a_workbook_without_the_sheets_is_refused(client, w):
    wb = Workbook()
    wb.active.append(["名称", "数量"])
    out = io.BytesIO()
    wb.save(out)
    r = await post_import(
        client, w.h("street", **{"Accept-Language": "en"}), w.orgs["street_a"].id, out.getvalue(), xlsx=True
    )
    assert r.status_code == 422 and "no sheet named" in r.json()["detail"]


async def test_a_too_large_upload_is_refused(client, w, monkeypatch):
    monkeypatch.setattr(service, "MAX_UPLOAD_BYTES", 1000)
    doc = small()
    r = await post_import(client, w.h("street"), w.orgs["street_a"].id, doc)
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"


async def test_bad_query_parameters(client, w):
    r = await client.post("/api/v1/lists/imports", content=b"{}", headers=w.h("street"))
    assert r.status_code == 422  # parent_org_id is required
    r = await client.post(
        "/api/v1/lists/imports", params={"parent_org_id": "nope"}, content=b"{}", headers=w.h("street")
    )
    assert r.status_code == 422
