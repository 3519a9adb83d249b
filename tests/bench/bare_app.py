"""The baseline: a bare Starlette + asyncpg app running the same SQL as Gongjian, same JSON shape.

Started by the throughput benchmark as `uvicorn tests.bench.bare_app:app`, configured by the JSON
file named in BENCH_BARE_CONFIG, which holds what the real app sent to PostgreSQL for each
principal and operation (captured by running the request through the app itself): every round
trip in order (BEGIN, the principal statement, the query, COMMIT), how the bound values come from
the request, and the response fields.

Routes (the principal whose statements are replayed is part of the path):
    GET /healthz                                      no database (the load generator's ceiling)
    GET /full/{principal}/organizations/{org_id}      the same SQL as the app's request: verify the
    GET /full/{principal}/organizations?kind=&limit=  bearer JWT (python-jose, the app's options),
        then replay every round trip the app made, in the same transaction shape, and answer the
        last statement's rows as the app does (ETag; items + next_cursor in tree order).
        This is the baseline the issue's target is measured against.
    GET /bare/{principal}/organizations/{org_id}      only the request's last statement (the
    GET /bare/{principal}/organizations?kind=&limit=  organization query, scope filter included),
        no token, no principal, no transaction: a lower bound on what any endpoint costs.
"""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import asyncpg
from jose import JWTError, jwt  # the app's JWT library, same options
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
        elif p["req"] == "sub" and sub is not None:
            out.append(uuid.UUID(sub))
        else:
            raise ValueError(f"unknown request value {p['req']!r}")
    return out


def _cursor(path: str) -> str:
    # As gongjian.core.pagination.paginate_by_key: the last row's path, tagged "k".
    raw = json.dumps(["k", path]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_REQUIRE = {
    "require_exp": True,
    "require_iat": True,
    "require_sub": True,
    "require_aud": True,
    "require_iss": True,
}


def _verify(request: Request) -> str | None:
    """The bearer token's subject, checked as gongjian.core.security.decode_access_token does."""
    token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if len(token) > 4096 or not _JWT_SHAPE.match(token):
        return None
    auth = CONFIG["auth"]
    try:
        claims = jwt.decode(
            token,
            auth["key"],
            algorithms=["HS256"],
            audience=auth["audience"],
            issuer=auth["issuer"],
            options=_REQUIRE,
        )
    except JWTError:
        return None
    return str(claims["sub"])


async def _replay(
    conn: asyncpg.Connection, trips: list[dict[str, Any]], request: Request, sub: str
) -> list[asyncpg.Record] | None:
    """Every round trip the app made for this request, in order; the last statement's rows
    (None when the principal statement finds no active user: the app answers 401)."""
    tx = None
    rows: list[asyncpg.Record] = []
    try:
        for trip in trips:
            sql = trip["sql"]
            if sql == "BEGIN":
                tx = conn.transaction()
                await tx.start()
            elif sql in ("COMMIT", "ROLLBACK"):
                assert tx is not None
                await (tx.commit() if sql == "COMMIT" else tx.rollback())
                tx = None
            else:
                rows = await conn.fetch(sql, *_params(trip["params"], request, sub))
                if not rows and any(p.get("req") == "sub" for p in trip["params"]):
                    return None
    finally:
        if tx is not None:
            await tx.rollback()
    return rows


async def _run(request: Request, op: str, full: bool) -> Response:
    route = CONFIG["routes"][request.path_params["principal"]][op]
    assert pool is not None
    if full:
        sub = _verify(request)
        if sub is None:
            return JSONResponse({"code": "invalid_token"}, status_code=401)
        async with pool.acquire() as conn:
            rows = await _replay(conn, route["round_trips"], request, sub)
        if rows is None:
            return JSONResponse({"code": "invalid_token"}, status_code=401)
    else:
        q = route["query"]
        async with pool.acquire() as conn:
            rows = await conn.fetch(q["sql"], *_params(q["params"], request))
    if op == "get":
        if not rows:
            return JSONResponse({"code": "not_found"}, status_code=404)
        return JSONResponse(_org(rows[0]), headers={"ETag": f'"{rows[0]["version"]}"'})
    limit = int(request.query_params.get("limit", "20"))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = _cursor(rows[-1]["path"])
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


async def _no_reset(conn: asyncpg.Connection) -> None:
    """asyncpg's pool would send `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`
    on every release, a round trip the app's SQLAlchemy pool does not make (its reset-on-return is a
    rollback, which sends nothing once the transaction has ended): leave it out, so that both send the
    same statements."""


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global pool
    pool = await asyncpg.create_pool(
        CONFIG["dsn"], min_size=CONFIG["pool_min"], max_size=CONFIG["pool_max"], reset=_no_reset
    )
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
