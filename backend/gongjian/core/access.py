"""The one place that decides what a principal may see and do.

A principal (a user or an API client) holds grants: a role on an organization
subtree, on a resident unit (liaisons), or on itself (members, residents).
Every list and every get goes through `visible()` / `get_visible()`, which turn
the grants into one SQL condition over the model's declared scope columns.

The answers, everywhere:
- an object outside every grant of the caller does not exist for them: 404;
- an object inside the caller's scope, but no grant there carries the permission: 403;
- a permission the caller holds nowhere: 403, whatever the object (`require`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Select, and_, bindparam, exists, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from gongjian.core.errors import ProblemError, not_found


class Role(StrEnum):
    platform_admin = "platform_admin"
    org_admin = "org_admin"
    org_staff = "org_staff"
    grid_worker = "grid_worker"
    unit_liaison = "unit_liaison"
    member = "member"
    resident = "resident"


class Perm(StrEnum):
    organizations_read = "organizations:read"
    organizations_write = "organizations:write"
    units_read = "units:read"
    units_write = "units:write"
    grids_read = "grids:read"
    grids_write = "grids:write"
    buildings_write = "buildings:write"
    members_read = "members:read"
    members_write = "members:write"
    members_pii = "members:pii"
    reports_read = "reports:read"
    reports_submit = "reports:submit"
    reports_review = "reports:review"
    audit_read = "audit:read"
    users_read = "users:read"
    users_write = "users:write"
    clients_write = "api_clients:write"
    lists_read = "lists:read"
    lists_write = "lists:write"
    stats_read = "stats:read"
    # Projects are read with lists:read (the third list); these are the actions on them.
    projects_write = "projects:write"
    projects_claim = "projects:claim"
    projects_progress = "projects:progress"
    meetings_read = "meetings:read"
    meetings_write = "meetings:write"
    # Recording a need on a household visit (走访), in a grid cell assigned to the caller.
    needs_visit = "needs:visit"
    # Co-building agreements: read; draft, send and amend (staff); sign, decline, terminate (the
    # side's authorized person: a community's org_admin, a unit's liaison).
    agreements_read = "agreements:read"
    agreements_write = "agreements:write"
    agreements_sign = "agreements:sign"
    # Two-way evaluation (双向评议): read windows and results; submit one side's rating; keep
    # rubrics and windows (staff). Unit standings, computed from the records.
    evaluations_read = "evaluations:read"
    evaluations_submit = "evaluations:submit"
    evaluations_manage = "evaluations:manage"
    standings_read = "standings:read"


_STAFF = {
    Perm.organizations_read,
    Perm.organizations_write,
    Perm.units_read,
    Perm.units_write,
    Perm.grids_read,
    Perm.grids_write,
    Perm.buildings_write,
    Perm.members_read,
    Perm.members_write,
    Perm.reports_read,
    Perm.reports_review,
    Perm.reports_submit,
    Perm.users_read,
    Perm.lists_read,
    Perm.lists_write,
    Perm.stats_read,
    Perm.projects_write,
    Perm.projects_progress,
    Perm.meetings_read,
    Perm.meetings_write,
}

ROLE_PERMISSIONS: dict[Role, frozenset[Perm]] = {
    Role.platform_admin: frozenset(Perm),
    Role.org_admin: frozenset(
        _STAFF | {Perm.members_pii, Perm.audit_read, Perm.users_write, Perm.clients_write}
    ),
    Role.org_staff: frozenset(_STAFF),
    Role.grid_worker: frozenset(
        {
            Perm.organizations_read,
            Perm.units_read,
            Perm.grids_read,
            Perm.buildings_write,
            Perm.members_read,
            Perm.reports_read,
            Perm.lists_read,
            Perm.meetings_read,
        }
    ),
    # A liaison's grants reach only their own unit (see `Grant.unit_id`).
    Role.unit_liaison: frozenset({Perm.units_read, Perm.units_write, Perm.reports_read, Perm.reports_submit}),
    # Members and residents see their own records (see `Scope.owner`).
    Role.member: frozenset({Perm.members_read, Perm.reports_read, Perm.reports_submit}),
    Role.resident: frozenset(),
}

# A liaison reads and works on the projects its unit leads or joins, and claims in the hall what is
# open to its unit (the reach is `projects.models.liaison_reach`).
ROLE_PERMISSIONS[Role.unit_liaison] |= {Perm.lists_read, Perm.projects_claim, Perm.projects_progress}

# A liaison publishes and keeps its own unit's resources (Resource scope: unit="unit_id"); a unit
# grant reaches no need. A grid worker records needs on visits to the cells assigned to them.
ROLE_PERMISSIONS[Role.unit_liaison] |= {Perm.lists_write}
ROLE_PERMISSIONS[Role.grid_worker] |= {Perm.needs_visit}

# Staff draft agreements; only an org_admin signs for a community, only a liaison for its unit.
ROLE_PERMISSIONS[Role.org_staff] |= {Perm.agreements_read, Perm.agreements_write}
ROLE_PERMISSIONS[Role.org_admin] |= {Perm.agreements_read, Perm.agreements_write, Perm.agreements_sign}
ROLE_PERMISSIONS[Role.unit_liaison] |= {Perm.agreements_read, Perm.agreements_sign}

# Staff keep rubrics and windows and rate units for their community; a liaison rates the community
# for its unit. Who rates for which side is decided per window (`evaluations.service.rater_sides`).
_EVALUATIONS = {Perm.evaluations_read, Perm.evaluations_submit, Perm.standings_read}
ROLE_PERMISSIONS[Role.org_staff] |= _EVALUATIONS | {Perm.evaluations_manage}
ROLE_PERMISSIONS[Role.org_admin] |= _EVALUATIONS | {Perm.evaluations_manage}
ROLE_PERMISSIONS[Role.unit_liaison] |= _EVALUATIONS

# Roles whose grants reach the holder's own records only (`Scope.owner`), never an org subtree.
SELF_ONLY_ROLES: frozenset[Role] = frozenset({Role.member, Role.resident})

# What an API client's scope may grant; never more than read/write on data.
CLIENT_SCOPES: frozenset[str] = frozenset(
    {
        Perm.organizations_read,
        Perm.units_read,
        Perm.grids_read,
        Perm.members_read,
        Perm.lists_read,
        Perm.lists_write,
        Perm.stats_read,
    }
)


@dataclass(frozen=True)
class Grant:
    role: Role
    org_id: uuid.UUID | None = None
    org_path: str | None = None  # None with org_id None: the whole platform
    unit_id: uuid.UUID | None = None
    perms: frozenset[Perm] = frozenset()

    @property
    def is_global(self) -> bool:
        return self.org_path is None and self.unit_id is None and self.role == Role.platform_admin


@dataclass
class Principal:
    kind: str  # "user" | "client"
    id: uuid.UUID
    name: str
    grants: list[Grant] = field(default_factory=list)

    def can(self, perm: Perm) -> bool:
        return any(perm in g.perms for g in self.grants)

    def grants_for(self, perm: Perm) -> list[Grant]:
        return [g for g in self.grants if perm in g.perms]

    @property
    def roles(self) -> list[str]:
        return sorted({g.role.value for g in self.grants})

    @property
    def user_id(self) -> uuid.UUID | None:
        return self.id if self.kind == "user" else None


@dataclass(frozen=True)
class Scope:
    """How a model is reached by grants.

    org: columns holding an organization id (any of them in the subtree grants access);
    path: for the organization table itself, its materialized path column;
    unit: column holding a resident unit id (liaison grants);
    owner: column holding the owning user id (self grants).
    """

    org: tuple[str, ...] = ()
    path: str | None = None
    unit: str | None = None
    owner: str | None = None
    # Users are reached through their role assignments in the caller's scope.
    via_assignments: bool = False
    # Rows a liaison reaches other than through one unit column (a project's joint units, the claim
    # hall): a function of the liaison's unit ids giving the SQL condition, defined next to the model.
    unit_rule: Callable[[frozenset[uuid.UUID]], ColumnElement[bool]] | None = None


def subtree_upper_bound(path: str) -> str:
    # Paths are '/1/5/'; every descendant sorts in [path, path[:-1] + '0') under COLLATE "C",
    # a plain btree range that works with generic (prepared) plans, unlike LIKE $1.
    return path[:-1] + "0"


def in_subtree(path_column: Any, path: str) -> ColumnElement[bool]:
    return and_(path_column >= path, path_column < subtree_upper_bound(path))


def _org_ids_in(paths: list[str]) -> Select[Any]:
    from gongjian.organizations.models import Organization

    return select(Organization.id).where(or_(*[in_subtree(Organization.path, p) for p in paths]))


def scope_condition(model: Any, principal: Principal, perm: Perm) -> ColumnElement[bool]:
    """The SQL condition selecting the rows of `model` the principal reaches with `perm`."""
    return grants_condition(model, principal, principal.grants_for(perm))


def grants_condition(model: Any, principal: Principal, grants: list[Grant]) -> ColumnElement[bool]:
    """The rows of `model` that any of `grants` reaches (whatever permissions they carry)."""
    scope: Scope = model.__scope__
    if any(g.is_global for g in grants):
        return true()
    conditions: list[ColumnElement[bool]] = []
    # Members and residents reach only their own records, whatever org their assignment names.
    paths = sorted(
        {
            g.org_path
            for g in grants
            if g.org_path is not None and g.unit_id is None and g.role not in SELF_ONLY_ROLES
        }
    )
    if paths:
        if scope.path:
            col = getattr(model, scope.path)
            conditions.extend(in_subtree(col, p) for p in paths)
        if scope.org:
            sub = _org_ids_in(paths)
            conditions.extend(getattr(model, c).in_(sub) for c in scope.org)
    unit_ids = {g.unit_id for g in grants if g.unit_id is not None}
    if unit_ids and scope.unit:
        conditions.append(getattr(model, scope.unit).in_(unit_ids))
    if unit_ids and scope.unit_rule is not None:
        conditions.append(scope.unit_rule(frozenset(unit_ids)))
    if scope.owner and principal.user_id is not None and grants:
        conditions.append(getattr(model, scope.owner) == principal.user_id)
    if scope.via_assignments and grants:
        from gongjian.auth.models import RoleAssignment

        held = select(RoleAssignment.user_id).where(grants_condition(RoleAssignment, principal, grants))
        conditions.append(model.id.in_(held))
    return or_(*conditions) if conditions else false()


T = TypeVar("T")


def visible(stmt: Select[Any], model: Any, principal: Principal, perm: Perm) -> Select[Any]:
    """Filter a SELECT to what the principal may see with `perm`."""
    return stmt.where(scope_condition(model, principal, perm))


_OBJECT_ID: BindParameter[Any] = bindparam("visible_object_id")
_STATEMENTS: dict[tuple[Any, ...], Select[Any]] = {}
_STATEMENTS_MAX = 2048


def _get_statement(model: Any, principal: Principal, perm: Perm, for_update: bool) -> Select[Any]:
    """The SELECT of one object by id, filtered by the principal's scope, built once per principal
    and grants: building it, and hashing it into SQLAlchemy's cache key, costs more than running it.
    Everything the scope condition is made of is in the key (grants carry the org paths, so a moved
    subtree or a changed role makes a new key)."""
    grants = principal.grants_for(perm)
    key = (model, perm, for_update, principal.kind, principal.id, tuple(grants))
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        stmt = select(model).where(model.id == _OBJECT_ID)
        stmt = stmt.where(grants_condition(model, principal, grants))
        if for_update:
            stmt = stmt.with_for_update()
        if len(_STATEMENTS) >= _STATEMENTS_MAX:
            _STATEMENTS.pop(next(iter(_STATEMENTS)))  # the oldest
        _STATEMENTS[key] = stmt
    return stmt


async def get_visible(
    session: AsyncSession,
    model: type[T],
    object_id: uuid.UUID,
    principal: Principal,
    perm: Perm,
    *,
    name: str = "object",
    for_update: bool = False,
    options: Iterable[Any] = (),
) -> T:
    """Load one object the principal may reach with `perm`.

    - the principal holds `perm` nowhere: 403 (as `require` would answer, whatever the object);
    - the object is outside every one of the principal's grants: 404, as if it did not exist;
    - it is inside the principal's scope, but no grant there carries `perm`: 403.
    """
    require(principal, perm)
    options = tuple(options)
    stmt = _get_statement(model, principal, perm, for_update) if not options else None
    if stmt is None:
        stmt = select(model).where(model.id == _OBJECT_ID).options(*options)  # type: ignore[attr-defined]
        stmt = visible(stmt, model, principal, perm)
        if for_update:
            stmt = stmt.with_for_update()
    obj: T | None = (await session.execute(stmt, {"visible_object_id": object_id})).scalar_one_or_none()
    if obj is None:
        in_scope = select(
            exists().where(
                model.id == object_id,  # type: ignore[attr-defined]
                grants_condition(model, principal, principal.grants),
            )
        )
        if (await session.execute(in_scope)).scalar():
            raise ProblemError("forbidden")
        raise not_found(name)
    return obj


def require(principal: Principal, perm: Perm) -> None:
    if not principal.can(perm):
        raise ProblemError("forbidden")


async def ensure_org_in_scope(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, perm: Perm
) -> Any:
    """The organization `org_id`, if the principal holds `perm` on it; else 404 (403 as `get_visible`)."""
    from gongjian.organizations.models import Organization

    return await get_visible(session, Organization, org_id, principal, perm, name="organization")
