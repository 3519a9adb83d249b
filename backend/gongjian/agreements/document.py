"""The signed agreement as a PDF (签署文本), rendered once when a version becomes active and stored.

The Chinese text is set in an embedded TrueType CJK font (a subset of WenQuanYi Micro Hei, shipped
on PyPI by `paperang-p2-fonts-cjk`, or the font in `PDF_FONT_PATH`), so the document shows the same
on every reader, including ones with no Chinese font of their own, and its text stays real Unicode
(searchable, copyable, extractable). Without such a font it falls back to reportlab's built-in
STSong-Light (not embedded: the reader supplies the glyphs). Nothing is downloaded at run time.

The PDF is rendered with reportlab's `invariant` mode: the same agreement always gives the same
bytes, so `document_sha256` can be checked again at any time.

What it shows: title, number and version, both parties, the term, every clause, the commitments of
each side, both signatures (signer, time in Asia/Shanghai, how they re-authenticated, the
handwritten image when there is one), the content SHA-256, and a QR code with the public
verification link (`verification_url`).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

import anyio.to_thread
from reportlab.graphics.barcode.qr import QrCodeWidget
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFError, TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.agreements.models import (
    Agreement,
    AgreementSignature,
    AgreementState,
    Side,
)
from gongjian.core.config import get_settings
from gongjian.core.storage import KeyNotFound, StorageError, check_key, get_storage
from gongjian.lists.models import Resource
from gongjian.projects.models import Project

log = logging.getLogger("gongjian.agreements.document")

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
CID_FONT = "STSong-Light"
EMBEDDED_FONT = "GongjianCJK"
MONO = "Courier"
CONTENT_TYPE = "application/pdf"

SIDE_LABELS = {Side.community: "甲方", Side.unit: "乙方"}
AUTH_LABELS = {"password": "账户密码验证", "one_time_code": "一次性验证码验证"}
KIND_LABELS = {
    "resource": "资源共享",
    "project": "项目共建",
    "activity": "活动共办",
    "members_report": "党员报到",
    "other": "其他",
}
RECURRENCE_LABELS = {
    "once": "一次",
    "weekly": "每周",
    "monthly": "每月",
    "quarterly": "每季度",
    "yearly": "每年",
}

# A signature image is drawn inside this box, keeping its proportions.
SIGNATURE_BOX = (60 * mm, 22 * mm)
QR_SIZE = 32 * mm


def verification_url(number: str, content_hash: str) -> str:
    """The public link that says whether this exact version is current (in the PDF's QR code)."""
    base = get_settings().public_base_url.rstrip("/")
    return f"{base}/api/v1/agreements/verify?{urlencode({'number': number, 'hash': content_hash})}"


def document_key(agreement: Agreement) -> str:
    # One key per version and content: a retried activation writes the same file again.
    return check_key(f"agreements/{agreement.id}/{agreement.content_hash}.pdf")


# ---------------------------------------------------------------------------------------------
# What goes on the page: plain data, gathered from the database first, rendered in a thread.


@dataclass(frozen=True)
class SignatureBlock:
    side: Side
    signer_name: str
    signed_at: datetime
    auth_method: str
    image: bytes | None = None
    image_missing: bool = False  # an image was recorded but could not be read


@dataclass(frozen=True)
class DocumentContent:
    title: str
    number: str
    version_no: int
    community_name: str
    unit_name: str
    unit_credit_code: str
    term_from: date
    term_to: date
    clauses: Sequence[dict[str, Any]]
    # (side, text) in the agreement's order
    commitments: Sequence[tuple[Side, str]]
    signatures: Sequence[SignatureBlock]
    content_hash: str
    activated_at: datetime | None
    verify_url: str


async def render_and_store(session: AsyncSession, agreement: Agreement) -> None:
    """Render the signed PDF of an agreement that has just become active, store it, and set
    `document_key` and `document_sha256` (the caller's transaction saves them).

    Call it in the activation transaction, after the version's state is `active`, its second
    signature is flushed and `activated_at` is set. Done once: an agreement that already has its
    document is left as it is.
    """
    if agreement.document_key is not None:
        return
    if agreement.state != AgreementState.active or not agreement.content_hash:
        raise ValueError(f"agreement {agreement.id} is not active: no signed document to render")
    content = await gather_content(session, agreement)
    pdf = await anyio.to_thread.run_sync(render_pdf, content)
    key = await get_storage().put(pdf, document_key(agreement), content_type=CONTENT_TYPE)
    agreement.document_key = key
    agreement.document_sha256 = hashlib.sha256(pdf).hexdigest()


async def gather_content(session: AsyncSession, agreement: Agreement) -> DocumentContent:
    """What the page shows. The signed text comes from the frozen canonical content (what the hash
    covers: title, parties' names, term, clauses, commitments), not from the live rows, so a party
    renamed later does not change what was signed; only the names of the resources and projects a
    commitment points to are looked up."""
    assert agreement.content_hash is not None
    frozen = _frozen(agreement)
    parties = frozen.get("parties") or {}
    community, unit = parties.get("community") or {}, parties.get("unit") or {}
    term = frozen.get("term") or {}
    commitments = [c for c in frozen.get("commitments") or [] if isinstance(c, dict)]
    resource_titles = await _titles(session, Resource, [c.get("resource_id") for c in commitments])
    project_titles = await _titles(session, Project, [c.get("project_id") for c in commitments])
    signatures = (
        await session.scalars(
            select(AgreementSignature)
            .where(AgreementSignature.agreement_id == agreement.id)
            .order_by(AgreementSignature.side)  # community before unit
        )
    ).all()
    return DocumentContent(
        title=str(frozen.get("title") or agreement.title),
        number=agreement.number,
        version_no=agreement.version_no,
        community_name=str(community.get("name") or ""),
        unit_name=str(unit.get("name") or ""),
        unit_credit_code=str(unit.get("credit_code") or ""),
        term_from=_iso_date(term.get("from"), agreement.term_from),
        term_to=_iso_date(term.get("to"), agreement.term_to),
        clauses=[c for c in frozen.get("clauses") or [] if isinstance(c, dict)],
        commitments=[
            (Side(c["side"]), commitment_text(c, resource_titles, project_titles))
            for c in commitments
            if c.get("side") in set(Side)
        ],
        signatures=[await _signature_block(s) for s in signatures],
        content_hash=agreement.content_hash,
        activated_at=agreement.activated_at,
        verify_url=verification_url(agreement.number, agreement.content_hash),
    )


def _frozen(agreement: Agreement) -> dict[str, Any]:
    try:
        value = json.loads(agreement.canonical_content or "")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(f"agreement {agreement.id} has no frozen canonical content")
    return value


def _iso_date(value: Any, default: date) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        return default


async def _titles(session: AsyncSession, model: Any, ids: list[Any]) -> dict[str, str]:
    wanted = set()
    for value in ids:
        try:
            wanted.add(uuid.UUID(str(value)))
        except ValueError:
            continue
    if not wanted:
        return {}
    rows = await session.execute(select(model.id, model.title).where(model.id.in_(wanted)))
    return {str(row[0]): row[1] for row in rows}


async def _signature_block(signature: AgreementSignature) -> SignatureBlock:
    image: bytes | None = None
    missing = False
    if signature.image_key:
        try:
            image = await get_storage().get(signature.image_key)
        except (KeyNotFound, StorageError):
            # The signature itself (who, when, how they re-authenticated) is the record; a lost
            # image must not block the activation that both sides have just completed.
            log.error(
                "signature image %s of agreement %s is missing", signature.image_key, signature.agreement_id
            )
            missing = True
    return SignatureBlock(
        side=Side(signature.side),
        signer_name=signature.signer_name,
        signed_at=signature.signed_at,
        auth_method=str(signature.auth_method),
        image=image,
        image_missing=missing,
    )


def commitment_text(
    c: dict[str, Any], resource_titles: dict[str, str], project_titles: dict[str, str]
) -> str:
    """One commitment of the frozen content as a line of the document."""
    kind = str(c.get("kind") or "other")
    parts = [f"【{KIND_LABELS.get(kind, kind)}】"]
    if c.get("resource_id"):
        parts.append(f"资源“{resource_titles.get(str(c['resource_id']), '')}”")
    if c.get("project_id"):
        parts.append(f"项目“{project_titles.get(str(c['project_id']), '')}”")
    if c.get("recurrence"):
        parts.append(RECURRENCE_LABELS.get(str(c["recurrence"]), str(c["recurrence"])))
    if c.get("quantity") is not None:
        parts.append(f"数量 {c['quantity']}")
    if c.get("members_count") is not None:
        parts.append(f"报到在职党员 {c['members_count']} 名")
    if c.get("description"):
        parts.append(str(c["description"]))
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# Rendering (synchronous: reportlab; run in a worker thread).


def packaged_font_path() -> Path | None:
    """WenQuanYi Micro Hei from the `paperang-p2-fonts-cjk` wheel, when installed."""
    try:
        package = importlib.resources.files("paperang_p2_fonts_cjk")
    except ModuleNotFoundError:
        return None
    path = Path(str(package)) / "fonts" / "wqy-microhei.ttc"
    return path if path.is_file() else None


def load_font(path: Path | None) -> str:
    """Register the CJK font to set the text in and return its name: the TrueType font at `path`
    (a .ttf, or the first face of a .ttc), else the built-in STSong-Light."""
    if path is not None:
        try:
            pdfmetrics.registerFont(TTFont(EMBEDDED_FONT, str(path), subfontIndex=0))
            return EMBEDDED_FONT
        except (OSError, TTFError):
            log.exception("PDF font %s cannot be used; falling back to %s", path, CID_FONT)
    pdfmetrics.registerFont(UnicodeCIDFont(CID_FONT))
    return CID_FONT


@lru_cache(maxsize=1)
def body_font() -> str:
    """The font of the documents, registered once per process."""
    return load_font(get_settings().pdf_font_path or packaged_font_path())


@lru_cache(maxsize=4)
def _styles(font: str) -> dict[str, ParagraphStyle]:
    # wordWrap CJK: Chinese lines break between any two characters, as Chinese typesetting does.
    body = ParagraphStyle("body", fontName=font, fontSize=10.5, leading=17, wordWrap="CJK")
    return {
        "title": ParagraphStyle(
            "title", parent=body, fontSize=20, leading=28, alignment=TA_CENTER, spaceAfter=4 * mm
        ),
        "meta": ParagraphStyle("meta", parent=body, fontSize=10, alignment=TA_CENTER, spaceAfter=5 * mm),
        "h2": ParagraphStyle(
            "h2", parent=body, fontSize=13, leading=20, spaceBefore=5 * mm, spaceAfter=2 * mm
        ),
        "h3": ParagraphStyle(
            "h3", parent=body, fontSize=11.5, leading=18, spaceBefore=3 * mm, spaceAfter=1 * mm
        ),
        "body": ParagraphStyle("body_indent", parent=body, firstLineIndent=21),
        "item": ParagraphStyle("item", parent=body, leftIndent=12),
        "cell": ParagraphStyle("cell", parent=body, fontSize=10, leading=15),
        "small": ParagraphStyle("small", parent=body, fontSize=9, leading=13),
        "mono": ParagraphStyle("mono", parent=body, fontName=MONO, fontSize=8.5, leading=12),
    }


def render_pdf(content: DocumentContent, font: str | None = None) -> bytes:
    """The PDF bytes of the signed agreement; the same content always gives the same bytes.
    `font`: a registered font name (`load_font`); default the configured one."""
    return _Renderer(content, font or body_font()).render()


class _Renderer:
    def __init__(self, content: DocumentContent, font: str) -> None:
        self.c = content
        self.font = font
        self.styles = _styles(font)

    def p(self, text: str, style: str) -> Paragraph:
        return Paragraph(escape(text).replace("\n", "<br/>"), self.styles[style])

    def render(self) -> bytes:
        c = self.c
        buffer = io.BytesIO()
        doc = SimpleDocTemplate(
            buffer,
            pagesize=A4,
            leftMargin=22 * mm,
            rightMargin=22 * mm,
            topMargin=20 * mm,
            bottomMargin=20 * mm,
            title=f"{c.title}（{c.number} 第{c.version_no}版）",
            author="共建 Gongjian",
            subject=f"SHA-256 {c.content_hash}",
            creator="Gongjian",
            invariant=True,
        )
        doc.build(self.story(), onFirstPage=self.footer, onLaterPages=self.footer)
        return buffer.getvalue()

    def footer(self, canvas: Canvas, _doc: Any) -> None:
        canvas.saveState()
        canvas.setFont(self.font, 8)
        canvas.setFillColor(colors.grey)
        canvas.drawString(22 * mm, 10 * mm, f"协议编号 {self.c.number}  第{self.c.version_no}版")
        canvas.drawRightString(A4[0] - 22 * mm, 10 * mm, f"第 {canvas.getPageNumber()} 页")
        canvas.restoreState()

    def story(self) -> list[Flowable]:
        c, p = self.c, self.p
        story: list[Flowable] = [
            p(c.title, "title"),
            p(f"协议编号：{c.number}　　版本：第{c.version_no}版", "meta"),
            _table(
                [
                    [p("甲方（社区党组织）", "cell"), p(c.community_name, "cell")],
                    [p("乙方（驻区单位）", "cell"), p(c.unit_name, "cell")],
                    [p("乙方统一社会信用代码", "cell"), p(c.unit_credit_code, "cell")],
                    [p("协议期限", "cell"), p(f"{_date(c.term_from)} 至 {_date(c.term_to)}", "cell")],
                ],
                [40 * mm, None],
            ),
        ]
        if c.clauses:
            story.append(p("协议条款", "h2"))
            for i, clause in enumerate(c.clauses, start=1):
                story.append(p(f"第{chinese_numeral(i)}条　{clause.get('title', '')}", "h3"))
                body = str(clause.get("body", ""))
                story.extend(p(line, "body") for line in body.splitlines() if line.strip())
        if c.commitments:
            story.append(p("具体承诺", "h2"))
            for side in (Side.community, Side.unit):
                items = [text for s, text in c.commitments if s == side]
                if items:
                    story.append(p(f"{SIDE_LABELS[side]}承诺", "h3"))
                    story.extend(p(f"{n}. {text}", "item") for n, text in enumerate(items, start=1))
        story.append(p("签署", "h2"))
        story.append(KeepTogether(self.signatures()))
        if c.activated_at is not None:
            story.append(Spacer(1, 2 * mm))
            story.append(p(f"生效时间：{_datetime(c.activated_at)}（北京时间）", "cell"))
        story.append(Spacer(1, 6 * mm))
        story.append(KeepTogether(self.verification()))
        return story

    def signatures(self) -> list[Flowable]:
        c, p = self.c, self.p
        by_side = {s.side: s for s in c.signatures}
        header = [p(f"{SIDE_LABELS[side]}签署", "cell") for side in (Side.community, Side.unit)]
        party = [p(name, "cell") for name in (c.community_name, c.unit_name)]
        details: list[Flowable] = []
        images: list[Flowable] = []
        for side in (Side.community, Side.unit):
            s = by_side.get(side)
            if s is None:
                details.append(p("未签署", "cell"))
                images.append(p("", "cell"))
                continue
            details.append(
                p(
                    f"签署人：{s.signer_name}\n签署时间：{_datetime(s.signed_at)}（北京时间）\n"
                    f"身份核验：{AUTH_LABELS.get(s.auth_method, s.auth_method)}",
                    "cell",
                )
            )
            images.append(self.signature_image(s))
        return [_table([header, party, details, images], [None, None], header=True)]

    def signature_image(self, s: SignatureBlock) -> Flowable:
        if s.image is None:
            return self.p("（签名图片无法读取）" if s.image_missing else "", "small")
        try:
            width, height = ImageReader(io.BytesIO(s.image)).getSize()
            scale = min(SIGNATURE_BOX[0] / width, SIGNATURE_BOX[1] / height)
            # mask="auto": a phone's signature pad gives a PNG with a transparent background.
            return Image(
                io.BytesIO(s.image), width=width * scale, height=height * scale, mask="auto", hAlign="LEFT"
            )
        except Exception:
            log.exception("the signature image of %s cannot be drawn", s.signer_name)
            return self.p("（签名图片无法读取）", "small")

    def verification(self) -> list[Flowable]:
        c, p = self.c, self.p
        link = escape(c.verify_url, {'"': "&quot;"})
        text: list[Flowable] = [
            p("内容摘要（SHA-256，对协议规范化内容计算）：", "small"),
            Paragraph(c.content_hash, self.styles["mono"]),
            Spacer(1, 2 * mm),
            p("扫描二维码或访问以下地址，核验本文本是否为该协议的现行有效版本：", "small"),
            Paragraph(f'<a href="{link}">{link}</a>', self.styles["mono"]),
        ]
        return [_table([[text, qr_drawing(c.verify_url)]], [None, QR_SIZE + 6 * mm], grid=False)]


def qr_drawing(url: str) -> Drawing:
    widget = QrCodeWidget(url, barLevel="M")
    x0, y0, x1, y1 = widget.getBounds()
    drawing = Drawing(QR_SIZE, QR_SIZE, transform=[QR_SIZE / (x1 - x0), 0, 0, QR_SIZE / (y1 - y0), 0, 0])
    drawing.add(widget)
    return drawing


def _table(
    rows: list[list[Any]], widths: list[float | None], *, header: bool = False, grid: bool = True
) -> Table:
    table = Table(rows, colWidths=widths, hAlign="LEFT")
    style: list[tuple[Any, ...]] = [
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), 4),
        ("RIGHTPADDING", (0, 0), (-1, -1), 4),
    ]
    if grid:
        style.append(("GRID", (0, 0), (-1, -1), 0.5, colors.grey))
    if header:
        style.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f2f2f2")))
    table.setStyle(TableStyle(style))
    return table


def _date(d: date) -> str:
    return f"{d.year}年{d.month}月{d.day}日"


def _datetime(t: datetime) -> str:
    return t.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M:%S")


_DIGITS = "零一二三四五六七八九"


def chinese_numeral(n: int) -> str:
    """1 → 一, 10 → 十, 12 → 十二, 20 → 二十, 45 → 四十五 (clause numbers: 第一条 … 第五十条)."""
    if not 0 < n < 100:
        return str(n)
    tens, ones = divmod(n, 10)
    head = "" if tens == 0 else ("十" if tens == 1 else _DIGITS[tens] + "十")
    return head + (_DIGITS[ones] if ones else "")
