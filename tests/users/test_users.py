"""Users and role assignments: granted only within one's subtree, listed and read in scope,
edited with If-Match, disabled at once, and never half-written."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy import func, select

from gongjian.auth.models import RoleAssignment, User
from gongjian.core.audit import AuditEntry
from tests.auth.helpers import assert_problem, bearer, login, refresh, tokens
from tests.factories import World

API = "/api/v1/users"
STRONG = "Gongjian#2026"


def new_user(username: str = "zhao.lei", *assignments: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "username": username,
        "display_name": "赵磊",
        "password": STRONG,
        "role_assignments": list(assignments),
        **extra,
    }


def grant(role: str, org: Any = None, unit: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"role": role}
    if org is not None:
        out["org_id"] = str(org.id)
    if unit is not None:
        out["unit_id"] = str(unit.id)
    return out


async def create(
    client: httpx.AsyncClient, world: World, body: dict[str, Any], who: str = "secretary"
) -> httpx.Response:
    return await client.post(API, headers=world.h(who), json=body)


async def user_count(session) -> int:
    return (await session.execute(select(func.count()).select_from(User))).scalar_one()


async def test_create_user_in_own_subtree(client, world: World, session):
    body = new_user(
        "zhao.lei",
        grant("org_staff", world.orgs["a1"]),
        grant("grid_worker", world.orgs["a1_branch"]),
        phone="13700001111",
    )
    r = await create(client, world, body)
    assert r.status_code == 201, r.text
    assert r.headers["etag"] == '"1"'
    out = r.json()
    assert out["username"] == "zhao.lei" and out["is_active"] is True and out["version"] == 1
    assert out["phone"] == "137****1111"
    assert [(a["role"], a["org_id"]) for a in out["role_assignments"]] == [
        ("org_staff", str(world.orgs["a1"].id)),
        ("grid_worker", str(world.orgs["a1_branch"].id)),
    ]
    assert "password" not in r.text and STRONG not in r.text
    assert (await login(client, "zhao.lei", STRONG)).status_code == 200
    stored = (await session.execute(select(User).where(User.username == "zhao.lei"))).scalar_one()
    assert stored.phone_encrypted and "13700001111" not in stored.phone_encrypted
    assert stored.password_hash.startswith("$argon2id$")


async def test_grants_outside_ones_subtree_are_refused(client, world: World, session):
    before = await user_count(session)
    # A community in another street does not exist for the secretary.
    r = await create(client, world, new_user("xx1", grant("org_staff", world.orgs["b1"])))
    assert_problem(r, 404, "not_found")
    # Nor does the street above, or a sibling community.
    for org in ("street_a", "a2", "county"):
        r = await create(client, world, new_user("xx1", grant("org_admin", world.orgs[org])))
        assert_problem(r, 404, "not_found")
    # platform_admin is the platform admin's to give.
    r = await create(client, world, new_user("xx1", grant("platform_admin")))
    assert_problem(r, 403, "forbidden")
    # Others cannot create users at all.
    for who in ("staff", "street", "gridworker", "liaison", "member", "resident"):
        r = await create(client, world, new_user("xx1", grant("org_staff", world.orgs["a1"])), who=who)
        assert_problem(r, 403, "forbidden")
    assert await user_count(session) == before
    r = await create(client, world, new_user("xx1", grant("platform_admin")), who="admin")
    assert r.status_code == 201, r.text
    assert r.json()["role_assignments"][0]["org_id"] is None


async def test_liaison_is_anchored_on_the_unit(client, world: World, session):
    unit = world.units["a1"]
    r = await create(client, world, new_user("liu.yang", grant("unit_liaison", unit=unit)))
    assert r.status_code == 201, r.text
    (assignment,) = r.json()["role_assignments"]
    assert assignment["unit_id"] == str(unit.id)
    assert assignment["org_id"] == str(world.orgs["a1"].id)  # the unit's community
    me = await client.get(
        "/api/v1/auth/me", headers=bearer((await tokens(client, "liu.yang", STRONG))["access_token"])
    )
    assert me.json()["grants"] == [
        {"role": "unit_liaison", "org_id": str(world.orgs["a1"].id), "unit_id": str(unit.id)}
    ]
    # A unit in another community, a liaison without a unit, a unit on another role: refused.
    r = await create(client, world, new_user("xx2", grant("unit_liaison", unit=world.units["b1"])))
    assert_problem(r, 404, "not_found")
    r = await create(client, world, new_user("xx2", grant("unit_liaison")))
    body = assert_problem(r, 422, "validation_error")
    assert body["errors"][0]["loc"][-1] == "unit_id"
    r = await create(client, world, new_user("xx2", grant("org_staff", world.orgs["a1"], unit=unit)))
    assert_problem(r, 422, "validation_error")
    r = await create(client, world, new_user("xx2", grant("org_staff")))
    assert_problem(r, 422, "validation_error")
    assert (await session.execute(select(User).where(User.username == "xx2"))).first() is None


async def test_list_and_get_within_scope(client, world: World):
    a1_people = {"secretary", "staff", "gridworker", "liaison", "member", "resident"}
    for who, expected, hidden in (
        ("secretary", a1_people, {"admin", "secretary2", "street"}),
        ("staff", a1_people, {"admin", "secretary2", "street"}),
        ("secretary2", {"secretary2"}, a1_people | {"admin", "street"}),
        ("street", a1_people | {"street"}, {"admin", "secretary2"}),
        ("admin", set(world.users), set()),
    ):
        r = await client.get(API, headers=world.h(who), params={"limit": 100})
        assert r.status_code == 200, r.text
        names = {u["username"] for u in r.json()["items"]}
        assert names == expected, (who, names)
        assert not names & hidden
        for name in hidden:
            r = await client.get(f"{API}/{world.users[name].id}", headers=world.h(who))
            assert_problem(r, 404, "not_found")
        for name in expected:
            r = await client.get(f"{API}/{world.users[name].id}", headers=world.h(who))
            assert r.status_code == 200 and r.headers["etag"] == '"1"'
    # Without users:read: 403 on the list and on the people in one's scope, 404 beyond it.
    for who in ("gridworker", "liaison", "member", "resident"):
        assert_problem(await client.get(API, headers=world.h(who)), 403, "forbidden")
        assert_problem(await client.get(f"{API}/{world.users['secretary'].id}", headers=world.h(who)), 403)
    r = await client.get(f"{API}/{uuid.uuid4()}", headers=world.h("secretary"))
    assert_problem(r, 404, "not_found")


async def test_filters(client, world: World):
    r = await client.get(API, headers=world.h("secretary"), params={"role": "grid_worker"})
    assert [u["username"] for u in r.json()["items"]] == ["gridworker"]
    r = await client.get(API, headers=world.h("secretary"), params={"q": "SECRE"})
    assert [u["username"] for u in r.json()["items"]] == ["secretary"]
    r = await client.get(API, headers=world.h("secretary"), params={"q": "%"})
    assert r.json()["items"] == []
    # secretary2 holds org_admin, but not in the secretary's scope.
    r = await client.get(API, headers=world.h("secretary"), params={"role": "org_admin"})
    assert [u["username"] for u in r.json()["items"]] == ["secretary"]
    assert_problem(await client.get(API, headers=world.h("secretary"), params={"role": "king"}), 422)


async def test_assignments_elsewhere_are_not_shown(client, world: World):
    body = new_user("both", grant("org_staff", world.orgs["a1"]), grant("org_staff", world.orgs["b1"]))
    r = await create(client, world, body, who="admin")
    assert r.status_code == 201 and len(r.json()["role_assignments"]) == 2
    uid = r.json()["id"]
    for who, org in (("secretary", "a1"), ("secretary2", "b1")):
        shown = (await client.get(f"{API}/{uid}", headers=world.h(who))).json()["role_assignments"]
        assert [a["org_id"] for a in shown] == [str(world.orgs[org].id)], who
    me = bearer((await tokens(client, "both", STRONG))["access_token"])
    assert len((await client.get("/api/v1/auth/me", headers=me)).json()["grants"]) == 2
    # Neither secretary may edit or disable an account that also answers to the other one.
    for who in ("secretary", "secretary2"):
        r = await client.patch(f"{API}/{uid}", headers=world.h(who), json={"is_active": False})
        assert_problem(r, 403, "forbidden")
    r = await client.patch(f"{API}/{uid}", headers=world.h("admin"), json={"is_active": False})
    assert r.status_code == 200 and r.json()["is_active"] is False


async def test_patch_with_if_match(client, world: World, session):
    uid = world.users["staff"].id
    r = await client.patch(
        f"{API}/{uid}",
        headers=world.h("secretary", **{"If-Match": '"1"'}),
        json={"display_name": "小张", "phone": "13600002222"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"2"' and r.json()["display_name"] == "小张"
    assert r.json()["phone"] == "136****2222"
    r = await client.patch(
        f"{API}/{uid}", headers=world.h("secretary", **{"If-Match": '"1"'}), json={"display_name": "老张"}
    )
    assert_problem(r, 412, "precondition_failed")
    assert (await client.get(f"{API}/{uid}", headers=world.h("secretary"))).json()["display_name"] == "小张"
    # Out of scope: 404 whatever the version; without users:write: 403.
    r = await client.patch(
        f"{API}/{uid}", headers=world.h("secretary2", **{"If-Match": '"2"'}), json={"display_name": "x"}
    )
    assert_problem(r, 404, "not_found")
    r = await client.patch(
        f"{API}/{uid}", headers=world.h("staff", **{"If-Match": '"2"'}), json={"display_name": "x"}
    )
    assert_problem(r, 403, "forbidden")
    for bad in ({"display_name": ""}, {"phone": "12345"}, {"is_active": "maybe"}, {"username": "new"}):
        r = await client.patch(f"{API}/{uid}", headers=world.h("secretary"), json=bad)
        assert_problem(r, 422, "validation_error")
    # A phone already used by another account.
    r = await client.patch(
        f"{API}/{world.users['gridworker'].id}", headers=world.h("secretary"), json={"phone": "13600002222"}
    )
    assert_problem(r, 409, "duplicate")
    entry = (await session.execute(select(AuditEntry).where(AuditEntry.action == "user.update"))).scalar_one()
    assert entry.org_id == world.orgs["a1"].id
    assert entry.before["display_name"] == "staff" and entry.after["display_name"] == "小张"
    assert entry.after["phone_encrypted"] == "***" and entry.after["password_hash"] == "***"


async def test_concurrent_patches_one_wins(client, client2, world: World):
    uid = world.users["staff"].id
    a, b = await asyncio.gather(
        client.patch(
            f"{API}/{uid}", headers=world.h("secretary", **{"If-Match": '"1"'}), json={"display_name": "甲"}
        ),
        client2.patch(
            f"{API}/{uid}", headers=world.h("admin", **{"If-Match": '"1"'}), json={"display_name": "乙"}
        ),
    )
    assert sorted([a.status_code, b.status_code]) == [200, 412], (a.text, b.text)
    winner = a if a.status_code == 200 else b
    shown = (await client.get(f"{API}/{uid}", headers=world.h("admin"))).json()
    assert shown["display_name"] == winner.json()["display_name"] and shown["version"] == 2


async def test_disabling_a_user_stops_their_tokens(client, world: World, session):
    pair = await tokens(client, "staff")
    h = bearer(pair["access_token"])
    assert (await client.get("/api/v1/auth/me", headers=h)).status_code == 200
    r = await client.patch(
        f"{API}/{world.users['staff'].id}", headers=world.h("secretary"), json={"is_active": False}
    )
    assert r.status_code == 200 and r.json()["is_active"] is False
    assert_problem(await client.get("/api/v1/auth/me", headers=h), 401, "invalid_token")
    assert_problem(await client.get(API, headers=h), 401, "invalid_token")
    assert_problem(await refresh(client, pair["refresh_token"]), 400, "invalid_grant")
    assert_problem(await login(client, "staff"), 403, "account_disabled")
    # Enabled again: a fresh login works, the old refresh token stays revoked.
    r = await client.patch(
        f"{API}/{world.users['staff'].id}", headers=world.h("secretary"), json={"is_active": True}
    )
    assert r.status_code == 200
    assert (await login(client, "staff")).status_code == 200
    assert_problem(await refresh(client, pair["refresh_token"]), 400, "invalid_grant")


async def test_cannot_disable_oneself(client, world: World):
    r = await client.patch(
        f"{API}/{world.users['secretary'].id}", headers=world.h("secretary"), json={"is_active": False}
    )
    assert_problem(r, 409, "cannot_disable_self")
    assert (await client.get("/api/v1/auth/me", headers=world.h("secretary"))).status_code == 200


async def test_duplicates_are_409(client, client2, world: World, session):
    r = await create(client, world, new_user("secretary2", grant("org_staff", world.orgs["a1"])))
    body = assert_problem(r, 409, "duplicate")
    assert body["detail"] == "用户已存在"
    r = await create(
        client, world, new_user("pp1", grant("org_staff", world.orgs["a1"]), phone="13500003333")
    )
    assert r.status_code == 201
    r = await create(
        client, world, new_user("pp2", grant("org_staff", world.orgs["a1"]), phone="13500003333")
    )
    assert_problem(r, 409, "duplicate")
    # Two admins creating the same username at once: one 201, one 409, one row.
    body = new_user("same.name", grant("org_staff", world.orgs["a1"]))
    a, b = await asyncio.gather(create(client, world, body), create(client2, world, body, who="admin"))
    assert sorted([a.status_code, b.status_code]) == [201, 409], (a.text, b.text)
    stmt = select(func.count()).select_from(User).where(User.username == "same.name")
    assert (await session.execute(stmt)).scalar_one() == 1


async def test_a_request_failing_halfway_writes_nothing(client, world: World, session):
    before = await user_count(session)
    audit_before = (await session.execute(select(func.count()).select_from(AuditEntry))).scalar_one()
    # The second assignment is out of scope: 404, and no user.
    r = await create(
        client,
        world,
        new_user("half", grant("org_staff", world.orgs["a1"]), grant("org_staff", world.orgs["b1"])),
    )
    assert_problem(r, 404, "not_found")
    # The same assignment twice trips the unique index after the user row was inserted: 409, and
    # the user row is rolled back with it.
    r = await create(
        client,
        world,
        new_user("half", grant("org_staff", world.orgs["a1"]), grant("org_staff", world.orgs["a1"])),
    )
    assert_problem(r, 409, "conflict")
    assert await user_count(session) == before
    assert (await session.execute(select(func.count()).select_from(AuditEntry))).scalar_one() == audit_before
    assert (await session.execute(select(User).where(User.username == "half"))).first() is None


async def test_grant_and_withdraw_roles(client, world: World, session):
    uid = world.users["staff"].id
    url = f"{API}/{uid}/role-assignments"
    r = await client.post(
        url, headers=world.h("secretary"), json=grant("grid_worker", world.orgs["a1_branch"])
    )
    assert r.status_code == 201, r.text
    assignment_id = r.json()["id"]
    r = await client.post(
        url, headers=world.h("secretary"), json=grant("grid_worker", world.orgs["a1_branch"])
    )
    assert_problem(r, 409, "duplicate")
    assert_problem(
        await client.post(url, headers=world.h("secretary"), json=grant("org_staff", world.orgs["b1"])), 404
    )
    assert_problem(await client.post(url, headers=world.h("secretary"), json=grant("platform_admin")), 403)
    assert_problem(
        await client.post(url, headers=world.h("secretary2"), json=grant("org_staff", world.orgs["b1"])), 404
    )
    # Withdrawn: by someone in scope only, and under the right user.
    other = world.users["gridworker"].id
    r = await client.delete(f"{API}/{other}/role-assignments/{assignment_id}", headers=world.h("secretary"))
    assert_problem(r, 404, "not_found")
    r = await client.delete(f"{url}/{assignment_id}", headers=world.h("secretary2"))
    assert_problem(r, 404, "not_found")
    r = await client.delete(f"{url}/{assignment_id}", headers=world.h("secretary"))
    assert r.status_code == 204
    stmt = select(RoleAssignment.role).where(RoleAssignment.user_id == uid)
    assert (await session.execute(stmt)).scalars().all() == ["org_staff"]
    # The platform admin's own assignment is nobody else's to withdraw.
    (admin_assignment,) = (
        (
            await session.execute(
                select(RoleAssignment.id).where(RoleAssignment.user_id == world.users["admin"].id)
            )
        )
        .scalars()
        .all()
    )
    r = await client.delete(
        f"{API}/{world.users['admin'].id}/role-assignments/{admin_assignment}", headers=world.h("secretary")
    )
    assert_problem(r, 404, "not_found")


async def test_anyone_may_change_their_own_password(client, world: World):
    # Members, residents, liaisons and grid workers hold no users:read, yet own their password.
    for who in ("member", "resident", "liaison", "gridworker"):
        r = await client.post(
            f"{API}/me/password",
            headers=world.h(who),
            json={"current_password": "Demo@2026", "new_password": "Changed#2026"},
        )
        assert r.status_code == 204, (who, r.text)
        assert (await login(client, who, "Changed#2026")).status_code == 200


async def test_admin_cannot_withdraw_own_platform_admin_role(client, world):
    me = await client.get(f"/api/v1/users/{world.users['admin'].id}", headers=world.h("admin"))
    assert me.status_code == 200, me.text
    admin_role = next(a for a in me.json()["role_assignments"] if a["role"] == "platform_admin")
    admin_id = world.users["admin"].id
    r = await client.delete(
        f"/api/v1/users/{admin_id}/role-assignments/{admin_role['id']}", headers=world.h("admin")
    )
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "cannot_remove_own_admin"
    again = await client.get("/api/v1/auth/me", headers=world.h("admin"))
    assert "platform_admin" in again.json()["roles"]
