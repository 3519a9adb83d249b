"""Matching: bulk runs, a need's ranked suggestions, accepting and dismissing them."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlalchemy import select

from gongjian.auth.deps import CurrentPrincipal
from gongjian.core.access import Perm, require, visible
from gongjian.core.db import SessionDep
from gongjian.core.errors import problem_responses
from gongjian.core.pagination import Page, PageParamsDep, paginate
from gongjian.lists.models import Resource
from gongjian.matching import jobs, service
from gongjian.matching.models import MatchRun, Suggestion
from gongjian.matching.schemas import (
    AcceptSuggestion,
    DismissSuggestion,
    MatchedResource,
    MatchOut,
    MatchRunCreate,
    MatchRunOut,
    NeedMatches,
    Progress,
)

router = APIRouter(prefix="/api/v1", tags=["matching"])


def run_out(run: MatchRun) -> MatchRunOut:
    return MatchRunOut(
        id=run.id,
        org_id=run.org_id,
        status=run.status,
        progress=Progress(done=run.needs_done, total=run.needs_total),
        suggestions_count=run.suggestions_count,
        needs_without_match=run.needs_without_match,
        requested_by=run.requested_by,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        error=run.error,
    )


def match_out(s: Suggestion, r: Resource) -> MatchOut:
    return MatchOut(
        id=s.id,
        need_id=s.need_id,
        score=s.score,
        weak=s.weak,
        state=s.state,
        explanation=s.explanation,
        project_id=s.project_id,
        resource=MatchedResource.model_validate(r, from_attributes=True),
    )


@router.post(
    "/matching/runs",
    response_model=MatchRunOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start a bulk matching run over every open need under an organization",
    responses=problem_responses(401, 403, 404, 422),
)
async def create_run(session: SessionDep, principal: CurrentPrincipal, body: MatchRunCreate) -> MatchRunOut:
    run = await service.create_run(session, principal, body.org_id)
    await jobs.enqueue_run(session, run.id)
    return run_out(run)


@router.get(
    "/matching/runs",
    response_model=Page[MatchRunOut],
    summary="Matching runs in scope, oldest first",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_runs(
    session: SessionDep, principal: CurrentPrincipal, page: PageParamsDep, org_id: uuid.UUID | None = None
) -> Page[MatchRunOut]:
    require(principal, Perm.lists_read)
    stmt = visible(select(MatchRun), MatchRun, principal, Perm.lists_read)
    if org_id is not None:
        stmt = stmt.where(MatchRun.org_id == org_id)
    rows, cursor = await paginate(session, stmt, MatchRun, page)
    return Page(items=[run_out(r) for r in rows], next_cursor=cursor)


@router.get(
    "/matching/runs/{run_id}",
    response_model=MatchRunOut,
    summary="A matching run and its progress",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_run(session: SessionDep, principal: CurrentPrincipal, run_id: uuid.UUID) -> MatchRunOut:
    return run_out(await service.get_run(session, principal, run_id))


@router.get(
    "/needs/{need_id}/matches",
    response_model=NeedMatches,
    summary="A need's ranked resource suggestions, best first, each with its explanation",
    description="Only resources meeting every hard constraint (window overlap, service radius, "
    "quantity left) are suggested. Weak suggestions are left out unless `include_weak`, and then "
    "come last, marked.",
    responses=problem_responses(401, 403, 404, 422),
)
async def need_matches(
    session: SessionDep,
    principal: CurrentPrincipal,
    need_id: uuid.UUID,
    limit: Annotated[int, Query(ge=1, le=20)] = 5,
    include_weak: bool = False,
) -> NeedMatches:
    need, rows = await service.need_matches(
        session, principal, need_id, limit=limit, include_weak=include_weak
    )
    return NeedMatches(need_id=need.id, items=[match_out(s, r) for s, r in rows])


async def _decided(session: SessionDep, s: Suggestion) -> MatchOut:
    resource = await session.get(Resource, s.resource_id)
    assert resource is not None
    return match_out(s, resource)


@router.post(
    "/matching/suggestions/{suggestion_id}/accept",
    response_model=MatchOut,
    summary="Accept a suggestion: the need is matched and a project is proposed with the resource",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def accept(
    session: SessionDep, principal: CurrentPrincipal, suggestion_id: uuid.UUID, body: AcceptSuggestion
) -> MatchOut:
    s = await service.accept(session, principal, suggestion_id, quantity=body.quantity, title=body.title)
    return await _decided(session, s)


@router.post(
    "/matching/suggestions/{suggestion_id}/dismiss",
    response_model=MatchOut,
    summary="Dismiss a suggestion with a reason; the pair is not proposed again",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def dismiss(
    session: SessionDep, principal: CurrentPrincipal, suggestion_id: uuid.UUID, body: DismissSuggestion
) -> MatchOut:
    s = await service.dismiss(session, principal, suggestion_id, body.reason)
    return await _decided(session, s)
