"""Every table, imported once so Alembic and the mappers see the whole schema."""

from gongjian.auth.models import ApiClient, LoginFailure, RefreshToken, RoleAssignment, User
from gongjian.core.audit import AuditEntry
from gongjian.core.db import Base
from gongjian.core.idempotency import IdempotencyRecord
from gongjian.grids import models as _grids  # noqa: F401
from gongjian.lists import models as _lists  # noqa: F401
from gongjian.members import models as _members  # noqa: F401
from gongjian.organizations.models import CommitteeMember, Organization
from gongjian.resident_units.models import ResidentUnit

__all__ = [
    "ApiClient",
    "AuditEntry",
    "Base",
    "CommitteeMember",
    "IdempotencyRecord",
    "LoginFailure",
    "Organization",
    "RefreshToken",
    "ResidentUnit",
    "RoleAssignment",
    "User",
]
