"""Idempotency-Key on creating requests, so a phone on a bad network can retry safely.

The first request with a key reserves it; its successful response is stored and
replayed to any retry with the same key, caller and body. A retry while the first is
still running answers 409; the same key with a different body answers 422. Failed
attempts release the key so the client may try again.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, LargeBinary, String, delete, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Mapped, mapped_column
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gongjian.core import db
from gongjian.core.db import Base, utcnow
from gongjian.core.errors import problem_response

KEY_TTL = timedelta(hours=24)
STALE_RESERVATION = timedelta(minutes=5)
MAX_KEY_LENGTH = 200
_KEY_SHAPE = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")  # no control characters, at most MAX_KEY_LENGTH
log = logging.getLogger("gongjian.idempotency")


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"

    caller: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)


def _caller(headers: Headers) -> str:
    # Keyed by the credential presented; the key space of one caller is not another's.
    auth = headers.get("authorization", "")
    from gongjian.core.security import decode_access_token

    try:
        claims = decode_access_token(auth.removeprefix("Bearer ").strip())
        return f"{claims.get('kind', 'user')}:{claims['sub']}"
    except Exception:
        return "anon:" + hashlib.sha256(auth.encode()).hexdigest()


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = headers.get("idempotency-key")
        if not key or not scope["path"].startswith("/api/v1/") or scope["path"].startswith("/api/v1/auth/"):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        if not _KEY_SHAPE.match(key):
            msg = f"1 to {MAX_KEY_LENGTH} characters, no control characters"
            await problem_response(
                request,
                "validation_error",
                errors=[
                    {"loc": ["header", "Idempotency-Key"], "msg": msg, "type": "string_pattern_mismatch"}
                ],
            )(scope, receive, send)
            return
        body = await request.body()
        caller = _caller(headers)
        digest = hashlib.sha256(scope["path"].encode() + b"\n" + body).hexdigest()

        try:
            replay = await self._reserve(caller, key, digest)
        except (DBAPIError, OSError):
            log.exception("idempotency reservation failed")
            await problem_response(request, "service_unavailable")(scope, receive, send)
            return
        if replay is not None:
            if replay == "in_progress":
                await problem_response(request, "idempotency_in_progress", headers={"Retry-After": "1"})(
                    scope, receive, send
                )
            elif replay == "mismatch":
                await problem_response(request, "idempotency_mismatch")(scope, receive, send)
            else:
                await self._replay(replay, send)
            return

        sent_body = False

        async def receive_once() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        status: int = 500
        resp_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status, resp_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                resp_headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive_once, capture)
        finally:
            await self._finish(caller, key, status, resp_headers, b"".join(chunks))

    async def _reserve(self, caller: str, key: str, digest: str) -> Any:
        async with db.sessionmaker()() as session, session.begin():
            now = utcnow()
            await session.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - KEY_TTL)
            )
            for _ in range(3):
                inserted = await session.execute(
                    insert(IdempotencyRecord)
                    .values(caller=caller, key=key, request_hash=digest, created_at=now)
                    .on_conflict_do_nothing()
                    .returning(IdempotencyRecord.key)
                )
                if inserted.first() is not None:
                    return None
                record = (
                    await session.execute(
                        select(IdempotencyRecord)
                        .where(IdempotencyRecord.caller == caller, IdempotencyRecord.key == key)
                        .with_for_update()
                    )
                ).scalar_one_or_none()
                if record is not None:
                    break
                # The holder failed and released the key between our insert and select: try again.
            else:
                return "in_progress"
            if record.request_hash != digest:
                return "mismatch"
            if record.status_code is None:
                if record.created_at > now - STALE_RESERVATION:
                    return "in_progress"
                record.created_at = now  # the first attempt died; this one takes over
                return None
            return record

    async def _finish(
        self, caller: str, key: str, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        where = (IdempotencyRecord.caller == caller, IdempotencyRecord.key == key)
        async with db.sessionmaker()() as session, session.begin():
            if 200 <= status < 300:
                kept = {
                    k.decode(): v.decode()
                    for k, v in headers
                    if k.lower() in (b"content-type", b"location", b"etag")
                }
                await session.execute(
                    update(IdempotencyRecord)
                    .where(*where)
                    .values(status_code=status, response_headers=kept, response_body=body)
                )
            else:
                await session.execute(delete(IdempotencyRecord).where(*where))

    async def _replay(self, record: IdempotencyRecord, send: Send) -> None:
        headers = [(k.encode(), v.encode()) for k, v in (record.response_headers or {}).items()]
        headers.append((b"idempotent-replayed", b"true"))
        body = record.response_body or b""
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": record.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})
