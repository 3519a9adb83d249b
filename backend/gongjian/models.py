"""Every table, imported once so Alembic and the mappers see the whole schema."""

from gongjian.agreements import models as _agreements  # noqa: F401
from gongjian.auth.models import ApiClient, LoginFailure, RefreshToken, RoleAssignment, User
from gongjian.core.audit import AuditEntry
from gongjian.core.db import Base
from gongjian.core.idempotency import IdempotencyRecord
from gongjian.evaluations import models as _evaluations  # noqa: F401
from gongjian.grids import models as _grids  # noqa: F401
from gongjian.lists import models as _lists  # noqa: F401
from gongjian.lists.imports import models as _list_imports  # noqa: F401
from gongjian.matching import models as _matching  # noqa: F401
from gongjian.meetings import models as _meetings  # noqa: F401
from gongjian.members import models as _members  # noqa: F401
from gongjian.notifications import models as _notifications  # noqa: F401
from gongjian.organizations.models import CommitteeMember, Organization
from gongjian.projects import models as _projects  # noqa: F401
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
