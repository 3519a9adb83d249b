"""Grid cells of a community: boundaries, layers, leader and workers, buildings; point look-up."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from shapely.geometry import Point, Polygon
from sqlalchemy import Boolean, Double, Select, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from gongjian.auth.models import User
from gongjian.core import audit
from gongjian.core.access import Perm, Principal, ensure_org_in_scope, get_visible, visible
from gongjian.core.db import contains
from gongjian.core.errors import ProblemError, not_found
from gongjian.grids.models import Building, GridAssignment, GridCell, GridLayer, GridRole
from gongjian.grids.schemas import (
    MAX_POSITIONS,
    MAX_RINGS,
    BuildingCreate,
    BuildingOut,
    BuildingUpdate,
    GridCellCreate,
    GridCellOut,
    GridCellUpdate,
    GridPersonOut,
    PolygonOut,
)
from gongjian.organizations.models import Organization, OrgKind, OrgLevel
from gongjian.organizations.service import COUNTERS

# --- boundaries ---------------------------------------------------------------------------

_PARTY_BRANCH_KINDS = frozenset({OrgKind.general_branch, OrgKind.branch, OrgKind.group})


def _invalid(reason: str) -> ProblemError:
    return ProblemError("invalid_geometry", reason=reason)


def _position(value: Any, ring: int, index: int) -> tuple[float, float]:
    where = f"ring {ring} position {index}"
    if not isinstance(value, list) or len(value) not in (2, 3):
        raise _invalid(f"{where} must be [lng, lat]")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise _invalid(f"{where} must hold numbers")
    try:
        lng, lat = float(value[0]), float(value[1])
    except OverflowError:
        raise _invalid(f"{where} is outside WGS-84 (lng -180..180, lat -90..90)") from None
    if not (math.isfinite(lng) and math.isfinite(lat)):
        raise _invalid(f"{where} must hold finite numbers")
    if not (-180 <= lng <= 180 and -90 <= lat <= 90):
        raise _invalid(f"{where} [{lng}, {lat}] is outside WGS-84 (lng -180..180, lat -90..90)")
    return lng, lat


def parse_boundary(value: Any) -> tuple[dict[str, Any], Polygon]:
    """Check a GeoJSON Polygon; answer its normalised form (2-D, floats) and the shapely shape.

    Every defect raises `invalid_geometry` with a reason naming the ring and position at fault.
    """
    if not isinstance(value, dict):
        raise _invalid("the boundary must be a GeoJSON object")
    kind = value.get("type")
    if kind != "Polygon":
        shown = kind if isinstance(kind, str) and len(kind) <= 40 else type(kind).__name__
        raise _invalid(f"type must be Polygon, not {shown}")
    coordinates = value.get("coordinates")
    if not isinstance(coordinates, list) or not coordinates:
        raise _invalid("coordinates must be a non-empty list of rings")
    if len(coordinates) > MAX_RINGS:
        raise _invalid(f"at most {MAX_RINGS} rings")
    rings: list[list[tuple[float, float]]] = []
    total = 0
    for r, ring in enumerate(coordinates):
        if not isinstance(ring, list):
            raise _invalid(f"ring {r} must be a list of positions")
        total += len(ring)
        if total > MAX_POSITIONS:
            raise _invalid(f"at most {MAX_POSITIONS} positions")
        if len(ring) < 4:
            raise _invalid(f"ring {r} has {len(ring)} positions; a closed ring needs at least 4")
        positions = [_position(p, r, i) for i, p in enumerate(ring)]
        if positions[0] != positions[-1]:
            raise _invalid(f"ring {r} is not closed: its first and last positions differ")
        rings.append(positions)
    polygon = Polygon(rings[0], rings[1:])
    if not polygon.is_valid:
        raise _invalid(f"not a valid polygon ({shapely.is_valid_reason(polygon)})")
    if polygon.area <= 0:
        raise _invalid("the polygon has no area")
    normalised = {"type": "Polygon", "coordinates": [[[lng, lat] for lng, lat in ring] for ring in rings]}
    return normalised, polygon


def shape_of(cell: GridCell) -> Polygon:
    rings = cell.boundary["coordinates"]
    return Polygon(rings[0], rings[1:])


def _boundary_fields(value: Any) -> dict[str, Any]:
    """The columns a boundary sets: the normalised GeoJSON and its bounding box."""
    normalised, polygon = parse_boundary(value)
    min_lng, min_lat, max_lng, max_lat = (float(v) for v in polygon.bounds)
    return {
        "boundary": normalised,
        "min_lng": min_lng,
        "min_lat": min_lat,
        "max_lng": max_lng,
        "max_lat": max_lat,
    }


# --- output -------------------------------------------------------------------------------


async def _leaders(session: AsyncSession, cell_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, GridPersonOut]:
    if not cell_ids:
        return {}
    rows = await session.execute(
        select(GridAssignment, User.display_name)
        .join(User, User.id == GridAssignment.user_id)
        .where(GridAssignment.grid_cell_id.in_(cell_ids), GridAssignment.role == GridRole.leader)
    )
    return {a.grid_cell_id: _person(a, name) for a, name in rows}


def _person(assignment: GridAssignment, display_name: str) -> GridPersonOut:
    return GridPersonOut(
        user_id=assignment.user_id,
        display_name=display_name,
        role=GridRole(assignment.role),
        created_at=assignment.created_at,
    )


def _cell_out(cell: GridCell, leader: GridPersonOut | None) -> GridCellOut:
    return GridCellOut(
        id=cell.id,
        community_id=cell.community_id,
        code=cell.code,
        name=cell.name,
        boundary=PolygonOut.model_validate(cell.boundary),
        bbox=[cell.min_lng, cell.min_lat, cell.max_lng, cell.max_lat],
        layers=[GridLayer(v) for v in cell.layers],
        party_branch_id=cell.party_branch_id,
        leader=leader,
        external_ref=cell.external_ref,
        version=cell.version,
        created_at=cell.created_at,
        updated_at=cell.updated_at,
    )


async def cells_out(session: AsyncSession, cells: Sequence[GridCell]) -> list[GridCellOut]:
    leaders = await _leaders(session, [c.id for c in cells])
    return [_cell_out(c, leaders.get(c.id)) for c in cells]


async def cell_out(session: AsyncSession, cell: GridCell) -> GridCellOut:
    return (await cells_out(session, [cell]))[0]


async def people_out(session: AsyncSession, assignments: Sequence[GridAssignment]) -> list[GridPersonOut]:
    ids = {a.user_id for a in assignments}
    names: dict[uuid.UUID, str] = {}
    if ids:
        rows = await session.execute(select(User.id, User.display_name).where(User.id.in_(ids)))
        names = {uid: name for uid, name in rows}
    return [_person(a, names.get(a.user_id, "")) for a in assignments]


def building_out(building: Building) -> BuildingOut:
    return BuildingOut.model_validate(building)


# --- grid cells -----------------------------------------------------------------------------


def _reject_nulls(changes: dict[str, Any], fields: Sequence[str]) -> None:
    errors = [
        {"loc": ["body", f], "msg": "may not be null", "type": "value_error"}
        for f in fields
        if f in changes and changes[f] is None
    ]
    if errors:
        raise ProblemError("validation_error", errors=errors)


async def get_cell(
    session: AsyncSession, principal: Principal, cell_id: uuid.UUID, perm: Perm = Perm.grids_read
) -> GridCell:
    return await get_visible(session, GridCell, cell_id, principal, perm, name="grid_cell")


def list_cells_query(
    principal: Principal,
    *,
    community_id: uuid.UUID | None = None,
    layer: GridLayer | None = None,
    q: str | None = None,
    mine: bool = False,
) -> Select[Any]:
    stmt = visible(select(GridCell), GridCell, principal, Perm.grids_read)
    if community_id is not None:
        stmt = stmt.where(GridCell.community_id == community_id)
    if layer is not None:
        stmt = stmt.where(GridCell.layers.contains([layer.value]))
    if q:
        stmt = stmt.where(contains(GridCell.name, q) | contains(GridCell.code, q))
    if mine:
        own = select(GridAssignment.grid_cell_id).where(GridAssignment.user_id == principal.user_id)
        stmt = stmt.where(GridCell.id.in_(own))
    return stmt


async def _community(session: AsyncSession, principal: Principal, community_id: uuid.UUID) -> Organization:
    org: Organization = await ensure_org_in_scope(session, principal, community_id, Perm.grids_write)
    if org.level != OrgLevel.community:
        raise ProblemError("not_a_community")
    return org


async def _check_party_branch(
    session: AsyncSession, principal: Principal, community_id: uuid.UUID, branch_id: uuid.UUID
) -> None:
    community = await session.get(Organization, community_id)
    branch: Organization = await ensure_org_in_scope(session, principal, branch_id, Perm.grids_write)
    if (
        community is None
        or branch.id == community.id
        or not branch.path.startswith(community.path)
        or branch.kind not in _PARTY_BRANCH_KINDS
    ):
        raise ProblemError("invalid_party_branch")


async def _check_code_free(
    session: AsyncSession, community_id: uuid.UUID, code: str, cell_id: uuid.UUID | None = None
) -> None:
    stmt = select(GridCell.id).where(GridCell.community_id == community_id, GridCell.code == code)
    if cell_id is not None:
        stmt = stmt.where(GridCell.id != cell_id)
    if (await session.execute(stmt.limit(1))).first():
        raise ProblemError("duplicate", object="grid_cell")


async def create_cell(session: AsyncSession, principal: Principal, data: GridCellCreate) -> GridCell:
    community = await _community(session, principal, data.community_id)
    cell = GridCell(
        community_id=community.id,
        code=data.code,
        name=data.name,
        layers=[layer.value for layer in data.layers],
        party_branch_id=data.party_branch_id,
        external_ref=data.external_ref,
        **_boundary_fields(data.boundary),
    )
    if data.party_branch_id is not None:
        await _check_party_branch(session, principal, community.id, data.party_branch_id)
    await _check_code_free(session, community.id, data.code)
    session.add(cell)
    await session.flush()
    await audit.record(
        session,
        principal,
        "grid_cell.create",
        "grid_cell",
        cell.id,
        org_id=cell.community_id,
        after=audit.snapshot(cell),
    )
    if data.leader_id is not None:
        await add_person(session, principal, cell, data.leader_id, GridRole.leader)
    for worker_id in data.worker_ids:
        await add_person(session, principal, cell, worker_id, GridRole.worker)
    return cell


async def update_cell(
    session: AsyncSession, principal: Principal, cell: GridCell, data: GridCellUpdate
) -> GridCell:
    changes = data.model_dump(exclude_unset=True)
    _reject_nulls(changes, ("code", "name", "layers"))
    # Every check before the first change: a query's autoflush must not write half an edit.
    if "boundary" in changes:
        changes.update(_boundary_fields(changes["boundary"]))
    if changes.get("party_branch_id") is not None:
        await _check_party_branch(session, principal, cell.community_id, changes["party_branch_id"])
    if "code" in changes and changes["code"] != cell.code:
        await _check_code_free(session, cell.community_id, changes["code"], cell.id)
    if "layers" in changes:
        changes["layers"] = [GridLayer(v).value for v in changes["layers"]]
    before = audit.snapshot(cell)
    for key, value in changes.items():
        setattr(cell, key, value)
    await session.flush()
    await audit.record(
        session,
        principal,
        "grid_cell.update",
        "grid_cell",
        cell.id,
        org_id=cell.community_id,
        before=before,
        after=audit.snapshot(cell),
    )
    return cell


async def delete_cell(session: AsyncSession, principal: Principal, cell: GridCell) -> None:
    has_building = (
        await session.execute(select(Building.id).where(Building.grid_cell_id == cell.id).limit(1))
    ).first()
    if has_building:
        raise ProblemError("grid_cell_not_empty")
    await audit.record(
        session,
        principal,
        "grid_cell.delete",
        "grid_cell",
        cell.id,
        org_id=cell.community_id,
        before=audit.snapshot(cell),
    )
    await session.delete(cell)
    await session.flush()


def _count_grid_cells(subtree_ids: Select[Any]) -> Select[Any]:
    return select(func.count()).select_from(GridCell).where(GridCell.community_id.in_(subtree_ids))


COUNTERS["grid_cells"] = _count_grid_cells


# --- leader and workers -------------------------------------------------------------------


def people_query(principal: Principal, cell: GridCell) -> Select[Any]:
    stmt = visible(select(GridAssignment), GridAssignment, principal, Perm.grids_read)
    return stmt.where(GridAssignment.grid_cell_id == cell.id)


async def add_person(
    session: AsyncSession, principal: Principal, cell: GridCell, user_id: uuid.UUID, role: GridRole
) -> GridAssignment:
    user = await get_visible(session, User, user_id, principal, Perm.grids_write, name="user")
    existing = (
        await session.execute(
            select(GridAssignment.user_id, GridAssignment.role).where(GridAssignment.grid_cell_id == cell.id)
        )
    ).all()
    if any(uid == user.id for uid, _ in existing):
        raise ProblemError("duplicate", object="grid_assignment")
    if role == GridRole.leader and any(r == GridRole.leader for _, r in existing):
        raise ProblemError("grid_leader_taken")
    assignment = GridAssignment(
        grid_cell_id=cell.id, user_id=user.id, community_id=cell.community_id, role=role
    )
    session.add(assignment)
    await session.flush()
    await audit.record(
        session,
        principal,
        "grid_cell.assign",
        "grid_cell",
        cell.id,
        org_id=cell.community_id,
        after={"user_id": str(user.id), "role": role.value},
    )
    return assignment


async def remove_person(
    session: AsyncSession, principal: Principal, cell: GridCell, user_id: uuid.UUID
) -> None:
    stmt = visible(select(GridAssignment), GridAssignment, principal, Perm.grids_write).where(
        GridAssignment.grid_cell_id == cell.id, GridAssignment.user_id == user_id
    )
    assignment = (await session.execute(stmt)).scalar_one_or_none()
    if assignment is None:
        raise not_found("grid_assignment")
    await audit.record(
        session,
        principal,
        "grid_cell.unassign",
        "grid_cell",
        cell.id,
        org_id=cell.community_id,
        before={"user_id": str(user_id), "role": assignment.role},
    )
    await session.delete(assignment)
    await session.flush()


# --- where is this point ------------------------------------------------------------------

# Metres per degree of latitude (and of longitude at the equator), on the mean Earth radius.
METRES_PER_DEGREE = math.pi / 180 * 6_371_008.8
_NEAREST_BATCH = 32

_BBOX = func.box(
    func.point(GridCell.min_lng, GridCell.min_lat), func.point(GridCell.max_lng, GridCell.max_lat)
)


def _point_sql(lng: float, lat: float) -> ColumnElement[Any]:
    return func.point(literal(lng, Double()), literal(lat, Double()))


def _distance_m(polygon: Polygon, lng: float, lat: float, lng_scale: float) -> float:
    """Metres from (lng, lat) to the polygon, in a local equirectangular projection centred on the point
    (accurate to well under 1% over the distances between grid cells)."""

    def project(xy: Any) -> Any:
        return (xy - np.array([lng, lat])) * np.array([lng_scale * METRES_PER_DEGREE, METRES_PER_DEGREE])

    return float(shapely.transform(polygon, project).distance(Point(0.0, 0.0)))


async def _nearest(
    session: AsyncSession, base: Select[Any], lng: float, lat: float
) -> tuple[GridCell | None, float | None]:
    """The cell nearest to the point, exactly (in metres), visiting cells nearest-bbox first.

    Rows come in order of their bounding box's distance in degrees (GiST `<->`), a lower bound of
    the true distance once scaled by cos(lat) (the smaller of the two axis scales), so the walk
    stops as soon as no further box can hold anything closer than the best found.
    """
    lng_scale = max(math.cos(math.radians(lat)), 0.01)
    bound = METRES_PER_DEGREE * lng_scale
    box_distance: ColumnElement[float] = _BBOX.op("<->", return_type=Double())(_point_sql(lng, lat))
    best: GridCell | None = None
    best_m = math.inf
    seen: list[uuid.UUID] = []
    while True:
        # A single ORDER BY on `<->` lets the GiST index stream rows nearest-first (a second sort key
        # would not), so the next batch skips what was seen rather than paging with an offset.
        stmt = base.add_columns(box_distance).order_by(box_distance).limit(_NEAREST_BATCH)
        if seen:
            stmt = stmt.where(GridCell.id.not_in(seen))
        rows = (await session.execute(stmt)).all()
        for cell, degrees in rows:
            if degrees * bound >= best_m:
                return best, best_m
            seen.append(cell.id)
            metres = _distance_m(shape_of(cell), lng, lat, lng_scale)
            if metres < best_m:
                best, best_m = cell, metres
        if len(rows) < _NEAREST_BATCH:
            return (best, best_m) if best is not None else (None, None)


async def locate(
    session: AsyncSession, principal: Principal, lat: float, lng: float
) -> tuple[GridCell | None, GridCell | None, float | None]:
    """(containing cell, nearest cell, metres to it): the nearest only when no cell contains the point."""
    base = visible(select(GridCell), GridCell, principal, Perm.grids_read)
    point = _point_sql(lng, lat)
    overlaps = _BBOX.op("&&", return_type=Boolean())(func.box(point, point))
    candidates = (await session.execute(base.where(overlaps))).scalars().all()
    here = Point(lng, lat)
    containing = [(shape_of(c), c) for c in candidates]
    containing = [(s, c) for s, c in containing if s.covers(here)]
    if containing:
        # Overlapping cells: the most specific (smallest) one wins.
        return min(containing, key=lambda sc: (sc[0].area, sc[1].code))[1], None, None
    nearest, metres = await _nearest(session, base, lng, lat)
    return None, nearest, (round(metres, 1) if metres is not None else None)


# --- buildings ----------------------------------------------------------------------------


async def get_building(
    session: AsyncSession, principal: Principal, building_id: uuid.UUID, perm: Perm = Perm.grids_read
) -> Building:
    return await get_visible(session, Building, building_id, principal, perm, name="building")


def list_buildings_query(principal: Principal, cell: GridCell, q: str | None = None) -> Select[Any]:
    stmt = visible(select(Building), Building, principal, Perm.grids_read).where(
        Building.grid_cell_id == cell.id
    )
    if q:
        stmt = stmt.where(contains(Building.name, q) | contains(Building.address, q))
    return stmt


async def _leader_user(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> User:
    return await get_visible(session, User, user_id, principal, Perm.buildings_write, name="user")


def _check_lat_lng(lat: float | None, lng: float | None) -> None:
    if (lat is None) != (lng is None):
        raise ProblemError(
            "validation_error",
            errors=[
                {
                    "loc": ["body", "lat" if lat is None else "lng"],
                    "msg": "lat and lng go together",
                    "type": "value_error",
                }
            ],
        )


def _round_lat_lng(values: dict[str, Any]) -> dict[str, Any]:
    # Stored as numeric(9, 6): answer what was stored, not what was sent.
    for key in ("lat", "lng"):
        if values.get(key) is not None:
            values[key] = round(values[key], 6)
    return values


async def _check_name_free(
    session: AsyncSession, cell_id: uuid.UUID, name: str, building_id: uuid.UUID | None = None
) -> None:
    stmt = select(Building.id).where(Building.grid_cell_id == cell_id, Building.name == name)
    if building_id is not None:
        stmt = stmt.where(Building.id != building_id)
    if (await session.execute(stmt.limit(1))).first():
        raise ProblemError("duplicate", object="building")


async def create_building(
    session: AsyncSession, principal: Principal, cell: GridCell, data: BuildingCreate
) -> Building:
    _check_lat_lng(data.lat, data.lng)
    values = _round_lat_lng(data.model_dump())
    if data.building_leader_user_id is not None:
        leader = await _leader_user(session, principal, data.building_leader_user_id)
        values["building_leader_name"] = data.building_leader_name or leader.display_name
    await _check_name_free(session, cell.id, data.name)
    building = Building(grid_cell_id=cell.id, community_id=cell.community_id, **values)
    session.add(building)
    await session.flush()
    await audit.record(
        session,
        principal,
        "building.create",
        "building",
        building.id,
        org_id=building.community_id,
        after=audit.snapshot(building),
    )
    return building


async def update_building(
    session: AsyncSession, principal: Principal, building: Building, data: BuildingUpdate
) -> Building:
    changes = _round_lat_lng(data.model_dump(exclude_unset=True))
    _reject_nulls(changes, ("grid_cell_id", "name", "households"))
    # Every check before the first change: a query's autoflush must not write half an edit.
    cell_id = changes.pop("grid_cell_id", building.grid_cell_id)
    target: GridCell | None = None
    if cell_id != building.grid_cell_id:
        target = await get_visible(
            session, GridCell, cell_id, principal, Perm.buildings_write, name="grid_cell"
        )
    if changes.get("building_leader_user_id") is not None:
        leader = await _leader_user(session, principal, changes["building_leader_user_id"])
        changes.setdefault("building_leader_name", leader.display_name)
    _check_lat_lng(changes.get("lat", building.lat), changes.get("lng", building.lng))
    if target is not None or "name" in changes:
        await _check_name_free(session, cell_id, changes.get("name", building.name), building.id)
    before = audit.snapshot(building)
    if target is not None:
        building.grid_cell_id = target.id
        building.community_id = target.community_id
    for key, value in changes.items():
        setattr(building, key, value)
    await session.flush()
    await audit.record(
        session,
        principal,
        "building.update",
        "building",
        building.id,
        org_id=building.community_id,
        before=before,
        after=audit.snapshot(building),
    )
    return building


async def delete_building(session: AsyncSession, principal: Principal, building: Building) -> None:
    await audit.record(
        session,
        principal,
        "building.delete",
        "building",
        building.id,
        org_id=building.community_id,
        before=audit.snapshot(building),
    )
    await session.delete(building)
    await session.flush()
