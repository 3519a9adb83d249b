"""The audit log: every write recorded with actor, action, object, before/after and request id;
read by org admins within their scope only, with personal fields redacted."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from gongjian.core.audit import AuditEntry, redact, snapshot
from tests.auth.helpers import assert_problem
from tests.factories import World

LOG = "/api/v1/audit-log"


async def _entries(client, world: World, who: str, **params: Any) -> list[dict[str, Any]]:
    r = await client.get(LOG, headers=world.h(who), params={"limit": 100, **params})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def _write_in_both_communities(client, world: World) -> tuple[str, str]:
    a = await client.post(
        "/api/v1/organizations",
        headers=world.h("secretary"),
        json={"name": "东湖社区第二党支部", "kind": "branch", "parent_id": str(world.orgs["a1"].id)},
    )
    b = await client.post(
        "/api/v1/organizations",
        headers=world.h("secretary2"),
        json={"name": "北门社区第二党支部", "kind": "branch", "parent_id": str(world.orgs["b1"].id)},
    )
    assert a.status_code == b.status_code == 201
    return a.json()["id"], b.json()["id"]


async def test_org_admins_read_their_scope_only(client, world: World, session):
    a_id, b_id = await _write_in_both_communities(client, world)
    mine = await _entries(client, world, "secretary")
    theirs = await _entries(client, world, "secretary2")
    everything = await _entries(client, world, "admin")
    assert a_id in {e["object_id"] for e in mine} and b_id not in {e["object_id"] for e in mine}
    assert b_id in {e["object_id"] for e in theirs} and a_id not in {e["object_id"] for e in theirs}
    assert {a_id, b_id} <= {e["object_id"] for e in everything}
    a1_subtree = {str(world.orgs["a1"].id), str(world.orgs["a1_branch"].id), a_id}
    assert {e["org_id"] for e in mine} <= a1_subtree
    # Filtering by an object outside one's scope finds nothing, rather than an error that tells.
    assert await _entries(client, world, "secretary", object_id=b_id) == []
    entry = (await _entries(client, world, "secretary", object_id=a_id))[0]
    assert entry["actor_name"] == "secretary" and entry["actor_kind"] == "user"
    assert entry["actor_id"] == str(world.users["secretary"].id)
    assert entry["action"] == "organization.create" and entry["object_type"] == "organization"
    assert entry["before"] is None and entry["after"]["name"] == "东湖社区第二党支部"
    assert entry["request_id"] and entry["at"]
    # Newest first.
    assert [e["at"] for e in everything] == sorted((e["at"] for e in everything), reverse=True)


async def test_who_may_read_the_log(client, world: World):
    await _write_in_both_communities(client, world)
    for who in ("street", "staff", "gridworker", "liaison", "member", "resident"):
        assert_problem(await client.get(LOG, headers=world.h(who)), 403, "forbidden")
    assert_problem(await client.get(LOG), 401, "not_authenticated")


async def test_filters(client, world: World):
    a_id, _ = await _write_in_both_communities(client, world)
    r = await client.patch(
        f"/api/v1/organizations/{a_id}", headers=world.h("secretary"), json={"name": "改名支部"}
    )
    assert r.status_code == 200
    updates = await _entries(client, world, "secretary", action="organization.update")
    assert [(e["object_id"], e["before"]["name"], e["after"]["name"]) for e in updates] == [
        (a_id, "东湖社区第二党支部", "改名支部")
    ]
    by_actor = await _entries(client, world, "admin", actor_id=str(world.users["secretary2"].id))
    assert {e["actor_name"] for e in by_actor} == {"secretary2"}
    assert await _entries(client, world, "secretary", object_type="member") == []
    assert_problem(await client.get(LOG, headers=world.h("secretary"), params={"object_id": "x"}), 422)


async def test_personal_fields_are_redacted(client, world: World, session):
    r = await client.post(
        "/api/v1/users",
        headers=world.h("secretary"),
        json={
            "username": "chen.jing",
            "display_name": "陈静",
            "password": "Gongjian#2026",
            "phone": "13811112222",
            "role_assignments": [{"role": "org_staff", "org_id": str(world.orgs["a1"].id)}],
        },
    )
    assert r.status_code == 201, r.text
    (entry,) = await _entries(client, world, "secretary", object_id=r.json()["id"])
    assert entry["action"] == "user.create"
    after = entry["after"]
    assert after["username"] == "chen.jing"
    for field in ("password_hash", "phone_encrypted", "phone_hash"):
        assert after[field] == "***", field
    raw = (await client.get(LOG, headers=world.h("admin"))).text
    assert "13811112222" not in raw and "Gongjian#2026" not in raw and "$argon2" not in raw
    stored = (
        await session.execute(select(AuditEntry).where(AuditEntry.object_id == entry["object_id"]))
    ).scalar_one()
    assert "13811112222" not in str(stored.after) and "$argon2" not in str(stored.after)


def test_redact_and_snapshot_helpers():
    assert redact(None) is None
    assert redact({"phone": "13800000000", "name": "x", "id_number": None}) == {
        "phone": "***",
        "name": "x",
        "id_number": None,
    }
    from decimal import Decimal

    from gongjian.resident_units.models import ResidentUnit

    unit = ResidentUnit(
        name="东湖供电所",
        credit_code="91330100000000001X",
        lat=Decimal("30.2"),
        lng=120.1,
        contact_phone="057188880000",
    )
    snap = snapshot(unit)
    assert snap["name"] == "东湖供电所" and snap["lat"] == 30.2
    assert snap["contact_phone"] == "***"
    assert snapshot(unit, ["name"]) == {"name": "东湖供电所"}


async def test_failed_writes_leave_no_audit_entry(client, world: World, session):
    before = (await session.execute(select(func.count()).select_from(AuditEntry))).scalar_one()
    r = await client.post(
        "/api/v1/organizations",
        headers=world.h("secretary"),
        json={"name": "越权支部", "kind": "branch", "parent_id": str(world.orgs["b1"].id)},
    )
    assert_problem(r, 404)
    r = await client.post(
        "/api/v1/organizations",
        headers=world.h("secretary"),
        json={"name": "错层级", "kind": "county_committee", "parent_id": str(world.orgs["a1"].id)},
    )
    assert_problem(r, 422)
    assert (await session.execute(select(func.count()).select_from(AuditEntry))).scalar_one() == before
