"""Helpers shared by the auth, users, core and access-matrix tests."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import PASSWORD

TOKEN_URL = "/api/v1/auth/token"


async def login(
    client: httpx.AsyncClient, username: str, password: str = PASSWORD, **headers: str
) -> httpx.Response:
    return await client.post(TOKEN_URL, data={"username": username, "password": password}, headers=headers)


async def tokens(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> dict[str, Any]:
    r = await login(client, username, password)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post(TOKEN_URL, data={"grant_type": "refresh_token", "refresh_token": refresh_token})


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def assert_problem(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = dict(r.json())
    assert body["status"] == status and body["detail"] and body["type"].endswith(body["code"])
    if code is not None:
        assert body["code"] == code, body
    return body
