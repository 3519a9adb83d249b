"""The signed agreement PDF: rendered once at activation, stored, downloadable by whoever may read
the agreement; valid PDF, Chinese text that shows and can be extracted, both signatures, the content
hash and the QR code's verification link."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pypdf import PdfReader
from sqlalchemy import select

from gongjian.agreements import document
from gongjian.agreements.document import (
    CID_FONT,
    EMBEDDED_FONT,
    DocumentContent,
    SignatureBlock,
    chinese_numeral,
    load_font,
    qr_drawing,
    render_pdf,
    verification_url,
)
from gongjian.agreements.models import Agreement, AgreementState, Side
from gongjian.core import db, storage
from gongjian.core.access import Role
from gongjian.core.config import get_settings
from gongjian.core.storage import LocalStorage
from tests.agreements.helpers import create_draft, image_b64, insert_agreement, send, sign
from tests.factories import World, build_world, make_user, token_for

TITLE = "东湖社区与东湖供电所共建协议"


@pytest.fixture
async def world(session: Any) -> World:
    return await build_world(session)


@pytest.fixture(autouse=True)
def files(tmp_path: Path) -> AsyncIterator[LocalStorage]:
    local = LocalStorage(tmp_path / "storage")
    storage.set_storage(local)
    yield local
    storage.set_storage(None)


def text_of(pdf: bytes) -> str:
    """The PDF's extracted text with all whitespace removed (lines wrap anywhere in Chinese)."""
    reader = PdfReader(io.BytesIO(pdf))
    return re.sub(r"\s+", "", "".join(page.extract_text() for page in reader.pages))


def uris_of(pdf: bytes) -> set[str]:
    reader = PdfReader(io.BytesIO(pdf))
    return {
        str(a.get_object()["/A"]["/URI"])
        for page in reader.pages
        for a in page.get("/Annots", [])
        if "/A" in a.get_object()
    }


def image_count(pdf: bytes) -> int:
    return sum(len(page.images) for page in PdfReader(io.BytesIO(pdf)).pages)


def embedded_fonts(pdf: bytes) -> set[str]:
    names = set()
    for page in PdfReader(io.BytesIO(pdf)).pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            for descendant in font.get("/DescendantFonts", [font]):
                descriptor = descendant.get_object().get("/FontDescriptor")
                if descriptor is not None and "/FontFile2" in descriptor.get_object():
                    names.add(str(font["/BaseFont"]))
    return names


async def signed(client: httpx.AsyncClient, w: World, *, image: bool = True, **draft: Any) -> dict[str, Any]:
    """Drafted by the secretary, sent, signed by the secretary (password) and the liaison (a
    handwritten image when `image`)."""
    a = await create_draft(client, w, title=TITLE, **draft)
    a = await send(client, w, a["id"])
    await sign(client, w, a["id"], "secretary", a["content_hash"])
    extra = {"signature_image": image_b64(size=(300, 100))} if image else {}
    r = await sign(client, w, a["id"], "liaison", a["content_hash"], **extra)
    body = dict(r.json())
    assert body["state"] == "active" and body["has_document"] is True
    return body


async def download(
    client: httpx.AsyncClient, w: World, aid: str, who: str = "secretary", **h: str
) -> httpx.Response:
    return await client.get(f"/api/v1/agreements/{aid}/document", headers=w.h(who, **h))


async def row(aid: str) -> Agreement:
    async with db.sessionmaker()() as s:
        return (await s.execute(select(Agreement).where(Agreement.id == aid))).scalar_one()


# --- through the API --------------------------------------------------------------------------


async def test_the_signed_pdf(client: httpx.AsyncClient, world: World, files: LocalStorage) -> None:
    a = await signed(client, world)
    r = await download(client, world, a["id"])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    assert f'filename="{a["number"]}-v1.pdf"' in r.headers["content-disposition"]
    pdf = r.content
    assert pdf.startswith(b"%PDF-")
    assert hashlib.sha256(pdf).hexdigest() == a["document_sha256"]
    assert r.headers["etag"] == f'"{a["document_sha256"]}"'

    text = text_of(pdf)
    # Chinese comes out as text: the title, the parties, every clause (title and filled body).
    for expected in (
        TITLE, "东湖社区党委", "东湖供电所", "第一条组织共建", "第二条资源共享", "第三条协议期限",
        "东湖社区党委与东湖供电所结对共建，联合开展组织生活。",
        "东湖供电所向东湖社区党委开放活动场地。", "2026年1月1日至2027年12月31日",
    ):
        assert expected in text, expected
    # Number, version, commitments, both signatures with time (Asia/Shanghai) and method.
    assert a["number"] in text and "第1版" in text
    assert "乙方承诺" in text and "每月参加统一活动日" in text and "报到在职党员12名" in text
    signatures = {s["side"]: s for s in a["signatures"]}
    for side, label in (("community", "甲方签署"), ("unit", "乙方签署")):
        s = signatures[side]
        local = datetime.fromisoformat(s["signed_at"]).astimezone(document.LOCAL_TZ)
        assert label in text
        assert f"签署人：{s['signer_name']}" in text
        assert f"签署时间：{local:%Y-%m-%d%H:%M:%S}（北京时间）" in text
    assert text.count("身份核验：账户密码验证") == 2
    # The content hash, and the verification link (text, link annotation, QR code).
    assert a["content_hash"] in text
    url = verification_url(a["number"], a["content_hash"])
    assert url == f"http://127.0.0.1:8000/api/v1/agreements/verify?number={a['number']}&hash={a['content_hash']}"
    assert url in text
    assert url in uris_of(pdf)
    # The handwritten signature is drawn; the Chinese font is embedded (shows on any reader).
    assert image_count(pdf) == 1
    assert embedded_fonts(pdf) and all("WenQuanYiMicroHei" in name for name in embedded_fonts(pdf))


async def test_stored_once(
    client: httpx.AsyncClient, world: World, files: LocalStorage, session: Any
) -> None:
    a = await signed(client, world)
    stored = [p for p in files.root.rglob("*") if p.is_file() and p.suffix == ".pdf"]
    agreement = await row(a["id"])
    assert agreement.document_key == f"agreements/{a['id']}/{a['content_hash']}.pdf"
    assert [p.relative_to(files.root).as_posix() for p in stored] == [agreement.document_key]
    assert hashlib.sha256(stored[0].read_bytes()).hexdigest() == agreement.document_sha256

    # Called again (a retried hook): nothing is rendered or written, nothing changes.
    puts: list[str] = []
    original = files.put

    async def counting_put(data: bytes, key: str, **kw: Any) -> str:
        puts.append(key)
        return await original(data, key, **kw)

    files.put = counting_put  # type: ignore[method-assign]
    loaded = (await session.execute(select(Agreement).where(Agreement.id == agreement.id))).scalar_one()
    await document.render_and_store(session, loaded)
    assert puts == []
    assert loaded.document_sha256 == agreement.document_sha256

    # The same content renders to the same bytes: the stored hash can be checked again any time.
    loaded.document_key = None
    await document.render_and_store(session, loaded)
    assert puts == [agreement.document_key]
    assert loaded.document_sha256 == agreement.document_sha256
    await session.rollback()


async def test_without_a_handwritten_image(client: httpx.AsyncClient, world: World) -> None:
    a = await signed(client, world, image=False)
    pdf = (await download(client, world, a["id"])).content
    assert image_count(pdf) == 0
    assert "签署人：liaison" in text_of(pdf)


async def test_not_before_activation(client: httpx.AsyncClient, world: World, files: LocalStorage) -> None:
    a = await create_draft(client, world)
    r = await download(client, world, a["id"])
    assert r.status_code == 409 and r.json()["code"] == "document_not_ready"
    a = await send(client, world, a["id"])
    await sign(client, world, a["id"], "secretary", a["content_hash"])
    r = await download(client, world, a["id"], "liaison")
    assert r.status_code == 409 and r.json()["code"] == "document_not_ready"
    assert not list(files.root.rglob("*.pdf"))
    # Rendering is only for an active version.
    with pytest.raises(ValueError, match="not active"):
        async with db.sessionmaker()() as s:
            await document.render_and_store(s, await row(a["id"]))


async def test_kept_after_amendment_and_termination(client: httpx.AsyncClient, world: World) -> None:
    a = await signed(client, world)
    first = (await download(client, world, a["id"])).content
    r = await client.post(f"/api/v1/agreements/{a['id']}/amendments", headers=world.h("secretary"))
    assert r.status_code == 201, r.text
    v2 = await send(client, world, r.json()["id"])
    await sign(client, world, v2["id"], "secretary", v2["content_hash"])
    v2 = (await sign(client, world, v2["id"], "liaison", v2["content_hash"])).json()
    assert v2["state"] == "active"
    # The superseded version keeps its document, unchanged; the new one has its own.
    assert (await download(client, world, a["id"])).content == first
    second = (await download(client, world, v2["id"])).content
    assert second != first and "第2版" in text_of(second) and v2["content_hash"] in text_of(second)
    r = await client.post(f"/api/v1/agreements/{v2['id']}/terminate", headers=world.h("liaison"),
                          json={"reason": "单位撤并"})
    assert r.status_code == 200, r.text
    assert (await download(client, world, v2["id"])).content == second


async def test_conditional_download(client: httpx.AsyncClient, world: World) -> None:
    a = await signed(client, world)
    etag = f'"{a["document_sha256"]}"'
    r = await download(client, world, a["id"], **{"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b""
    r = await download(client, world, a["id"], **{"If-None-Match": '"other"'})
    assert r.status_code == 200


async def test_lost_or_altered_file(client: httpx.AsyncClient, world: World, files: LocalStorage) -> None:
    a = await signed(client, world)
    key = (await row(a["id"])).document_key
    assert key is not None
    path = files.root / key
    path.write_bytes(path.read_bytes().replace(b"%PDF-", b"%PDX-", 1))
    r = await download(client, world, a["id"])
    assert r.status_code == 503 and r.json()["code"] == "document_unavailable"
    path.unlink()
    r = await download(client, world, a["id"])
    assert r.status_code == 503 and r.json()["code"] == "document_unavailable"


async def test_bad_id(client: httpx.AsyncClient, world: World) -> None:
    r = await client.get("/api/v1/agreements/not-a-uuid/document", headers=world.h("secretary"))
    assert r.status_code == 422
    r = await client.get("/api/v1/agreements/00000000-0000-4000-8000-000000000000/document",
                         headers=world.h("secretary"))
    assert r.status_code == 404 and r.json()["code"] == "not_found"


# --- who may download: like reading the agreement -------------------------------------------

# (home: the a1 agreement, away: the b1 agreement); secretary2 is the other way round.
DOWNLOAD = {
    "admin": (200, 200),
    "street": (200, 404),
    "secretary": (200, 404),
    "secretary2": (200, 404),
    "gridworker": (403, 403),
    "liaison": (200, 404),
    "member": (403, 403),
    "resident": (403, 403),
}


async def test_who_may_download(client: httpx.AsyncClient, world: World, session: Any) -> None:
    a1 = await signed(client, world, image=False)
    liaison_b1 = await make_user(session, "liaison_b1", Role.unit_liaison, unit=world.units["b1"])
    await session.commit()
    world.tokens["liaison_b1"] = token_for(liaison_b1, ["unit_liaison"])
    b = await create_draft(client, world, "secretary2", community="b1", unit="b1")
    b = await send(client, world, b["id"], "secretary2")
    await sign(client, world, b["id"], "secretary2", b["content_hash"])
    b1 = (await sign(client, world, b["id"], "liaison_b1", b["content_hash"])).json()
    assert b1["state"] == "active"

    r = await client.get(f"/api/v1/agreements/{a1['id']}/document")
    assert r.status_code == 401
    for who, (home_status, away_status) in DOWNLOAD.items():
        home, away = (b1, a1) if who == "secretary2" else (a1, b1)
        for target, want in ((home, home_status), (away, away_status)):
            r = await download(client, world, target["id"], who)
            assert r.status_code == want, (who, target["number"], r.text[:200])
            if want != 200:
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.json()["code"] == {403: "forbidden", 404: "not_found"}[want]
                assert target["number"] not in r.text


async def test_parallel_downloads(client: httpx.AsyncClient, world: World) -> None:
    a = await signed(client, world)
    responses = await asyncio.gather(*(download(client, world, a["id"], who)
                                       for who in ("secretary", "liaison", "admin", "street") * 3))
    assert {r.status_code for r in responses} == {200}
    assert {hashlib.sha256(r.content).hexdigest() for r in responses} == {a["document_sha256"]}


# --- the renderer ---------------------------------------------------------------------------


def _content(**over: Any) -> DocumentContent:
    h = "0123456789abcdef" * 4
    fields: dict[str, Any] = dict(
        title="北门社区与北门医院共建协议",
        number="GJ-2026-0042",
        version_no=3,
        community_name="北门社区党委",
        unit_name="北门医院",
        unit_credit_code="91330100000000001X",
        term_from=date(2026, 3, 1),
        term_to=date(2027, 2, 28),
        clauses=[
            {"key": "health", "title": "健康共护",
             "body": "乙方每季度为社区老人义诊一次。\n<b>不是标记</b> & 符号"}
        ],
        commitments=[(Side.unit, "【活动共办】 每季度 义诊")],
        signatures=[
            SignatureBlock(
                Side.community, "王书记", datetime(2026, 2, 28, 16, 30, tzinfo=UTC), "one_time_code"
            ),
            SignatureBlock(Side.unit, "赵联络员", datetime(2026, 3, 1, 1, 0, tzinfo=UTC), "password",
                           image_missing=True),
        ],
        content_hash=h,
        activated_at=datetime(2026, 3, 1, 1, 0, tzinfo=UTC),
        verify_url=verification_url("GJ-2026-0042", h),
    )
    fields.update(over)
    return DocumentContent(**fields)


def test_render_is_deterministic_and_escapes_markup() -> None:
    pdf = render_pdf(_content())
    assert pdf == render_pdf(_content())
    text = text_of(pdf)
    assert "<b>不是标记</b>&符号" in text  # user text is text, never markup
    assert "签署时间：2026-03-0100:30:00（北京时间）" in text  # 2026-02-28 16:30 UTC
    assert "身份核验：一次性验证码验证" in text
    assert "（签名图片无法读取）" in text  # a lost image is said so, never silently dropped
    assert "第3版" in text and "91330100000000001X" in text


def test_builtin_cid_font_fallback() -> None:
    """Without a TrueType font the built-in STSong-Light is used: still real, extractable text."""
    assert load_font(None) == CID_FONT
    pdf = render_pdf(_content(), font=CID_FONT)
    text = text_of(pdf)
    for expected in ("北门社区与北门医院共建协议", "第一条健康共护", "乙方每季度为社区老人义诊一次。"):
        assert expected in text
    assert embedded_fonts(pdf) == set()


def test_unusable_font_falls_back(tmp_path: Path) -> None:
    bad = tmp_path / "broken.ttf"
    bad.write_bytes(b"not a font")
    assert load_font(bad) == CID_FONT
    assert load_font(tmp_path / "missing.ttf") == CID_FONT


def test_packaged_font_is_embedded() -> None:
    path = document.packaged_font_path()
    assert path is not None and path.is_file()
    assert load_font(path) == EMBEDDED_FONT
    pdf = render_pdf(_content(), font=EMBEDDED_FONT)
    assert "北门社区与北门医院共建协议" in text_of(pdf)
    assert embedded_fonts(pdf)


def test_corrupt_image_is_noted() -> None:
    sig = SignatureBlock(
        Side.unit, "赵联络员", datetime(2026, 3, 1, tzinfo=UTC), "password", image=b"\x89PNGjunk"
    )
    pdf = render_pdf(_content(signatures=[sig]))
    assert "（签名图片无法读取）" in text_of(pdf)
    assert image_count(pdf) == 0


def test_signature_image_drawn() -> None:
    png = base64.b64decode(image_b64(size=(600, 200)))
    sig = SignatureBlock(Side.unit, "赵联络员", datetime(2026, 3, 1, tzinfo=UTC), "password", image=png)
    pdf = render_pdf(_content(signatures=[sig]))
    assert image_count(pdf) == 1
    assert "甲方签署" in text_of(pdf) and "未签署" in text_of(pdf)


def test_verification_url_follows_public_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_settings(), "public_base_url", "https://gongjian.example.cn/")
    assert verification_url("GJ-2026-0001", "ab" * 32) == (
        "https://gongjian.example.cn/api/v1/agreements/verify?number=GJ-2026-0001&hash=" + "ab" * 32
    )


def test_qr_code_carries_the_url() -> None:
    url = verification_url("GJ-2026-0001", "ab" * 32)
    drawing = qr_drawing(url)
    assert drawing.contents[0].value == url
    assert drawing.width == drawing.height == document.QR_SIZE


def test_chinese_numerals() -> None:
    assert [chinese_numeral(n) for n in (1, 9, 10, 11, 20, 21, 45, 50, 99)] == [
        "一", "九", "十", "十一", "二十", "二十一", "四十五", "五十", "九十九"
    ]
    assert chinese_numeral(100) == "100"


async def test_missing_signature_image_does_not_block_activation(
    client: httpx.AsyncClient, world: World, files: LocalStorage
) -> None:
    """The image was stored at signing and lost before activation: the agreement still activates,
    and its document says the image could not be read."""
    a = await create_draft(client, world, title=TITLE)
    a = await send(client, world, a["id"])
    await sign(client, world, a["id"], "liaison", a["content_hash"], signature_image=image_b64())
    for p in files.root.rglob("*"):
        if p.is_file():
            p.unlink()
    r = await sign(client, world, a["id"], "secretary", a["content_hash"])
    assert r.json()["state"] == "active"
    pdf = (await download(client, world, a["id"])).content
    assert "（签名图片无法读取）" in text_of(pdf) and image_count(pdf) == 0


async def test_ended_without_a_document(client: httpx.AsyncClient, session: Any, world: World) -> None:
    """A version that ended without ever being rendered (written by hand, or before documents
    existed) answers 409, never a 500."""
    a = await insert_agreement(session, world.orgs["a1"].id, world.units["a1"].id, AgreementState.terminated)
    r = await download(client, world, str(a.id))
    assert r.status_code == 409 and r.json()["code"] == "document_not_ready"
