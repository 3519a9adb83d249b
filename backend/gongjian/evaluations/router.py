"""Two-way evaluation (双向评议): rubrics, yearly windows per agreement, submissions, results."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from gongjian.agreements.models import Side
from gongjian.auth.deps import CurrentPrincipal
from gongjian.core.access import Perm, ensure_org_in_scope, get_visible, require
from gongjian.core.concurrency import IfMatch, check_if_match, set_etag
from gongjian.core.db import SessionDep
from gongjian.core.errors import ProblemError, problem_responses
from gongjian.core.pagination import Page, PageParamsDep, paginate
from gongjian.evaluations import service
from gongjian.evaluations.models import EvaluationRubric, EvaluationWindow
from gongjian.evaluations.schemas import (
    RubricCreate,
    RubricOut,
    ScoreHistory,
    SubmissionCreate,
    SubmissionOut,
    WindowCreate,
    WindowOut,
    WindowUpdate,
)
from gongjian.organizations.models import OrgLevel
from gongjian.resident_units.models import ResidentUnit

router = APIRouter(prefix="/api/v1", tags=["evaluations"])

Year = Annotated[int | None, Query(ge=2000, le=2100, description="The year evaluated")]


# --- rubrics ----------------------------------------------------------------------------------


@router.get(
    "/evaluation-rubrics",
    response_model=Page[RubricOut],
    summary="List the rubrics set by organizations in scope",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_rubrics(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    org_id: uuid.UUID | None = None,
    side: Annotated[Side | None, Query(description="The rating side")] = None,
    current: Annotated[bool | None, Query(description="Only current (true) or only retired (false)")] = None,
) -> Page[RubricOut]:
    require(principal, Perm.evaluations_read)
    stmt = service.rubric_list_query(principal, org_id=org_id, side=side, current=current)
    rows, cursor = await paginate(session, stmt, EvaluationRubric, page)
    items = await service.items_of(session, [r.id for r in rows])
    return Page(items=[service.rubric_out(r, items[r.id]) for r in rows], next_cursor=cursor)


@router.post(
    "/evaluation-rubrics",
    response_model=RubricOut,
    status_code=status.HTTP_201_CREATED,
    summary="Set a county's or street's rubric for one side (retires its current one)",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_rubric(
    session: SessionDep, principal: CurrentPrincipal, body: RubricCreate, response: Response
) -> RubricOut:
    rubric = await service.create_rubric(session, principal, body)
    response.headers["Location"] = f"{router.prefix}/evaluation-rubrics/{rubric.id}"
    return service.rubric_out(rubric, (await service.items_of(session, [rubric.id]))[rubric.id])


@router.get(
    "/evaluation-rubrics/effective",
    response_model=RubricOut,
    summary="The rubric a new window of a community under this organization would take now",
    responses=problem_responses(401, 403, 404, 422),
)
async def effective_rubric(
    session: SessionDep,
    principal: CurrentPrincipal,
    org_id: uuid.UUID,
    side: Annotated[Side, Query(description="The rating side")],
) -> RubricOut:
    require(principal, Perm.evaluations_read)
    return await service.effective_rubric(session, principal, org_id, side)


@router.get(
    "/evaluation-rubrics/{rubric_id}",
    response_model=RubricOut,
    summary="Get a rubric",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_rubric(session: SessionDep, principal: CurrentPrincipal, rubric_id: uuid.UUID) -> RubricOut:
    rubric = await service.get_rubric(session, principal, rubric_id)
    return service.rubric_out(rubric, (await service.items_of(session, [rubric.id]))[rubric.id])


# --- windows ----------------------------------------------------------------------------------


@router.get(
    "/evaluation-windows",
    response_model=Page[WindowOut],
    summary="List evaluation windows in scope (the other side's rating shown once revealed)",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_windows(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    year: Year = None,
    community_id: uuid.UUID | None = None,
    unit_id: uuid.UUID | None = None,
    agreement_number: Annotated[str | None, Query(max_length=32)] = None,
) -> Page[WindowOut]:
    require(principal, Perm.evaluations_read)
    stmt = service.window_list_query(
        principal, year=year, community_id=community_id, unit_id=unit_id, agreement_number=agreement_number
    )
    rows, cursor = await paginate(session, stmt, EvaluationWindow, page)
    return Page(items=await service.window_out_many(session, principal, rows), next_cursor=cursor)


@router.get(
    "/agreements/{agreement_id}/evaluation-windows",
    response_model=Page[WindowOut],
    summary="The agreement's evaluation windows, year by year (over all its versions)",
    responses=problem_responses(400, 401, 403, 404, 422),
)
async def list_agreement_windows(
    session: SessionDep, principal: CurrentPrincipal, agreement_id: uuid.UUID, page: PageParamsDep
) -> Page[WindowOut]:
    agreement = await service.get_agreement(session, principal, agreement_id)
    stmt = service.window_list_query(principal, agreement_number=agreement.number)
    rows, cursor = await paginate(session, stmt, EvaluationWindow, page)
    return Page(items=await service.window_out_many(session, principal, rows), next_cursor=cursor)


@router.post(
    "/agreements/{agreement_id}/evaluation-windows",
    response_model=WindowOut,
    status_code=status.HTTP_201_CREATED,
    summary="Open the agreement's evaluation window for a year (staff; the year-end job opens the rest)",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def open_window(
    session: SessionDep,
    principal: CurrentPrincipal,
    agreement_id: uuid.UUID,
    body: WindowCreate,
    response: Response,
) -> WindowOut:
    window = await service.open_window(session, principal, agreement_id, body)
    set_etag(response, window)
    response.headers["Location"] = f"{router.prefix}/evaluation-windows/{window.id}"
    return await service.window_out(session, principal, window)


@router.get(
    "/evaluation-windows/{window_id}",
    response_model=WindowOut,
    summary="Get an evaluation window: both sides' rubrics, and the ratings the caller may see",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_window(
    session: SessionDep, principal: CurrentPrincipal, window_id: uuid.UUID, response: Response
) -> WindowOut:
    window = await service.get_window(session, principal, window_id)
    set_etag(response, window)
    return await service.window_out(session, principal, window)


@router.patch(
    "/evaluation-windows/{window_id}",
    response_model=WindowOut,
    summary="Move a window's opening or closing (staff; If-Match with the ETag)",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def update_window(
    session: SessionDep,
    principal: CurrentPrincipal,
    window_id: uuid.UUID,
    body: WindowUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> WindowOut:
    require(principal, Perm.evaluations_manage)
    window = await service.get_window(session, principal, window_id, Perm.evaluations_manage, for_update=True)
    check_if_match(if_match, window)
    window = await service.update_window(session, principal, window, body)
    set_etag(response, window)
    return await service.window_out(session, principal, window)


@router.post(
    "/evaluation-windows/{window_id}/submissions",
    response_model=SubmissionOut,
    status_code=status.HTTP_201_CREATED,
    summary="Submit one side's rating (community: its org admin or staff; unit: its liaison); once",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def submit(
    session: SessionDep,
    principal: CurrentPrincipal,
    window_id: uuid.UUID,
    body: SubmissionCreate,
    response: Response,
) -> SubmissionOut:
    submission = await service.submit(session, principal, window_id, body)
    response.headers["Location"] = f"{router.prefix}/evaluation-windows/{window_id}"
    return service.submission_out(submission)


# --- results ----------------------------------------------------------------------------------


@router.get(
    "/evaluation-results/units/{unit_id}",
    response_model=ScoreHistory,
    summary="A unit's yearly evaluation score (the communities' revealed ratings), by year",
    responses=problem_responses(401, 403, 404, 422),
)
async def unit_results(session: SessionDep, principal: CurrentPrincipal, unit_id: uuid.UUID) -> ScoreHistory:
    unit = await get_visible(
        session, ResidentUnit, unit_id, principal, Perm.evaluations_read, name="resident_unit"
    )
    items = await service.score_history(session, Side.unit, unit.id)
    return ScoreHistory(subject="unit", subject_id=unit.id, items=items)


@router.get(
    "/evaluation-results/communities/{community_id}",
    response_model=ScoreHistory,
    summary="A community's yearly evaluation score (its units' revealed ratings), by year",
    responses=problem_responses(401, 403, 404, 422),
)
async def community_results(
    session: SessionDep, principal: CurrentPrincipal, community_id: uuid.UUID
) -> ScoreHistory:
    org = await ensure_org_in_scope(session, principal, community_id, Perm.evaluations_read)
    if org.level != OrgLevel.community:
        raise ProblemError("not_a_community")
    items = await service.score_history(session, Side.community, org.id)
    return ScoreHistory(subject="community", subject_id=org.id, items=items)
