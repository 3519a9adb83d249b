"""The audit log: every write, and every full read of personal data."""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from gongjian.core.access import Scope
from gongjian.core.db import Base, IdMixin, utcnow

if TYPE_CHECKING:
    from gongjian.core.access import Principal

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Never written to the audit log in clear, whatever object they appear on.
PERSONAL_FIELDS = frozenset(
    {
        "phone",
        "contact_phone",
        "id_number",
        "password",
        "password_hash",
        "secret",
        "secret_hash",
        "token",
        "phone_encrypted",
        "id_number_encrypted",
        "phone_hash",
        "id_number_hash",
        "address_detail",
    }
)


class AuditEntry(IdMixin, Base):
    __tablename__ = "audit_log"
    __scope__ = Scope(org=("org_id",))

    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[uuid.UUID | None]
    actor_name: Mapped[str | None] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[uuid.UUID | None]
    org_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("organizations.id", ondelete="SET NULL"))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    reason: Mapped[str | None] = mapped_column(String(500))
    request_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_log_object", "object_type", "object_id"),
        Index("ix_audit_log_org_at", "org_id", "at"),
    )


def redact(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {k: ("***" if k in PERSONAL_FIELDS and v is not None else v) for k, v in values.items()}


def snapshot(obj: Any, fields: list[str] | None = None) -> dict[str, Any]:
    """A JSON-safe dict of an ORM object's column values (personal fields redacted)."""
    table = obj.__table__
    out: dict[str, Any] = {}
    for col in table.columns:
        if fields is not None and col.key not in fields:
            continue
        out[col.key] = _json_safe(getattr(obj, col.key, None))
    return redact(out) or {}


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return str(value)


async def record(
    session: AsyncSession,
    principal: Principal | None,
    action: str,
    object_type: str,
    object_id: uuid.UUID | None,
    *,
    org_id: uuid.UUID | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        actor_kind=principal.kind if principal else "system",
        actor_id=principal.id if principal else None,
        actor_name=principal.name if principal else "system",
        action=action,
        object_type=object_type,
        object_id=object_id,
        org_id=org_id,
        before=redact(before),
        after=redact(after),
        reason=reason,
        request_id=request_id_var.get(),
    )
    session.add(entry)
    return entry
