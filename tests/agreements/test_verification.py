"""The public verification endpoint (what a signed PDF's QR code opens): no login, and nothing but
the number, the version and the status of the exact version whose content hash was given."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from gongjian.agreements.models import Agreement, AgreementState
from gongjian.agreements.verification import VerificationStatus, status_of
from gongjian.core import db, storage
from gongjian.core.storage import LocalStorage
from tests.agreements.helpers import create_draft, insert_agreement, send, sign
from tests.factories import World, build_world

URL = "/api/v1/agreements/verify"
NOT_SIGNED, SUPERSEDED, TERMINATED = "not_signed", "superseded", "terminated"


@pytest.fixture
async def world(session: Any) -> World:
    return await build_world(session)


@pytest.fixture(autouse=True)
def files(tmp_path: Path) -> Iterator[None]:
    storage.set_storage(LocalStorage(tmp_path / "storage"))
    yield
    storage.set_storage(None)


async def verify(client: httpx.AsyncClient, number: str, content_hash: str, **headers: str) -> dict[str, Any]:
    r = await client.get(URL, params={"number": number, "hash": content_hash}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "public, max-age=60"
    body = dict(r.json())
    # Never more than these three fields, whatever the answer.
    assert set(body) == {"number", "version_no", "status"}
    return body


async def activate(client: httpx.AsyncClient, w: World, aid: str) -> dict[str, Any]:
    a = await send(client, w, aid)
    await sign(client, w, aid, "secretary", a["content_hash"])
    body = dict((await sign(client, w, aid, "liaison", a["content_hash"])).json())
    assert body["state"] == "active"
    return body


async def test_lifecycle(client: httpx.AsyncClient, world: World) -> None:
    draft = await create_draft(client, world)
    number = draft["number"]
    pending = await send(client, world, draft["id"])
    v1_hash = pending["content_hash"]
    assert await verify(client, number, v1_hash) == {"number": number, "version_no": 1, "status": NOT_SIGNED}

    await sign(client, world, draft["id"], "secretary", v1_hash)
    v1 = (await sign(client, world, draft["id"], "liaison", v1_hash)).json()
    assert v1["state"] == "active"
    assert await verify(client, number, v1_hash) == {"number": number, "version_no": 1, "status": "current"}

    # An amendment: while it is drafted and signed, v1 stays current; once active, v1 is superseded.
    r = await client.post(f"/api/v1/agreements/{v1['id']}/amendments", headers=world.h("secretary"))
    assert r.status_code == 201, r.text
    v2_id = r.json()["id"]
    v2 = await send(client, world, v2_id)
    v2_hash = v2["content_hash"]
    assert v2_hash != v1_hash
    assert (await verify(client, number, v1_hash))["status"] == "current"
    assert await verify(client, number, v2_hash) == {"number": number, "version_no": 2, "status": NOT_SIGNED}
    await sign(client, world, v2_id, "secretary", v2_hash)
    await sign(client, world, v2_id, "liaison", v2_hash)
    assert await verify(client, number, v1_hash) == {"number": number, "version_no": 1, "status": SUPERSEDED}
    assert await verify(client, number, v2_hash) == {"number": number, "version_no": 2, "status": "current"}

    r = await client.post(f"/api/v1/agreements/{v2_id}/terminate", headers=world.h("secretary"),
                          json={"reason": "单位搬离本社区"})
    assert r.status_code == 200, r.text
    assert await verify(client, number, v2_hash) == {"number": number, "version_no": 2, "status": TERMINATED}
    assert (await verify(client, number, v1_hash))["status"] == "superseded"


async def test_tampered_or_unknown(client: httpx.AsyncClient, world: World) -> None:
    a = await activate(client, world, (await create_draft(client, world))["id"])
    number, good = a["number"], a["content_hash"]
    flipped = good[:-1] + ("0" if good[-1] != "0" else "1")
    other = await activate(client, world, (await create_draft(client, world, term_to="2026-06-30"))["id"])
    unknown = {"version_no": None, "status": "unknown"}
    for asked_number, asked_hash in (
        (number, flipped),  # one character changed
        (number, good[:32]),  # cut short
        (number, good + "00"),  # lengthened
        (number, "z" * 64),  # not hex
        (number, "' OR 1=1 --"),
        (number, other["content_hash"]),  # a real hash, of another agreement
        ("GJ-2099-9999", good),  # the right hash under another number
        (number + " ", good),
        (number, "a\x00b"),
        (number, "阿" * 64),
    ):
        assert await verify(client, asked_number, asked_hash) == {"number": asked_number, **unknown}
    # Case and surrounding blanks of the hex digits do not matter.
    assert (await verify(client, number, good.upper()))["status"] == "current"
    assert (await verify(client, number, f" {good} "))["status"] == "current"


async def test_declined_hash_is_unknown(client: httpx.AsyncClient, world: World) -> None:
    a = await send(client, world, (await create_draft(client, world))["id"])
    r = await client.post(f"/api/v1/agreements/{a['id']}/decline", headers=world.h("liaison"),
                          json={"reason": "承诺数量需要调整"})
    assert r.status_code == 200, r.text
    assert (await verify(client, a["number"], a["content_hash"]))["status"] == "unknown"


async def test_no_login_and_nothing_else_revealed(client: httpx.AsyncClient, world: World) -> None:
    a = await activate(client, world, (await create_draft(client, world, title="东湖共建协议"))["id"])
    r = await client.get(URL, params={"number": a["number"], "hash": a["content_hash"]})
    assert r.status_code == 200
    for secret in ("东湖", "供电所", a["id"], str(world.orgs["a1"].id), str(world.units["a1"].id),
                   "secretary", "liaison", "2027-12-31", a["content_hash"]):
        assert secret not in r.text, secret
    # A token changes nothing: the same answer for anyone, of any scope.
    for who in ("secretary2", "resident"):
        assert await verify(client, a["number"], a["content_hash"], **world.h(who)) == r.json()
    # A bad token is not even looked at.
    r2 = await client.get(URL, params={"number": a["number"], "hash": a["content_hash"]},
                          headers={"Authorization": "Bearer not-a-token"})
    assert r2.status_code == 200 and r2.json() == r.json()


async def test_expired(client: httpx.AsyncClient, world: World, session: Any) -> None:
    a = await activate(client, world, (await create_draft(client, world))["id"])
    # Past its end date it reads as expired even before the daily job marks it so.
    yesterday = date.today() - timedelta(days=2)
    async with db.sessionmaker()() as s:
        await s.execute(
            update(Agreement).where(Agreement.id == a["id"])
            .values(term_from=yesterday - timedelta(days=365), term_to=yesterday)
        )
        await s.commit()
    assert (await verify(client, a["number"], a["content_hash"]))["status"] == "expired"
    marked = await insert_agreement(
        session, world.orgs["a1"].id, world.units["a1"].id, AgreementState.expired
    )
    assert marked.content_hash is not None
    assert await verify(client, marked.number, marked.content_hash) == {
        "number": marked.number, "version_no": 1, "status": "expired"
    }


def test_status_of() -> None:
    today = date(2026, 6, 1)
    assert status_of(AgreementState.active, date(2026, 6, 1), today) == VerificationStatus.current
    assert status_of(AgreementState.active, date(2026, 5, 31), today) == VerificationStatus.expired
    assert status_of(AgreementState.superseded, date(2020, 1, 1), today) == VerificationStatus.superseded
    assert status_of(AgreementState.terminated, date(2027, 1, 1), today) == VerificationStatus.terminated
    assert status_of(AgreementState.expired, date(2026, 5, 31), today) == VerificationStatus.expired
    assert status_of(AgreementState.pending_signatures, date(2027, 1, 1), today) == NOT_SIGNED
    assert status_of(AgreementState.draft, date(2027, 1, 1), today) == VerificationStatus.not_signed


async def test_bad_input(client: httpx.AsyncClient, world: World) -> None:
    for params in ({}, {"number": "GJ-2026-0001"}, {"hash": "ab" * 32}, {"number": "", "hash": "ab" * 32},
                   {"number": "GJ", "hash": ""}, {"number": "N" * 65, "hash": "ab" * 32},
                   {"number": "GJ", "hash": "a" * 129}, {"number": "GJ\x00", "hash": "ab" * 32},
                   {"number": "GJ\n1", "hash": "ab" * 32}):
        r = await client.get(URL, params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = await client.post(URL, params={"number": "GJ", "hash": "ab" * 32})
    assert r.status_code == 405


def test_not_taken_for_an_agreement_id() -> None:
    """The route is registered before /agreements/{agreement_id}: "verify" is never parsed as an id
    (the requests above would answer 422 otherwise)."""
    from gongjian.agreements.router import router as agreements_router
    from gongjian.agreements.verification import router as verification_router
    from gongjian.main import ROUTERS

    assert ROUTERS.index(verification_router) < ROUTERS.index(agreements_router)


async def test_parallel_checks(client: httpx.AsyncClient, world: World) -> None:
    a = await activate(client, world, (await create_draft(client, world))["id"])
    answers = await asyncio.gather(*(verify(client, a["number"], a["content_hash"]) for _ in range(20)))
    assert {a["status"] for a in answers} == {"current"}
