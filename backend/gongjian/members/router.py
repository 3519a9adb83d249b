"""Party members (党员) and 双报到 reporting."""

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
from gongjian.members import service
from gongjian.members.models import (
    Member,
    MemberCategory,
    MemberStatus,
    Reporting,
    ReportingKind,
    ReportingState,
)
from gongjian.members.schemas import (
    PHONE_PATTERN,
    MemberCreate,
    MemberOut,
    MemberPersonalData,
    MemberUpdate,
    ReportingCreate,
    ReportingDecision,
    ReportingOut,
    ReportingReason,
)

router = APIRouter(prefix="/api/v1", tags=["members"])


@router.get(
    "/members",
    response_model=Page[MemberOut],
    summary="List party members in scope (phone and ID number masked)",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_members(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    org_id: uuid.UUID | None = None,
    category: MemberCategory | None = None,
    status: MemberStatus | None = None,
    residence_community_id: uuid.UUID | None = None,
    grid_cell_id: uuid.UUID | None = None,
    q: Annotated[str | None, Query(max_length=50, description="Name contains")] = None,
    id_number: Annotated[
        str | None, Query(max_length=32, description="Find by ID number (exact, through its keyed hash)")
    ] = None,
    phone: Annotated[
        str | None, Query(pattern=PHONE_PATTERN, description="Find by mobile number (exact, keyed hash)")
    ] = None,
) -> Page[MemberOut]:
    require(principal, Perm.members_read)
    stmt = service.list_query(
        principal,
        org_id=org_id,
        category=category,
        status=status,
        residence_community_id=residence_community_id,
        grid_cell_id=grid_cell_id,
        q=q,
        id_number=id_number,
        phone=phone,
    )
    rows, cursor = await paginate(session, stmt, Member, page)
    return Page(items=[service.to_out(m) for m in rows], next_cursor=cursor)


@router.post(
    "/members",
    response_model=MemberOut,
    status_code=status.HTTP_201_CREATED,
    summary="Register a party member",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_member(
    session: SessionDep, principal: CurrentPrincipal, body: MemberCreate, response: Response
) -> MemberOut:
    require(principal, Perm.members_write)
    member = await service.create(session, principal, body)
    set_etag(response, member)
    response.headers["Location"] = f"{router.prefix}/members/{member.id}"
    return service.to_out(member)


@router.get(
    "/members/{member_id}",
    response_model=MemberOut,
    summary="Get a party member (phone and ID number masked)",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_member(
    session: SessionDep, principal: CurrentPrincipal, member_id: uuid.UUID, response: Response
) -> MemberOut:
    require(principal, Perm.members_read)
    member = await service.get(session, principal, member_id)
    set_etag(response, member)
    return service.to_out(member)


@router.patch(
    "/members/{member_id}",
    response_model=MemberOut,
    summary="Edit a party member (If-Match with the ETag)",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def update_member(
    session: SessionDep,
    principal: CurrentPrincipal,
    member_id: uuid.UUID,
    body: MemberUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> MemberOut:
    require(principal, Perm.members_write)
    member = await service.get(session, principal, member_id, Perm.members_write)
    check_if_match(if_match, member)
    member = await service.update_member(session, principal, member, body)
    set_etag(response, member)
    return service.to_out(member)


@router.get(
    "/members/{member_id}/personal-data",
    response_model=MemberPersonalData,
    summary="Read a member's phone and ID number in full (audited)",
    responses=problem_responses(401, 403, 404, 422),
)
async def read_member_personal_data(
    session: SessionDep, principal: CurrentPrincipal, member_id: uuid.UUID, response: Response
) -> MemberPersonalData:
    require(principal, Perm.members_read)
    member = await service.get(session, principal, member_id)
    require(principal, Perm.members_pii)
    member = await service.get(session, principal, member_id, Perm.members_pii)
    response.headers["Cache-Control"] = "no-store"
    return await service.read_personal_data(session, principal, member)


@router.get(
    "/reportings",
    response_model=Page[ReportingOut],
    summary="List 双报到 reportings in scope",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_reportings(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    kind: ReportingKind | None = None,
    state: ReportingState | None = None,
    active: Annotated[bool | None, Query(description="Submitted or accepted, and not deregistered")] = None,
    community_id: uuid.UUID | None = None,
    member_id: uuid.UUID | None = None,
    resident_unit_id: uuid.UUID | None = None,
) -> Page[ReportingOut]:
    require(principal, Perm.reports_read)
    stmt = service.reporting_list_query(
        principal,
        kind=kind,
        state=state,
        active=active,
        community_id=community_id,
        member_id=member_id,
        resident_unit_id=resident_unit_id,
    )
    rows, cursor = await paginate(session, stmt, Reporting, page)
    return Page(items=[service.reporting_out(r) for r in rows], next_cursor=cursor)


@router.post(
    "/reportings",
    response_model=ReportingOut,
    status_code=status.HTTP_201_CREATED,
    summary="Submit a 双报到 reporting (a member for themself, a liaison for their unit, staff in scope)",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def submit_reporting(
    session: SessionDep, principal: CurrentPrincipal, body: ReportingCreate, response: Response
) -> ReportingOut:
    reporting = await service.submit(session, principal, body)
    set_etag(response, reporting)
    response.headers["Location"] = f"{router.prefix}/reportings/{reporting.id}"
    return service.reporting_out(reporting)


@router.get(
    "/reportings/{reporting_id}",
    response_model=ReportingOut,
    summary="Get a reporting",
    responses=problem_responses(401, 404, 422),
)
async def get_reporting(
    session: SessionDep, principal: CurrentPrincipal, reporting_id: uuid.UUID, response: Response
) -> ReportingOut:
    reporting = await service.get_reporting(session, principal, reporting_id)
    set_etag(response, reporting)
    return service.reporting_out(reporting)


async def _transition(
    session: SessionDep,
    principal: CurrentPrincipal,
    reporting_id: uuid.UUID,
    action: str,
    reason: str | None,
    response: Response,
    if_match: str | None,
) -> ReportingOut:
    reporting = await service.load_for_review(session, principal, reporting_id)
    check_if_match(if_match, reporting)
    reporting = await service.transition(session, principal, reporting, action, reason)
    set_etag(response, reporting)
    return service.reporting_out(reporting)


@router.post(
    "/reportings/{reporting_id}/accept",
    response_model=ReportingOut,
    summary="Accept a submitted reporting (community staff)",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def accept_reporting(
    session: SessionDep,
    principal: CurrentPrincipal,
    reporting_id: uuid.UUID,
    response: Response,
    body: ReportingDecision | None = None,
    if_match: IfMatch = None,
) -> ReportingOut:
    reason = body.reason if body else None
    return await _transition(session, principal, reporting_id, "accept", reason, response, if_match)


@router.post(
    "/reportings/{reporting_id}/return",
    response_model=ReportingOut,
    summary="Return a submitted reporting with a reason (community staff)",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def return_reporting(
    session: SessionDep,
    principal: CurrentPrincipal,
    reporting_id: uuid.UUID,
    body: ReportingReason,
    response: Response,
    if_match: IfMatch = None,
) -> ReportingOut:
    return await _transition(session, principal, reporting_id, "return", body.reason, response, if_match)


@router.post(
    "/reportings/{reporting_id}/deregister",
    response_model=ReportingOut,
    summary="Deregister an accepted reporting with a reason (community staff)",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def deregister_reporting(
    session: SessionDep,
    principal: CurrentPrincipal,
    reporting_id: uuid.UUID,
    body: ReportingReason,
    response: Response,
    if_match: IfMatch = None,
) -> ReportingOut:
    return await _transition(session, principal, reporting_id, "deregister", body.reason, response, if_match)
