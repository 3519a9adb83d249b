"""Unit and community standings, computed from the records, never typed in.

A period is a calendar year in local time (Asia/Shanghai), [1 January, next 1 January). For a
unit U and year Y:

- agreements_active: agreements (counted by number, not version) between U and a community in
  force at some time during Y: signed by both sides and activated before Y ended, a term
  overlapping Y, not terminated or superseded before Y began (`evaluations.service.in_force_during`).
- commitments: U's own commitments (side `unit`) in the latest version of each of those agreements
  in force during Y. Promised counts the ones the records can check; kept, those of them that
  the records show kept by the end of Y:
  * project: the project named is completed (or evaluated), completed before Y ended;
  * resource: the resource named is committed to a project (project resource commitments made
    before Y ended and not released by then) for at least the promised quantity (any, when the
    commitment names none);
  * members_report: at least `members_count` (at least one, when none is named) of U's employees
    count in `members_reported` for Y.
  Activities and other commitments leave no record to check them by: they are counted apart
  (`commitments_other`), neither kept nor broken; the two-way evaluation rates them.
- projects_taken: projects whose lead unit is U and whose claim was recorded during Y, split by
  `projects.claim_method`: paired (first claim as a unit paired with the community), hall (claimed
  once open to the whole street), assigned (by staff).
- projects_completed: projects U leads that were completed during Y (completed or evaluated now).
- completion_rate: of the projects taken during Y, the share completed before Y ended; None when
  none were taken.
- evaluation_score: U's yearly score from the two-way evaluation (the communities' ratings of U,
  counted once revealed to both sides; `evaluations.service.yearly_scores`).
- members_reported: party members employed by U (`members.employer_unit_id`, as recorded now)
  whose member 双报到 reporting was accepted before Y ended and not deregistered before Y began.

A street's ranking orders its units by evaluation score, then commitments kept, projects
completed, completion rate and members reported (each highest first, a missing value last); units
with the same figures share a rank, and are listed by name.

A community C and year Y: agreements_active as above with C as party; commitments, C's own (side
`community`, projects and resources checkable as above, the rest counted apart); projects_completed,
C's projects completed during Y; evaluation_score, the units' revealed ratings of C; members and
units reported, the member and unit 双报到 reportings to C standing at some time during Y. Ranked
the same way (no completion rate).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, extract, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from gongjian.agreements.models import Agreement, AgreementCommitment, CommitmentKind, Side
from gongjian.core.access import Perm, Principal, ensure_org_in_scope, get_visible, in_subtree, require
from gongjian.core.errors import ProblemError
from gongjian.evaluations.models import EvaluationWindow
from gongjian.evaluations.service import (
    ancestor_paths,
    in_force_latest,
    local_year,
    year_bounds,
    yearly_scores,
)
from gongjian.members.models import Member, Reporting, ReportingKind, ReportingState
from gongjian.organizations.models import Organization, OrgLevel
from gongjian.projects.models import ClaimMethod, Project, ProjectState, ResourceCommitment
from gongjian.resident_units.models import ResidentUnit
from gongjian.standings.schemas import (
    CommunityRanking,
    CommunityStanding,
    CommunityStandingDetail,
    RankedCommunity,
    RankedUnit,
    UnitRanking,
    UnitStanding,
    UnitStandingDetail,
)

DONE_STATES = (ProjectState.completed, ProjectState.evaluated)
# How far back a history goes.
HISTORY_YEARS = 10


# --- the records ------------------------------------------------------------------------------


def _stood_during(year: int, kind: ReportingKind) -> ColumnElement[bool]:
    """Reportings of `kind` accepted before the year ended and not deregistered before it began."""
    start, end = year_bounds(year)
    return and_(
        Reporting.kind == kind,
        Reporting.state == ReportingState.accepted,
        func.coalesce(Reporting.decided_at, Reporting.created_at) < end,
        or_(Reporting.deregistered_at.is_(None), Reporting.deregistered_at >= start),
    )


async def _members_reported(
    session: AsyncSession, unit_ids: list[uuid.UUID], year: int
) -> dict[uuid.UUID, int]:
    stmt = (
        select(Member.employer_unit_id, func.count(func.distinct(Member.id)))
        .join(Reporting, Reporting.member_id == Member.id)
        .where(Member.employer_unit_id.in_(unit_ids), _stood_during(year, ReportingKind.member))
        .group_by(Member.employer_unit_id)
    )
    return {uid: n for uid, n in (await session.execute(stmt)) if uid is not None}


@dataclass
class _Commitment:
    party_id: uuid.UUID  # the unit or the community that promised
    kind: CommitmentKind
    project_id: uuid.UUID | None
    resource_id: uuid.UUID | None
    quantity: int | None
    members_count: int | None


async def _agreements(
    session: AsyncSession, party: Side, ids: list[uuid.UUID], year: int
) -> tuple[Counter[uuid.UUID], list[_Commitment]]:
    """Agreements in force during the year per party, and the party's own commitments in them."""
    # An amendment keeps the parties: filtering before picking each number's latest version is safe.
    of_party = Agreement.unit_id if party == Side.unit else Agreement.community_id
    agreement = aliased(Agreement, in_force_latest(year).where(of_party.in_(ids)).subquery())
    party_col = agreement.unit_id if party == Side.unit else agreement.community_id
    counted = await session.execute(select(party_col, func.count()).group_by(party_col))
    counts: Counter[uuid.UUID] = Counter(dict(counted.all()))
    rows = await session.execute(
        select(party_col, AgreementCommitment)
        .join(AgreementCommitment, AgreementCommitment.agreement_id == agreement.id)
        .where(AgreementCommitment.side == party)
    )
    commitments = [
        _Commitment(pid, CommitmentKind(c.kind), c.project_id, c.resource_id, c.quantity, c.members_count)
        for pid, c in rows
    ]
    return counts, commitments


async def _completed_projects(
    session: AsyncSession, project_ids: set[uuid.UUID], year: int
) -> set[uuid.UUID]:
    if not project_ids:
        return set()
    _, end = year_bounds(year)
    stmt = select(Project.id).where(
        Project.id.in_(sorted(project_ids)), Project.state.in_(DONE_STATES), Project.completed_at < end
    )
    return set((await session.execute(stmt)).scalars())


async def _committed_quantities(
    session: AsyncSession, resource_ids: set[uuid.UUID], year: int
) -> dict[uuid.UUID, int]:
    if not resource_ids:
        return {}
    _, end = year_bounds(year)
    stmt = (
        select(ResourceCommitment.resource_id, func.sum(ResourceCommitment.quantity))
        .where(
            ResourceCommitment.resource_id.in_(sorted(resource_ids)),
            ResourceCommitment.created_at < end,
            or_(ResourceCommitment.released_at.is_(None), ResourceCommitment.released_at >= end),
        )
        .group_by(ResourceCommitment.resource_id)
    )
    return {rid: int(q) for rid, q in (await session.execute(stmt))}


@dataclass
class _Kept:
    promised: Counter[uuid.UUID]
    kept: Counter[uuid.UUID]
    other: Counter[uuid.UUID]


async def _keeping(
    session: AsyncSession, commitments: list[_Commitment], year: int, members: dict[uuid.UUID, int] | None
) -> _Kept:
    """Promised, kept and unchecked commitments per party (see the module docstring). `members`:
    members reported per unit, when members_report commitments are checkable (the unit side)."""
    done = await _completed_projects(session, {c.project_id for c in commitments if c.project_id}, year)
    committed = await _committed_quantities(
        session, {c.resource_id for c in commitments if c.resource_id}, year
    )
    out = _Kept(Counter(), Counter(), Counter())
    for c in commitments:
        if c.kind == CommitmentKind.project and c.project_id is not None:
            kept = c.project_id in done
        elif c.kind == CommitmentKind.resource and c.resource_id is not None:
            kept = committed.get(c.resource_id, 0) >= (c.quantity or 1)
        elif c.kind == CommitmentKind.members_report and members is not None:
            kept = members.get(c.party_id, 0) >= max(c.members_count or 1, 1)
        else:
            out.other[c.party_id] += 1
            continue
        out.promised[c.party_id] += 1
        out.kept[c.party_id] += kept
    return out


async def _projects_taken(
    session: AsyncSession, unit_ids: list[uuid.UUID], year: int
) -> tuple[dict[uuid.UUID, Counter[str]], Counter[uuid.UUID]]:
    """Per unit: projects taken during the year by claim method, and how many of them were done
    by the year's end."""
    start, end = year_bounds(year)
    done = and_(Project.state.in_(DONE_STATES), Project.completed_at < end)
    stmt = (
        select(
            Project.lead_unit_id,
            Project.claim_method,
            func.count(),
            func.count().filter(done),
        )
        .where(Project.lead_unit_id.in_(unit_ids), Project.claimed_at >= start, Project.claimed_at < end)
        .group_by(Project.lead_unit_id, Project.claim_method)
    )
    taken: dict[uuid.UUID, Counter[str]] = defaultdict(Counter)
    completed: Counter[uuid.UUID] = Counter()
    for unit_id, method, n, n_done in await session.execute(stmt):
        if unit_id is None or method is None:
            continue
        taken[unit_id][str(method)] += n
        completed[unit_id] += n_done
    return taken, completed


async def _projects_completed(
    session: AsyncSession, column: Any, ids: list[uuid.UUID], year: int
) -> Counter[uuid.UUID]:
    start, end = year_bounds(year)
    stmt = (
        select(column, func.count())
        .where(
            column.in_(ids),
            Project.state.in_(DONE_STATES),
            Project.completed_at >= start,
            Project.completed_at < end,
        )
        .group_by(column)
    )
    return Counter(dict((await session.execute(stmt)).all()))


# --- units ------------------------------------------------------------------------------------


async def unit_standings(
    session: AsyncSession, units: Sequence[ResidentUnit], year: int
) -> list[UnitStanding]:
    """The standing of each unit for the year, in the order given (a few queries for all)."""
    ids = [u.id for u in units]
    if not ids:
        return []
    members = await _members_reported(session, ids, year)
    agreements, commitments = await _agreements(session, Side.unit, ids, year)
    keeping = await _keeping(session, commitments, year, members)
    taken, taken_done = await _projects_taken(session, ids, year)
    completed = await _projects_completed(session, Project.lead_unit_id, ids, year)
    scores = await yearly_scores(session, Side.unit, ids, [year])
    out = []
    for unit in units:
        methods = taken.get(unit.id, Counter())
        n_taken = sum(methods.values())
        score = scores.get((unit.id, year))
        out.append(
            UnitStanding(
                unit_id=unit.id,
                unit_name=unit.name,
                community_id=unit.community_id,
                year=year,
                agreements_active=agreements[unit.id],
                commitments_promised=keeping.promised[unit.id],
                commitments_kept=keeping.kept[unit.id],
                commitments_other=keeping.other[unit.id],
                projects_taken=n_taken,
                projects_taken_paired=methods[ClaimMethod.paired.value],
                projects_taken_hall=methods[ClaimMethod.hall.value],
                projects_taken_assigned=methods[ClaimMethod.assigned.value],
                projects_completed=completed[unit.id],
                completion_rate=round(taken_done[unit.id] / n_taken, 4) if n_taken else None,
                evaluation_score=score.score if score else None,
                members_reported=members.get(unit.id, 0),
            )
        )
    return out


def _desc(value: float | None) -> tuple[int, float]:
    """Highest first, a missing value after every present one."""
    return (1, 0.0) if value is None else (0, -value)


def _unit_key(s: UnitStanding) -> tuple[Any, ...]:
    return (
        _desc(s.evaluation_score),
        -s.commitments_kept,
        -s.projects_completed,
        _desc(s.completion_rate),
        -s.members_reported,
    )


S = TypeVar("S", UnitStanding, CommunityStanding)


def _ranked(
    standings: list[S], key: Callable[[S], tuple[Any, ...]], name: Callable[[S], str]
) -> list[tuple[int, S]]:
    """Competition ranking (1, 2, 2, 4): equal keys share a rank."""
    ordered = sorted(standings, key=lambda s: (key(s), name(s)))
    out: list[tuple[int, S]] = []
    for position, standing in enumerate(ordered, start=1):
        rank = out[-1][0] if out and key(out[-1][1]) == key(standing) else position
        out.append((rank, standing))
    return out


def _units_under(org: Organization) -> Select[Any]:
    communities = select(Organization.id).where(in_subtree(Organization.path, org.path))
    return select(ResidentUnit).where(ResidentUnit.community_id.in_(communities))


async def _ranking_org(
    session: AsyncSession, principal: Principal, street_id: uuid.UUID | None, community_id: uuid.UUID | None
) -> Organization:
    if (street_id is None) == (community_id is None):
        raise ProblemError(
            "validation_error",
            errors=[
                {
                    "loc": ["query", "street_id"],
                    "msg": "give street_id or community_id",
                    "type": "value_error",
                }
            ],
        )
    org_id = street_id or community_id
    assert org_id is not None
    org: Organization = await ensure_org_in_scope(session, principal, org_id, Perm.standings_read)
    if street_id is not None and org.level != OrgLevel.street:
        raise ProblemError("not_a_street")
    if community_id is not None and org.level != OrgLevel.community:
        raise ProblemError("not_a_community")
    return org


async def _rank_units(session: AsyncSession, org: Organization, year: int) -> list[tuple[int, UnitStanding]]:
    units = list((await session.execute(_units_under(org))).scalars())
    standings = await unit_standings(session, units, year)
    return _ranked(standings, _unit_key, lambda s: s.unit_name)


def _page(cursor: str | None, limit: int) -> tuple[int, Callable[[int], str | None]]:
    """Offset paging over a ranking (computed whole, for the ranks): the offset and a cursor maker."""
    offset = 0
    if cursor:
        try:
            offset = int(json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["o"])
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise ProblemError("invalid_cursor") from exc
        if offset < 0:
            raise ProblemError("invalid_cursor")

    def next_cursor(total: int) -> str | None:
        if offset + limit >= total:
            return None
        return base64.urlsafe_b64encode(json.dumps({"o": offset + limit}).encode()).decode().rstrip("=")

    return offset, next_cursor


async def unit_ranking(
    session: AsyncSession,
    principal: Principal,
    *,
    street_id: uuid.UUID | None,
    community_id: uuid.UUID | None,
    year: int | None,
    cursor: str | None,
    limit: int,
) -> UnitRanking:
    """The units of a street (street staff and above) or of a community (its staff) ranked."""
    require(principal, Perm.standings_read)
    org = await _ranking_org(session, principal, street_id, community_id)
    year = year or local_year()
    offset, next_cursor = _page(cursor, limit)
    ranked = await _rank_units(session, org, year)
    items = [RankedUnit(rank=r, **s.model_dump()) for r, s in ranked[offset : offset + limit]]
    return UnitRanking(org_id=org.id, year=year, items=items, next_cursor=next_cursor(len(ranked)))


async def _street_of(session: AsyncSession, community_id: uuid.UUID) -> Organization | None:
    path = (
        await session.execute(select(Organization.path).where(Organization.id == community_id))
    ).scalar_one()
    stmt = select(Organization).where(
        Organization.level == OrgLevel.street, Organization.path.in_(ancestor_paths(path))
    )
    return (await session.execute(stmt.order_by(Organization.depth.desc()).limit(1))).scalar_one_or_none()


async def _first_year(session: AsyncSession, unit_id: uuid.UUID) -> int | None:
    """The earliest year the unit's records speak of: an agreement's term, a claim, a window."""
    candidates = [
        select(func.min(extract("year", Agreement.term_from))).where(
            Agreement.unit_id == unit_id, Agreement.activated_at.is_not(None)
        ),
        select(func.min(extract("year", func.timezone("Asia/Shanghai", Project.claimed_at)))).where(
            Project.lead_unit_id == unit_id
        ),
        select(func.min(EvaluationWindow.year)).where(EvaluationWindow.unit_id == unit_id),
    ]
    years = [(await session.execute(stmt)).scalar_one_or_none() for stmt in candidates]
    found = [int(y) for y in years if y is not None]
    return min(found) if found else None


def _history_years(first: int | None, year: int) -> range:
    start = year if first is None else max(min(first, year), year - HISTORY_YEARS + 1)
    return range(start, year + 1)


async def unit_detail(
    session: AsyncSession, principal: Principal, unit_id: uuid.UUID, year: int | None
) -> UnitStandingDetail:
    """One unit's standing, its rank in its street, and its history (liaisons: their own unit)."""
    require(principal, Perm.standings_read)
    unit = await get_visible(
        session, ResidentUnit, unit_id, principal, Perm.standings_read, name="resident_unit"
    )
    year = year or local_year()
    street = await _street_of(session, unit.community_id)
    rank, ranked_count = None, 0
    if street is not None:
        ranked = await _rank_units(session, street, year)
        ranked_count = len(ranked)
        rank = next((r for r, s in ranked if s.unit_id == unit.id), None)
    history = []
    for y in _history_years(await _first_year(session, unit.id), year):
        history.extend(await unit_standings(session, [unit], y))
    return UnitStandingDetail(
        standing=history[-1],
        rank=rank,
        ranked=ranked_count,
        street_id=street.id if street else None,
        history=history,
    )


# --- communities --------------------------------------------------------------------------------


async def _reported_to(
    session: AsyncSession, ids: list[uuid.UUID], year: int, kind: ReportingKind
) -> Counter[uuid.UUID]:
    stmt = (
        select(Reporting.community_id, func.count())
        .where(Reporting.community_id.in_(ids), _stood_during(year, kind))
        .group_by(Reporting.community_id)
    )
    return Counter(dict((await session.execute(stmt)).all()))


async def community_standings(
    session: AsyncSession, communities: Sequence[Organization], year: int
) -> list[CommunityStanding]:
    ids = [c.id for c in communities]
    if not ids:
        return []
    agreements, commitments = await _agreements(session, Side.community, ids, year)
    keeping = await _keeping(session, commitments, year, None)
    completed = await _projects_completed(session, Project.org_id, ids, year)
    scores = await yearly_scores(session, Side.community, ids, [year])
    members = await _reported_to(session, ids, year, ReportingKind.member)
    units = await _reported_to(session, ids, year, ReportingKind.unit)
    out = []
    for community in communities:
        score = scores.get((community.id, year))
        out.append(
            CommunityStanding(
                community_id=community.id,
                community_name=community.name,
                year=year,
                agreements_active=agreements[community.id],
                commitments_promised=keeping.promised[community.id],
                commitments_kept=keeping.kept[community.id],
                commitments_other=keeping.other[community.id],
                projects_completed=completed[community.id],
                evaluation_score=score.score if score else None,
                members_reported=members[community.id],
                units_reported=units[community.id],
            )
        )
    return out


def _community_key(s: CommunityStanding) -> tuple[Any, ...]:
    return (_desc(s.evaluation_score), -s.commitments_kept, -s.projects_completed, -s.members_reported)


async def community_ranking(
    session: AsyncSession,
    principal: Principal,
    *,
    street_id: uuid.UUID,
    year: int | None,
    cursor: str | None,
    limit: int,
) -> CommunityRanking:
    require(principal, Perm.standings_read)
    street = await _ranking_org(session, principal, street_id, None)
    year = year or local_year()
    offset, next_cursor = _page(cursor, limit)
    communities = list(
        (
            await session.execute(
                select(Organization).where(
                    in_subtree(Organization.path, street.path), Organization.level == OrgLevel.community
                )
            )
        ).scalars()
    )
    ranked = _ranked(
        await community_standings(session, communities, year), _community_key, lambda s: s.community_name
    )
    items = [RankedCommunity(rank=r, **s.model_dump()) for r, s in ranked[offset : offset + limit]]
    return CommunityRanking(org_id=street.id, year=year, items=items, next_cursor=next_cursor(len(ranked)))


async def community_detail(
    session: AsyncSession, principal: Principal, community_id: uuid.UUID, year: int | None
) -> CommunityStandingDetail:
    require(principal, Perm.standings_read)
    community = await _ranking_org(session, principal, None, community_id)
    year = year or local_year()
    first = (
        await session.execute(
            select(func.min(extract("year", Agreement.term_from))).where(
                Agreement.community_id == community.id, Agreement.activated_at.is_not(None)
            )
        )
    ).scalar_one_or_none()
    history = []
    for y in _history_years(int(first) if first is not None else None, year):
        history.extend(await community_standings(session, [community], y))
    return CommunityStandingDetail(standing=history[-1], history=history)
