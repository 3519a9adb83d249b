from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gongjian.agreements.models import AgreementState, AuthMethod, CommitmentKind, Side

Recurrence = Literal["once", "weekly", "monthly", "quarterly", "yearly"]

# A handwritten signature from a phone: a small PNG or JPEG, base64 (optionally a data: URL).
SIGNATURE_IMAGE_MAX_BYTES = 256 * 1024
_SIGNATURE_IMAGE_MAX_CHARS = SIGNATURE_IMAGE_MAX_BYTES * 4 // 3 + 100

HASH_PATTERN = r"^[0-9a-f]{64}$"


class Clause(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$", examples=["co_organization"])
    title: str = Field(min_length=1, max_length=200, examples=["组织共建"])
    body: str = Field(
        min_length=1, max_length=10000, examples=["{{community}}与{{unit}}在{{term_from}}至{{term_to}}期间……"]
    )


def _unique_keys(clauses: list[Clause] | None) -> None:
    if clauses is None:
        return
    keys = [c.key for c in clauses]
    if len(set(keys)) != len(keys):
        raise ValueError("clause keys must be unique")


class AgreementTemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    org_id: uuid.UUID = Field(description="The organization keeping the template")
    name: str = Field(min_length=1, max_length=200)
    clauses: list[Clause] = Field(min_length=1, max_length=50)
    is_active: bool = True

    @model_validator(mode="after")
    def _keys(self) -> AgreementTemplateCreate:
        _unique_keys(self.clauses)
        return self


class AgreementTemplateUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    clauses: list[Clause] | None = Field(default=None, min_length=1, max_length=50)
    is_active: bool | None = None

    @model_validator(mode="after")
    def _keys(self) -> AgreementTemplateUpdate:
        _unique_keys(self.clauses)
        return self


class AgreementTemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    clauses: list[Clause]
    is_active: bool
    version: int
    created_at: datetime
    updated_at: datetime


class AgreementCommitmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    side: Side = Field(description="Who promises it: community (甲方) or unit (乙方)")
    kind: CommitmentKind
    resource_id: uuid.UUID | None = Field(default=None, description="kind resource: from the resources list")
    project_id: uuid.UUID | None = Field(default=None, description="kind project")
    quantity: int | None = Field(default=None, ge=1, le=10**12)
    recurrence: Recurrence | None = Field(default=None, description="e.g. monthly for a 统一活动日")
    members_count: int | None = Field(
        default=None, ge=0, le=1_000_000, description="kind members_report: in-service members to report"
    )
    description: str = Field(default="", max_length=1000)


class AgreementCommitmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    side: Side
    kind: CommitmentKind
    resource_id: uuid.UUID | None
    project_id: uuid.UUID | None
    quantity: int | None
    recurrence: str | None
    members_count: int | None
    description: str


class AgreementCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    community_id: uuid.UUID = Field(description="甲方: a community-level organization")
    unit_id: uuid.UUID = Field(description="乙方: a resident unit in the community's street")
    template_id: uuid.UUID | None = Field(default=None, description="Clauses copied, placeholders filled")
    title: str | None = Field(default=None, min_length=1, max_length=200, description="Default: built")
    clauses: list[Clause] | None = Field(default=None, max_length=50, description="Instead of a template's")
    term_from: date
    term_to: date
    commitments: list[AgreementCommitmentIn] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _keys(self) -> AgreementCreate:
        _unique_keys(self.clauses)
        return self


class AgreementUpdate(BaseModel):
    """A draft's content; `commitments`, when given, replaces the whole list."""

    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(default=None, min_length=1, max_length=200)
    clauses: list[Clause] | None = Field(default=None, max_length=50)
    term_from: date | None = None
    term_to: date | None = None
    commitments: list[AgreementCommitmentIn] | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _keys(self) -> AgreementUpdate:
        _unique_keys(self.clauses)
        return self


class AgreementSignatureOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    side: Side
    signer_user_id: uuid.UUID
    signer_name: str
    signed_at: datetime
    content_hash: str
    auth_method: AuthMethod
    has_image: bool


class AgreementOut(BaseModel):
    id: uuid.UUID
    number: str = Field(examples=["GJ-2026-0001"])
    version_no: int
    previous_id: uuid.UUID | None
    superseded_by_id: uuid.UUID | None
    community_id: uuid.UUID
    unit_id: uuid.UUID
    template_id: uuid.UUID | None
    title: str
    clauses: list[Clause] = Field(description="With the {{placeholders}} filled: what is shown and signed")
    clause_sources: list[Clause] = Field(
        description="As written, placeholders kept; edit these: a draft's changed term refills `clauses`"
    )
    term_from: date
    term_to: date
    state: AgreementState
    commitments: list[AgreementCommitmentOut]
    signatures: list[AgreementSignatureOut]
    content_hash: str | None = Field(description="SHA-256 (hex) of `canonical_content`, fixed when sent")
    canonical_content: str | None = Field(
        description="The exact UTF-8 JSON text that was hashed and is signed (sorted keys, no spaces)"
    )
    sent_at: datetime | None
    activated_at: datetime | None
    terminated_at: datetime | None
    termination_reason: str | None
    declined_at: datetime | None
    decline_reason: str | None
    expired_at: datetime | None
    superseded_at: datetime | None
    has_document: bool = Field(description="The signed PDF was rendered and stored")
    document_sha256: str | None
    version: int
    created_at: datetime
    updated_at: datetime


class AgreementSignatureCreate(BaseModel):
    """Sign as one side, re-authenticating with the account password or a one-time code."""

    model_config = ConfigDict(extra="forbid")
    side: Side | None = Field(default=None, description="Needed only by someone who may sign for both")
    content_hash: str = Field(pattern=HASH_PATTERN, description="The content hash the signer viewed")
    password: str | None = Field(default=None, min_length=1, max_length=200)
    one_time_code: str | None = Field(default=None, pattern=r"^[0-9]{6}$")
    signature_image: str | None = Field(
        default=None,
        max_length=_SIGNATURE_IMAGE_MAX_CHARS,
        description=f"Handwritten signature: PNG or JPEG, base64 (or a data: URL), "
        f"at most {SIGNATURE_IMAGE_MAX_BYTES // 1024} KB",
    )

    @model_validator(mode="after")
    def _one_method(self) -> AgreementSignatureCreate:
        if (self.password is None) == (self.one_time_code is None):
            raise ValueError("give exactly one of password and one_time_code")
        return self


class SigningCodeOut(BaseModel):
    expires_at: datetime
    delivered_to: Literal["inbox"] = Field(description="Where the code was sent: the in-app inbox")


class AgreementReason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500)
