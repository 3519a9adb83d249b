"""The baseline: a bare Starlette + asyncpg app running the same SQL as Gongjian, same JSON shape.

Started by the throughput benchmark as `uvicorn tests.bench.bare_app:app`, configured by the JSON
file named in BENCH_BARE_CONFIG, which holds the statements the real app sends (captured from its
own code for each principal), how their parameters come from the request, and the response fields.

Routes (no authentication: the principal is part of the path):
    GET /healthz                                      no database (the load generator's ceiling)
    GET /bare/{principal}/organizations/{org_id}      the app's SELECT ... WHERE id = $1 [AND scope]
    GET /bare/{principal}/organizations?kind=&limit=  the app's list statement, with next_cursor
    GET /full/{principal}/...                         the same, plus what the app does around it:
        verify the bearer JWT (python-jose, HS256), then in one transaction load the user and
        their grants with the app's statements before the query.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import asyncpg
from jose import jwt  # the app's JWT library, same options
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CONFIG: dict[str, Any] = json.loads(Path(os.environ["BENCH_BARE_CONFIG"]).read_text(encoding="utf-8"))
FIELDS: list[str] = CONFIG["fields"]
pool: asyncpg.Pool | None = None


def _value(v: Any) -> Any:
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, datetime):
        s = v.isoformat()
        return s[:-6] + "Z" if s.endswith("+00:00") else s
    if isinstance(v, date):
        return v.isoformat()
    return v


def _org(record: asyncpg.Record) -> dict[str, Any]:
    return {f: _value(record[f]) for f in FIELDS}


def _params(spec: list[dict[str, Any]], request: Request, sub: str | None = None) -> list[Any]:
    out: list[Any] = []
    for p in spec:
        if "const" in p:
            out.append(p["const"])
        elif p["req"] == "org_id":
            out.append(uuid.UUID(request.path_params["org_id"]))
        elif p["req"] == "kind":
            out.append(request.query_params["kind"])
        elif p["req"] == "sub":
            out.append(uuid.UUID(sub))
    return out


def _cursor(created_at: datetime, obj_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(obj_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def _authenticate(request: Request, conn: asyncpg.Connection) -> str | None:
    token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    auth = CONFIG["auth"]
    claims = jwt.decode(
        token, auth["key"], algorithms=["HS256"], audience=auth["audience"], issuer=auth["issuer"]
    )
    sub = str(claims["sub"])
    if await conn.fetchrow(auth["user"]["sql"], *_params(auth["user"]["params"], request, sub)) is None:
        return None
    await conn.fetch(auth["grants"]["sql"], *_params(auth["grants"]["params"], request, sub))
    return sub


async def _run(request: Request, op: str, full: bool) -> Response:
    q = CONFIG["routes"][request.path_params["principal"]][op]
    assert pool is not None
    async with pool.acquire() as conn:
        if full:
            async with conn.transaction():
                if await _authenticate(request, conn) is None:
                    return JSONResponse({"code": "invalid_token"}, status_code=401)
                rows = await conn.fetch(q["sql"], *_params(q["params"], request))
        else:
            rows = await conn.fetch(q["sql"], *_params(q["params"], request))
    if op == "get":
        if not rows:
            return JSONResponse({"code": "not_found"}, status_code=404)
        return JSONResponse(_org(rows[0]), headers={"ETag": f'"{rows[0]["version"]}"'})
    limit = int(request.query_params.get("limit", "20"))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = _cursor(rows[-1]["created_at"], rows[-1]["id"])
    return JSONResponse({"items": [_org(r) for r in rows], "next_cursor": next_cursor})


async def get_org(request: Request) -> Response:
    return await _run(request, "get", full=False)


async def list_orgs(request: Request) -> Response:
    return await _run(request, "list", full=False)


async def full_get_org(request: Request) -> Response:
    return await _run(request, "get", full=True)


async def full_list_orgs(request: Request) -> Response:
    return await _run(request, "list", full=True)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global pool
    pool = await asyncpg.create_pool(CONFIG["dsn"], min_size=CONFIG["pool_min"], max_size=CONFIG["pool_max"])
    try:
        yield
    finally:
        await pool.close()


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/bare/{principal}/organizations", list_orgs),
        Route("/bare/{principal}/organizations/{org_id}", get_org),
        Route("/full/{principal}/organizations", full_list_orgs),
        Route("/full/{principal}/organizations/{org_id}", full_get_org),
    ],
    lifespan=lifespan,
)
