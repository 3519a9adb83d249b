"""Rotating refresh tokens: a new pair each time, reuse revokes the family, logout revokes,
expired or disabled is refused."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select, update

from gongjian.auth.models import RefreshToken, User
from gongjian.core.db import utcnow
from gongjian.core.security import sha256_hex
from tests.auth.helpers import TOKEN_URL, assert_problem, bearer, refresh, tokens
from tests.factories import World


async def test_each_refresh_answers_a_new_pair(client, world: World, session):
    first = await tokens(client, "secretary")
    r = await refresh(client, first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["token_type"] == "bearer" and second["expires_in"] == 900
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert (await client.get("/api/v1/auth/me", headers=bearer(second["access_token"]))).status_code == 200
    third = (await refresh(client, second["refresh_token"])).json()
    assert third["refresh_token"] not in (first["refresh_token"], second["refresh_token"])
    # Stored hashed, one family, the used ones marked used.
    rows = (await session.execute(select(RefreshToken).order_by(RefreshToken.created_at))).scalars().all()
    assert len(rows) == 3 and len({t.family_id for t in rows}) == 1
    assert rows[0].token_hash == sha256_hex(first["refresh_token"])
    assert all(first["refresh_token"] not in t.token_hash for t in rows)
    assert [t.used_at is not None for t in rows] == [True, True, False]


async def test_reuse_revokes_the_whole_family(client, world: World):
    first = await tokens(client, "secretary")
    other_login = await tokens(client, "secretary")
    second = (await refresh(client, first["refresh_token"])).json()
    third = (await refresh(client, second["refresh_token"])).json()
    # The first token shows up again: it leaked. Refused, and its family is gone.
    body = assert_problem(await refresh(client, first["refresh_token"]), 400, "invalid_grant")
    assert body["detail"] == "刷新令牌无效或已失效"
    assert_problem(await refresh(client, third["refresh_token"]), 400, "invalid_grant")
    # Another login (another family) is not touched.
    assert (await refresh(client, other_login["refresh_token"])).status_code == 200


async def test_concurrent_refresh_with_one_token_counts_as_reuse(client, client2, world: World):
    first = await tokens(client, "secretary")
    a, b = await asyncio.gather(
        refresh(client, first["refresh_token"]), refresh(client2, first["refresh_token"])
    )
    assert sorted([a.status_code, b.status_code]) == [200, 400], (a.text, b.text)
    winner = a if a.status_code == 200 else b
    # The second presentation is a reuse: the pair the first one got is revoked with the family.
    assert_problem(await refresh(client, winner.json()["refresh_token"]), 400, "invalid_grant")


async def test_logout_revokes_the_family(client, world: World):
    mine = await tokens(client, "secretary")
    elsewhere = await tokens(client, "secretary")
    r = await client.post(
        "/api/v1/auth/logout",
        headers=bearer(mine["access_token"]),
        json={"refresh_token": mine["refresh_token"]},
    )
    assert r.status_code == 204, r.text
    assert_problem(await refresh(client, mine["refresh_token"]), 400, "invalid_grant")
    assert (await refresh(client, elsewhere["refresh_token"])).status_code == 200


async def test_logout_without_a_token_logs_out_everywhere(client, world: World):
    one = await tokens(client, "secretary")
    two = await tokens(client, "secretary")
    theirs = await tokens(client, "secretary2")
    r = await client.post("/api/v1/auth/logout", headers=bearer(one["access_token"]))
    assert r.status_code == 204, r.text
    assert_problem(await refresh(client, one["refresh_token"]), 400, "invalid_grant")
    assert_problem(await refresh(client, two["refresh_token"]), 400, "invalid_grant")
    # Someone else's token in the body does not log them out.
    r = await client.post(
        "/api/v1/auth/logout",
        headers=bearer(two["access_token"]),
        json={"refresh_token": theirs["refresh_token"]},
    )
    assert r.status_code == 204
    assert (await refresh(client, theirs["refresh_token"])).status_code == 200
    assert_problem(await client.post("/api/v1/auth/logout"), 401, "not_authenticated")


async def test_expired_refresh_token_is_refused(client, world: World, session):
    pair = await tokens(client, "secretary")
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.token_hash == sha256_hex(pair["refresh_token"]))
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    await session.commit()
    assert_problem(await refresh(client, pair["refresh_token"]), 400, "invalid_grant")


async def test_bad_refresh_tokens_are_refused(client, world: World, session):
    for value in ("garbage", "x" * 200):
        assert_problem(await refresh(client, value), 400, "invalid_grant")
    assert_problem(await client.post(TOKEN_URL, data={"grant_type": "refresh_token"}), 400, "invalid_grant")
    assert_problem(await refresh(client, "x" * 201), 422, "validation_error")
    assert (await session.execute(select(func.count()).select_from(RefreshToken))).scalar_one() == 0


async def test_refresh_of_a_disabled_user_is_refused(client, world: World, session):
    pair = await tokens(client, "staff")
    await session.execute(update(User).where(User.id == world.users["staff"].id).values(is_active=False))
    await session.commit()
    assert_problem(await refresh(client, pair["refresh_token"]), 400, "invalid_grant")
