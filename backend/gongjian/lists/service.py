"""The resources list and the needs list: who publishes and raises what, their state machines,
the duplicate check on new needs, and the quantity projects reserve on resources.

Called from other packages:
- `set_need_state(session, need, target, by=..., reason=...)`: the one way a need changes state
  (matching sets `matched`, projects `in_project` / `resolved`); the transition table is
  `NEED_TRANSITIONS`.
- `reserve_quantity(session, resource_id, quantity)` / `release_quantity(...)`: a project's
  commitment of (part of) a resource, and its undoing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, case, false, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from gongjian.core import audit
from gongjian.core.access import (
    Perm,
    Principal,
    ensure_org_in_scope,
    get_visible,
    in_subtree,
    require,
    scope_condition,
    visible,
)
from gongjian.core.db import contains, utcnow
from gongjian.core.errors import ProblemError, illegal_transition, not_found
from gongjian.grids.models import GridAssignment, GridCell
from gongjian.lists import duplicates
from gongjian.lists.models import (
    OPEN_NEED_STATES,
    ListCategory,
    Need,
    NeedSource,
    NeedState,
    ProviderKind,
    Resource,
    ResourceState,
    Urgency,
)
from gongjian.lists.schemas import (
    Location,
    NeedCandidate,
    NeedCreate,
    NeedOut,
    NeedUpdate,
    ResourceCreate,
    ResourceOut,
    ResourceUpdate,
)
from gongjian.matching.text import index_tokens
from gongjian.organizations.models import Organization, OrgLevel
from gongjian.resident_units.models import ResidentUnit

LOCAL_TZ = ZoneInfo("Asia/Shanghai")

# --- shared helpers -------------------------------------------------------------------------


def _field_error(field: str, msg: str, where: str = "body") -> ProblemError:
    error = {"loc": [where, field], "msg": msg, "type": "value_error"}
    return ProblemError("validation_error", errors=[error])


def _reject_nulls(changes: dict[str, Any], fields: Sequence[str]) -> None:
    errors = [
        {"loc": ["body", f], "msg": "may not be null", "type": "value_error"}
        for f in fields
        if f in changes and changes[f] is None
    ]
    if errors:
        raise ProblemError("validation_error", errors=errors)


def today() -> date:
    return datetime.now(LOCAL_TZ).date()


def _window(start: date | None, end: date | None, names: tuple[str, str]) -> tuple[date, date]:
    """The window with its defaults (today … the end of that year); refused when it ends before it starts."""
    start = start or today()
    end = end or date(start.year, 12, 31)
    if end < start:
        raise _field_error(names[1], f"ends before {names[0]} ({start.isoformat()})")
    return start, end


def _location_values(location: Location | None) -> dict[str, float | None]:
    return {"lat": location.lat, "lng": location.lng} if location else {"lat": None, "lng": None}


def location_of(obj: Resource | Need) -> Location | None:
    return Location(lat=obj.lat, lng=obj.lng) if obj.lat is not None and obj.lng is not None else None


async def _subtree_condition(session: AsyncSession, column: Any, org_id: uuid.UUID) -> ColumnElement[bool]:
    """`column` holds an organization in the subtree of `org_id` (an unknown org: nothing)."""
    path = (await session.execute(select(Organization.path).where(Organization.id == org_id))).scalar()
    if path is None:
        return false()
    return column.in_(select(Organization.id).where(in_subtree(Organization.path, path)))  # type: ignore[no-any-return]


async def _check_grid(session: AsyncSession, grid_id: uuid.UUID, org: Organization, *, exact: bool) -> None:
    """The cell exists and lies in `org` (exact: is one of its cells; else: under its subtree).

    An unknown cell and a cell elsewhere answer alike: whether a cell exists outside the caller's
    community is not theirs to learn."""
    row = (
        await session.execute(
            select(GridCell.community_id, Organization.path)
            .join(Organization, Organization.id == GridCell.community_id)
            .where(GridCell.id == grid_id)
        )
    ).one_or_none()
    if row is None:
        raise ProblemError("invalid_grid")
    community_id, path = row
    if (exact and community_id != org.id) or (not exact and not path.startswith(org.path)):
        raise ProblemError("invalid_grid")


async def _check_ref_free(
    session: AsyncSession,
    model: type[Resource] | type[Need],
    org_id: uuid.UUID,
    ref: str | None,
    own_id: uuid.UUID | None = None,
) -> None:
    if ref is None:
        return
    stmt = select(model.id).where(model.org_id == org_id, model.external_ref == ref)
    if own_id is not None:
        stmt = stmt.where(model.id != own_id)
    if (await session.execute(stmt.limit(1))).first() is not None:
        raise ProblemError("duplicate", object=model.__tablename__.removesuffix("s"))


def _location_changes(changes: dict[str, Any]) -> None:
    if "location" in changes:
        location = changes.pop("location")
        changes["lat"] = location["lat"] if location else None
        changes["lng"] = location["lng"] if location else None


def _check_window_change(changes: dict[str, Any], obj: Any, names: tuple[str, str]) -> None:
    start = changes.get(names[0], getattr(obj, names[0]))
    end = changes.get(names[1], getattr(obj, names[1]))
    if end < start:
        field = names[1] if names[1] in changes else names[0]
        raise _field_error(field, f"the window {start.isoformat()} … {end.isoformat()} ends before it starts")


async def _actor(session: AsyncSession, by: Principal | uuid.UUID | None) -> Principal | None:
    """The principal the audit log names, from a principal or the id of a user or API client."""
    if by is None or isinstance(by, Principal):
        return by
    from gongjian.auth.models import ApiClient, User

    name = (await session.execute(select(User.username).where(User.id == by))).scalar()
    if name is not None:
        return Principal(kind="user", id=by, name=name)
    name = (await session.execute(select(ApiClient.name).where(ApiClient.id == by))).scalar()
    return Principal(kind="client" if name else "user", id=by, name=name or str(by))


# --- resources ------------------------------------------------------------------------------


def resource_state_for(quantity: int, remaining: int) -> ResourceState:
    """The state a resource that is not withdrawn is in, by what is left of it."""
    if remaining == 0:
        return ResourceState.exhausted
    return ResourceState.available if remaining == quantity else ResourceState.partly_committed


def resource_out(resource: Resource) -> ResourceOut:
    return ResourceOut(
        id=resource.id,
        org_id=resource.org_id,
        unit_id=resource.unit_id,
        provider_kind=resource.provider_kind,
        provider_name=resource.provider_name,
        grid_id=resource.grid_id,
        category=resource.category,
        title=resource.title,
        description=resource.description,
        quantity=resource.quantity,
        quantity_unit=resource.quantity_unit,
        remaining_quantity=resource.remaining_quantity,
        available_from=resource.available_from,
        available_to=resource.available_to,
        weekdays=list(resource.weekdays),
        location=location_of(resource),
        serves_radius_km=resource.serves_radius_km,
        year=resource.year,
        state=resource.state,
        state_reason=resource.state_reason,
        external_ref=resource.external_ref,
        created_by=resource.created_by,
        version=resource.version,
        created_at=resource.created_at,
        updated_at=resource.updated_at,
    )


async def get_resource(
    session: AsyncSession,
    principal: Principal,
    resource_id: uuid.UUID,
    perm: Perm = Perm.lists_read,
    *,
    for_update: bool = False,
) -> Resource:
    return await get_visible(
        session, Resource, resource_id, principal, perm, name="resource", for_update=for_update
    )


async def list_resources_query(
    session: AsyncSession,
    principal: Principal,
    *,
    org_id: uuid.UUID | None = None,
    state: ResourceState | None = None,
    category: ListCategory | None = None,
    year: int | None = None,
    unit_id: uuid.UUID | None = None,
    q: str | None = None,
) -> Select[Any]:
    stmt = visible(select(Resource), Resource, principal, Perm.lists_read)
    if org_id is not None:
        stmt = stmt.where(await _subtree_condition(session, Resource.org_id, org_id))
    if state is not None:
        stmt = stmt.where(Resource.state == state)
    if category is not None:
        stmt = stmt.where(Resource.category == category)
    if year is not None:
        stmt = stmt.where(Resource.year == year)
    if unit_id is not None:
        stmt = stmt.where(Resource.unit_id == unit_id)
    if q:
        stmt = stmt.where(contains(Resource.title, q) | contains(Resource.description, q))
    return stmt


def _own_unit(principal: Principal) -> uuid.UUID | None:
    """A liaison's unit, when that is the only place the caller may publish."""
    grants = principal.grants_for(Perm.lists_write)
    units = {g.unit_id for g in grants if g.unit_id is not None}
    if len(units) == 1 and all(g.unit_id is not None for g in grants):
        return units.pop()
    return None


async def _publisher(
    session: AsyncSession, principal: Principal, data: ResourceCreate
) -> tuple[Organization, ResidentUnit | None, ProviderKind, str]:
    """Whose list the resource goes on and who provides it: a resident unit (on its community's
    list) or an organization / volunteer team."""
    unit_id = data.unit_id or _own_unit(principal)
    if unit_id is None:
        if data.org_id is None:
            raise _field_error("org_id", "org_id or unit_id is required")
        org: Organization = await ensure_org_in_scope(session, principal, data.org_id, Perm.lists_write)
        return org, None, data.provider_kind or ProviderKind.organization, data.provider_name or org.name
    unit = await get_visible(
        session, ResidentUnit, unit_id, principal, Perm.lists_write, name="resident_unit"
    )
    if data.org_id is not None and data.org_id != unit.community_id:
        raise _field_error("org_id", "a resident unit's resource is on the list of the unit's community")
    kind = ProviderKind(unit.type)
    if data.provider_kind is not None and data.provider_kind != kind:
        raise _field_error("provider_kind", f"the unit is of kind {kind.value}")
    community = await session.get(Organization, unit.community_id)
    if community is None:  # pragma: no cover - a foreign key keeps it
        raise not_found("organization")
    return community, unit, kind, data.provider_name or unit.name


async def create_resource(session: AsyncSession, principal: Principal, data: ResourceCreate) -> Resource:
    require(principal, Perm.lists_write)
    org, unit, kind, provider_name = await _publisher(session, principal, data)
    start, end = _window(data.available_from, data.available_to, ("available_from", "available_to"))
    if data.grid_id is not None:
        await _check_grid(session, data.grid_id, org, exact=False)
    await _check_ref_free(session, Resource, org.id, data.external_ref)
    resource = Resource(
        org_id=org.id,
        unit_id=unit.id if unit else None,
        provider_kind=kind,
        provider_name=provider_name,
        grid_id=data.grid_id,
        category=data.category,
        title=data.title,
        description=data.description,
        quantity=data.quantity,
        quantity_unit=data.quantity_unit,
        remaining_quantity=data.quantity,
        available_from=start,
        available_to=end,
        weekdays=data.weekdays,
        serves_radius_km=data.serves_radius_km,
        year=data.year or start.year,
        state=ResourceState.available,
        external_ref=data.external_ref,
        search_tokens=index_tokens(data.title, data.description),
        created_by=principal.id,
        **_location_values(data.location),
    )
    session.add(resource)
    await session.flush()
    await audit.record(
        session,
        principal,
        "resource.create",
        "resource",
        resource.id,
        org_id=resource.org_id,
        after=audit.snapshot(resource),
    )
    return resource


_RESOURCE_REQUIRED = (
    "provider_name",
    "category",
    "title",
    "description",
    "quantity",
    "quantity_unit",
    "available_from",
    "available_to",
    "weekdays",
    "year",
)


async def update_resource(
    session: AsyncSession, principal: Principal, resource: Resource, data: ResourceUpdate
) -> Resource:
    """Edit a resource; a new quantity keeps what is committed: remaining = quantity − committed."""
    changes = data.model_dump(exclude_unset=True)
    _reject_nulls(changes, _RESOURCE_REQUIRED)
    _location_changes(changes)
    # Every check before the first change: a query's autoflush must not write half an edit.
    _check_window_change(changes, resource, ("available_from", "available_to"))
    if changes.get("grid_id") is not None and changes["grid_id"] != resource.grid_id:
        org = await session.get(Organization, resource.org_id)
        assert org is not None  # a foreign key keeps it
        await _check_grid(session, changes["grid_id"], org, exact=False)
    if changes.get("external_ref") is not None:
        await _check_ref_free(session, Resource, resource.org_id, changes["external_ref"], resource.id)
    if "quantity" in changes:
        committed = resource.quantity - resource.remaining_quantity
        if changes["quantity"] < committed:
            unit = changes.get("quantity_unit", resource.quantity_unit)
            raise ProblemError("quantity_below_committed", committed=committed, unit=unit)
        changes["remaining_quantity"] = changes["quantity"] - committed
    before = audit.snapshot(resource)
    for key, value in changes.items():
        setattr(resource, key, value)
    if resource.state != ResourceState.withdrawn:
        resource.state = resource_state_for(resource.quantity, resource.remaining_quantity)
    resource.search_tokens = index_tokens(resource.title, resource.description)
    await session.flush()
    await audit.record(
        session,
        principal,
        "resource.update",
        "resource",
        resource.id,
        org_id=resource.org_id,
        before=before,
        after=audit.snapshot(resource),
    )
    return resource


async def withdraw_resource(
    session: AsyncSession, principal: Principal, resource: Resource, reason: str | None
) -> Resource:
    """No longer offered: nothing more can be committed (what is committed stays with its projects)."""
    if resource.state == ResourceState.withdrawn:
        raise illegal_transition(ResourceState.withdrawn.value, "withdraw")
    return await _set_resource_state(
        session, principal, resource, ResourceState.withdrawn, "withdraw", reason
    )


async def restore_resource(session: AsyncSession, principal: Principal, resource: Resource) -> Resource:
    """Offered again, in the state its remaining quantity says."""
    if resource.state != ResourceState.withdrawn:
        raise illegal_transition(str(resource.state), "restore")
    target = resource_state_for(resource.quantity, resource.remaining_quantity)
    return await _set_resource_state(session, principal, resource, target, "restore", None)


async def _set_resource_state(
    session: AsyncSession,
    principal: Principal,
    resource: Resource,
    target: ResourceState,
    action: str,
    reason: str | None,
) -> Resource:
    before = {"state": str(resource.state), "state_reason": resource.state_reason}
    resource.state = target
    resource.state_reason = reason
    await session.flush()
    await audit.record(
        session,
        principal,
        f"resource.{action}",
        "resource",
        resource.id,
        org_id=resource.org_id,
        before=before,
        after={"state": target.value, "state_reason": reason},
        reason=reason,
    )
    return resource


# --- quantity: what projects commit ---------------------------------------------------------

_COMMITTABLE = (ResourceState.available, ResourceState.partly_committed)


def _positive(quantity: int) -> None:
    if quantity <= 0:
        raise _field_error("quantity", "must be at least 1")


async def _explain_refusal(session: AsyncSession, resource_id: uuid.UUID, action: str) -> Resource:
    resource = (
        await session.execute(
            select(Resource).where(Resource.id == resource_id).execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if resource is None:
        raise not_found("resource")
    if action == "reserve" and resource.state == ResourceState.withdrawn:
        raise illegal_transition(ResourceState.withdrawn.value, action)
    return resource


async def reserve_quantity(
    session: AsyncSession,
    resource_id: uuid.UUID,
    quantity: int,
    *,
    by: Principal | uuid.UUID | None = None,
) -> Resource:
    """Commit `quantity` of a resource: one guarded UPDATE, so concurrent commitments never take
    the remaining quantity below zero (the second waits for the first's row lock, then re-checks).

    409 `insufficient_quantity` (saying how much is left) when there is not enough, 409
    `illegal_transition` when it is withdrawn, 404 when there is no such resource.
    """
    _positive(quantity)
    left = Resource.remaining_quantity - quantity
    stmt = (
        update(Resource)
        .where(
            Resource.id == resource_id,
            Resource.remaining_quantity >= quantity,
            Resource.state.in_(_COMMITTABLE),
        )
        .values(
            remaining_quantity=left,
            state=case(
                (left == 0, ResourceState.exhausted.value), else_=ResourceState.partly_committed.value
            ),
            version=Resource.version + 1,
            updated_at=utcnow(),
        )
        .returning(Resource)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    resource = (await session.execute(stmt)).scalar_one_or_none()
    if resource is None:
        current = await _explain_refusal(session, resource_id, "reserve")
        raise ProblemError(
            "insufficient_quantity", remaining=current.remaining_quantity, unit=current.quantity_unit
        )
    await audit.record(
        session,
        await _actor(session, by),
        "resource.reserve",
        "resource",
        resource.id,
        org_id=resource.org_id,
        after={"reserved": quantity, "remaining_quantity": resource.remaining_quantity},
    )
    return resource


async def release_quantity(
    session: AsyncSession,
    resource_id: uuid.UUID,
    quantity: int,
    *,
    by: Principal | uuid.UUID | None = None,
) -> Resource:
    """Give back `quantity` committed earlier (a commitment cancelled or reduced). A withdrawn
    resource stays withdrawn. 409 `release_exceeds_committed` when more is given back than committed."""
    _positive(quantity)
    back = Resource.remaining_quantity + quantity
    stmt = (
        update(Resource)
        .where(Resource.id == resource_id, Resource.quantity - Resource.remaining_quantity >= quantity)
        .values(
            remaining_quantity=back,
            state=case(
                (Resource.state == ResourceState.withdrawn.value, ResourceState.withdrawn.value),
                (back == Resource.quantity, ResourceState.available.value),
                else_=ResourceState.partly_committed.value,
            ),
            version=Resource.version + 1,
            updated_at=utcnow(),
        )
        .returning(Resource)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    resource = (await session.execute(stmt)).scalar_one_or_none()
    if resource is None:
        current = await _explain_refusal(session, resource_id, "release")
        raise ProblemError(
            "release_exceeds_committed",
            committed=current.quantity - current.remaining_quantity,
            unit=current.quantity_unit,
        )
    await audit.record(
        session,
        await _actor(session, by),
        "resource.release",
        "resource",
        resource.id,
        org_id=resource.org_id,
        after={"released": quantity, "remaining_quantity": resource.remaining_quantity},
    )
    return resource


# --- needs ----------------------------------------------------------------------------------

# Who moves a need: staff accept / reject / withdraw it; matching matches it (accepting a
# suggestion for a need not yet reviewed accepts it too); a project takes it in (also a need
# linked by hand) and resolves it, or gives it back to the list when the project is cancelled.
NEED_TRANSITIONS: dict[NeedState, frozenset[NeedState]] = {
    NeedState.collected: frozenset(
        {NeedState.accepted, NeedState.rejected, NeedState.withdrawn, NeedState.matched, NeedState.in_project}
    ),
    NeedState.accepted: frozenset(
        {NeedState.matched, NeedState.in_project, NeedState.rejected, NeedState.withdrawn}
    ),
    NeedState.matched: frozenset({NeedState.in_project, NeedState.accepted, NeedState.withdrawn}),
    NeedState.in_project: frozenset({NeedState.resolved, NeedState.accepted}),
    NeedState.resolved: frozenset(),
    NeedState.rejected: frozenset(),
    NeedState.withdrawn: frozenset(),
}
# The action named in the 409 and the audit log for a move into each state.
NEED_ACTIONS: dict[NeedState, str] = {
    NeedState.collected: "collect",
    NeedState.accepted: "accept",
    NeedState.rejected: "reject",
    NeedState.withdrawn: "withdraw",
    NeedState.matched: "match",
    NeedState.in_project: "take_into_project",
    NeedState.resolved: "resolve",
}
CLOSED_NEED_STATES = frozenset({NeedState.resolved, NeedState.rejected, NeedState.withdrawn})


def need_out(need: Need) -> NeedOut:
    return NeedOut(
        id=need.id,
        org_id=need.org_id,
        grid_id=need.grid_id,
        category=need.category,
        title=need.title,
        description=need.description,
        beneficiaries=need.beneficiaries,
        urgency=need.urgency,
        wanted_from=need.wanted_from,
        wanted_to=need.wanted_to,
        location=location_of(need),
        source=need.source,
        year=need.year,
        state=need.state,
        external_ref=need.external_ref,
        photos=list(need.photos),
        duplicate_of_id=need.duplicate_of_id,
        raised_by=need.raised_by,
        state_reason=need.state_reason,
        state_changed_by=need.state_changed_by,
        state_changed_at=need.state_changed_at,
        version=need.version,
        created_at=need.created_at,
        updated_at=need.updated_at,
    )


async def get_need(
    session: AsyncSession,
    principal: Principal,
    need_id: uuid.UUID,
    perm: Perm = Perm.lists_read,
    *,
    for_update: bool = False,
) -> Need:
    return await get_visible(session, Need, need_id, principal, perm, name="need", for_update=for_update)


async def list_needs_query(
    session: AsyncSession,
    principal: Principal,
    *,
    org_id: uuid.UUID | None = None,
    state: NeedState | None = None,
    category: ListCategory | None = None,
    grid_id: uuid.UUID | None = None,
    year: int | None = None,
    source: NeedSource | None = None,
    urgency: Urgency | None = None,
    q: str | None = None,
) -> Select[Any]:
    stmt = visible(select(Need), Need, principal, Perm.lists_read)
    if org_id is not None:
        stmt = stmt.where(await _subtree_condition(session, Need.org_id, org_id))
    for column, value in (
        (Need.state, state),
        (Need.category, category),
        (Need.grid_id, grid_id),
        (Need.year, year),
        (Need.source, source),
        (Need.urgency, urgency),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if q:
        stmt = stmt.where(contains(Need.title, q) | contains(Need.description, q))
    return stmt


async def _raising_org(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID
) -> tuple[Organization, bool]:
    """The community a need is raised in, and whether the caller raises it as staff (`lists:write`
    there) or as a grid worker on a visit (`needs:visit` there)."""
    if principal.can(Perm.lists_write):
        try:
            return await ensure_org_in_scope(session, principal, org_id, Perm.lists_write), True
        except ProblemError:
            if not principal.can(Perm.needs_visit):
                raise
    return await ensure_org_in_scope(session, principal, org_id, Perm.needs_visit), False


def _source(principal: Principal, as_staff: bool, requested: str | None) -> NeedSource:
    if principal.kind == "client":
        if requested not in (None, NeedSource.hotline.value):
            raise _field_error("source", "API clients raise needs from a hotline")
        return NeedSource.hotline
    if requested == NeedSource.hotline.value:
        raise _field_error("source", "hotline needs come in through API clients")
    if as_staff:
        return NeedSource(requested or NeedSource.staff.value)
    if requested not in (None, NeedSource.visit.value):
        raise _field_error("source", "grid workers raise needs on a visit")
    return NeedSource.visit


def _check_visit(grid_id: uuid.UUID | None, location: Any, photos: Sequence[str]) -> None:
    errors = [
        {"loc": ["body", name], "msg": "required for a need recorded on a visit", "type": "missing"}
        for name, value in (("grid_id", grid_id), ("location", location), ("photos", photos))
        if not value
    ]
    if errors:
        raise ProblemError("validation_error", errors=errors)


async def _check_assigned(session: AsyncSession, principal: Principal, grid_id: uuid.UUID) -> None:
    assigned = select(GridAssignment.id).where(
        GridAssignment.grid_cell_id == grid_id, GridAssignment.user_id == principal.id
    )
    if (await session.execute(assigned.limit(1))).first() is None:
        raise ProblemError("grid_not_assigned")


async def _duplicate_root(session: AsyncSession, need_id: uuid.UUID, org_id: uuid.UUID) -> uuid.UUID:
    """The need a repeat is linked to: the one it names, or the one that one repeats."""
    row = (
        await session.execute(select(Need.org_id, Need.duplicate_of_id).where(Need.id == need_id))
    ).one_or_none()
    if row is None or row.org_id != org_id:
        raise ProblemError("invalid_duplicate_of")
    return row.duplicate_of_id or need_id


async def find_similar(
    session: AsyncSession,
    *,
    title: str,
    description: str = "",
    org_id: uuid.UUID | None = None,
    grid_id: uuid.UUID | None = None,
    lat: float | None = None,
    lng: float | None = None,
    scope: ColumnElement[bool] | None = None,
    limit: int = 5,
) -> list[NeedCandidate]:
    """Open needs the described one may repeat: in the same grid cell, else within
    `NEARBY_METRES` of the point, else anywhere in the community; most similar first."""
    stmt = select(
        Need.id,
        Need.title,
        # Enough of the description to compare; a long one is not segmented in full.
        func.left(Need.description, 500).label("description"),
        Need.state,
        Need.grid_id,
        Need.created_at,
        Need.lat,
        Need.lng,
    ).where(Need.state.in_(OPEN_NEED_STATES))
    if org_id is not None:
        stmt = stmt.where(Need.org_id == org_id)
    if scope is not None:
        stmt = stmt.where(scope)
    if grid_id is not None:
        stmt = stmt.where(Need.grid_id == grid_id)
    elif lat is not None and lng is not None:
        min_lat, max_lat, min_lng, max_lng = duplicates.box_around(lat, lng, duplicates.NEARBY_METRES)
        stmt = stmt.where(Need.lat.between(min_lat, max_lat), Need.lng.between(min_lng, max_lng))
    rows = (await session.execute(stmt.order_by(Need.created_at.desc()).limit(300))).all()
    text = f"{title} {description[:500]}"
    found: list[NeedCandidate] = []
    for row in rows:
        distance = None
        if lat is not None and lng is not None and row.lat is not None and row.lng is not None:
            distance = round(duplicates.distance_m(lat, lng, row.lat, row.lng), 1)
            if grid_id is None and distance > duplicates.NEARBY_METRES:
                continue
        score = duplicates.similarity(title, text, row.title, f"{row.title} {row.description}")
        if score >= duplicates.DUPLICATE_THRESHOLD:
            found.append(
                NeedCandidate(
                    id=row.id,
                    title=row.title,
                    state=row.state,
                    grid_id=row.grid_id,
                    created_at=row.created_at,
                    score=score,
                    distance_m=distance,
                )
            )
    found.sort(key=lambda c: (-c.score, -c.created_at.timestamp()))
    return found[:limit]


async def similar_needs(
    session: AsyncSession,
    principal: Principal,
    *,
    title: str,
    description: str = "",
    org_id: uuid.UUID | None = None,
    grid_id: uuid.UUID | None = None,
    lat: float | None = None,
    lng: float | None = None,
) -> list[NeedCandidate]:
    """The pre-check a phone runs before submitting: what the POST would answer as duplicates,
    among the needs the caller may read."""
    require(principal, Perm.lists_read)
    if (lat is None) != (lng is None):
        raise _field_error("lng" if lng is None else "lat", "lat and lng go together", "query")
    if org_id is None and grid_id is None and lat is None:
        raise _field_error("grid_id", "give grid_id, lat and lng, or org_id", "query")
    return await find_similar(
        session,
        title=title,
        description=description,
        org_id=org_id,
        grid_id=grid_id,
        lat=lat,
        lng=lng,
        scope=scope_condition(Need, principal, Perm.lists_read),
    )


async def create_need(session: AsyncSession, principal: Principal, data: NeedCreate) -> Need:
    """Raise a need: staff anywhere in their scope, a grid worker on a visit to a cell assigned to
    them, an API client from a hotline. A need like an open one nearby is refused with 409
    `possible_duplicate` (and the candidates) unless linked (`duplicate_of_id`) or `allow_duplicate`."""
    org, as_staff = await _raising_org(session, principal, data.org_id)
    if org.level != OrgLevel.community:
        raise ProblemError("not_a_community")
    source = _source(principal, as_staff, data.source)
    start, end = _window(data.wanted_from, data.wanted_to, ("wanted_from", "wanted_to"))
    if data.grid_id is not None:
        await _check_grid(session, data.grid_id, org, exact=True)
    if source == NeedSource.visit:
        _check_visit(data.grid_id, data.location, data.photos)
        if not as_staff:
            assert data.grid_id is not None
            await _check_assigned(session, principal, data.grid_id)
    duplicate_of = None
    if data.duplicate_of_id is not None:
        duplicate_of = await _duplicate_root(session, data.duplicate_of_id, org.id)
    await _check_ref_free(session, Need, org.id, data.external_ref)
    if duplicate_of is None and not data.allow_duplicate:
        candidates = await find_similar(
            session,
            title=data.title,
            description=data.description,
            org_id=org.id,
            grid_id=data.grid_id,
            lat=data.location.lat if data.location else None,
            lng=data.location.lng if data.location else None,
        )
        if candidates:
            shown = [c.model_dump(mode="json") for c in candidates]
            raise ProblemError("possible_duplicate", candidates=shown)
    need = Need(
        org_id=org.id,
        grid_id=data.grid_id,
        category=data.category,
        title=data.title,
        description=data.description,
        beneficiaries=data.beneficiaries,
        urgency=data.urgency,
        wanted_from=start,
        wanted_to=end,
        source=source,
        year=data.year or start.year,
        state=NeedState.collected,
        external_ref=data.external_ref,
        search_tokens=index_tokens(data.title, data.description),
        photos=data.photos,
        duplicate_of_id=duplicate_of,
        raised_by=principal.id,
        **_location_values(data.location),
    )
    session.add(need)
    await session.flush()
    await audit.record(
        session, principal, "need.create", "need", need.id, org_id=need.org_id, after=audit.snapshot(need)
    )
    return need


_NEED_REQUIRED = (
    "category",
    "title",
    "description",
    "beneficiaries",
    "urgency",
    "wanted_from",
    "wanted_to",
    "year",
    "photos",
)


async def update_need(session: AsyncSession, principal: Principal, need: Need, data: NeedUpdate) -> Need:
    """Edit a need that is still being worked on (not resolved, rejected or withdrawn)."""
    if need.state in CLOSED_NEED_STATES:
        raise illegal_transition(str(need.state), "update")
    changes = data.model_dump(exclude_unset=True)
    _reject_nulls(changes, _NEED_REQUIRED)
    _location_changes(changes)
    # Every check before the first change: a query's autoflush must not write half an edit.
    _check_window_change(changes, need, ("wanted_from", "wanted_to"))
    if changes.get("grid_id") is not None and changes["grid_id"] != need.grid_id:
        org = await session.get(Organization, need.org_id)
        assert org is not None  # a foreign key keeps it
        await _check_grid(session, changes["grid_id"], org, exact=True)
    if need.source == NeedSource.visit:
        _check_visit(
            changes.get("grid_id", need.grid_id),
            changes.get("lat", need.lat),
            changes.get("photos", need.photos),
        )
    if changes.get("external_ref") is not None:
        await _check_ref_free(session, Need, need.org_id, changes["external_ref"], need.id)
    before = audit.snapshot(need)
    for key, value in changes.items():
        setattr(need, key, value)
    need.search_tokens = index_tokens(need.title, need.description)
    await session.flush()
    await audit.record(
        session,
        principal,
        "need.update",
        "need",
        need.id,
        org_id=need.org_id,
        before=before,
        after=audit.snapshot(need),
    )
    return need


async def set_need_state(
    session: AsyncSession,
    need: Need,
    target: NeedState,
    *,
    by: Principal | uuid.UUID | None,
    reason: str | None = None,
) -> Need:
    """Move a need to `target` along `NEED_TRANSITIONS`, recording who (`by`: a principal, the id
    of a user or API client, or None for the system), when and why, on the need and in the audit
    log. A move the table does not allow is a 409 `illegal_transition` naming the current state
    and the action.

    Load the need locked (`get_need(..., for_update=True)`) when two callers may move it at once:
    the second then sees the first one's outcome and gets the 409 rather than a 412."""
    current = NeedState(need.state)
    action = NEED_ACTIONS[target]
    if target not in NEED_TRANSITIONS[current]:
        raise illegal_transition(current.value, action)
    if target == NeedState.rejected and not (reason and reason.strip()):
        raise _field_error("reason", "a rejection needs a reason")
    actor = await _actor(session, by)
    need.state = target
    need.state_reason = reason
    need.state_changed_by = actor.id if actor else None
    need.state_changed_at = utcnow()
    await session.flush()
    await audit.record(
        session,
        actor,
        f"need.{action}",
        "need",
        need.id,
        org_id=need.org_id,
        before={"state": current.value},
        after={"state": target.value},
        reason=reason,
    )
    return need
