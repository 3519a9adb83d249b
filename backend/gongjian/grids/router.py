"""Grid cells, their workers and buildings."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from gongjian.auth.deps import CurrentPrincipal
from gongjian.core.access import Perm, require
from gongjian.core.concurrency import IfMatch, check_if_match, set_etag
from gongjian.core.db import SessionDep
from gongjian.core.errors import problem_responses
from gongjian.core.pagination import Page, PageParamsDep, paginate
from gongjian.grids import service
from gongjian.grids.models import Building, GridAssignment, GridCell, GridLayer
from gongjian.grids.schemas import (
    BuildingCreate,
    BuildingOut,
    BuildingUpdate,
    GridAssignmentCreate,
    GridCellCreate,
    GridCellOut,
    GridCellUpdate,
    GridLocation,
    GridPersonOut,
)

router = APIRouter(prefix="/api/v1", tags=["grids"])


# --- grid cells -----------------------------------------------------------------------------


@router.get(
    "/grid-cells",
    response_model=Page[GridCellOut],
    summary="List grid cells in scope",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_grid_cells(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    community_id: uuid.UUID | None = None,
    layer: GridLayer | None = None,
    q: Annotated[str | None, Query(max_length=100, description="Name or code contains")] = None,
    mine: Annotated[bool, Query(description="Only the cells the caller leads or works in")] = False,
) -> Page[GridCellOut]:
    require(principal, Perm.grids_read)
    stmt = service.list_cells_query(principal, community_id=community_id, layer=layer, q=q, mine=mine)
    rows, cursor = await paginate(session, stmt, GridCell, page)
    return Page(items=await service.cells_out(session, rows), next_cursor=cursor)


@router.get(
    "/grid-cells/locate",
    response_model=GridLocation,
    summary="Which grid cell contains a point (or the nearest one when none does)",
    responses=problem_responses(401, 403, 422),
)
async def locate_grid_cell(
    session: SessionDep,
    principal: CurrentPrincipal,
    lat: Annotated[float, Query(ge=-90, le=90, description="WGS-84 latitude")],
    lng: Annotated[float, Query(ge=-180, le=180, description="WGS-84 longitude")],
) -> GridLocation:
    require(principal, Perm.grids_read)
    cell, nearest, distance_m = await service.locate(session, principal, lat, lng)
    return GridLocation(
        cell=await service.cell_out(session, cell) if cell else None,
        nearest=await service.cell_out(session, nearest) if nearest else None,
        distance_m=distance_m,
    )


@router.post(
    "/grid-cells",
    response_model=GridCellOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a grid cell in a community",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_grid_cell(
    session: SessionDep, principal: CurrentPrincipal, body: GridCellCreate, response: Response
) -> GridCellOut:
    require(principal, Perm.grids_write)
    cell = await service.create_cell(session, principal, body)
    set_etag(response, cell)
    response.headers["Location"] = f"{router.prefix}/grid-cells/{cell.id}"
    return await service.cell_out(session, cell)


@router.get(
    "/grid-cells/{cell_id}",
    response_model=GridCellOut,
    summary="Get a grid cell",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_grid_cell(
    session: SessionDep, principal: CurrentPrincipal, cell_id: uuid.UUID, response: Response
) -> GridCellOut:
    require(principal, Perm.grids_read)
    cell = await service.get_cell(session, principal, cell_id)
    set_etag(response, cell)
    return await service.cell_out(session, cell)


@router.patch(
    "/grid-cells/{cell_id}",
    response_model=GridCellOut,
    summary="Edit a grid cell (If-Match with the ETag)",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def update_grid_cell(
    session: SessionDep,
    principal: CurrentPrincipal,
    cell_id: uuid.UUID,
    body: GridCellUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> GridCellOut:
    require(principal, Perm.grids_write)
    cell = await service.get_cell(session, principal, cell_id, Perm.grids_write)
    check_if_match(if_match, cell)
    cell = await service.update_cell(session, principal, cell, body)
    set_etag(response, cell)
    return await service.cell_out(session, cell)


@router.delete(
    "/grid-cells/{cell_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a grid cell with no buildings",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def delete_grid_cell(
    session: SessionDep, principal: CurrentPrincipal, cell_id: uuid.UUID, if_match: IfMatch = None
) -> Response:
    require(principal, Perm.grids_write)
    cell = await service.get_cell(session, principal, cell_id, Perm.grids_write)
    check_if_match(if_match, cell)
    await service.delete_cell(session, principal, cell)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- grid leader and workers -----------------------------------------------------------------


@router.get(
    "/grid-cells/{cell_id}/workers",
    response_model=Page[GridPersonOut],
    summary="The grid leader and grid workers of a cell",
    responses=problem_responses(400, 401, 403, 404, 422),
)
async def list_grid_workers(
    session: SessionDep, principal: CurrentPrincipal, cell_id: uuid.UUID, page: PageParamsDep
) -> Page[GridPersonOut]:
    require(principal, Perm.grids_read)
    cell = await service.get_cell(session, principal, cell_id)
    rows, cursor = await paginate(session, service.people_query(principal, cell), GridAssignment, page)
    return Page(items=await service.people_out(session, rows), next_cursor=cursor)


@router.post(
    "/grid-cells/{cell_id}/workers",
    response_model=GridPersonOut,
    status_code=status.HTTP_201_CREATED,
    summary="Appoint a grid leader or add a grid worker",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def add_grid_worker(
    session: SessionDep, principal: CurrentPrincipal, cell_id: uuid.UUID, body: GridAssignmentCreate
) -> GridPersonOut:
    require(principal, Perm.grids_write)
    cell = await service.get_cell(session, principal, cell_id, Perm.grids_write)
    assignment = await service.add_person(session, principal, cell, body.user_id, body.role)
    return (await service.people_out(session, [assignment]))[0]


@router.delete(
    "/grid-cells/{cell_id}/workers/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a grid leader or worker from a cell",
    responses=problem_responses(401, 403, 404, 422),
)
async def remove_grid_worker(
    session: SessionDep, principal: CurrentPrincipal, cell_id: uuid.UUID, user_id: uuid.UUID
) -> Response:
    require(principal, Perm.grids_write)
    cell = await service.get_cell(session, principal, cell_id, Perm.grids_write)
    await service.remove_person(session, principal, cell, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- buildings ------------------------------------------------------------------------------


@router.get(
    "/grid-cells/{cell_id}/buildings",
    response_model=Page[BuildingOut],
    summary="Buildings in a grid cell",
    responses=problem_responses(400, 401, 403, 404, 422),
)
async def list_buildings(
    session: SessionDep,
    principal: CurrentPrincipal,
    cell_id: uuid.UUID,
    page: PageParamsDep,
    q: Annotated[str | None, Query(max_length=100, description="Name or address contains")] = None,
) -> Page[BuildingOut]:
    require(principal, Perm.grids_read)
    cell = await service.get_cell(session, principal, cell_id)
    rows, cursor = await paginate(session, service.list_buildings_query(principal, cell, q), Building, page)
    return Page(items=[service.building_out(b) for b in rows], next_cursor=cursor)


@router.post(
    "/grid-cells/{cell_id}/buildings",
    response_model=BuildingOut,
    status_code=status.HTTP_201_CREATED,
    summary="Add a building to a grid cell",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_building(
    session: SessionDep,
    principal: CurrentPrincipal,
    cell_id: uuid.UUID,
    body: BuildingCreate,
    response: Response,
) -> BuildingOut:
    require(principal, Perm.buildings_write)
    cell = await service.get_cell(session, principal, cell_id, Perm.buildings_write)
    building = await service.create_building(session, principal, cell, body)
    set_etag(response, building)
    response.headers["Location"] = f"{router.prefix}/buildings/{building.id}"
    return service.building_out(building)


@router.get(
    "/buildings/{building_id}",
    response_model=BuildingOut,
    summary="Get a building",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_building(
    session: SessionDep, principal: CurrentPrincipal, building_id: uuid.UUID, response: Response
) -> BuildingOut:
    require(principal, Perm.grids_read)
    building = await service.get_building(session, principal, building_id)
    set_etag(response, building)
    return service.building_out(building)


@router.patch(
    "/buildings/{building_id}",
    response_model=BuildingOut,
    summary="Edit a building (If-Match with the ETag)",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def update_building(
    session: SessionDep,
    principal: CurrentPrincipal,
    building_id: uuid.UUID,
    body: BuildingUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> BuildingOut:
    require(principal, Perm.buildings_write)
    building = await service.get_building(session, principal, building_id, Perm.buildings_write)
    check_if_match(if_match, building)
    building = await service.update_building(session, principal, building, body)
    set_etag(response, building)
    return service.building_out(building)


@router.delete(
    "/buildings/{building_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a building",
    responses=problem_responses(401, 403, 404, 412, 422),
)
async def delete_building(
    session: SessionDep, principal: CurrentPrincipal, building_id: uuid.UUID, if_match: IfMatch = None
) -> Response:
    require(principal, Perm.buildings_write)
    building = await service.get_building(session, principal, building_id, Perm.buildings_write)
    check_if_match(if_match, building)
    await service.delete_building(session, principal, building)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
