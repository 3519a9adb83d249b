"""The signed document of an agreement version, and the public check of a printed one.

`GET /agreements/verify?number=&hash=` is what the QR code on a signed PDF opens: anyone, without
logging in, learns whether the version with exactly that content hash is the current one, and
nothing else — no parties, no content, no ids. An unknown or altered hash answers 200 with status
`unknown` (the same shape as every other answer, so probing learns nothing from status codes).
It is one indexed read with no writes and may be cached for a minute, so a proxy can rate-limit
and cache it freely.

Registered before the agreements router: `/agreements/verify` must not be taken for
`/agreements/{agreement_id}`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from gongjian.agreements.document import CONTENT_TYPE, LOCAL_TZ
from gongjian.agreements.models import Agreement, AgreementState
from gongjian.auth.deps import CurrentPrincipal
from gongjian.core.access import Perm, get_visible
from gongjian.core.db import SessionDep
from gongjian.core.errors import ProblemError, problem_responses
from gongjian.core.storage import StorageError, get_storage

log = logging.getLogger("gongjian.agreements.verification")

router = APIRouter(prefix="/api/v1", tags=["agreements"])

VERIFY_CACHE_SECONDS = 60
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"


class VerificationStatus(StrEnum):
    current = "current"  # active, in its term, not superseded
    superseded = "superseded"  # an amendment replaced it
    terminated = "terminated"
    expired = "expired"
    not_signed = "not_signed"  # sent, awaiting signatures
    unknown = "unknown"  # no version of that number has that hash


class VerificationOut(BaseModel):
    number: str = Field(description="The agreement number asked about", examples=["GJ-2026-0001"])
    version_no: int | None = Field(description="The version whose content has that hash; null when unknown")
    status: VerificationStatus


_STATUS = {
    AgreementState.superseded: VerificationStatus.superseded,
    AgreementState.terminated: VerificationStatus.terminated,
    AgreementState.expired: VerificationStatus.expired,
    AgreementState.pending_signatures: VerificationStatus.not_signed,
    AgreementState.draft: VerificationStatus.not_signed,
}


def status_of(state: AgreementState, term_to: date, today: date) -> VerificationStatus:
    if state == AgreementState.active:
        # Past its end date it is expired, even before the daily job has marked it so.
        return VerificationStatus.expired if term_to < today else VerificationStatus.current
    return _STATUS[AgreementState(state)]


@router.get(
    "/agreements/verify",
    response_model=VerificationOut,
    summary="Public: is the agreement version with this content hash the current one? (no login)",
    description=(
        "What the QR code on a signed agreement PDF opens. Answers only the number, the version and its "
        "status — `current` (in force), `superseded` (replaced by an amendment), `terminated`, `expired`, "
        "`not_signed` (still awaiting signatures) or `unknown` (no version of this number has this hash: "
        "the hash or the number was altered, or never existed) — for the exact version whose content "
        "SHA-256 is `hash`. An unknown hash is a 200 with status `unknown`, never a 404."
    ),
    responses=problem_responses(),
)
async def verify_agreement(
    session: SessionDep,
    response: Response,
    number: Annotated[
        str, Query(min_length=1, max_length=64, pattern=_PRINTABLE, description="The agreement number")
    ],
    content_hash: Annotated[
        str, Query(alias="hash", min_length=1, max_length=128, description="The content SHA-256 (hex)")
    ],
) -> VerificationOut:
    response.headers["Cache-Control"] = f"public, max-age={VERIFY_CACHE_SECONDS}"
    unknown = VerificationOut(number=number, version_no=None, status=VerificationStatus.unknown)
    content_hash = content_hash.strip().lower()
    if not _HEX_SHA256.fullmatch(content_hash):
        return unknown  # no stored hash looks like that: no need to ask the database
    row = (
        await session.execute(
            select(Agreement.version_no, Agreement.state, Agreement.term_to)
            .where(Agreement.content_hash == content_hash, Agreement.number == number)
            .order_by(Agreement.version_no.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        return unknown
    today = datetime.now(LOCAL_TZ).date()
    status = status_of(row.state, row.term_to, today)
    return VerificationOut(number=number, version_no=row.version_no, status=status)


_PDF_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        "description": "The signed agreement PDF (ETag: its SHA-256)",
    },
    304: {"description": "Not modified (If-None-Match matched the ETag)"},
    503: {
        "description": "The stored document cannot be read",
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    },
}


@router.get(
    "/agreements/{agreement_id}/document",
    response_class=Response,
    summary="Download the signed PDF of an agreement version (rendered once, when it became active)",
    description=(
        "Whoever may read the agreement may download it. A version not yet signed by both sides has no "
        "document (409 `document_not_ready`); superseded, terminated and expired versions keep theirs."
    ),
    responses={**_PDF_RESPONSE, **problem_responses(401, 403, 404, 409)},
)
async def download_agreement_document(
    agreement_id: uuid.UUID,
    session: SessionDep,
    principal: CurrentPrincipal,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    agreement = await get_visible(
        session, Agreement, agreement_id, principal, Perm.agreements_read, name="agreement"
    )
    if agreement.document_key is None or agreement.document_sha256 is None:
        raise ProblemError("document_not_ready")
    etag = f'"{agreement.document_sha256}"'
    if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers={"ETag": etag})
    try:
        pdf = await get_storage().get(agreement.document_key)
    except StorageError:
        log.exception("the document %s of agreement %s cannot be read", agreement.document_key, agreement.id)
        raise ProblemError("document_unavailable") from None
    # Never hand out bytes other than those recorded at activation.
    if hashlib.sha256(pdf).hexdigest() != agreement.document_sha256:
        log.error(
            "the document %s of agreement %s does not match its SHA-256", agreement.document_key, agreement.id
        )
        raise ProblemError("document_unavailable")
    filename = f"{agreement.number}-v{agreement.version_no}.pdf"
    return Response(
        pdf,
        media_type=CONTENT_TYPE,
        headers={
            "Content-Disposition": f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}",
            "ETag": etag,
            "Cache-Control": "private, no-cache",
        },
    )
