"""Who may import where, and who sees an import: staff with lists:write on the parent (API clients with
the lists:write scope too); another scope's organization answers as if it did not exist."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from gongjian.auth.models import ApiClient
from gongjian.core.security import create_access_token, hash_password
from gongjian.lists.imports.models import ListImport
from gongjian.lists.models import Need
from tests.lists_imports.conftest import do_import, errors_of, post_import, small


def _donghu() -> dict[str, Any]:
    """small(), as 东湖社区 (the world's a1, 东湖社区党委)."""
    doc = small()
    doc["communities"][0]["name"] = "东湖社区"
    return doc


async def _client_headers(session: Any, w: Any, scopes: list[str], org: str = "a1") -> dict[str, str]:
    client = ApiClient(
        name="12345热线",
        client_id=f"gjc_hotline_{org}_{len(scopes)}",
        secret_hash=hash_password("hotline-secret"),
        scopes=scopes,
        org_id=w.orgs[org].id,
    )
    session.add(client)
    await session.commit()
    token, _ = create_access_token(subject=str(client.id), kind="client", roles=[], scopes=scopes)
    return {"Authorization": f"Bearer {token}"}


async def _stored(session: Any) -> int:
    return (await session.execute(select(func.count()).select_from(ListImport))).scalar_one()


@pytest.mark.parametrize(
    ("who", "parent", "status"),
    [
        ("admin", "b1", 202),
        ("street", "street_a", 202),
        ("street", "a1", 202),
        ("secretary", "a1", 202),
        ("staff", "a1", 202),
        ("street", "street_b", 404),
        ("street", "b1", 404),
        ("secretary", "street_a", 404),  # above their community
        ("secretary", "b1", 404),
        ("secretary2", "a1", 404),
        ("gridworker", "a1", 403),  # reads the lists, does not import
        ("gridworker", "b1", 403),
        ("liaison", "a1", 404),  # it reaches its unit's resources, not the organization
        ("member", "a1", 403),
        ("resident", "a1", 403),
    ],
)
async def test_who_may_import_where(client, session, w, who, parent, status):
    r = await post_import(client, w.h(who), w.orgs[parent].id, small(), create_missing=True)
    assert r.status_code == status, r.text
    if status >= 400:
        assert r.json()["code"] == {403: "forbidden", 404: "not_found"}[status]
        assert await _stored(session) == 0


async def test_without_a_token(client, w):
    r = await client.post(
        "/api/v1/lists/imports", params={"parent_org_id": str(w.orgs["a1"].id)}, content=b"{}"
    )
    assert r.status_code == 401


async def test_an_import_is_seen_by_who_sees_its_parent(client, session, w, run_jobs):
    on_street = await do_import(
        client, run_jobs, w.h("street"), w.orgs["street_a"].id, small(), create_missing=True
    )
    on_a1 = await do_import(
        client, run_jobs, w.h("secretary"), w.orgs["a1"].id, _donghu(), create_missing=True
    )
    cases = {
        "admin": (200, 200),
        "street": (200, 200),
        "secretary": (404, 200),
        "gridworker": (404, 200),
        "secretary2": (404, 404),
        "resident": (403, 403),
    }
    for who, expected in cases.items():
        got = [
            (await client.get(f"/api/v1/lists/imports/{imp['id']}", headers=w.h(who))).status_code
            for imp in (on_street, on_a1)
        ]
        assert tuple(got) == expected, who

    listed = await client.get("/api/v1/lists/imports", headers=w.h("street"))
    assert [i["id"] for i in listed.json()["items"]] == [on_street["id"], on_a1["id"]]
    assert "errors" not in listed.json()["items"][0]
    listed = await client.get("/api/v1/lists/imports", headers=w.h("secretary"))
    assert [i["id"] for i in listed.json()["items"]] == [on_a1["id"]]
    listed = await client.get(
        "/api/v1/lists/imports", params={"org_id": str(w.orgs["a1"].id)}, headers=w.h("street")
    )
    assert [i["id"] for i in listed.json()["items"]] == [on_a1["id"]]
    listed = await client.get("/api/v1/lists/imports", params={"status": "failed"}, headers=w.h("admin"))
    assert listed.json()["items"] == []
    assert (
        await client.get(
            "/api/v1/lists/imports", params={"org_id": str(w.orgs["b1"].id)}, headers=w.h("street")
        )
    ).status_code == 404
    assert (await client.get("/api/v1/lists/imports", headers=w.h("resident"))).status_code == 403


async def test_an_api_client_with_lists_write(client, session, w, run_jobs):
    # The community's grids exist (staff imported them); the hotline pushes needs in.
    await do_import(client, run_jobs, w.h("secretary"), w.orgs["a1"].id, _donghu(), create_missing=True)
    headers = await _client_headers(session, w, ["lists:read", "lists:write"])
    doc = _donghu()
    doc["resources"] = []
    doc["needs"] = [dict(n, ref=f"H-{n['ref']}") for n in doc["needs"]]
    imp = await do_import(client, run_jobs, headers, w.orgs["a1"].id, doc)
    assert imp["status"] == "completed", imp["errors"]
    assert imp["counts"]["needs"]["created"] == 2 and imp["created_by"] == "12345热线"
    raised = (
        (await session.execute(select(Need.raised_by).where(Need.external_ref.like("H-%")))).scalars().all()
    )
    assert len(raised) == 2 and len(set(raised)) == 1 and raised[0] is not None

    # It may not create communities or grids, even when asked: those rows are refused.
    doc = small()
    doc["grids"][0].update(ref="C1-G9", name="第九网格")
    imp = await do_import(
        client, run_jobs, headers, w.orgs["a1"].id, _donghu() | {"grids": doc["grids"]}, create_missing=True
    )
    assert imp["status"] == "failed"
    assert ("grids", "C1-G9", "ref", "grid_create_forbidden") in errors_of(imp)
    imp = await do_import(client, run_jobs, headers, w.orgs["a1"].id, small(), create_missing=True)
    assert ("communities", "C1", "name", "community_create_forbidden") in errors_of(imp)

    # Outside its organization, or without the write scope: refused.
    r = await post_import(client, headers, w.orgs["b1"].id, _donghu())
    assert r.status_code == 404
    reader = await _client_headers(session, w, ["lists:read"])
    r = await post_import(client, reader, w.orgs["a1"].id, _donghu())
    assert r.status_code == 403
