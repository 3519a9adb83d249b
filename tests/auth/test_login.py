"""The password grant: by username or phone, lockout after repeated failures, disabled accounts,
and the password rules (等保2.0: 8+ characters of 3 classes) on creation and change."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import delete, func, select, update

from gongjian.auth.models import LoginFailure, RefreshToken, User
from gongjian.core.db import utcnow
from gongjian.core.security import decode_access_token
from tests.auth.helpers import TOKEN_URL, assert_problem, bearer, login, refresh, tokens
from tests.factories import PASSWORD, World


async def _failures(session, user: User) -> int:
    stmt = select(func.count()).select_from(LoginFailure).where(LoginFailure.user_id == user.id)
    return (await session.execute(stmt)).scalar_one()


async def _add_failures(session, user: User, *ages: timedelta) -> None:
    now = utcnow()
    session.add_all([LoginFailure(user_id=user.id, at=now - age) for age in ages])
    await session.commit()


async def test_password_grant_by_username(client, world: World):
    r = await login(client, "secretary")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    claims = decode_access_token(body["access_token"])
    assert claims["sub"] == str(world.users["secretary"].id)
    assert claims["roles"] == ["org_admin"]
    assert {"iss", "aud", "exp", "iat"} <= set(claims)
    me = await client.get("/api/v1/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["name"] == "secretary" and me.json()["roles"] == ["org_admin"]
    assert me.json()["grants"][0]["org_id"] == str(world.orgs["a1"].id)


async def test_password_grant_by_phone(client, world: World):
    r = await client.post(
        "/api/v1/users",
        headers=world.h("secretary"),
        json={
            "username": "wang.fang",
            "display_name": "王芳",
            "password": "Gongjian#2026",
            "phone": "13912345678",
            "role_assignments": [{"role": "org_staff", "org_id": str(world.orgs["a1"].id)}],
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["phone"] == "139****5678"
    by_phone = await login(client, "13912345678", "Gongjian#2026")
    assert by_phone.status_code == 200, by_phone.text
    assert decode_access_token(by_phone.json()["access_token"])["sub"] == r.json()["id"]
    # The phone with stray spaces is the same phone; a different one is nobody.
    assert (await login(client, " 13912345678 ", "Gongjian#2026")).status_code == 200
    assert_problem(await login(client, "13912345679", "Gongjian#2026"), 401, "invalid_credentials")


async def test_wrong_password_and_unknown_user_answer_alike(client, world: World):
    wrong = assert_problem(await login(client, "secretary", "Wrong@2026"), 401, "invalid_credentials")
    unknown = assert_problem(await login(client, "nobody", "Wrong@2026"), 401, "invalid_credentials")
    assert wrong["detail"] == unknown["detail"] == "用户名或密码错误"
    english = assert_problem(await login(client, "nobody", "x", **{"Accept-Language": "en"}), 401)
    assert english["detail"] == "Wrong username or password"
    # Missing fields are refused the same way, never a 500.
    r = await client.post(TOKEN_URL, data={"username": "secretary"})
    assert_problem(r, 401, "invalid_credentials")
    r = await client.post(
        TOKEN_URL, data={"grant_type": "implicit", "username": "secretary", "password": PASSWORD}
    )
    assert_problem(r, 400, "unsupported_grant_type")
    r = await client.post(TOKEN_URL, data={"username": "x" * 51, "password": PASSWORD})
    assert_problem(r, 422, "validation_error")


async def test_lockout_after_five_failures(client, world: World, session):
    user = world.users["secretary"]
    for _ in range(4):
        assert_problem(await login(client, "secretary", "Wrong@2026"), 401, "invalid_credentials")
    r = await login(client, "secretary", "Wrong@2026")
    body = assert_problem(r, 423, "account_locked")
    assert "15分钟" in body["detail"] and "锁定" in body["detail"]
    retry_after = int(r.headers["retry-after"])
    assert 890 <= retry_after <= 900
    # Locked: even the right password is refused, and that attempt is not counted as a failure.
    r = await login(client, "secretary", PASSWORD, **{"Accept-Language": "en"})
    body = assert_problem(r, 423, "account_locked")
    assert "locked" in body["detail"] and "15" in body["detail"]
    assert int(r.headers["retry-after"]) <= retry_after
    assert await _failures(session, user) == 5
    # Another account is not affected.
    assert (await login(client, "secretary2")).status_code == 200


async def test_lock_ends_after_the_lockout_period(client, world: World, session):
    user = world.users["secretary"]
    # Five failures within a minute, the last one 16 minutes ago: the lock is over.
    await _add_failures(session, user, *(timedelta(minutes=16, seconds=s) for s in range(0, 50, 10)))
    r = await login(client, "secretary")
    assert r.status_code == 200, r.text
    # A successful login clears the failures.
    assert await _failures(session, user) == 0


async def test_failures_outside_the_window_do_not_count(client, world: World, session):
    user = world.users["secretary"]
    # Four failures 20 minutes ago and one fresh one: five in all, but not five within 15 minutes.
    await _add_failures(session, user, *(timedelta(minutes=20, seconds=s) for s in range(4)))
    assert_problem(await login(client, "secretary", "Wrong@2026"), 401, "invalid_credentials")
    assert (await login(client, "secretary")).status_code == 200


async def test_recent_failures_lock_even_when_inserted_directly(client, world: World, session):
    user = world.users["secretary"]
    await _add_failures(session, user, *(timedelta(minutes=m) for m in (14, 10, 6, 3, 1)))
    r = await login(client, "secretary")
    assert_problem(r, 423, "account_locked")
    # Locked until 15 minutes after the last failure (1 minute ago): about 14 minutes to go.
    assert 13 * 60 < int(r.headers["retry-after"]) <= 14 * 60


async def test_concurrent_guesses_never_exceed_the_limit(client, client2, world: World, session):
    user = world.users["secretary"]
    attempts = [(client if i % 2 else client2) for i in range(10)]
    results = await asyncio.gather(*(login(c, "secretary", f"Wrong@{i}x") for i, c in enumerate(attempts)))
    statuses = sorted(r.status_code for r in results)
    assert set(statuses) <= {401, 423}, statuses
    assert statuses.count(401) == 4 and statuses.count(423) == 6
    assert await _failures(session, user) == 5


async def test_disabled_account_is_refused(client, world: World, session):
    await session.execute(update(User).where(User.id == world.users["staff"].id).values(is_active=False))
    await session.commit()
    assert_problem(await login(client, "staff"), 403, "account_disabled")
    # A wrong password on a disabled account says nothing about the account.
    assert_problem(await login(client, "staff", "Wrong@2026"), 401, "invalid_credentials")


async def test_deleted_user_cannot_log_in(client, world: World, session):
    await session.execute(delete(User).where(User.id == world.users["resident"].id))
    await session.commit()
    assert_problem(await login(client, "resident"), 401, "invalid_credentials")


WEAK = ["Ab1!", "abcdefgh", "abcdefg1", "ABCDEFG1", "abcdEFGH", "12345678!", "        "]


async def test_password_rules_on_user_creation(client, world: World, session):
    before = (await session.execute(select(func.count()).select_from(User))).scalar_one()
    for password in WEAK:
        r = await client.post(
            "/api/v1/users",
            headers=world.h("secretary"),
            json={
                "username": "li.lei",
                "display_name": "李雷",
                "password": password,
                "role_assignments": [{"role": "org_staff", "org_id": str(world.orgs["a1"].id)}],
            },
        )
        assert_problem(r, 422)
        assert r.json()["code"] in ("weak_password", "validation_error"), r.text
    r = await client.post(
        "/api/v1/users",
        headers=world.h("secretary", **{"Accept-Language": "en"}),
        json={
            "username": "li.lei",
            "display_name": "李雷",
            "password": "abcdefgh1",
            "role_assignments": [{"role": "org_staff", "org_id": str(world.orgs["a1"].id)}],
        },
    )
    body = assert_problem(r, 422, "weak_password")
    assert "3 of" in body["detail"]
    assert (await session.execute(select(func.count()).select_from(User))).scalar_one() == before
    # Three classes of 8+ characters pass: lower + upper + digit, lower + digit + symbol.
    for i, password in enumerate(["abcdEFG1", "abcdef1!"]):
        r = await client.post(
            "/api/v1/users",
            headers=world.h("secretary"),
            json={
                "username": f"li.lei{i}",
                "display_name": "李雷",
                "password": password,
                "role_assignments": [{"role": "org_staff", "org_id": str(world.orgs["a1"].id)}],
            },
        )
        assert r.status_code == 201, r.text
        assert (await login(client, f"li.lei{i}", password)).status_code == 200


async def test_password_change(client, world: World, session):
    old = await tokens(client, "resident")
    other_session = await tokens(client, "resident")
    h = bearer(old["access_token"])
    url = "/api/v1/users/me/password"
    for weak in WEAK[1:]:
        r = await client.post(url, headers=h, json={"current_password": PASSWORD, "new_password": weak})
        assert_problem(r, 422)
    r = await client.post(
        url, headers=h, json={"current_password": "Wrong@2026", "new_password": "New#Pass2026"}
    )
    body = assert_problem(r, 422, "wrong_current_password")
    assert body["errors"][0]["loc"] == ["body", "current_password"]
    assert (await login(client, "resident")).status_code == 200  # nothing changed so far
    r = await client.post(url, headers=h, json={"current_password": PASSWORD, "new_password": "New#Pass2026"})
    assert r.status_code == 204, r.text
    assert_problem(await login(client, "resident"), 401, "invalid_credentials")
    assert (await login(client, "resident", "New#Pass2026")).status_code == 200
    # Every session from before the change is logged out.
    assert_problem(await refresh(client, old["refresh_token"]), 400, "invalid_grant")
    assert_problem(await refresh(client, other_session["refresh_token"]), 400, "invalid_grant")
    stmt = (
        select(func.count())
        .select_from(RefreshToken)
        .where(RefreshToken.user_id == world.users["resident"].id, RefreshToken.revoked_at.is_(None))
    )
    assert (await session.execute(stmt)).scalar_one() == 1  # the login with the new password
    stmt = select(User.password_changed_at).where(User.id == world.users["resident"].id)
    assert (await session.execute(stmt)).scalar_one() is not None
