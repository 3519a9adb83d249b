"""Unit and community standings and rankings, computed from the records."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from gongjian.auth.deps import CurrentPrincipal
from gongjian.core.db import SessionDep
from gongjian.core.errors import problem_responses
from gongjian.core.pagination import PageParamsDep
from gongjian.standings import service
from gongjian.standings.schemas import (
    CommunityRanking,
    CommunityStandingDetail,
    UnitRanking,
    UnitStandingDetail,
)

router = APIRouter(prefix="/api/v1", tags=["standings"])

Year = Annotated[int | None, Query(ge=2000, le=2100, description="Default: the current year (Asia/Shanghai)")]


@router.get(
    "/standings/units",
    response_model=UnitRanking,
    summary="Rank the units of a street (street staff) or of a community (its staff) for a year",
    responses=problem_responses(400, 401, 403, 404, 422),
)
async def rank_units(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    street_id: Annotated[uuid.UUID | None, Query(description="The street to rank")] = None,
    community_id: Annotated[uuid.UUID | None, Query(description="Or the community to rank")] = None,
    year: Year = None,
) -> UnitRanking:
    return await service.unit_ranking(
        session,
        principal,
        street_id=street_id,
        community_id=community_id,
        year=year,
        cursor=page.cursor,
        limit=page.limit,
    )


@router.get(
    "/standings/units/{unit_id}",
    response_model=UnitStandingDetail,
    summary="A unit's standing for a year, its rank in its street, and its history by year",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_unit_standing(
    session: SessionDep, principal: CurrentPrincipal, unit_id: uuid.UUID, year: Year = None
) -> UnitStandingDetail:
    return await service.unit_detail(session, principal, unit_id, year)


@router.get(
    "/standings/communities",
    response_model=CommunityRanking,
    summary="Rank the communities of a street for a year",
    responses=problem_responses(400, 401, 403, 404, 422),
)
async def rank_communities(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    street_id: Annotated[uuid.UUID, Query(description="The street to rank")],
    year: Year = None,
) -> CommunityRanking:
    return await service.community_ranking(
        session, principal, street_id=street_id, year=year, cursor=page.cursor, limit=page.limit
    )


@router.get(
    "/standings/communities/{community_id}",
    response_model=CommunityStandingDetail,
    summary="A community's standing for a year and its history by year",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_community_standing(
    session: SessionDep, principal: CurrentPrincipal, community_id: uuid.UUID, year: Year = None
) -> CommunityStandingDetail:
    return await service.community_detail(session, principal, community_id, year)
