"""The resources list: publishing, reading, editing, withdrawing."""

from __future__ import annotations

import pytest

from gongjian.matching.text import index_tokens
from tests.lists.conftest import count, create_resource, fetch, resource_body


async def test_staff_publish_for_their_community(client, k):
    r = await client.post(
        "/api/v1/resources", headers=k.h("secretary"), json=resource_body(k, external_ref="R001")
    )
    assert r.status_code == 201, r.text
    res = r.json()
    assert r.headers["etag"] == '"1"'
    assert r.headers["location"] == f"/api/v1/resources/{res['id']}"
    assert res["org_id"] == k.org("a1") and res["unit_id"] is None
    assert res["provider_kind"] == "organization" and res["provider_name"] == "东湖社区党委"
    assert res["quantity"] == 12 and res["remaining_quantity"] == 12 and res["quantity_unit"] == "次"
    assert res["state"] == "available" and res["external_ref"] == "R001"
    assert res["weekdays"] == [2, 4] and res["serves_radius_km"] == 8
    assert res["location"] == {"lat": pytest.approx(30.205), "lng": pytest.approx(120.105)}
    assert (
        res["available_from"] == "2026-01-01" and res["available_to"] == "2026-12-31" and res["year"] == 2026
    )
    assert res["created_by"] == k.user("secretary") and res["version"] == 1

    (row,) = await fetch("SELECT search_tokens FROM resources WHERE id = :id", id=res["id"])
    assert row.search_tokens == index_tokens(res["title"], res["description"])
    assert "义诊" in row.search_tokens.split()
    (entry,) = await fetch(
        "SELECT action, actor_id, org_id FROM audit_log WHERE object_id = :id", id=res["id"]
    )
    assert entry.action == "resource.create" and str(entry.actor_id) == k.user("secretary")

    got = await client.get(f"/api/v1/resources/{res['id']}", headers=k.h("staff"))
    assert got.status_code == 200 and got.json() == res and got.headers["etag"] == '"1"'


async def test_liaison_publishes_for_their_own_unit(client, k):
    body = resource_body(k, org_id=None, title="供电所党员志愿者上门检修线路", category="manpower")
    r = await client.post("/api/v1/resources", headers=k.h("liaison"), json=body)
    assert r.status_code == 201, r.text
    res = r.json()
    # The unit is the liaison's, the list its community's, the provider the unit.
    assert res["unit_id"] == k.unit("a1") and res["org_id"] == k.org("a1")
    assert res["provider_kind"] == "soe" and res["provider_name"] == "东湖供电所"

    # Naming the community or the unit explicitly is the same.
    for extra in ({"org_id": k.org("a1")}, {"unit_id": k.unit("a1")}):
        again = await create_resource(client, k, "liaison", **extra)
        assert again["unit_id"] == k.unit("a1")
    # Another unit, another community: not theirs.
    await create_resource(client, k, "liaison", org_id=None, unit_id=k.unit("b1"), expect=404)
    await create_resource(client, k, "liaison", org_id=k.org("b1"), expect=422)
    assert await count("resources") == 3


async def test_staff_publish_for_a_unit_or_a_volunteer_team(client, k):
    unit_res = await create_resource(client, k, unit_id=k.unit("a1"), org_id=None)
    assert unit_res["org_id"] == k.org("a1") and unit_res["provider_kind"] == "soe"
    team = await create_resource(
        client,
        k,
        "street",
        org_id=k.org("street_a"),
        provider_kind="volunteer_team",
        provider_name="城中街道红马甲志愿服务队",
    )
    assert team["org_id"] == k.org("street_a") and team["provider_kind"] == "volunteer_team"
    assert team["provider_name"] == "城中街道红马甲志愿服务队"
    # A street-level resource may name a grid cell of any of its communities.
    cell = await create_resource(client, k, "street", org_id=k.org("street_a"), grid_id=k.cells["a1_2"])
    assert cell["grid_id"] == k.cells["a1_2"]
    # Staff of another street reach neither the unit nor the org.
    await create_resource(client, k, "secretary2", unit_id=k.unit("a1"), org_id=None, expect=404)
    await create_resource(client, k, "secretary2", expect=404)


async def test_default_window_and_year(client, k):
    res = await create_resource(client, k, available_from=None, available_to=None, weekdays=None)
    assert res["available_to"].endswith("-12-31") and res["available_from"] <= res["available_to"]
    assert res["year"] == int(res["available_from"][:4]) and res["weekdays"] == [1, 2, 3, 4, 5, 6, 7]
    res = await create_resource(client, k, year=2027, weekdays=[5, 1, 5])
    assert res["year"] == 2027 and res["weekdays"] == [1, 5]


BAD_RESOURCES = [
    ({"available_from": "2026-06-01", "available_to": "2026-05-31"}, "available_to"),
    ({"quantity": -3}, "quantity"),
    ({"quantity": 0}, "quantity"),
    ({"category": "weapons"}, "category"),
    ({"title": "   "}, "title"),
    ({"weekdays": [0, 3]}, "weekdays"),
    ({"weekdays": [8]}, "weekdays"),
    ({"weekdays": []}, "weekdays"),
    ({"location": {"lat": 30.2}}, "location"),
    ({"location": {"lat": 91, "lng": 120}}, "location"),
    ({"serves_radius_km": -1}, "serves_radius_km"),
    ({"quantity_unit": ""}, "quantity_unit"),
    ({"year": 1900}, "year"),
    ({"org_id": None}, "org_id"),
    ({"surprise": 1}, "surprise"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_RESOURCES)
async def test_bad_input_is_refused_and_nothing_written(client, k, fields, field):
    r = await client.post("/api/v1/resources", headers=k.h("secretary"), json=resource_body(k, **fields))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert any(field in e["loc"] for e in r.json()["errors"]), r.json()
    assert await count("resources") == 0
    assert await count("audit_log WHERE object_type = 'resource'") == 0


async def test_grids_orgs_and_refs_are_checked(client, k):
    unknown = "00000000-0000-4000-8000-000000000001"
    for grid in (k.cells["b1_1"], unknown):
        r = await client.post(
            "/api/v1/resources", headers=k.h("secretary"), json=resource_body(k, grid_id=grid)
        )
        assert r.status_code == 422 and r.json()["code"] == "invalid_grid", r.text
    # A community's resource names a cell of that community only.
    r = await client.post(
        "/api/v1/resources",
        headers=k.h("street"),
        json=resource_body(k, org_id=k.org("a2"), grid_id=k.cells["a1_1"]),
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_grid"
    # A unit's resource is on the unit's community's list.
    r = await client.post(
        "/api/v1/resources",
        headers=k.h("street"),
        json=resource_body(k, org_id=k.org("a2"), unit_id=k.unit("a1")),
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "org_id"]
    # ... and is provided by that unit, of its kind.
    r = await client.post(
        "/api/v1/resources",
        headers=k.h("secretary"),
        json=resource_body(k, unit_id=k.unit("a1"), provider_kind="private"),
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "provider_kind"]
    r = await client.post(
        "/api/v1/resources", headers=k.h("secretary"), json=resource_body(k, org_id=unknown)
    )
    assert r.status_code == 404
    await create_resource(client, k, external_ref="R9")
    r = await client.post(
        "/api/v1/resources", headers=k.h("secretary"), json=resource_body(k, external_ref="R9")
    )
    assert r.status_code == 409 and r.json()["code"] == "duplicate"
    assert await count("resources") == 1


async def test_who_may_publish(client, k):
    for who in ("member", "resident"):
        await create_resource(client, k, who, expect=403)
    # A grid worker reads the lists but does not publish.
    await create_resource(client, k, "gridworker", expect=403)
    assert await count("resources") == 0


async def _ids(client, k, who="admin", **params):
    ids, refs, cursor = [], [], None
    while True:
        query = {"limit": 2, **params, **({"cursor": cursor} if cursor else {})}
        r = await client.get("/api/v1/resources", headers=k.h(who), params=query)
        assert r.status_code == 200, r.text
        ids += [i["id"] for i in r.json()["items"]]
        refs += [i["external_ref"] for i in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return refs


async def test_list_filters_and_subtree(client, k):
    await create_resource(client, k, external_ref="A1-svc")
    await create_resource(
        client, k, external_ref="A1-goods", category="goods", title="爱心物资", description="米面油"
    )
    await create_resource(client, k, "street", org_id=k.org("a2"), external_ref="A2-svc", year=2027)
    await create_resource(client, k, "liaison", org_id=None, external_ref="A1-unit", title="电工上门")
    await create_resource(
        client, k, "street", org_id=k.org("street_a"), external_ref="SA-funds", category="funds"
    )
    await create_resource(client, k, "secretary2", org_id=k.org("b1"), external_ref="B1-svc")

    assert sorted(await _ids(client, k)) == sorted(
        ["A1-svc", "A1-goods", "A2-svc", "A1-unit", "SA-funds", "B1-svc"]
    )
    assert sorted(await _ids(client, k, org_id=k.org("street_a"))) == [
        "A1-goods",
        "A1-svc",
        "A1-unit",
        "A2-svc",
        "SA-funds",
    ]
    assert sorted(await _ids(client, k, org_id=k.org("a1"))) == ["A1-goods", "A1-svc", "A1-unit"]
    assert await _ids(client, k, org_id=k.org("b1_branch")) == []
    assert await _ids(client, k, category="goods") == ["A1-goods"]
    assert await _ids(client, k, year=2027) == ["A2-svc"]
    assert await _ids(client, k, unit_id=k.unit("a1")) == ["A1-unit"]
    assert await _ids(client, k, q="米面") == ["A1-goods"]
    assert await _ids(client, k, q="%") == []
    assert sorted(await _ids(client, k, state="available")) == sorted(await _ids(client, k))
    # Scope: the secretary sees a1; the other street's staff nothing of it, even when asking for it.
    assert sorted(await _ids(client, k, "secretary")) == ["A1-goods", "A1-svc", "A1-unit"]
    assert await _ids(client, k, "secretary2", org_id=k.org("a1")) == []
    assert await _ids(client, k, "liaison") == ["A1-unit"]
    assert sorted(await _ids(client, k, "gridworker")) == ["A1-goods", "A1-svc", "A1-unit"]
    for who in ("member", "resident"):
        r = await client.get("/api/v1/resources", headers=k.h(who))
        assert r.status_code == 403
    r = await client.get("/api/v1/resources", headers=k.h("admin"), params={"state": "gone"})
    assert r.status_code == 422
    r = await client.get("/api/v1/resources", headers=k.h("admin"), params={"cursor": "garbage"})
    assert r.status_code == 400


async def test_get_out_of_scope_is_404(client, k):
    res = await create_resource(client, k)
    for who in ("secretary2", "liaison"):
        r = await client.get(f"/api/v1/resources/{res['id']}", headers=k.h(who))
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = await client.get(f"/api/v1/resources/{res['id']}", headers=k.h("member"))
    assert r.status_code == 403
    r = await client.get("/api/v1/resources/00000000-0000-4000-8000-000000000001", headers=k.h("admin"))
    assert r.status_code == 404


async def test_patch_with_etag(client, k):
    res = await create_resource(client, k)
    url = f"/api/v1/resources/{res['id']}"
    r = await client.patch(
        url, headers=k.h("staff", **{"If-Match": '"1"'}), json={"title": "健康筛查下社区", "location": None}
    )
    assert r.status_code == 200, r.text
    assert r.json()["title"] == "健康筛查下社区" and r.json()["location"] is None and r.json()["version"] == 2
    assert r.headers["etag"] == '"2"'
    (row,) = await fetch("SELECT search_tokens FROM resources WHERE id = :id", id=res["id"])
    assert row.search_tokens == index_tokens("健康筛查下社区", res["description"])
    # A write based on the old read is refused and changes nothing.
    r = await client.patch(url, headers=k.h("staff", **{"If-Match": '"1"'}), json={"title": "旧的"})
    assert r.status_code == 412 and r.json()["code"] == "precondition_failed"
    assert (await client.get(url, headers=k.h("staff"))).json()["title"] == "健康筛查下社区"


@pytest.mark.parametrize(
    "body",
    [
        {"available_to": "2025-12-31"},
        {"available_from": "2027-01-01"},
        {"title": None},
        {"quantity": None},
        {"quantity": -1},
        {"weekdays": [9]},
        {"unit_id": "00000000-0000-4000-8000-000000000001"},
        {"state": "exhausted"},
        {"remaining_quantity": 1},
    ],
)
async def test_patch_bad_input(client, k, body):
    res = await create_resource(client, k)
    r = await client.patch(f"/api/v1/resources/{res['id']}", headers=k.h("staff"), json=body)
    assert r.status_code == 422, r.text
    after = (await client.get(f"/api/v1/resources/{res['id']}", headers=k.h("staff"))).json()
    assert after == res


async def test_patch_grid_and_ref_checks(client, k):
    res = await create_resource(client, k, external_ref="X1")
    await create_resource(client, k, external_ref="X2")
    url = f"/api/v1/resources/{res['id']}"
    r = await client.patch(url, headers=k.h("staff"), json={"grid_id": k.cells["b1_1"]})
    assert r.status_code == 422 and r.json()["code"] == "invalid_grid"
    r = await client.patch(url, headers=k.h("staff"), json={"external_ref": "X2"})
    assert r.status_code == 409 and r.json()["code"] == "duplicate"
    r = await client.patch(url, headers=k.h("staff"), json={"grid_id": k.cells["a1_2"], "external_ref": "X1"})
    assert r.status_code == 200 and r.json()["grid_id"] == k.cells["a1_2"]


async def test_who_may_edit(client, k):
    org_res = await create_resource(client, k)
    unit_res = await create_resource(client, k, "liaison", org_id=None)
    # The liaison edits its unit's resource, never the community's own.
    r = await client.patch(
        f"/api/v1/resources/{unit_res['id']}", headers=k.h("liaison"), json={"quantity": 20}
    )
    assert r.status_code == 200 and r.json()["remaining_quantity"] == 20
    r = await client.patch(
        f"/api/v1/resources/{org_res['id']}", headers=k.h("liaison"), json={"quantity": 20}
    )
    assert r.status_code == 404
    # The community's staff manage the unit's resource too; a grid worker reads only.
    r = await client.patch(f"/api/v1/resources/{unit_res['id']}", headers=k.h("staff"), json={"quantity": 15})
    assert r.status_code == 200
    r = await client.patch(
        f"/api/v1/resources/{org_res['id']}", headers=k.h("gridworker"), json={"quantity": 20}
    )
    assert r.status_code == 403
    r = await client.patch(
        f"/api/v1/resources/{org_res['id']}", headers=k.h("secretary2"), json={"quantity": 20}
    )
    assert r.status_code == 404


async def test_withdraw_and_restore(client, k):
    res = await create_resource(client, k)
    url = f"/api/v1/resources/{res['id']}"
    r = await client.post(
        f"{url}/withdraw", headers=k.h("staff", **{"If-Match": '"1"'}), json={"reason": "专家排班已满"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "withdrawn" and r.json()["state_reason"] == "专家排班已满"
    r = await client.post(f"{url}/withdraw", headers=k.h("staff"))
    assert r.status_code == 409 and r.json()["code"] == "illegal_transition"
    # Still editable while withdrawn; a quantity change keeps it withdrawn.
    r = await client.patch(url, headers=k.h("staff"), json={"quantity": 6})
    assert r.status_code == 200 and r.json()["state"] == "withdrawn"
    r = await client.post(f"{url}/restore", headers=k.h("staff", **{"If-Match": '"1"'}))
    assert r.status_code == 412
    r = await client.post(f"{url}/restore", headers=k.h("staff"))
    assert r.status_code == 200 and r.json()["state"] == "available" and r.json()["state_reason"] is None
    r = await client.post(f"{url}/restore", headers=k.h("staff"))
    assert r.status_code == 409 and r.json()["code"] == "illegal_transition"
    rows = await fetch(
        "SELECT action, reason, before, after FROM audit_log WHERE object_id = :id ORDER BY at", id=res["id"]
    )
    assert [row.action for row in rows] == [
        "resource.create",
        "resource.withdraw",
        "resource.update",
        "resource.restore",
    ]
    assert rows[1].reason == "专家排班已满" and rows[1].before["state"] == "available"
    # Out of scope or without the right.
    r = await client.post(f"{url}/withdraw", headers=k.h("secretary2"))
    assert r.status_code == 404
    r = await client.post(f"{url}/withdraw", headers=k.h("gridworker"))
    assert r.status_code == 403
    r = await client.post(f"{url}/withdraw", headers=k.h("staff"), json={"reason": "x" * 501})
    assert r.status_code == 422
