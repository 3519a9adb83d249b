"""Signing: who signs for each side, re-authentication (password or one-time code), the hash the
signer viewed, handwritten images, and two signers at the same moment."""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import pytest

from gongjian.core import storage
from gongjian.core.access import Role
from tests.agreements.helpers import create_draft, fetch, image_b64, send, sign
from tests.factories import World, build_world, make_unit, make_user, token_for


@pytest.fixture(autouse=True)
def _storage(tmp_path):
    local = storage.LocalStorage(tmp_path / "storage")
    storage.set_storage(local)
    yield local
    storage.set_storage(None)


async def _user(
    session: Any, w: World, key: str, role: Role, org: str | None = None, unit: str | None = None
):
    user = await make_user(session, key, role, w.orgs[org] if org else None, w.units[unit] if unit else None)
    w.users[key] = user
    w.tokens[key] = token_for(user, [role.value])


@pytest.fixture
async def world(session: Any) -> World:
    w = await build_world(session)
    w.units["a2"] = await make_unit(session, w.orgs["a2"], "桃源物业")
    await _user(session, w, "liaison_a2", Role.unit_liaison, unit="a2")
    await _user(session, w, "liaison_b1", Role.unit_liaison, unit="b1")
    await _user(session, w, "street_admin", Role.org_admin, org="street_a")
    await _user(session, w, "secretary_a2", Role.org_admin, org="a2")
    await session.commit()
    return w


@pytest.fixture
async def pending(client, world) -> dict[str, Any]:
    a = await create_draft(client, world)
    return await send(client, world, a["id"])


async def signatures() -> list[Any]:
    return await fetch(
        "SELECT side, signer_user_id, auth_method, image_key, content_hash FROM agreement_signatures"
    )


async def test_both_sides_sign_and_it_becomes_active(client, world, pending, _storage):
    w, a = world, pending
    r = await sign(client, w, a["id"], "secretary", a["content_hash"])
    s = r.json()
    assert s["state"] == "pending_signatures"
    assert [(x["side"], x["signer_name"], x["auth_method"]) for x in s["signatures"]] == [
        ("community", "secretary", "password")
    ]
    r = await client.post(
        f"/api/v1/agreements/{a['id']}/signatures",
        headers=w.h("liaison", **{"User-Agent": "MicroMessenger/8.0"}),
        json={"content_hash": a["content_hash"], "password": "Demo@2026", "signature_image": image_b64()},
    )
    assert r.status_code == 201, r.text
    done = r.json()
    assert done["state"] == "active" and done["activated_at"] is not None
    # The signed PDF was rendered and stored in the activating transaction.
    assert done["has_document"] and len(done["document_sha256"]) == 64
    assert {x["side"]: x["has_image"] for x in done["signatures"]} == {"community": False, "unit": True}
    rows = await fetch(
        "SELECT side, signer_user_id, content_hash, auth_method, image_key, client_ip, user_agent"
        " FROM agreement_signatures ORDER BY signed_at"
    )
    assert [r.side for r in rows] == ["community", "unit"]
    assert {r.content_hash for r in rows} == {a["content_hash"]}
    unit_row = rows[1]
    assert unit_row.signer_user_id == w.users["liaison"].id and unit_row.user_agent == "MicroMessenger/8.0"
    assert unit_row.client_ip is not None
    # The image is stored as it was sent.
    assert await _storage.get(unit_row.image_key) == base64.b64decode(image_b64())
    actions = [
        a for (a,) in await fetch("SELECT action FROM audit_log WHERE object_type = 'agreement' ORDER BY at")
    ]
    assert actions == [
        "agreement.create",
        "agreement.send",
        "agreement.sign",
        "agreement.sign",
        "agreement.activate",
    ]
    # Signing again: neither side, nor an active agreement.
    r = await sign(client, w, a["id"], "liaison", a["content_hash"], expect=409)
    assert r.json()["code"] == "illegal_transition"


async def test_only_each_sides_authorized_person_signs(client, world, pending):
    w, a = world, pending
    h = a["content_hash"]
    # No signing right at all: 403; out of scope: 404.
    for who in ("staff", "street", "gridworker", "member", "resident"):
        r = await sign(client, w, a["id"], who, h, expect=403)
        assert r.json()["code"] == "forbidden", who
    for who in ("secretary2", "liaison_b1", "liaison_a2", "secretary_a2"):
        r = await sign(client, w, a["id"], who, h, expect=404)
        assert r.json()["code"] == "not_found", who
    # In scope, but not that side's person.
    r = await sign(client, w, a["id"], "secretary", h, expect=403, side="unit")
    assert r.json()["code"] == "not_authorized_signer"
    r = await sign(client, w, a["id"], "liaison", h, expect=403, side="community")
    assert r.json()["code"] == "not_authorized_signer"
    assert await signatures() == []
    # An org_admin above the community signs for it too.
    r = await sign(client, w, a["id"], "street_admin", h)
    assert r.json()["signatures"][0]["side"] == "community"


async def test_signing_twice_is_refused(client, world, pending):
    w, a = world, pending
    await sign(client, w, a["id"], "secretary", a["content_hash"])
    r = await sign(client, w, a["id"], "secretary", a["content_hash"], expect=409)
    assert r.json()["code"] == "already_signed"
    # Another person of the same side neither.
    r = await sign(client, w, a["id"], "street_admin", a["content_hash"], expect=409)
    assert r.json()["code"] == "already_signed"
    assert len(await signatures()) == 1


async def test_the_hash_the_signer_viewed_must_be_the_one_sent(client, world):
    w = world
    draft = await create_draft(client, w)
    fake = "0" * 64
    r = await sign(client, w, draft["id"], "secretary", fake, expect=409)
    assert r.json()["code"] == "content_hash_mismatch"
    a = await send(client, w, draft["id"])
    r = await sign(client, w, a["id"], "secretary", fake, expect=409)
    assert r.json()["code"] == "content_hash_mismatch"
    r = await sign(client, w, a["id"], "secretary", a["content_hash"].upper(), expect=422)
    # Changed while the signer looked at it: declined, edited and sent again.
    await client.post(
        f"/api/v1/agreements/{a['id']}/decline", headers=w.h("secretary"), json={"reason": "改期限"}
    )
    await client.patch(
        f"/api/v1/agreements/{a['id']}", headers=w.h("secretary"), json={"term_to": "2027-06-30"}
    )
    b = await send(client, w, a["id"])
    r = await sign(client, w, a["id"], "liaison", a["content_hash"], expect=409)
    assert r.json()["code"] == "content_hash_mismatch"
    assert await signatures() == []
    await sign(client, w, a["id"], "liaison", b["content_hash"])


async def test_wrong_password_is_refused_and_counted(client, world, pending):
    w, a = world, pending
    r = await sign(client, w, a["id"], "liaison", a["content_hash"], expect=403, password="wrong-Pass1")
    assert r.json()["code"] == "reauthentication_failed"
    assert await signatures() == []
    (n,) = (await fetch("SELECT count(*) FROM login_failures WHERE user_id = :u", u=w.users["liaison"].id))[0]
    assert n == 1
    # Both or neither method: 422.
    r = await sign(
        client,
        w,
        a["id"],
        "liaison",
        a["content_hash"],
        expect=422,
        one_time_code="123456",
        password="Demo@2026",
    )
    r = await client.post(
        f"/api/v1/agreements/{a['id']}/signatures",
        headers=w.h("liaison"),
        json={"content_hash": a["content_hash"]},
    )
    assert r.status_code == 422
    # Enough wrong guesses lock the account, as at login.
    for _ in range(6):
        r = await sign(client, w, a["id"], "liaison", a["content_hash"], expect=None, password="wrong-Pass1")
    assert r.status_code == 423 and r.json()["code"] == "account_locked"
    r = await sign(client, w, a["id"], "liaison", a["content_hash"], expect=423)


async def inbox_code(client, w: World, who: str) -> str:
    r = await client.get("/api/v1/notifications", headers=w.h(who), params={"kind": "agreement.signing_code"})
    assert r.status_code == 200, r.text
    newest = r.json()["items"][0]
    match = re.search(r"验证码(\d{6})", newest["body"])
    assert match, newest
    return match.group(1)


async def test_one_time_code_from_the_inbox(client, world, pending):
    w, a = world, pending
    url = f"/api/v1/agreements/{a['id']}/signing-codes"
    r = await client.post(url, headers=w.h("liaison"))
    assert r.status_code == 201, r.text
    assert r.json()["delivered_to"] == "inbox" and "code" not in r.json()
    first = await inbox_code(client, w, "liaison")
    (stored,) = await fetch("SELECT code_hash FROM agreement_signing_codes")
    assert first not in stored.code_hash
    # A new code replaces the earlier one.
    await client.post(url, headers=w.h("liaison"))
    code = await inbox_code(client, w, "liaison")
    if code != first:
        r = await sign(client, w, a["id"], "liaison", a["content_hash"], expect=403, one_time_code=first)
        assert r.json()["code"] == "reauthentication_failed"
    # Another user's code is no code for me.
    r = await sign(client, w, a["id"], "secretary", a["content_hash"], expect=403, one_time_code=code)
    r = await sign(client, w, a["id"], "liaison", a["content_hash"], one_time_code=code)
    assert r.json()["signatures"][0]["auth_method"] == "one_time_code"
    # Used up.
    r = await sign(client, w, a["id"], "secretary", a["content_hash"], expect=403, one_time_code=code)
    # Nobody else is sent codes for it; nor on a draft.
    r = await client.post(url, headers=w.h("staff"))
    assert r.status_code == 403
    r = await client.post(url, headers=w.h("liaison_b1"))
    assert r.status_code == 404
    d = await create_draft(client, w)
    r = await client.post(f"/api/v1/agreements/{d['id']}/signing-codes", headers=w.h("secretary"))
    assert r.status_code == 409 and r.json()["code"] == "illegal_transition"


async def test_a_code_dies_after_too_many_wrong_guesses(client, world, pending):
    w, a = world, pending
    await client.post(f"/api/v1/agreements/{a['id']}/signing-codes", headers=w.h("secretary"))
    code = await inbox_code(client, w, "secretary")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        r = await sign(client, w, a["id"], "secretary", a["content_hash"], expect=403, one_time_code=wrong)
    (attempts,) = (await fetch("SELECT attempts FROM agreement_signing_codes"))[0]
    assert attempts == 5
    r = await sign(client, w, a["id"], "secretary", a["content_hash"], expect=403, one_time_code=code)
    assert r.json()["code"] == "reauthentication_failed"
    assert await signatures() == []


@pytest.mark.parametrize(
    "image",
    [
        "not base64 at all!",
        base64.b64encode(b"GIF89a" + b"\x00" * 40).decode(),
        base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10).decode(),
        base64.b64encode(b"<svg xmlns='http://www.w3.org/2000/svg'/>").decode(),
        "",
    ],
)
async def test_bad_signature_images_are_refused(client, world, pending, image):
    w, a = world, pending
    r = await sign(client, w, a["id"], "liaison", a["content_hash"], expect=None, signature_image=image)
    assert r.status_code == 422, r.text
    assert await signatures() == []


async def test_signature_image_formats_and_size(client, world, pending, _storage):
    w, a = world, pending
    big = image_b64("PNG", (2000, 2000))
    r = await sign(
        client, w, a["id"], "liaison", a["content_hash"], expect=None, signature_image=big + "A" * 400_000
    )
    assert r.status_code == 422
    jpeg = "data:image/jpeg;base64," + image_b64("JPEG")
    r = await sign(client, w, a["id"], "liaison", a["content_hash"], signature_image=jpeg)
    ((key,),) = await fetch("SELECT image_key FROM agreement_signatures")
    assert key.startswith("signatures/") and key.endswith(".jpg")
    assert (await _storage.get(key))[:3] == b"\xff\xd8\xff"


async def test_two_signers_at_the_same_moment(client, world):
    """Both sides sign at once, several times over: each agreement ends active exactly once, with
    both signatures."""
    w = world
    for _ in range(3):
        a = await send(client, w, (await create_draft(client, w))["id"])
        results = await asyncio.gather(
            sign(client, w, a["id"], "secretary", a["content_hash"], expect=None),
            sign(client, w, a["id"], "liaison", a["content_hash"], expect=None),
        )
        assert [r.status_code for r in results] == [201, 201], [r.text for r in results]
        assert sorted(r.json()["state"] for r in results) == ["active", "pending_signatures"]
        rows = await fetch(
            "SELECT state, (SELECT count(*) FROM agreement_signatures s WHERE s.agreement_id = a.id),"
            " (SELECT count(*) FROM audit_log l WHERE l.object_id = a.id AND l.action = 'agreement.activate')"
            " FROM agreements a WHERE a.id = :id",
            id=a["id"],
        )
        assert [tuple(r) for r in rows] == [("active", 2, 1)]


async def test_one_side_twice_at_the_same_moment(client, world, pending):
    w, a = world, pending
    results = await asyncio.gather(
        *(
            sign(client, w, a["id"], who, a["content_hash"], expect=None)
            for who in ("secretary", "street_admin")
        )
    )
    assert sorted(r.status_code for r in results) == [201, 409]
    assert len(await signatures()) == 1
