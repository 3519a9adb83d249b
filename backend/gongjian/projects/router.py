"""The project list (项目清单) and the claim hall (领办大厅)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from gongjian.auth.deps import CurrentPrincipal
from gongjian.core.access import Perm, require
from gongjian.core.concurrency import IfMatch, check_if_match, set_etag
from gongjian.core.db import SessionDep
from gongjian.core.errors import problem_responses
from gongjian.core.pagination import Page, PageParamsDep, paginate
from gongjian.lists.imports.workbook import XLSX_MEDIA_TYPE, xlsx_response
from gongjian.projects import export, service
from gongjian.projects.models import ProgressEntry, Project, ProjectState
from gongjian.projects.schemas import (
    ClaimRequest,
    CommitmentCreate,
    MilestoneCreate,
    MilestoneOut,
    MilestoneUpdate,
    NeedLink,
    ProgressCreate,
    ProgressOut,
    ProjectCreate,
    ProjectDetail,
    ProjectOut,
    ProjectTransition,
    ProjectUpdate,
)

router = APIRouter(prefix="/api/v1", tags=["projects"])

OrgFilter = Annotated[
    uuid.UUID | None, Query(description="The projects of this organization and the ones under it")
]
UnitFilter = Annotated[uuid.UUID | None, Query(description="Projects this unit leads or joins")]
TextFilter = Annotated[str | None, Query(max_length=100, description="Title or description contains")]

_WRITE = problem_responses(401, 403, 404, 409, 412, 422)
_ACT = problem_responses(401, 403, 404, 409, 422)  # no If-Match


async def _detail(session: SessionDep, response: Response, project: Project) -> ProjectDetail:
    set_etag(response, project)
    return await service.to_detail(session, project)


@router.get(
    "/projects",
    response_model=Page[ProjectOut],
    summary="List projects in scope (liaisons: their unit's, and what the hall offers them)",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_projects(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    org_id: OrgFilter = None,
    state: ProjectState | None = None,
    unit_id: UnitFilter = None,
    q: TextFilter = None,
) -> Page[ProjectOut]:
    require(principal, Perm.lists_read)
    stmt = await service.list_query(session, principal, org_id=org_id, state=state, unit_id=unit_id, q=q)
    rows, cursor = await paginate(session, stmt, Project, page)
    return Page(items=await service.to_out_many(session, rows), next_cursor=cursor)


@router.get(
    "/projects/hall",
    response_model=Page[ProjectOut],
    summary="The claim hall (领办大厅): what the caller's unit may claim now (staff: unclaimed projects)",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_hall(
    session: SessionDep, principal: CurrentPrincipal, page: PageParamsDep
) -> Page[ProjectOut]:
    stmt = service.hall_query(principal)
    rows, cursor = await paginate(session, stmt, Project, page)
    return Page(items=await service.to_out_many(session, rows), next_cursor=cursor)


@router.get(
    "/projects/export.xlsx",
    response_class=Response,
    summary="Export the projects in scope (the same filters as the list) as an XLSX workbook",
    responses={
        200: {"content": {XLSX_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}},
        **problem_responses(401, 403, 422),
    },
)
async def export_projects(
    session: SessionDep,
    principal: CurrentPrincipal,
    org_id: OrgFilter = None,
    state: ProjectState | None = None,
    unit_id: UnitFilter = None,
    q: TextFilter = None,
) -> Response:
    require(principal, Perm.lists_read)
    stmt = await service.list_query(session, principal, org_id=org_id, state=state, unit_id=unit_id, q=q)
    content = await export.workbook(session, stmt)
    return xlsx_response(content, "项目清单.xlsx")


@router.post(
    "/projects",
    response_model=ProjectDetail,
    status_code=status.HTTP_201_CREATED,
    summary="Propose a project: its needs, resource commitments (reserved now), units, plan",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_project(
    session: SessionDep, principal: CurrentPrincipal, body: ProjectCreate, response: Response
) -> ProjectDetail:
    project = await service.create(session, principal, body)
    response.headers["Location"] = f"{router.prefix}/projects/{project.id}"
    return await _detail(session, response, project)


@router.get(
    "/projects/{project_id}",
    response_model=ProjectDetail,
    summary="Get a project with its trail: needs → meeting decision → project → result",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_project(
    session: SessionDep, principal: CurrentPrincipal, project_id: uuid.UUID, response: Response
) -> ProjectDetail:
    project = await service.get(session, principal, project_id)
    return await _detail(session, response, project)


@router.patch(
    "/projects/{project_id}",
    response_model=ProjectDetail,
    summary="Edit a project's details, joint units and plan (If-Match with the ETag)",
    responses=_WRITE,
)
async def update_project(
    session: SessionDep,
    principal: CurrentPrincipal,
    project_id: uuid.UUID,
    body: ProjectUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> ProjectDetail:
    project = await service.load_for_write(session, principal, project_id)
    check_if_match(if_match, project)
    project = await service.update(session, principal, project, body)
    return await _detail(session, response, project)


@router.post(
    "/projects/{project_id}/transitions",
    response_model=ProjectDetail,
    summary="Start, complete (resolves its needs), evaluate or cancel a project (approval: a meeting's)",
    responses=_WRITE,
)
async def transition_project(
    session: SessionDep,
    principal: CurrentPrincipal,
    project_id: uuid.UUID,
    body: ProjectTransition,
    response: Response,
    if_match: IfMatch = None,
) -> ProjectDetail:
    project = await service.load_for_write(session, principal, project_id)
    check_if_match(if_match, project)
    project = await service.transition(session, principal, project, body)
    return await _detail(session, response, project)


@router.post(
    "/projects/{project_id}/claim",
    response_model=ProjectDetail,
    summary="Claim a project for a unit (a liaison: paired first, then the street) or assign one (staff)",
    responses=_ACT,
)
async def claim_project(
    session: SessionDep,
    principal: CurrentPrincipal,
    project_id: uuid.UUID,
    response: Response,
    body: ClaimRequest | None = None,
) -> ProjectDetail:
    project = await service.claim(session, principal, project_id, body.unit_id if body else None)
    return await _detail(session, response, project)


@router.post(
    "/projects/{project_id}/needs",
    response_model=ProjectDetail,
    status_code=status.HTTP_201_CREATED,
    summary="Link a need to the project (the need goes in_project)",
    responses=_ACT,
)
async def link_need(
    session: SessionDep,
    principal: CurrentPrincipal,
    project_id: uuid.UUID,
    body: NeedLink,
    response: Response,
) -> ProjectDetail:
    project = await service.load_for_write(session, principal, project_id)
    await service.link_need(session, principal, project, body.need_id)
    return await _detail(session, response, project)


@router.delete(
    "/projects/{project_id}/needs/{need_id}",
    response_model=ProjectDetail,
    summary="Unlink a need (it goes back to the list, accepted)",
    responses=_ACT,
)
async def unlink_need(
    session: SessionDep,
    principal: CurrentPrincipal,
    project_id: uuid.UUID,
    need_id: uuid.UUID,
    response: Response,
) -> ProjectDetail:
    project = await service.load_for_write(session, principal, project_id)
    await service.unlink_need(session, principal, project, need_id)
    return await _detail(session, response, project)


@router.post(
    "/projects/{project_id}/commitments",
    response_model=ProjectDetail,
    status_code=status.HTTP_201_CREATED,
    summary="Commit a quantity of a resource (reserved from what remains; 409 when not enough)",
    responses=_ACT,
)
async def add_commitment(
    session: SessionDep,
    principal: CurrentPrincipal,
    project_id: uuid.UUID,
    body: CommitmentCreate,
    response: Response,
) -> ProjectDetail:
    project = await service.load_for_write(session, principal, project_id)
    await service.add_commitment(session, principal, project, body)
    return await _detail(session, response, project)


@router.delete(
    "/projects/{project_id}/commitments/{commitment_id}",
    response_model=ProjectDetail,
    summary="Release a commitment (its quantity goes back to the resource; kept as history)",
    responses=_ACT,
)
async def remove_commitment(
    session: SessionDep,
    principal: CurrentPrincipal,
    project_id: uuid.UUID,
    commitment_id: uuid.UUID,
    response: Response,
    reason: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
) -> ProjectDetail:
    project = await service.load_for_write(session, principal, project_id)
    await service.remove_commitment(session, principal, project, commitment_id, reason)
    return await _detail(session, response, project)


@router.post(
    "/projects/{project_id}/milestones",
    response_model=MilestoneOut,
    status_code=status.HTTP_201_CREATED,
    summary="Add a milestone",
    responses=_ACT,
)
async def add_milestone(
    session: SessionDep,
    principal: CurrentPrincipal,
    project_id: uuid.UUID,
    body: MilestoneCreate,
    response: Response,
) -> MilestoneOut:
    project = await service.load_for_write(session, principal, project_id)
    milestone = await service.add_milestone(session, principal, project, body)
    set_etag(response, milestone)
    return MilestoneOut.model_validate(milestone)


@router.patch(
    "/projects/{project_id}/milestones/{milestone_id}",
    response_model=MilestoneOut,
    summary="Edit a milestone or mark it done (If-Match with its ETag)",
    responses=_WRITE,
)
async def update_milestone(
    session: SessionDep,
    principal: CurrentPrincipal,
    project_id: uuid.UUID,
    milestone_id: uuid.UUID,
    body: MilestoneUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> MilestoneOut:
    project = await service.load_for_write(session, principal, project_id)
    milestone = await service.get_milestone(session, project, milestone_id)
    check_if_match(if_match, milestone)
    milestone = await service.update_milestone(session, principal, project, milestone, body)
    set_etag(response, milestone)
    return MilestoneOut.model_validate(milestone)


@router.delete(
    "/projects/{project_id}/milestones/{milestone_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a milestone",
    responses=_ACT,
)
async def delete_milestone(
    session: SessionDep, principal: CurrentPrincipal, project_id: uuid.UUID, milestone_id: uuid.UUID
) -> None:
    project = await service.load_for_write(session, principal, project_id)
    milestone = await service.get_milestone(session, project, milestone_id)
    await service.delete_milestone(session, principal, project, milestone)


@router.get(
    "/projects/{project_id}/progress",
    response_model=Page[ProgressOut],
    summary="The project's progress entries, oldest first",
    responses=problem_responses(400, 401, 403, 404, 422),
)
async def list_progress(
    session: SessionDep, principal: CurrentPrincipal, project_id: uuid.UUID, page: PageParamsDep
) -> Page[ProgressOut]:
    project = await service.get(session, principal, project_id)
    rows, cursor = await paginate(session, service.progress_query(project), ProgressEntry, page)
    return Page(items=[ProgressOut.model_validate(r) for r in rows], next_cursor=cursor)


@router.post(
    "/projects/{project_id}/progress",
    response_model=ProgressOut,
    status_code=status.HTTP_201_CREATED,
    summary="Report progress with photos (a liaison of a lead or joint unit, or staff)",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def add_progress(
    session: SessionDep, principal: CurrentPrincipal, project_id: uuid.UUID, body: ProgressCreate
) -> Any:
    require(principal, Perm.projects_progress)
    entry = await service.add_progress(session, principal, project_id, body)
    return ProgressOut.model_validate(entry)
