from __future__ import annotations

import uuid

import pytest

from gongjian.grids.models import GridCell
from tests.members.conftest import (
    PHONE,
    audit_rows,
    audit_text,
    create_member,
    fetch,
    make_id_number,
)


async def test_create_member_masks_and_encrypts(client, world):
    id_number = make_id_number(7, birth="19851231", male=False)
    body = await create_member(client, world, seq=7, id_number=id_number, phone=PHONE)
    assert body["phone"] == "138****5678"
    assert body["id_number"] == id_number[:3] + "*" * 11 + id_number[-4:]
    assert body["birth_date"] == "1985-12-31"
    assert body["gender"] == "female"
    assert body["status"] == "active"
    assert body["version"] == 1

    r = await client.get(f"/api/v1/members/{body['id']}", headers=world.h("secretary"))
    assert r.status_code == 200
    assert r.headers["etag"] == '"1"'
    assert r.json()["phone"] == "138****5678"
    assert id_number not in r.text and PHONE not in r.text

    (row,) = await fetch("SELECT * FROM members WHERE id = :id", id=uuid.UUID(body["id"]))
    assert row.phone_encrypted.startswith("v1:") and PHONE not in row.phone_encrypted
    assert id_number not in row.id_number_encrypted
    assert len(row.id_number_hash) == 64 and id_number not in row.id_number_hash


async def test_list_masks_and_filters(client, world):
    a = await create_member(client, world, seq=1, name="张建国")
    b = await create_member(client, world, seq=2, name="李秀英", category="retired")
    c = await create_member(
        client,
        world,
        seq=3,
        name="王强",
        org="b1_branch",
        residence_community_id=str(world.orgs["a1"].id),
        who="admin",
    )
    h = world.h("secretary")

    r = await client.get("/api/v1/members", headers=h)
    assert r.status_code == 200
    items = r.json()["items"]
    assert {m["id"] for m in items} == {a["id"], b["id"], c["id"]}
    assert all("****" in m["phone"] for m in items)

    r = await client.get("/api/v1/members", headers=h, params={"category": "retired"})
    assert [m["id"] for m in r.json()["items"]] == [b["id"]]
    r = await client.get("/api/v1/members", headers=h, params={"org_id": str(world.orgs["b1_branch"].id)})
    assert [m["id"] for m in r.json()["items"]] == [c["id"]]
    r = await client.get("/api/v1/members", headers=h, params={"q": "建国"})
    assert [m["id"] for m in r.json()["items"]] == [a["id"]]
    r = await client.get(
        "/api/v1/members", headers=h, params={"residence_community_id": str(world.orgs["a2"].id)}
    )
    assert r.json()["items"] == []
    r = await client.get("/api/v1/members", headers=h, params={"limit": 2})
    assert len(r.json()["items"]) == 2 and r.json()["next_cursor"]
    r = await client.get("/api/v1/members", headers=h, params={"limit": 2, "cursor": r.json()["next_cursor"]})
    assert len(r.json()["items"]) == 1


async def test_lookup_by_id_number_and_phone(client, world):
    a = await create_member(client, world, seq=1)
    await create_member(client, world, seq=2)
    h = world.h("secretary")
    r = await client.get("/api/v1/members", headers=h, params={"id_number": make_id_number(1).lower()})
    assert [m["id"] for m in r.json()["items"]] == [a["id"]]
    r = await client.get("/api/v1/members", headers=h, params={"phone": PHONE[:-2] + "01"})
    assert [m["id"] for m in r.json()["items"]] == [a["id"]]
    r = await client.get("/api/v1/members", headers=h, params={"id_number": make_id_number(9)})
    assert r.json()["items"] == []
    r = await client.get("/api/v1/members", headers=h, params={"id_number": "123"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_id_number"
    r = await client.get("/api/v1/members", headers=h, params={"phone": "12345"})
    assert r.status_code == 422
    # Outside the caller's scope the same look-up finds nothing.
    r = await client.get(
        "/api/v1/members", headers=world.h("secretary2"), params={"id_number": make_id_number(1)}
    )
    assert r.json()["items"] == []


async def test_personal_data_full_and_audited(client, world):
    m = await create_member(client, world, seq=1, phone=PHONE)
    r = await client.get(f"/api/v1/members/{m['id']}/personal-data", headers=world.h("secretary"))
    assert r.status_code == 200, r.text
    assert r.json() == {"id": m["id"], "name": m["name"], "phone": PHONE, "id_number": make_id_number(1)}
    assert r.headers["cache-control"] == "no-store"
    reads = [a for a in await audit_rows("member") if a.action == "member.pii_read"]
    assert len(reads) == 1
    assert reads[0].object_id == uuid.UUID(m["id"]) and reads[0].actor_id == world.users["secretary"].id
    assert PHONE not in audit_text(reads)


@pytest.mark.parametrize("who", ["staff", "gridworker", "member", "street"])
async def test_personal_data_forbidden_without_pii_right(client, world, who):
    m = await create_member(client, world, seq=1, user_id=str(world.users["member"].id))
    r = await client.get(f"/api/v1/members/{m['id']}/personal-data", headers=world.h(who))
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "forbidden"
    assert [a for a in await audit_rows("member") if a.action == "member.pii_read"] == []


async def test_personal_data_out_of_scope_is_404(client, world):
    m = await create_member(client, world, seq=1)
    r = await client.get(f"/api/v1/members/{m['id']}/personal-data", headers=world.h("secretary2"))
    assert r.status_code == 404
    assert [a for a in await audit_rows("member") if a.action == "member.pii_read"] == []


@pytest.mark.parametrize(
    "id_number",
    [
        make_id_number(1)[:-1] + ("0" if make_id_number(1)[-1] != "0" else "1"),  # wrong check digit
        "330203199902300012",  # 30 February
        "33020319850312011Y",  # not a check character
        "33020319850312011",  # 17 characters
        "33020318850312011X",  # before 1900
        "abcdefghijklmnopqr",
    ],
)
async def test_bad_id_number_is_422_and_nothing_written(client, world, id_number):
    r = await client.post(
        "/api/v1/members",
        headers=world.h("secretary"),
        json={
            "name": "错号",
            "id_number": id_number,
            "org_id": str(world.orgs["a1_branch"].id),
            "category": "retired",
        },
    )
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_id_number"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert await fetch("SELECT id FROM members") == []
    assert await audit_rows("member") == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("phone", "1381234567"),
        ("phone", "23812345678"),
        ("phone", "138-1234-5678"),
        ("category", "vip"),
        ("status", "expelled"),
        ("gender", "other"),
        ("name", ""),
        ("name", "长" * 51),
        ("org_id", "not-a-uuid"),
        ("unknown_field", 1),
        ("birth_date", "1985-13-01"),
    ],
)
async def test_bad_fields_are_422_and_nothing_written(client, world, field, value):
    body = {
        "name": "张三",
        "id_number": make_id_number(1),
        "org_id": str(world.orgs["a1_branch"].id),
        "category": "in_service",
        field: value,
    }
    r = await client.post("/api/v1/members", headers=world.h("secretary"), json=body)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "validation_error"
    assert await fetch("SELECT id FROM members") == []
    assert await audit_rows("member") == []


async def test_malformed_json_is_400(client, world):
    r = await client.post(
        "/api/v1/members",
        headers={**world.h("secretary"), "Content-Type": "application/json"},
        content=b'{"name": ',
    )
    assert r.status_code in (400, 422)
    assert r.json()["code"] == "malformed_request"


async def test_gender_and_birth_date_must_match_id_number(client, world):
    body = {
        "name": "张三",
        "id_number": make_id_number(1, male=True),
        "org_id": str(world.orgs["a1_branch"].id),
        "category": "in_service",
    }
    r = await client.post("/api/v1/members", headers=world.h("secretary"), json={**body, "gender": "female"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "gender"]
    r = await client.post(
        "/api/v1/members", headers=world.h("secretary"), json={**body, "birth_date": "1985-03-13"}
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "birth_date"]
    r = await client.post(
        "/api/v1/members",
        headers=world.h("secretary"),
        json={**body, "gender": "male", "birth_date": "1985-03-12"},
    )
    assert r.status_code == 201


async def test_duplicate_id_number_is_409(client, world):
    await create_member(client, world, seq=1)
    r = await client.post(
        "/api/v1/members",
        headers=world.h("admin"),
        json={
            "name": "同号",
            "id_number": make_id_number(1).lower(),
            "org_id": str(world.orgs["b1_branch"].id),
            "category": "retired",
        },
    )
    assert r.status_code == 409 and r.json()["code"] == "duplicate"
    assert len(await fetch("SELECT id FROM members")) == 1


async def test_references_are_checked(client, world):
    h = world.h("secretary")
    base = {"name": "张三", "id_number": make_id_number(1), "category": "in_service"}
    # The branch must be in the caller's scope.
    r = await client.post(
        "/api/v1/members", headers=h, json={**base, "org_id": str(world.orgs["b1_branch"].id)}
    )
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    org = str(world.orgs["a1_branch"].id)
    r = await client.post(
        "/api/v1/members",
        headers=h,
        json={**base, "org_id": org, "residence_community_id": str(world.orgs["street_a"].id)},
    )
    assert r.status_code == 422 and r.json()["code"] == "not_a_community"
    r = await client.post(
        "/api/v1/members",
        headers=h,
        json={**base, "org_id": org, "residence_community_id": str(uuid.uuid4())},
    )
    assert r.status_code == 404
    r = await client.post(
        "/api/v1/members", headers=h, json={**base, "org_id": org, "employer_unit_id": str(uuid.uuid4())}
    )
    assert r.status_code == 404
    r = await client.post(
        "/api/v1/members", headers=h, json={**base, "org_id": org, "user_id": str(uuid.uuid4())}
    )
    assert r.status_code == 404
    r = await client.post(
        "/api/v1/members", headers=h, json={**base, "org_id": org, "grid_cell_id": str(uuid.uuid4())}
    )
    assert r.status_code == 404
    # Living in another street's community is fine: residence need not be in the caller's scope.
    r = await client.post(
        "/api/v1/members",
        headers=h,
        json={
            **base,
            "org_id": org,
            "residence_community_id": str(world.orgs["b1"].id),
            "employer_unit_id": str(world.units["b1"].id),
        },
    )
    assert r.status_code == 201, r.text
    assert await audit_rows("member") != []


async def test_account_links_to_one_member_only(client, world):
    await create_member(client, world, seq=1, user_id=str(world.users["member"].id))
    r = await client.post(
        "/api/v1/members",
        headers=world.h("secretary"),
        json={
            "name": "二号",
            "id_number": make_id_number(2),
            "org_id": str(world.orgs["a1_branch"].id),
            "category": "in_service",
            "user_id": str(world.users["member"].id),
        },
    )
    assert r.status_code == 409 and r.json()["code"] == "member_account_linked"


def _cell(community_id: uuid.UUID, code: str) -> GridCell:
    ring = [[121.50, 29.80], [121.51, 29.80], [121.51, 29.81], [121.50, 29.81], [121.50, 29.80]]
    return GridCell(
        community_id=community_id,
        code=code,
        name=f"网格{code}",
        boundary={"type": "Polygon", "coordinates": [ring]},
        min_lng=121.50,
        min_lat=29.80,
        max_lng=121.51,
        max_lat=29.81,
        layers=["party"],
    )


async def test_grid_cell_of_residence(client, world, session):
    cell_a1, cell_b1 = _cell(world.orgs["a1"].id, "A1-01"), _cell(world.orgs["b1"].id, "B1-01")
    session.add_all([cell_a1, cell_b1])
    await session.commit()
    h = world.h("secretary")
    base = {
        "name": "张三",
        "id_number": make_id_number(1),
        "category": "in_service",
        "org_id": str(world.orgs["a1_branch"].id),
    }
    r = await client.post(
        "/api/v1/members",
        headers=h,
        json={**base, "residence_community_id": str(world.orgs["a1"].id), "grid_cell_id": str(cell_b1.id)},
    )
    assert r.status_code == 422 and r.json()["code"] == "grid_not_in_community"
    # Without a community, the cell's community is recorded.
    r = await client.post("/api/v1/members", headers=h, json={**base, "grid_cell_id": str(cell_a1.id)})
    assert r.status_code == 201, r.text
    assert r.json()["residence_community_id"] == str(world.orgs["a1"].id)
    m = r.json()
    r = await client.patch(
        f"/api/v1/members/{m['id']}", headers=h, json={"residence_community_id": str(world.orgs["b1"].id)}
    )
    assert r.status_code == 422 and r.json()["code"] == "grid_not_in_community"
    r = await client.patch(
        f"/api/v1/members/{m['id']}",
        headers=h,
        json={"residence_community_id": str(world.orgs["b1"].id), "grid_cell_id": str(cell_b1.id)},
    )
    assert r.status_code == 200, r.text
    assert r.json()["grid_cell_id"] == str(cell_b1.id)


async def test_wrong_scope_is_404(client, world):
    m = await create_member(client, world, seq=1)
    h2 = world.h("secretary2")
    r = await client.get(f"/api/v1/members/{m['id']}", headers=h2)
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = await client.patch(f"/api/v1/members/{m['id']}", headers=h2, json={"name": "改名"})
    assert r.status_code == 404
    r = await client.get("/api/v1/members", headers=h2)
    assert r.json()["items"] == []
    r = await client.get(f"/api/v1/members/{uuid.uuid4()}", headers=world.h("admin"))
    assert r.status_code == 404


async def test_visible_through_residence_community(client, world):
    # Membership held in b1's branch, living in a1: both secretaries see the member.
    m = await create_member(
        client, world, who="admin", seq=1, org="b1_branch", residence_community_id=str(world.orgs["a1"].id)
    )
    for who in ("secretary", "secretary2", "street", "gridworker"):
        r = await client.get(f"/api/v1/members/{m['id']}", headers=world.h(who))
        assert r.status_code == 200, who
    r = await client.get("/api/v1/members", headers=world.h("secretary2"))
    assert [x["id"] for x in r.json()["items"]] == [m["id"]]


async def test_member_sees_only_self(client, world):
    own = await create_member(client, world, seq=1, user_id=str(world.users["member"].id))
    other = await create_member(client, world, seq=2)
    h = world.h("member")
    r = await client.get("/api/v1/members", headers=h)
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["items"]] == [own["id"]]
    assert "****" in r.json()["items"][0]["id_number"]
    r = await client.get(f"/api/v1/members/{own['id']}", headers=h)
    assert r.status_code == 200
    r = await client.get(f"/api/v1/members/{other['id']}", headers=h)
    assert r.status_code == 404
    r = await client.patch(f"/api/v1/members/{own['id']}", headers=h, json={"name": "自改"})
    assert r.status_code == 403


async def test_resident_and_liaison_cannot_touch_members(client, world):
    m = await create_member(client, world, seq=1)
    for who in ("resident", "liaison"):
        assert (await client.get(f"/api/v1/members/{m['id']}", headers=world.h(who))).status_code == 403
        r = await client.post(
            "/api/v1/members",
            headers=world.h(who),
            json={
                "name": "x",
                "id_number": make_id_number(2),
                "org_id": str(world.orgs["a1_branch"].id),
                "category": "retired",
            },
        )
        assert r.status_code == 403
    r = await client.post(
        "/api/v1/members",
        headers=world.h("gridworker"),
        json={
            "name": "x",
            "id_number": make_id_number(2),
            "org_id": str(world.orgs["a1_branch"].id),
            "category": "retired",
        },
    )
    assert r.status_code == 403
    assert (await client.get("/api/v1/members")).status_code == 401


async def test_update_with_if_match(client, world):
    m = await create_member(client, world, seq=1)
    h = world.h("secretary")
    new_id = make_id_number(5, birth="19700101", male=False)
    r = await client.patch(
        f"/api/v1/members/{m['id']}",
        headers={**h, "If-Match": '"1"'},
        json={
            "category": "retired",
            "phone": "13900001111",
            "id_number": new_id,
            "status": "transferred_out",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 2 and r.headers["etag"] == '"2"'
    assert (
        body["phone"] == "139****1111" and body["birth_date"] == "1970-01-01" and body["gender"] == "female"
    )
    assert body["category"] == "retired" and body["status"] == "transferred_out"
    # A stale ETag loses.
    r = await client.patch(
        f"/api/v1/members/{m['id']}", headers={**h, "If-Match": '"1"'}, json={"name": "旧"}
    )
    assert r.status_code == 412 and r.json()["code"] == "precondition_failed"
    # Clearing the phone is allowed, clearing a required field is not.
    r = await client.patch(f"/api/v1/members/{m['id']}", headers=h, json={"phone": None})
    assert r.status_code == 200 and r.json()["phone"] is None
    r = await client.patch(f"/api/v1/members/{m['id']}", headers=h, json={"name": None})
    assert r.status_code == 422
    r = await client.patch(f"/api/v1/members/{m['id']}", headers=h, json={"id_number": "330203199902300012"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_id_number"
    r = await client.patch(f"/api/v1/members/{m['id']}", headers=h, json={"gender": "male"})
    assert r.status_code == 422
    # Moving the membership to a branch outside the caller's scope: 404, nothing changed.
    r = await client.patch(
        f"/api/v1/members/{m['id']}", headers=h, json={"org_id": str(world.orgs["b1_branch"].id)}
    )
    assert r.status_code == 404
    r = await client.get(f"/api/v1/members/{m['id']}", headers=h)
    assert r.json()["version"] == 3 and r.json()["org_id"] == str(world.orgs["a1_branch"].id)


async def test_update_to_taken_id_number_is_409(client, world):
    await create_member(client, world, seq=1)
    b = await create_member(client, world, seq=2)
    r = await client.patch(
        f"/api/v1/members/{b['id']}", headers=world.h("secretary"), json={"id_number": make_id_number(1)}
    )
    assert r.status_code == 409 and r.json()["code"] == "duplicate"


async def test_concurrent_updates_one_wins(client, world):
    import asyncio

    m = await create_member(client, world, seq=1)
    url = f"/api/v1/members/{m['id']}"
    results = await asyncio.gather(
        client.patch(url, headers={**world.h("secretary"), "If-Match": '"1"'}, json={"name": "甲"}),
        client.patch(url, headers={**world.h("staff"), "If-Match": '"1"'}, json={"name": "乙"}),
    )
    assert sorted(r.status_code for r in results) == [200, 412]


async def test_audit_never_holds_personal_data_in_clear(client, world):
    m = await create_member(client, world, seq=1, phone=PHONE)
    h = world.h("secretary")
    new_id = make_id_number(8)
    r = await client.patch(
        f"/api/v1/members/{m['id']}", headers=h, json={"phone": "13900001111", "id_number": new_id}
    )
    assert r.status_code == 200
    await client.get(f"/api/v1/members/{m['id']}/personal-data", headers=h)
    rows = await audit_rows("member")
    assert [r.action for r in rows] == ["member.create", "member.update", "member.pii_read"]
    dumped = audit_text(rows)
    for secret in (PHONE, "13900001111", make_id_number(1), new_id, "138****5678"):
        assert secret not in dumped
    create, update = rows[0], rows[1]
    assert create.after["phone_encrypted"] == "***" and create.after["id_number_hash"] == "***"
    assert update.before["phone_hash"] == "***" and update.after["id_number_encrypted"] == "***"
    assert update.before["version"] == 1 and update.after["version"] == 2


async def test_org_counts_include_members(client, world):
    await create_member(client, world, seq=1)
    await create_member(client, world, seq=2)
    await create_member(client, world, who="admin", seq=3, org="b1_branch")
    r = await client.get(f"/api/v1/organizations/{world.orgs['a1'].id}/counts", headers=world.h("secretary"))
    assert r.status_code == 200
    assert r.json()["members"] == 2
    r = await client.get(f"/api/v1/organizations/{world.orgs['county'].id}/counts", headers=world.h("admin"))
    assert r.json()["members"] == 3
