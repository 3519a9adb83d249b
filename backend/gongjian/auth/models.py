from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ARRAY, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from gongjian.core.access import Role, Scope
from gongjian.core.db import Base, IdMixin, TimestampMixin, VersionedMixin


class User(IdMixin, TimestampMixin, VersionedMixin, Base):
    __tablename__ = "users"
    # Seen by themself, and by whoever holds the permission over one of their assignments.
    __scope__ = Scope(owner="id", via_assignments=True)

    username: Mapped[str] = mapped_column(String(50), unique=True)
    display_name: Mapped[str] = mapped_column(String(50))
    phone_encrypted: Mapped[str | None] = mapped_column(String(200))
    phone_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    password_changed_at: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]


class RoleAssignment(IdMixin, TimestampMixin, Base):
    """A role held on an organization subtree (or, for liaisons, on one resident unit)."""

    __tablename__ = "role_assignments"
    __scope__ = Scope(org=("org_id",))

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[Role] = mapped_column(String(32))
    org_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    unit_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("resident_units.id", ondelete="CASCADE"), index=True
    )
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    __table_args__ = (
        Index(
            "uq_role_assignments_user_role_org_unit",
            "user_id",
            "role",
            text("coalesce(org_id, '00000000-0000-0000-0000-000000000000'::uuid)"),
            text("coalesce(unit_id, '00000000-0000-0000-0000-000000000000'::uuid)"),
            unique=True,
        ),
    )


class RefreshToken(IdMixin, TimestampMixin, Base):
    """A rotating refresh token; all tokens rotated from one login share a family."""

    __tablename__ = "refresh_tokens"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family_id: Mapped[uuid.UUID] = mapped_column(index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class LoginFailure(IdMixin, Base):
    __tablename__ = "login_failures"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    at: Mapped[datetime]

    __table_args__ = (Index("ix_login_failures_user_at", "user_id", "at"),)


class ApiClient(IdMixin, TimestampMixin, Base):
    """A third-party system: client-credentials grant, scopes and an org scope."""

    __tablename__ = "api_clients"
    __scope__ = Scope(org=("org_id",))

    name: Mapped[str] = mapped_column(String(100))
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="RESTRICT"), index=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
