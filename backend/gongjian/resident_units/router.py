from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from gongjian.auth.deps import CurrentPrincipal
from gongjian.auth.models import RoleAssignment
from gongjian.core.access import Perm, require
from gongjian.core.concurrency import IfMatch, check_if_match, set_etag
from gongjian.core.db import SessionDep
from gongjian.core.errors import problem_responses
from gongjian.core.pagination import Page, PageParamsDep, paginate
from gongjian.core.validators import is_valid_credit_code
from gongjian.resident_units import service
from gongjian.resident_units.models import ResidentUnit, UnitType
from gongjian.resident_units.schemas import (
    CreditCodeCheck,
    LiaisonOut,
    ResidentUnitCreate,
    ResidentUnitOut,
    ResidentUnitUpdate,
)

router = APIRouter(prefix="/api/v1/resident-units", tags=["resident-units"])


@router.get(
    "",
    response_model=Page[ResidentUnitOut],
    summary="List resident units in scope",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_resident_units(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    community_id: Annotated[uuid.UUID | None, Query(description="Only units in this community")] = None,
    type: UnitType | None = None,
    q: Annotated[str | None, Query(max_length=100, description="Name or address contains")] = None,
    credit_code: Annotated[str | None, Query(max_length=50, description="Exact credit code")] = None,
) -> Page[ResidentUnitOut]:
    require(principal, Perm.units_read)
    stmt = service.list_query(principal, community_id=community_id, type=type, q=q, credit_code=credit_code)
    rows, cursor = await paginate(session, stmt, ResidentUnit, page)
    return Page(items=[ResidentUnitOut.model_validate(r) for r in rows], next_cursor=cursor)


@router.post(
    "",
    response_model=ResidentUnitOut,
    status_code=status.HTTP_201_CREATED,
    summary="Register a resident unit in a community",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def create_resident_unit(
    session: SessionDep, principal: CurrentPrincipal, body: ResidentUnitCreate, response: Response
) -> ResidentUnitOut:
    require(principal, Perm.units_write)
    unit = await service.create(session, principal, body)
    set_etag(response, unit)
    response.headers["Location"] = f"{router.prefix}/{unit.id}"
    return ResidentUnitOut.model_validate(unit)


@router.get(
    "/validate-credit-code",
    response_model=CreditCodeCheck,
    summary="Check a unified social credit code (GB 32100) as it is typed",
    responses=problem_responses(401, 422),
)
async def validate_credit_code(
    principal: CurrentPrincipal,
    code: Annotated[str, Query(max_length=50, description="The code to check")],
) -> CreditCodeCheck:
    normalized = service.normalize_credit_code(code)
    return CreditCodeCheck(valid=is_valid_credit_code(normalized), normalized=normalized)


@router.get(
    "/{unit_id}",
    response_model=ResidentUnitOut,
    summary="Get a resident unit",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_resident_unit(
    session: SessionDep, principal: CurrentPrincipal, unit_id: uuid.UUID, response: Response
) -> ResidentUnitOut:
    require(principal, Perm.units_read)
    unit = await service.get(session, principal, unit_id)
    set_etag(response, unit)
    return ResidentUnitOut.model_validate(unit)


@router.patch(
    "/{unit_id}",
    response_model=ResidentUnitOut,
    summary="Edit a resident unit (If-Match with the ETag); liaisons edit their own unit",
    responses=problem_responses(400, 401, 403, 404, 409, 412, 422),
)
async def update_resident_unit(
    session: SessionDep,
    principal: CurrentPrincipal,
    unit_id: uuid.UUID,
    body: ResidentUnitUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> ResidentUnitOut:
    require(principal, Perm.units_write)
    unit = await service.get(session, principal, unit_id, Perm.units_write)
    check_if_match(if_match, unit)
    unit = await service.update(session, principal, unit, body)
    set_etag(response, unit)
    return ResidentUnitOut.model_validate(unit)


@router.delete(
    "/{unit_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a resident unit (staff only; its liaison grants go with it)",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def delete_resident_unit(
    session: SessionDep, principal: CurrentPrincipal, unit_id: uuid.UUID, if_match: IfMatch = None
) -> Response:
    require(principal, Perm.units_write)
    unit = await service.get(session, principal, unit_id, Perm.units_write)
    check_if_match(if_match, unit)
    await service.delete(session, principal, unit)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{unit_id}/liaisons",
    response_model=Page[LiaisonOut],
    summary="Users holding the unit_liaison role on this unit",
    responses=problem_responses(400, 401, 403, 404, 422),
)
async def list_liaisons(
    session: SessionDep, principal: CurrentPrincipal, unit_id: uuid.UUID, page: PageParamsDep
) -> Page[LiaisonOut]:
    require(principal, Perm.units_read)
    unit = await service.get(session, principal, unit_id)
    rows, cursor = await paginate(session, service.liaisons_query(unit), RoleAssignment, page)
    users = await service.users_by_id(session, [r.user_id for r in rows])
    items = [
        LiaisonOut(
            user_id=r.user_id,
            username=users[r.user_id].username,
            display_name=users[r.user_id].display_name,
            is_active=users[r.user_id].is_active,
            assignment_id=r.id,
            assigned_at=r.created_at,
        )
        for r in rows
    ]
    return Page(items=items, next_cursor=cursor)
