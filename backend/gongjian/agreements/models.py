"""Co-building agreements (共建协议) between a community (甲方) and a resident unit (乙方).

An agreement is one `number` with versions (`version_no` 1, 2, …): a version is edited while
`draft`, frozen when sent (its canonical content hashed), signed by both sides, then `active`.
An active version is never edited: an amendment is the next version, and when that one becomes
active the old one becomes `superseded` and stays on record.

States: draft → pending_signatures → active → expired | terminated | superseded;
pending_signatures → draft (declined by either side).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    Select,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from gongjian.core.access import Scope
from gongjian.core.db import Base, IdMixin, TimestampMixin, VersionedMixin


class AgreementState(StrEnum):
    draft = "draft"
    pending_signatures = "pending_signatures"
    active = "active"
    expired = "expired"
    terminated = "terminated"
    superseded = "superseded"


class Side(StrEnum):
    community = "community"  # 甲方
    unit = "unit"  # 乙方


class CommitmentKind(StrEnum):
    resource = "resource"
    project = "project"
    activity = "activity"
    members_report = "members_report"
    other = "other"


class AuthMethod(StrEnum):
    password = "password"
    one_time_code = "one_time_code"


def _in(column: str, enum: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(e.value) for e in enum)})"


class AgreementTemplate(IdMixin, TimestampMixin, VersionedMixin, Base):
    """Clauses with {{placeholders}} ({{community}}, {{unit}}, {{term_from}}, {{term_to}}), kept by
    an org's staff; drafts copy them with the placeholders filled."""

    __tablename__ = "agreement_templates"
    __scope__ = Scope(org=("org_id",))

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # [{"key": "co_organization", "title": "组织共建", "body": "{{community}}与{{unit}}……"}, …]
    clauses: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_by: Mapped[uuid.UUID | None]


class Agreement(IdMixin, TimestampMixin, VersionedMixin, Base):
    """One version of a co-building agreement."""

    __tablename__ = "agreements"
    # The community's staff (and their superiors); the unit's liaison.
    __scope__ = Scope(org=("community_id",), unit="unit_id")

    # Shared by every version of one agreement, e.g. "GJ-2026-0001".
    number: Mapped[str] = mapped_column(String(32), index=True)
    version_no: Mapped[int] = mapped_column(Integer, default=1)
    previous_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("agreements.id", ondelete="RESTRICT"), index=True
    )
    superseded_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("agreements.id", ondelete="SET NULL"), index=True
    )
    community_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    unit_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("resident_units.id", ondelete="RESTRICT"), index=True
    )
    template_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("agreement_templates.id", ondelete="SET NULL"), index=True
    )
    title: Mapped[str] = mapped_column(String(200))
    # The clauses with their {{placeholders}} filled (what is shown and signed), and as written,
    # placeholders kept, so that a draft's changed term or title refills them.
    clauses: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    clause_sources: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, default=list, server_default=text("'[]'::jsonb")
    )
    term_from: Mapped[date] = mapped_column(Date)
    term_to: Mapped[date] = mapped_column(Date)
    state: Mapped[AgreementState] = mapped_column(String(24), default=AgreementState.draft, index=True)

    # Frozen at send: the exact canonical JSON text and its hex SHA-256.
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    canonical_content: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    sent_by: Mapped[uuid.UUID | None]
    activated_at: Mapped[datetime | None]
    terminated_at: Mapped[datetime | None]
    terminated_by: Mapped[uuid.UUID | None]
    termination_reason: Mapped[str | None] = mapped_column(String(500))
    declined_at: Mapped[datetime | None]
    declined_by: Mapped[uuid.UUID | None]
    decline_reason: Mapped[str | None] = mapped_column(String(500))
    expired_at: Mapped[datetime | None]
    superseded_at: Mapped[datetime | None]
    # The signed PDF, rendered and stored once at activation (`agreements.document`).
    document_key: Mapped[str | None] = mapped_column(String(500))
    document_sha256: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[uuid.UUID | None]

    __table_args__ = (
        UniqueConstraint("number", "version_no"),
        CheckConstraint(_in("state", AgreementState), name="state"),
        CheckConstraint("term_from <= term_to", name="term_ordered"),
        CheckConstraint("version_no >= 1", name="version_no_positive"),
        CheckConstraint(
            "state = 'draft' OR (content_hash IS NOT NULL AND canonical_content IS NOT NULL)",
            name="frozen_when_sent",
        ),
        CheckConstraint("(state = 'superseded') = (superseded_by_id IS NOT NULL)", name="superseded_link"),
        # At most one version of a number is in progress (draft or being signed) at a time.
        Index(
            "uq_agreements_open_version",
            "number",
            unique=True,
            postgresql_where=text("state IN ('draft', 'pending_signatures')"),
        ),
    )


class AgreementNumberCounter(Base):
    """The last agreement number given out per year (GJ-<year>-<seq>), bumped atomically."""

    __tablename__ = "agreement_number_counters"

    year: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    last: Mapped[int] = mapped_column(Integer)


class AgreementCommitment(IdMixin, TimestampMixin, Base):
    """A concrete promise of one side, part of the agreement's signed content. Reached through
    its agreement."""

    __tablename__ = "agreement_commitments"

    agreement_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("agreements.id", ondelete="CASCADE"), index=True
    )
    side: Mapped[Side] = mapped_column(String(16))
    kind: Mapped[CommitmentKind] = mapped_column(String(16))
    resource_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("resources.id", ondelete="RESTRICT"), index=True
    )
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("projects.id", ondelete="RESTRICT"), index=True
    )
    quantity: Mapped[int | None] = mapped_column(BigInteger)
    recurrence: Mapped[str | None] = mapped_column(String(32))  # e.g. 'monthly'
    members_count: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(1000), default="", server_default="")
    position: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (
        CheckConstraint(_in("side", Side), name="side"),
        CheckConstraint(_in("kind", CommitmentKind), name="kind"),
        CheckConstraint("quantity IS NULL OR quantity > 0", name="quantity_positive"),
        CheckConstraint("members_count IS NULL OR members_count >= 0", name="members_count_nonnegative"),
        CheckConstraint("kind <> 'resource' OR resource_id IS NOT NULL", name="resource_named"),
        CheckConstraint("kind <> 'project' OR project_id IS NOT NULL", name="project_named"),
    )


class AgreementSignature(IdMixin, TimestampMixin, Base):
    """One side's signature on one version, over the hash the signer saw. A decline removes the
    round's signatures (recorded in the audit log)."""

    __tablename__ = "agreement_signatures"

    agreement_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("agreements.id", ondelete="CASCADE"), index=True
    )
    side: Mapped[Side] = mapped_column(String(16))
    # Kept like the audit log's actor: a plain id, never nulled when an account goes.
    signer_user_id: Mapped[uuid.UUID]
    signer_name: Mapped[str] = mapped_column(String(100))
    signed_at: Mapped[datetime]
    content_hash: Mapped[str] = mapped_column(String(64))
    auth_method: Mapped[AuthMethod] = mapped_column(String(16))
    image_key: Mapped[str | None] = mapped_column(String(500))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (
        UniqueConstraint("agreement_id", "side"),
        CheckConstraint(_in("side", Side), name="side"),
        CheckConstraint(_in("auth_method", AuthMethod), name="auth_method"),
    )


class SigningCode(IdMixin, TimestampMixin, Base):
    """A one-time code a signer re-authenticates with, stored hashed."""

    __tablename__ = "agreement_signing_codes"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    agreement_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("agreements.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


def active_agreement_units(community_id: Any) -> Select[Any]:
    """The units holding an active agreement with `community_id` (a column or a value): the units
    paired with the community (first claim on its projects in the hall)."""
    return select(Agreement.unit_id).where(
        Agreement.community_id == community_id, Agreement.state == AgreementState.active
    )
