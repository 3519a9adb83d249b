"""Matching needs to resources: pools, runs, stored suggestions, accepting and dismissing.

A need is matched against the resources of its *pool*: everything published under its
street (街道), plus what the organizations above the street publish for the whole county.
Hard constraints (window, radius, capacity left) then decide what can actually serve it.

Suggestions are stored, one row per (need, resource): a run (or the first read of a need's
matches) computes them, and a need edited since is recomputed on read. A read re-checks the
hard constraints on today's data (a resource withdrawn or used up since drops out); resources
published since the last run join the ranking at the next run or when the need is edited.
Dismissed pairs are never proposed again; accepted ones turn into a project proposal.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.core import audit
from gongjian.core.access import Perm, Principal, ensure_org_in_scope, get_visible, in_subtree, require
from gongjian.core.db import sessionmaker
from gongjian.core.errors import illegal_transition
from gongjian.lists.models import OPEN_NEED_STATES, Need, NeedState, Resource, ResourceState
from gongjian.matching.engine import Match, Matcher, NeedInput, ResourceInput, haversine_km
from gongjian.matching.models import MatchRun, NeedMatchStatus, RunStatus, Suggestion, SuggestionState
from gongjian.organizations.models import Organization, OrgKind, OrgLevel

log = logging.getLogger("gongjian.matching")

STORED_PER_NEED = 10  # strong first, then weak ones, so `include_weak` reads from the store too
RUN_CHUNK = 500  # needs written per transaction during a run, so progress shows
USABLE_STATES = (ResourceState.available, ResourceState.partly_committed)


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- pools ----------------------------------------------------------------------------------------


def _ancestor_paths(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[: i + 1]) + "/" for i in range(len(parts))]


async def pool_root(session: AsyncSession, org: Organization) -> Organization:
    """The street above (or at) `org`: the nearest street-level org or working committee (街道党工委);
    without one, the org's parent (the tree above a community is not always labelled)."""
    ancestors = (
        (
            await session.execute(
                select(Organization)
                .where(Organization.path.in_(_ancestor_paths(org.path)))
                .order_by(Organization.depth)
            )
        )
        .scalars()
        .all()
    )
    streets = [a for a in ancestors if a.level == OrgLevel.street or a.kind == OrgKind.working_committee]
    if streets:
        return streets[-1]
    return ancestors[-2] if len(ancestors) > 1 else ancestors[-1]


def _pool_condition(root: Organization) -> ColumnElement[bool]:
    in_root = select(Organization.id).where(
        or_(in_subtree(Organization.path, root.path), Organization.path.in_(_ancestor_paths(root.path)))
    )
    return Resource.org_id.in_(in_root)


def resource_input(r: Resource) -> ResourceInput:
    return ResourceInput(
        key=r.id,
        category=r.category,
        title=r.title,
        description=r.description,
        available_from=r.available_from,
        available_to=r.available_to,
        lat=r.lat,
        lng=r.lng,
        serves_radius_km=r.serves_radius_km,
        remaining_quantity=r.remaining_quantity,
        usable=r.state in USABLE_STATES,
    )


def need_input(n: Need) -> NeedInput:
    return NeedInput(
        key=n.id,
        category=n.category,
        title=n.title,
        description=n.description,
        wanted_from=n.wanted_from,
        wanted_to=n.wanted_to,
        lat=n.lat,
        lng=n.lng,
        beneficiaries=n.beneficiaries,
    )


async def _pool_resources(session: AsyncSession, root: Organization) -> list[Resource]:
    stmt = select(Resource).where(
        _pool_condition(root), Resource.state.in_(USABLE_STATES), Resource.remaining_quantity > 0
    )
    return list((await session.execute(stmt)).scalars().all())


# -- storing suggestions --------------------------------------------------------------------------


async def _decided_pairs(session: AsyncSession, need_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, set[Any]]:
    rows = await session.execute(
        select(Suggestion.need_id, Suggestion.resource_id).where(
            Suggestion.need_id.in_(need_ids), Suggestion.state != SuggestionState.suggested
        )
    )
    decided: dict[uuid.UUID, set[Any]] = defaultdict(set)
    for need_id, resource_id in rows:
        decided[need_id].add(resource_id)
    return decided


async def _store(
    session: AsyncSession,
    needs: Sequence[Need],
    results: Sequence[Sequence[Match]],
    run_id: uuid.UUID | None,
) -> int:
    need_ids = [n.id for n in needs]
    decided = await _decided_pairs(session, need_ids)
    await session.execute(
        delete(Suggestion).where(
            Suggestion.need_id.in_(need_ids), Suggestion.state == SuggestionState.suggested
        )
    )
    rows: list[dict[str, Any]] = []
    now = utcnow()
    for need, matches in zip(needs, results, strict=True):
        kept = [m for m in matches if m.resource_key not in decided.get(need.id, set())][:STORED_PER_NEED]
        rows.extend(
            {
                "id": uuid.uuid4(),
                "need_id": need.id,
                "resource_id": m.resource_key,
                "org_id": need.org_id,
                "run_id": run_id,
                "score": m.score,
                "weak": m.weak,
                "explanation": m.explanation,
                "state": SuggestionState.suggested.value,
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
            for m in kept
        )
    if rows:
        stmt = insert(Suggestion).on_conflict_do_nothing(index_elements=["need_id", "resource_id"])
        await session.execute(stmt, rows)
    status_rows = [{"need_id": n.id, "matched_at": now, "run_id": run_id} for n in needs]
    upsert = insert(NeedMatchStatus).values(status_rows)
    await session.execute(
        upsert.on_conflict_do_update(
            index_elements=["need_id"], set_={"matched_at": upsert.excluded.matched_at, "run_id": run_id}
        )
    )
    return sum(1 for r in rows if not r["weak"])


async def _matcher(session: AsyncSession, root: Organization) -> Matcher:
    resources = await _pool_resources(session, root)
    # Reading thousands of texts is CPU work: off the event loop the API shares with the worker.
    return await asyncio.to_thread(Matcher, [resource_input(r) for r in resources])


async def _rank(matcher: Matcher, needs: Sequence[Need], extra: int) -> list[list[Match]]:
    inputs = [need_input(n) for n in needs]
    return await asyncio.to_thread(matcher.rank, inputs, STORED_PER_NEED + extra, include_weak=True)


async def match_needs(
    session: AsyncSession,
    needs: Sequence[Need],
    run_id: uuid.UUID | None = None,
    matchers: dict[uuid.UUID, Matcher] | None = None,
) -> int:
    """Compute and store the suggestions of `needs` (any pools). Returns the strong suggestions stored.

    `matchers` caches one index per pool across calls (a run builds each pool's index once)."""
    matchers = {} if matchers is None else matchers
    orgs = {
        o.id: o
        for o in (
            await session.execute(select(Organization).where(Organization.id.in_({n.org_id for n in needs})))
        ).scalars()
    }
    roots: dict[uuid.UUID, Organization] = {}
    groups: dict[uuid.UUID, tuple[Organization, list[Need]]] = {}
    for need in needs:
        if need.org_id not in roots:
            roots[need.org_id] = await pool_root(session, orgs[need.org_id])
        root = roots[need.org_id]
        groups.setdefault(root.id, (root, []))[1].append(need)
    stored = 0
    for root, group in groups.values():
        if root.id not in matchers:
            matchers[root.id] = await _matcher(session, root)
        decided = await _decided_pairs(session, [n.id for n in group])
        widest = max((len(v) for v in decided.values()), default=0)
        stored += await _store(session, group, await _rank(matchers[root.id], group, widest), run_id)
    return stored


async def _needs_computing(session: AsyncSession, need: Need) -> bool:
    status = await session.get(NeedMatchStatus, need.id)
    return status is None or status.matched_at < need.updated_at


async def _match_one(session: AsyncSession, need: Need) -> None:
    """A need's first ranking, or after an edit: against the part of its pool whose window overlaps."""
    org = await session.get(Organization, need.org_id)
    assert org is not None
    root = await pool_root(session, org)
    stmt = select(Resource).where(
        _pool_condition(root),
        Resource.state.in_(USABLE_STATES),
        Resource.remaining_quantity > 0,
        Resource.available_from <= need.wanted_to,
        Resource.available_to >= need.wanted_from,
    )
    resources = list((await session.execute(stmt)).scalars().all())
    matcher = await asyncio.to_thread(Matcher, [resource_input(r) for r in resources])
    decided = await _decided_pairs(session, [need.id])
    await _store(session, [need], await _rank(matcher, [need], len(decided.get(need.id, ()))), None)


def _still_serves(need: Need, resource: Resource) -> bool:
    """The hard constraints again, on today's data: a resource may have changed since the run."""
    if resource.state not in USABLE_STATES or resource.remaining_quantity <= 0:
        return False
    if resource.available_from > need.wanted_to or resource.available_to < need.wanted_from:
        return False
    if resource.serves_radius_km is None:
        return True
    if None in (need.lat, need.lng, resource.lat, resource.lng):
        return False
    return bool(haversine_km(need.lat, need.lng, resource.lat, resource.lng) <= resource.serves_radius_km)


# -- reading a need's matches ---------------------------------------------------------------------


async def need_matches(
    session: AsyncSession, principal: Principal, need_id: uuid.UUID, *, limit: int, include_weak: bool
) -> tuple[Need, list[tuple[Suggestion, Resource]]]:
    need = await get_visible(session, Need, need_id, principal, Perm.lists_read, name="need")
    if need.state in OPEN_NEED_STATES:
        # One computation per need at a time; a concurrent reader waits and then reads the result.
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"match:{need.id}"})
        if await _needs_computing(session, need):
            await _match_one(session, need)
    stmt = (
        select(Suggestion, Resource)
        .join(Resource, Resource.id == Suggestion.resource_id)
        .where(Suggestion.need_id == need.id, Suggestion.state != SuggestionState.dismissed)
        .order_by(Suggestion.weak, Suggestion.score.desc(), Resource.id)
    )
    if not include_weak:
        stmt = stmt.where(Suggestion.weak.is_(False))
    rows = [
        (s, r)
        for s, r in (await session.execute(stmt)).all()
        if s.state != "suggested" or _still_serves(need, r)
    ]
    return need, rows[:limit]


# -- runs -----------------------------------------------------------------------------------------


async def create_run(session: AsyncSession, principal: Principal, org_id: uuid.UUID) -> MatchRun:
    require(principal, Perm.lists_write)
    await ensure_org_in_scope(session, principal, org_id, Perm.lists_write)
    run = MatchRun(org_id=org_id, status=RunStatus.queued, requested_by=principal.id)
    session.add(run)
    await session.flush()
    await audit.record(session, principal, "matching.run", "match_run", run.id, org_id=org_id)
    return run


async def get_run(session: AsyncSession, principal: Principal, run_id: uuid.UUID) -> MatchRun:
    return await get_visible(session, MatchRun, run_id, principal, Perm.lists_read, name="match_run")


async def execute_run(run_id: uuid.UUID) -> None:
    """The job: match every open need under the run's organization, committing as it goes."""
    maker = sessionmaker()
    async with maker() as session:
        run = await session.get(MatchRun, run_id, with_for_update=True)
        if run is None or run.status not in (RunStatus.queued, RunStatus.running):
            return
        org = await session.get(Organization, run.org_id)
        assert org is not None
        need_ids = list(
            (
                await session.execute(
                    select(Need.id)
                    .join(Organization, Organization.id == Need.org_id)
                    .where(
                        in_subtree(Organization.path, org.path),
                        Need.state.in_(OPEN_NEED_STATES),
                        # a need linked as a repeat of another is served through the original
                        Need.duplicate_of_id.is_(None),
                    )
                    .order_by(Need.created_at, Need.id)
                )
            ).scalars()
        )
        run.status, run.started_at = RunStatus.running, utcnow()
        run.needs_total, run.needs_done, run.suggestions_count = len(need_ids), 0, 0
        await session.commit()
    matchers: dict[uuid.UUID, Matcher] = {}
    try:
        for start in range(0, len(need_ids), RUN_CHUNK):
            async with maker() as session:
                chunk = list(
                    (
                        await session.execute(
                            select(Need).where(Need.id.in_(need_ids[start : start + RUN_CHUNK]))
                        )
                    )
                    .scalars()
                    .all()
                )
                stored = await match_needs(session, chunk, run_id, matchers) if chunk else 0
                await session.execute(
                    update(MatchRun)
                    .where(MatchRun.id == run_id)
                    .values(
                        needs_done=MatchRun.needs_done + len(need_ids[start : start + RUN_CHUNK]),
                        suggestions_count=MatchRun.suggestions_count + stored,
                    )
                )
                await session.commit()
        async with maker() as session:
            without = await session.scalar(
                select(func.count())
                .select_from(NeedMatchStatus)
                .where(
                    NeedMatchStatus.run_id == run_id,
                    ~select(Suggestion.id)
                    .where(Suggestion.need_id == NeedMatchStatus.need_id, Suggestion.weak.is_(False))
                    .exists(),
                )
            )
            await session.execute(
                update(MatchRun)
                .where(MatchRun.id == run_id)
                .values(status=RunStatus.completed, finished_at=utcnow(), needs_without_match=without or 0)
            )
            await session.commit()
    except Exception as exc:
        log.exception("matching run %s failed", run_id)
        async with maker() as session:
            await session.execute(
                update(MatchRun)
                .where(MatchRun.id == run_id)
                .values(status=RunStatus.failed, finished_at=utcnow(), error=str(exc)[:1000])
            )
            await session.commit()
        raise


# -- deciding on a suggestion ---------------------------------------------------------------------


async def _decidable(
    session: AsyncSession, principal: Principal, suggestion_id: uuid.UUID, action: str
) -> Suggestion:
    # The row lock makes two staff deciding at once take turns: the second sees the first's decision.
    suggestion = await get_visible(
        session, Suggestion, suggestion_id, principal, Perm.lists_write, name="suggestion", for_update=True
    )
    if suggestion.state != SuggestionState.suggested:
        raise illegal_transition(suggestion.state, action)
    return suggestion


async def accept(
    session: AsyncSession,
    principal: Principal,
    suggestion_id: uuid.UUID,
    *,
    quantity: int | None,
    title: str | None,
) -> Suggestion:
    from gongjian.lists import service as lists_service
    from gongjian.projects import service as projects_service

    suggestion = await _decidable(session, principal, suggestion_id, "accept")
    need = await session.get(Need, suggestion.need_id, with_for_update=True)
    resource = await session.get(Resource, suggestion.resource_id)
    assert need is not None and resource is not None
    if need.state not in OPEN_NEED_STATES:
        raise illegal_transition(need.state, "accept_match")
    if need.state == NeedState.collected:
        await lists_service.set_need_state(
            session, need, NeedState.accepted, by=principal, reason="采纳匹配建议"
        )
    if need.state == NeedState.accepted:
        await lists_service.set_need_state(
            session, need, NeedState.matched, by=principal, reason="采纳匹配建议"
        )
    project = await projects_service.propose_from_match(
        session, principal, need=need, resource=resource, quantity=quantity, title=title
    )
    suggestion.state = SuggestionState.accepted
    suggestion.decided_by, suggestion.decided_at = principal.id, utcnow()
    suggestion.project_id = project.id
    await session.flush()
    await audit.record(
        session, principal, "suggestion.accept", "suggestion", suggestion.id, org_id=need.org_id
    )
    return suggestion


async def dismiss(
    session: AsyncSession, principal: Principal, suggestion_id: uuid.UUID, reason: str
) -> Suggestion:
    suggestion = await _decidable(session, principal, suggestion_id, "dismiss")
    suggestion.state = SuggestionState.dismissed
    suggestion.decided_by, suggestion.decided_at, suggestion.reason = principal.id, utcnow(), reason
    await session.flush()
    await audit.record(
        session,
        principal,
        "suggestion.dismiss",
        "suggestion",
        suggestion.id,
        org_id=suggestion.org_id,
        reason=reason,
    )
    return suggestion
