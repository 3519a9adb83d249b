from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import select

from gongjian.auth.deps import CurrentPrincipal
from gongjian.core.access import Perm, get_visible, require, visible
from gongjian.core.concurrency import IfMatch, check_if_match, set_etag
from gongjian.core.db import SessionDep
from gongjian.core.errors import problem_responses
from gongjian.core.pagination import Page, PageParamsDep, paginate, paginate_by_key
from gongjian.organizations import service
from gongjian.organizations.models import CommitteeMember, Organization, OrgKind, OrgLevel
from gongjian.organizations.schemas import (
    CommitteeMemberCreate,
    CommitteeMemberOut,
    OrganizationCounts,
    OrganizationCreate,
    OrganizationMove,
    OrganizationOut,
    OrganizationUpdate,
)

router = APIRouter(prefix="/api/v1/organizations", tags=["organizations"])




@router.get(
    "",
    response_model=Page[OrganizationOut],
    summary="List organizations in scope",
    responses=problem_responses(400, 401, 403, 404, 422),
)
async def list_organizations(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    kind: OrgKind | None = None,
    level: OrgLevel | None = None,
    parent_id: uuid.UUID | None = None,
    under: Annotated[uuid.UUID | None, Query(description="Only the descendants of this organization")] = None,
    q: Annotated[str | None, Query(max_length=100, description="Name contains")] = None,
) -> Page[OrganizationOut]:
    require(principal, Perm.organizations_read)
    under_org = await service.get(session, principal, under) if under else None
    stmt = service.list_query(principal, kind=kind, level=level, parent_id=parent_id, under=under_org, q=q)
    # Tree order: parents before their children, and the path index serves any subtree size.
    rows, cursor = await paginate_by_key(session, stmt, Organization.path, page)
    return Page(items=[OrganizationOut.model_validate(r) for r in rows], next_cursor=cursor)


@router.post(
    "",
    response_model=OrganizationOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create an organization",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_organization(
    session: SessionDep, principal: CurrentPrincipal, body: OrganizationCreate, response: Response
) -> OrganizationOut:
    require(principal, Perm.organizations_write)
    org = await service.create(session, principal, body)
    set_etag(response, org)
    response.headers["Location"] = f"{router.prefix}/{org.id}"
    return OrganizationOut.model_validate(org)


@router.get(
    "/{org_id}",
    response_model=OrganizationOut,
    summary="Get an organization",
    responses=problem_responses(401, 404, 422),
)
async def get_organization(
    session: SessionDep, principal: CurrentPrincipal, org_id: uuid.UUID, response: Response
) -> OrganizationOut:
    org = await service.get(session, principal, org_id)
    set_etag(response, org)
    return OrganizationOut.model_validate(org)


@router.patch(
    "/{org_id}",
    response_model=OrganizationOut,
    summary="Edit an organization (If-Match with the ETag)",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def update_organization(
    session: SessionDep,
    principal: CurrentPrincipal,
    org_id: uuid.UUID,
    body: OrganizationUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> OrganizationOut:
    require(principal, Perm.organizations_write)
    org = await service.get(session, principal, org_id, Perm.organizations_write)
    check_if_match(if_match, org)
    org = await service.update_org(session, principal, org, body)
    set_etag(response, org)
    return OrganizationOut.model_validate(org)


@router.post(
    "/{org_id}/move",
    response_model=OrganizationOut,
    summary="Move an organization and its whole subtree under a new parent",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def move_organization(
    session: SessionDep,
    principal: CurrentPrincipal,
    org_id: uuid.UUID,
    body: OrganizationMove,
    response: Response,
    if_match: IfMatch = None,
) -> OrganizationOut:
    require(principal, Perm.organizations_write)
    org = await service.get(session, principal, org_id, Perm.organizations_write)
    check_if_match(if_match, org)
    org = await service.move(session, principal, org, body.parent_id)
    set_etag(response, org)
    return OrganizationOut.model_validate(org)


@router.delete(
    "/{org_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an organization with nothing under it",
    responses=problem_responses(401, 403, 404, 409, 412),
)
async def delete_organization(
    session: SessionDep, principal: CurrentPrincipal, org_id: uuid.UUID, if_match: IfMatch = None
) -> Response:
    require(principal, Perm.organizations_write)
    org = await service.get(session, principal, org_id, Perm.organizations_write)
    check_if_match(if_match, org)
    await service.delete(session, principal, org)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{org_id}/counts",
    response_model=OrganizationCounts,
    summary="Counts for an organization's subtree",
    responses=problem_responses(401, 404, 422),
)
async def organization_counts(
    session: SessionDep, principal: CurrentPrincipal, org_id: uuid.UUID
) -> OrganizationCounts:
    org = await service.get(session, principal, org_id)
    return OrganizationCounts(**await service.counts(session, org))


@router.get(
    "/{org_id}/committee-members",
    response_model=Page[CommitteeMemberOut],
    summary="Part-time members of a community committee (社区大党委)",
    responses=problem_responses(400, 401, 404, 422),
)
async def list_committee_members(
    session: SessionDep, principal: CurrentPrincipal, org_id: uuid.UUID, page: PageParamsDep
) -> Page[CommitteeMemberOut]:
    org = await service.get(session, principal, org_id)
    stmt = visible(select(CommitteeMember), CommitteeMember, principal, Perm.organizations_read).where(
        CommitteeMember.organization_id == org.id
    )
    rows, cursor = await paginate(session, stmt, CommitteeMember, page)
    return Page(items=[CommitteeMemberOut.model_validate(r) for r in rows], next_cursor=cursor)


@router.post(
    "/{org_id}/committee-members",
    response_model=CommitteeMemberOut,
    status_code=status.HTTP_201_CREATED,
    summary="Add a part-time member to a community committee",
    responses=problem_responses(401, 403, 404, 422),
)
async def add_committee_member(
    session: SessionDep, principal: CurrentPrincipal, org_id: uuid.UUID, body: CommitteeMemberCreate
) -> CommitteeMemberOut:
    require(principal, Perm.organizations_write)
    org = await service.get(session, principal, org_id, Perm.organizations_write)
    member = await service.add_committee_member(session, principal, org, body)
    return CommitteeMemberOut.model_validate(member)


@router.delete(
    "/{org_id}/committee-members/{member_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a part-time committee member",
    responses=problem_responses(401, 403, 404),
)
async def remove_committee_member(
    session: SessionDep, principal: CurrentPrincipal, org_id: uuid.UUID, member_id: uuid.UUID
) -> Response:
    require(principal, Perm.organizations_write)
    member = await get_visible(session, CommitteeMember, member_id, principal, Perm.organizations_write,
                               name="committee_member")
    if member.organization_id != org_id:
        from gongjian.core.errors import not_found

        raise not_found("committee_member")
    await service.remove_committee_member(session, principal, member)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
