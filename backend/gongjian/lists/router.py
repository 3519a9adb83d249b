"""The resources list (资源清单) and the needs list (需求清单)."""

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
from gongjian.lists import service
from gongjian.lists.models import (
    ListCategory,
    Need,
    NeedSource,
    NeedState,
    Resource,
    ResourceState,
    Urgency,
)
from gongjian.lists.schemas import (
    NeedCreate,
    NeedOut,
    NeedUpdate,
    RequiredReason,
    ResourceCreate,
    ResourceOut,
    ResourceUpdate,
    SimilarNeeds,
    StateReason,
)

resources_router = APIRouter(prefix="/api/v1", tags=["resources"])
needs_router = APIRouter(prefix="/api/v1", tags=["needs"])

OrgFilter = Annotated[
    uuid.UUID | None, Query(description="Everything on the lists of this organization and the ones under it")
]
YearFilter = Annotated[int | None, Query(ge=2000, le=2100)]
TextFilter = Annotated[str | None, Query(max_length=100, description="Title or description contains")]


# --- resources ------------------------------------------------------------------------------


@resources_router.get(
    "/resources",
    response_model=Page[ResourceOut],
    summary="List resources in scope",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_resources(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    org_id: OrgFilter = None,
    state: ResourceState | None = None,
    category: ListCategory | None = None,
    year: YearFilter = None,
    unit_id: uuid.UUID | None = None,
    q: TextFilter = None,
) -> Page[ResourceOut]:
    require(principal, Perm.lists_read)
    stmt = await service.list_resources_query(
        session, principal, org_id=org_id, state=state, category=category, year=year, unit_id=unit_id, q=q
    )
    rows, cursor = await paginate(session, stmt, Resource, page)
    return Page(items=[service.resource_out(r) for r in rows], next_cursor=cursor)


@resources_router.post(
    "/resources",
    response_model=ResourceOut,
    status_code=status.HTTP_201_CREATED,
    summary="Publish a resource (a liaison for their unit, staff for an organization or volunteer team)",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_resource(
    session: SessionDep, principal: CurrentPrincipal, body: ResourceCreate, response: Response
) -> ResourceOut:
    resource = await service.create_resource(session, principal, body)
    set_etag(response, resource)
    response.headers["Location"] = f"{resources_router.prefix}/resources/{resource.id}"
    return service.resource_out(resource)


@resources_router.get(
    "/resources/{resource_id}",
    response_model=ResourceOut,
    summary="Get a resource",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_resource(
    session: SessionDep, principal: CurrentPrincipal, resource_id: uuid.UUID, response: Response
) -> ResourceOut:
    resource = await service.get_resource(session, principal, resource_id)
    set_etag(response, resource)
    return service.resource_out(resource)


@resources_router.patch(
    "/resources/{resource_id}",
    response_model=ResourceOut,
    summary="Edit a resource (If-Match with the ETag); the remaining quantity follows a new quantity",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def update_resource(
    session: SessionDep,
    principal: CurrentPrincipal,
    resource_id: uuid.UUID,
    body: ResourceUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> ResourceOut:
    resource = await service.get_resource(session, principal, resource_id, Perm.lists_write, for_update=True)
    check_if_match(if_match, resource)
    resource = await service.update_resource(session, principal, resource, body)
    set_etag(response, resource)
    return service.resource_out(resource)


@resources_router.post(
    "/resources/{resource_id}/withdraw",
    response_model=ResourceOut,
    summary="Withdraw a resource: nothing more can be committed",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def withdraw_resource(
    session: SessionDep,
    principal: CurrentPrincipal,
    resource_id: uuid.UUID,
    response: Response,
    body: StateReason | None = None,
    if_match: IfMatch = None,
) -> ResourceOut:
    resource = await service.get_resource(session, principal, resource_id, Perm.lists_write, for_update=True)
    check_if_match(if_match, resource)
    resource = await service.withdraw_resource(session, principal, resource, body.reason if body else None)
    set_etag(response, resource)
    return service.resource_out(resource)


@resources_router.post(
    "/resources/{resource_id}/restore",
    response_model=ResourceOut,
    summary="Offer a withdrawn resource again",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def restore_resource(
    session: SessionDep,
    principal: CurrentPrincipal,
    resource_id: uuid.UUID,
    response: Response,
    if_match: IfMatch = None,
) -> ResourceOut:
    resource = await service.get_resource(session, principal, resource_id, Perm.lists_write, for_update=True)
    check_if_match(if_match, resource)
    resource = await service.restore_resource(session, principal, resource)
    set_etag(response, resource)
    return service.resource_out(resource)


# --- needs ----------------------------------------------------------------------------------


@needs_router.get(
    "/needs",
    response_model=Page[NeedOut],
    summary="List needs in scope",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_needs(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    org_id: OrgFilter = None,
    state: NeedState | None = None,
    category: ListCategory | None = None,
    grid_id: uuid.UUID | None = None,
    year: YearFilter = None,
    source: NeedSource | None = None,
    urgency: Urgency | None = None,
    q: TextFilter = None,
) -> Page[NeedOut]:
    require(principal, Perm.lists_read)
    stmt = await service.list_needs_query(
        session,
        principal,
        org_id=org_id,
        state=state,
        category=category,
        grid_id=grid_id,
        year=year,
        source=source,
        urgency=urgency,
        q=q,
    )
    rows, cursor = await paginate(session, stmt, Need, page)
    return Page(items=[service.need_out(n) for n in rows], next_cursor=cursor)


@needs_router.post(
    "/needs",
    response_model=NeedOut,
    status_code=status.HTTP_201_CREATED,
    summary="Raise a need (staff; a grid worker on a visit; a hotline API client). 409 "
    "`possible_duplicate` lists similar open needs nearby: link one or set `allow_duplicate`",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_need(
    session: SessionDep, principal: CurrentPrincipal, body: NeedCreate, response: Response
) -> NeedOut:
    need = await service.create_need(session, principal, body)
    set_etag(response, need)
    response.headers["Location"] = f"{needs_router.prefix}/needs/{need.id}"
    return service.need_out(need)


@needs_router.get(
    "/needs/similar",
    response_model=SimilarNeeds,
    summary="Open needs a new one may repeat (the check `POST /needs` makes), before submitting it",
    responses=problem_responses(401, 403, 422),
)
async def similar_needs(
    session: SessionDep,
    principal: CurrentPrincipal,
    title: Annotated[str, Query(min_length=1, max_length=200)],
    description: Annotated[str, Query(max_length=2000)] = "",
    org_id: Annotated[uuid.UUID | None, Query(description="The community")] = None,
    grid_id: Annotated[uuid.UUID | None, Query(description="Compare with the cell's open needs")] = None,
    lat: Annotated[float | None, Query(ge=-90, le=90, description="Without a cell: within 300 m")] = None,
    lng: Annotated[float | None, Query(ge=-180, le=180)] = None,
) -> SimilarNeeds:
    items = await service.similar_needs(
        session,
        principal,
        title=title,
        description=description,
        org_id=org_id,
        grid_id=grid_id,
        lat=lat,
        lng=lng,
    )
    return SimilarNeeds(items=items)


@needs_router.get(
    "/needs/{need_id}",
    response_model=NeedOut,
    summary="Get a need",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_need(
    session: SessionDep, principal: CurrentPrincipal, need_id: uuid.UUID, response: Response
) -> NeedOut:
    need = await service.get_need(session, principal, need_id)
    set_etag(response, need)
    return service.need_out(need)


@needs_router.patch(
    "/needs/{need_id}",
    response_model=NeedOut,
    summary="Edit a need not yet closed (If-Match with the ETag)",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def update_need(
    session: SessionDep,
    principal: CurrentPrincipal,
    need_id: uuid.UUID,
    body: NeedUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> NeedOut:
    need = await service.get_need(session, principal, need_id, Perm.lists_write, for_update=True)
    check_if_match(if_match, need)
    need = await service.update_need(session, principal, need, body)
    set_etag(response, need)
    return service.need_out(need)


async def _move(
    session: SessionDep,
    principal: CurrentPrincipal,
    need_id: uuid.UUID,
    target: NeedState,
    reason: str | None,
    response: Response,
    if_match: str | None,
) -> NeedOut:
    # Locked: of two staff acting at once, the second sees the first one's outcome (a 409).
    need = await service.get_need(session, principal, need_id, Perm.lists_write, for_update=True)
    check_if_match(if_match, need)
    need = await service.set_need_state(session, need, target, by=principal, reason=reason)
    set_etag(response, need)
    return service.need_out(need)


@needs_router.post(
    "/needs/{need_id}/accept",
    response_model=NeedOut,
    summary="Accept a collected need onto the list",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def accept_need(
    session: SessionDep,
    principal: CurrentPrincipal,
    need_id: uuid.UUID,
    response: Response,
    body: StateReason | None = None,
    if_match: IfMatch = None,
) -> NeedOut:
    reason = body.reason if body else None
    return await _move(session, principal, need_id, NeedState.accepted, reason, response, if_match)


@needs_router.post(
    "/needs/{need_id}/reject",
    response_model=NeedOut,
    summary="Reject a need, with a reason",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def reject_need(
    session: SessionDep,
    principal: CurrentPrincipal,
    need_id: uuid.UUID,
    body: RequiredReason,
    response: Response,
    if_match: IfMatch = None,
) -> NeedOut:
    return await _move(session, principal, need_id, NeedState.rejected, body.reason, response, if_match)


@needs_router.post(
    "/needs/{need_id}/withdraw",
    response_model=NeedOut,
    summary="Withdraw a need no longer wanted",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def withdraw_need(
    session: SessionDep,
    principal: CurrentPrincipal,
    need_id: uuid.UUID,
    response: Response,
    body: StateReason | None = None,
    if_match: IfMatch = None,
) -> NeedOut:
    reason = body.reason if body else None
    return await _move(session, principal, need_id, NeedState.withdrawn, reason, response, if_match)
