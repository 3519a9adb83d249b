"""Projects: the rules, the state machine, the claim hall and the audit trail.

Called from other packages:
- `propose_from_match(session, principal, need=..., resource=..., quantity=..., title=...)`: the
  matching engine's accepted suggestion becomes a proposed project (matching).
- `apply_decision(session, principal, project, outcome, decision_id=..., note=...)`: the only way
  a project becomes approved or rejected (meetings; the caller holds the project's row lock).
- `lock(session, project_id)`: that row lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, delete, exists, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.agreements.models import Agreement
from gongjian.auth.models import User
from gongjian.core import audit
from gongjian.core.access import (
    Perm,
    Principal,
    ensure_org_in_scope,
    get_visible,
    grants_condition,
    in_subtree,
    require,
    scope_condition,
    visible,
)
from gongjian.core.config import get_settings
from gongjian.core.db import contains, utcnow
from gongjian.core.errors import ProblemError, illegal_transition, not_found
from gongjian.lists import service as lists
from gongjian.lists.models import Need, NeedState, Resource
from gongjian.meetings.models import Decision, DecisionOutcome, Meeting
from gongjian.organizations.models import Organization, OrgLevel
from gongjian.projects.models import (
    CLAIMABLE_STATES,
    ClaimMethod,
    Milestone,
    ProgressEntry,
    Project,
    ProjectNeed,
    ProjectState,
    ProjectUnit,
    ResourceCommitment,
    in_project_street,
    liaison_reach,
    open_in_hall,
    paired_units,
)
from gongjian.projects.schemas import (
    CommitmentCreate,
    CommitmentOut,
    DecisionTrace,
    LinkedNeed,
    MeetingRef,
    MilestoneCreate,
    MilestoneOut,
    MilestoneUpdate,
    ProgressCreate,
    ProjectCreate,
    ProjectDetail,
    ProjectOut,
    ProjectResult,
    ProjectTransition,
    ProjectUpdate,
)
from gongjian.resident_units.models import ResidentUnit

LOCAL_TZ = ZoneInfo("Asia/Shanghai")

S = ProjectState
TRANSITIONS: dict[ProjectState, frozenset[ProjectState]] = {
    S.proposed: frozenset({S.approved, S.rejected, S.cancelled}),
    S.approved: frozenset({S.in_progress, S.cancelled}),
    S.in_progress: frozenset({S.completed, S.cancelled}),
    S.completed: frozenset({S.evaluated}),
    S.evaluated: frozenset(),
    S.rejected: frozenset(),
    S.cancelled: frozenset(),
}
# Reached only through a meeting decision (`apply_decision`), never through `transition`.
DECIDED_BY_MEETING = frozenset({S.approved, S.rejected})
ACTIONS: dict[ProjectState, str] = {
    S.approved: "approve",
    S.rejected: "reject",
    S.in_progress: "start",
    S.completed: "complete",
    S.evaluated: "evaluate",
    S.cancelled: "cancel",
}
# While the work is still ahead or under way its details, needs, commitments and milestones change.
EDITABLE_STATES = frozenset({S.proposed, S.approved, S.in_progress})


def _field_error(field: str, msg: str) -> ProblemError:
    return ProblemError(
        "validation_error", errors=[{"loc": ["body", field], "msg": msg, "type": "value_error"}]
    )


# --- loading ------------------------------------------------------------------------------


async def get(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID, perm: Perm = Perm.lists_read
) -> Project:
    return await get_visible(session, Project, project_id, principal, perm, name="project")


async def lock(session: AsyncSession, project_id: uuid.UUID) -> Project:
    """The project row, locked for this transaction and read afresh.

    Locked by id only, after the caller's visibility check: a scope condition that depends on the
    row (the hall: "not yet claimed") would otherwise hide the row from whoever waited for the lock,
    answering 404 where the truth is "someone else was first" (409)."""
    stmt = (
        select(Project)
        .where(Project.id == project_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one()


async def load_for_write(session: AsyncSession, principal: Principal, project_id: uuid.UUID) -> Project:
    """A project the principal manages (`projects:write` in its scope), locked."""
    project = await get(session, principal, project_id, Perm.projects_write)
    return await lock(session, project.id)


def _editable(project: Project, action: str) -> None:
    if project.state not in EDITABLE_STATES:
        raise illegal_transition(str(project.state), action)


async def _subtree_condition(session: AsyncSession, column: Any, org_id: uuid.UUID) -> Any:
    path = (await session.execute(select(Organization.path).where(Organization.id == org_id))).scalar()
    if path is None:
        return false()
    return column.in_(select(Organization.id).where(in_subtree(Organization.path, path)))


def list_query_base(principal: Principal) -> Select[Any]:
    return visible(select(Project), Project, principal, Perm.lists_read)


async def list_query(
    session: AsyncSession,
    principal: Principal,
    *,
    org_id: uuid.UUID | None = None,
    state: ProjectState | None = None,
    unit_id: uuid.UUID | None = None,
    q: str | None = None,
) -> Select[Any]:
    stmt = list_query_base(principal)
    if org_id is not None:
        stmt = stmt.where(await _subtree_condition(session, Project.org_id, org_id))
    if state is not None:
        stmt = stmt.where(Project.state == state)
    if unit_id is not None:
        joint = select(ProjectUnit.project_id).where(ProjectUnit.unit_id == unit_id)
        stmt = stmt.where(or_(Project.lead_unit_id == unit_id, Project.id.in_(joint)))
    if q:
        stmt = stmt.where(contains(Project.title, q) | contains(Project.description, q))
    return stmt


def _liaison_units(principal: Principal, perm: Perm) -> set[uuid.UUID]:
    return {g.unit_id for g in principal.grants_for(perm) if g.unit_id is not None}


def hall_query(principal: Principal) -> Select[Any]:
    """What may be claimed now: for a liaison, what its unit may claim (paired first, then the
    whole street); for staff, the unclaimed projects in their scope."""
    require(principal, Perm.lists_read)
    conditions = []
    units = _liaison_units(principal, Perm.projects_claim)
    if units:
        conditions.append(open_in_hall(frozenset(units)))
    org_grants = [g for g in principal.grants_for(Perm.lists_read) if g.unit_id is None]
    if org_grants:
        conditions.append(
            grants_condition(Project, principal, org_grants)
            & Project.lead_unit_id.is_(None)
            & Project.state.in_(CLAIMABLE_STATES)
        )
    return select(Project).where(or_(*conditions) if conditions else false())


# --- output -------------------------------------------------------------------------------


async def _joint_units(
    session: AsyncSession, project_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[uuid.UUID]]:
    out: dict[uuid.UUID, list[uuid.UUID]] = {pid: [] for pid in project_ids}
    if project_ids:
        rows = await session.execute(
            select(ProjectUnit.project_id, ProjectUnit.unit_id)
            .where(ProjectUnit.project_id.in_(project_ids))
            .order_by(ProjectUnit.unit_id)
        )
        for project_id, unit_id in rows:
            out[project_id].append(unit_id)
    return out


def _out_fields(project: Project, joint: list[uuid.UUID]) -> dict[str, Any]:
    return {
        "id": project.id,
        "org_id": project.org_id,
        "title": project.title,
        "description": project.description,
        "state": project.state,
        "lead_unit_id": project.lead_unit_id,
        "claim_method": project.claim_method,
        "claimed_by": project.claimed_by,
        "claimed_at": project.claimed_at,
        "street_opens_at": project.street_opens_at,
        "joint_unit_ids": joint,
        "responsible_name": project.responsible_name,
        "responsible_user_id": project.responsible_user_id,
        "budget": project.budget,
        "plan_from": project.plan_from,
        "plan_to": project.plan_to,
        "state_reason": project.state_reason,
        "state_changed_by": project.state_changed_by,
        "state_changed_at": project.state_changed_at,
        "created_by": project.created_by,
        "version": project.version,
        "created_at": project.created_at,
        "updated_at": project.updated_at,
    }


async def to_out_many(session: AsyncSession, projects: Sequence[Project]) -> list[ProjectOut]:
    joint = await _joint_units(session, [p.id for p in projects])
    return [ProjectOut(**_out_fields(p, joint[p.id])) for p in projects]


async def _linked_needs(session: AsyncSession, project_id: uuid.UUID) -> list[LinkedNeed]:
    rows = await session.execute(
        select(Need, ProjectNeed.linked_at)
        .join(ProjectNeed, ProjectNeed.need_id == Need.id)
        .where(ProjectNeed.project_id == project_id)
        .order_by(ProjectNeed.linked_at, Need.id)
        .execution_options(populate_existing=True)
    )
    return [
        LinkedNeed(
            id=need.id,
            org_id=need.org_id,
            title=need.title,
            category=need.category,
            state=need.state,
            external_ref=need.external_ref,
            linked_at=linked_at,
        )
        for need, linked_at in rows
    ]


async def _commitments(session: AsyncSession, project_id: uuid.UUID) -> list[CommitmentOut]:
    rows = await session.execute(
        select(ResourceCommitment, Resource.title, Resource.provider_name, Resource.quantity_unit)
        .join(Resource, Resource.id == ResourceCommitment.resource_id)
        .where(ResourceCommitment.project_id == project_id)
        .order_by(ResourceCommitment.created_at, ResourceCommitment.id)
    )
    return [
        CommitmentOut(
            id=c.id,
            resource_id=c.resource_id,
            resource_title=title,
            provider_name=provider,
            quantity=c.quantity,
            quantity_unit=unit,
            created_by=c.created_by,
            created_at=c.created_at,
            released_at=c.released_at,
            released_by=c.released_by,
            release_reason=c.release_reason,
        )
        for c, title, provider, unit in rows
    ]


async def decisions_of(session: AsyncSession, project_id: uuid.UUID) -> list[DecisionTrace]:
    rows = await session.execute(
        select(Decision, Meeting)
        .join(Meeting, Meeting.id == Decision.meeting_id)
        .where(Decision.project_id == project_id)
        .order_by(Decision.decided_at, Decision.id)
    )
    return [
        DecisionTrace(
            decision_id=d.id,
            agenda_item_id=d.agenda_item_id,
            outcome=d.outcome,
            note=d.note,
            votes_for=d.votes_for,
            votes_against=d.votes_against,
            votes_abstain=d.votes_abstain,
            decided_by=d.decided_by,
            decided_at=d.decided_at,
            meeting=MeetingRef(
                id=m.id,
                org_id=m.org_id,
                kind=m.kind,
                title=m.title,
                scheduled_at=m.scheduled_at,
                held_at=m.held_at,
            ),
        )
        for d, m in rows
    ]


async def to_detail(session: AsyncSession, project: Project) -> ProjectDetail:
    joint = await _joint_units(session, [project.id])
    milestones = (
        await session.execute(
            select(Milestone)
            .where(Milestone.project_id == project.id)
            .order_by(Milestone.due_on.asc().nulls_last(), Milestone.created_at, Milestone.id)
        )
    ).scalars()
    percent = (
        await session.execute(
            select(ProgressEntry.percent)
            .where(ProgressEntry.project_id == project.id, ProgressEntry.percent.is_not(None))
            .order_by(ProgressEntry.created_at.desc(), ProgressEntry.id.desc())
            .limit(1)
        )
    ).scalar()
    decisions = await decisions_of(session, project.id)
    deciding = [d for d in decisions if d.outcome != DecisionOutcome.defer]
    return ProjectDetail(
        **_out_fields(project, joint[project.id]),
        needs=await _linked_needs(session, project.id),
        commitments=await _commitments(session, project.id),
        milestones=[MilestoneOut.model_validate(m) for m in milestones],
        progress_percent=percent,
        decision=deciding[-1] if deciding else None,
        decisions=decisions,
        result=ProjectResult(
            completion_note=project.completion_note,
            completed_at=project.completed_at,
            completed_by=project.completed_by,
            evaluation_rating=project.evaluation_rating,
            evaluation_note=project.evaluation_note,
            evaluated_at=project.evaluated_at,
            evaluated_by=project.evaluated_by,
        ),
    )


# --- checks on what a project refers to ---------------------------------------------------


async def _project_org(session: AsyncSession, principal: Principal, org_id: uuid.UUID) -> Organization:
    org: Organization = await ensure_org_in_scope(session, principal, org_id, Perm.projects_write)
    if org.level not in (OrgLevel.community, OrgLevel.street):
        raise ProblemError("invalid_project_org")
    return org


async def _street_path(session: AsyncSession, org_id: uuid.UUID) -> str:
    """The path of the street the org belongs to (the org's own, when it has no street above)."""
    org_path = (
        await session.execute(select(Organization.path).where(Organization.id == org_id))
    ).scalar_one()
    street = (
        await session.execute(
            select(Organization.path).where(
                Organization.level == OrgLevel.street, func.starts_with(org_path, Organization.path)
            )
        )
    ).scalar()
    return street or org_path


async def _check_units(
    session: AsyncSession, project_org_id: uuid.UUID, unit_ids: Iterable[uuid.UUID]
) -> None:
    """Lead and joint units are resident units of the project's street; any other answers as missing."""
    wanted = set(unit_ids)
    if not wanted:
        return
    street = await _street_path(session, project_org_id)
    found = set(
        (
            await session.execute(
                select(ResidentUnit.id)
                .join(Organization, Organization.id == ResidentUnit.community_id)
                .where(ResidentUnit.id.in_(wanted), in_subtree(Organization.path, street))
            )
        ).scalars()
    )
    if wanted - found:
        raise not_found("resident_unit")


async def _check_user(session: AsyncSession, user_id: uuid.UUID | None) -> None:
    if (
        user_id is not None
        and (await session.execute(select(User.id).where(User.id == user_id))).first() is None
    ):
        raise not_found("user")


async def _lock_need(session: AsyncSession, principal: Principal, need_id: uuid.UUID) -> Need:
    """The need, if the principal sees it, locked and read afresh: a copy already in the session
    (the matching engine's) would otherwise hide a move made meanwhile by whoever held the lock."""
    await lists.get_need(session, principal, need_id)
    stmt = select(Need).where(Need.id == need_id).with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one()


async def _need_for_link(
    session: AsyncSession, principal: Principal, project: Project, need_id: uuid.UUID
) -> Need:
    """The need, locked, if the principal sees it and it lies under the project's org."""
    need = await _lock_need(session, principal, need_id)
    path = (
        await session.execute(select(Organization.path).where(Organization.id == need.org_id))
    ).scalar_one()
    project_path = (
        await session.execute(select(Organization.path).where(Organization.id == project.org_id))
    ).scalar_one()
    if not path.startswith(project_path):
        raise ProblemError("need_outside_project_org")
    return need


# --- creating -----------------------------------------------------------------------------


async def _link_need(session: AsyncSession, principal: Principal, project: Project, need: Need) -> None:
    linked = select(ProjectNeed.need_id).where(
        ProjectNeed.project_id == project.id, ProjectNeed.need_id == need.id
    )
    if (await session.execute(linked)).first() is not None:
        raise ProblemError("duplicate", object="project_need")
    # A need is in one project at a time: taking it in from any other state than an open one is a 409.
    await lists.set_need_state(
        session, need, NeedState.in_project, by=principal, reason=f"project {project.id}"
    )
    session.add(ProjectNeed(project_id=project.id, need_id=need.id, linked_by=principal.id))
    await session.flush()


async def _commit(
    session: AsyncSession, principal: Principal, project: Project, resource_id: uuid.UUID, quantity: int
) -> ResourceCommitment:
    await lists.reserve_quantity(session, resource_id, quantity, by=principal)
    commitment = ResourceCommitment(
        project_id=project.id, resource_id=resource_id, quantity=quantity, created_by=principal.id
    )
    session.add(commitment)
    await session.flush()
    return commitment


async def _new_project(
    session: AsyncSession, principal: Principal, org: Organization, fields: dict[str, Any]
) -> Project:
    window = timedelta(hours=get_settings().project_claim_window_hours)
    project = Project(
        org_id=org.id,
        state=ProjectState.proposed,
        street_opens_at=utcnow() + window,
        created_by=principal.id,
        **fields,
    )
    session.add(project)
    await session.flush()
    return project


def _assign_lead(project: Project, principal: Principal, unit_id: uuid.UUID, method: ClaimMethod) -> None:
    project.lead_unit_id = unit_id
    project.claim_method = method
    project.claimed_by = principal.id
    project.claimed_at = utcnow()


async def create(session: AsyncSession, principal: Principal, data: ProjectCreate) -> Project:
    require(principal, Perm.projects_write)
    org = await _project_org(session, principal, data.org_id)
    if len(set(data.need_ids)) != len(data.need_ids):
        raise _field_error("need_ids", "a need is listed twice")
    joint = set(data.joint_unit_ids)
    if data.lead_unit_id is not None and data.lead_unit_id in joint:
        raise _field_error("joint_unit_ids", "the lead unit is not also a joint unit")
    await _check_units(session, org.id, joint | ({data.lead_unit_id} if data.lead_unit_id else set()))
    await _check_user(session, data.responsible_user_id)
    project = await _new_project(
        session,
        principal,
        org,
        {
            "title": data.title,
            "description": data.description,
            "responsible_name": data.responsible_name,
            "responsible_user_id": data.responsible_user_id,
            "budget": data.budget,
            "plan_from": data.plan_from,
            "plan_to": data.plan_to,
        },
    )
    if data.lead_unit_id is not None:
        _assign_lead(project, principal, data.lead_unit_id, ClaimMethod.assigned)
    session.add_all(ProjectUnit(project_id=project.id, unit_id=u) for u in sorted(joint))
    session.add_all(Milestone(project_id=project.id, title=m.title, due_on=m.due_on) for m in data.milestones)
    await session.flush()
    for need_id in data.need_ids:
        await _link_need(
            session, principal, project, await _need_for_link(session, principal, project, need_id)
        )
    for c in data.commitments:
        await _check_resource(session, principal, c.resource_id)
        await _commit(session, principal, project, c.resource_id, c.quantity)
    await audit.record(
        session,
        principal,
        "project.propose",
        "project",
        project.id,
        org_id=project.org_id,
        after={
            **audit.snapshot(project),
            "need_ids": [str(n) for n in data.need_ids],
            "commitments": [c.model_dump(mode="json") for c in data.commitments],
            "joint_unit_ids": [str(u) for u in sorted(joint)],
        },
    )
    return project


async def _check_resource(session: AsyncSession, principal: Principal, resource_id: uuid.UUID) -> None:
    await lists.get_resource(session, principal, resource_id)


async def propose_from_match(
    session: AsyncSession,
    principal: Principal,
    *,
    need: Need,
    resource: Resource,
    quantity: int | None,
    title: str | None,
) -> Project:
    """A proposed project from an accepted match: the need linked (→ in_project) and, when
    `quantity` is given, that much of the resource committed.

    Safe under the caller's lock on the suggestion: it takes the need's row lock (a need taken into
    a project by someone else meanwhile answers 409) and reserves with the guarded UPDATE; it never
    commits, and runs in a savepoint, so a refusal leaves nothing behind even if the caller goes on."""
    require(principal, Perm.projects_write)
    async with session.begin_nested():
        org = await _project_org(session, principal, need.org_id)
        locked = await _lock_need(session, principal, need.id)
        name = (title or "").strip() or need.title
        project = await _new_project(
            session,
            principal,
            org,
            {
                "title": name[:200],
                "description": need.description,
                "plan_from": need.wanted_from,
                "plan_to": need.wanted_to,
            },
        )
        await _link_need(session, principal, project, locked)
        if quantity is not None:
            await _commit(session, principal, project, resource.id, quantity)
        await audit.record(
            session,
            principal,
            "project.propose",
            "project",
            project.id,
            org_id=project.org_id,
            after={
                **audit.snapshot(project),
                "need_ids": [str(need.id)],
                "commitments": [{"resource_id": str(resource.id), "quantity": quantity}] if quantity else [],
            },
            reason=f"accepted match: need {need.id}, resource {resource.id}",
        )
    return project


# --- editing ------------------------------------------------------------------------------


async def update(
    session: AsyncSession, principal: Principal, project: Project, data: ProjectUpdate
) -> Project:
    _editable(project, "update")
    changes = data.model_dump(exclude_unset=True)
    for key in ("title", "description"):
        if key in changes and changes[key] is None:
            raise _field_error(key, "may not be null")
    plan_from = changes.get("plan_from", project.plan_from)
    plan_to = changes.get("plan_to", project.plan_to)
    if plan_from is not None and plan_to is not None and plan_to < plan_from:
        raise _field_error("plan_to" if "plan_to" in changes else "plan_from", "plan_to is before plan_from")
    joint = changes.pop("joint_unit_ids", None)
    if joint is not None:
        if project.lead_unit_id in joint:
            raise _field_error("joint_unit_ids", "the lead unit is not also a joint unit")
        await _check_units(session, project.org_id, joint)
    if changes.get("responsible_user_id") is not None:
        await _check_user(session, changes["responsible_user_id"])
    before = {
        **audit.snapshot(project),
        "joint_unit_ids": [str(u) for u in (await _joint_units(session, [project.id]))[project.id]],
    }
    if joint is not None:
        # Before the project's own changes: the DELETE's autoflush must not write them separately.
        await session.execute(delete(ProjectUnit).where(ProjectUnit.project_id == project.id))
        session.add_all(ProjectUnit(project_id=project.id, unit_id=u) for u in sorted(set(joint)))
        project.updated_at = utcnow()  # the joint units are part of the project: a new version
    for key, value in changes.items():
        setattr(project, key, value)
    await session.flush()
    await audit.record(
        session,
        principal,
        "project.update",
        "project",
        project.id,
        org_id=project.org_id,
        before=before,
        after={**audit.snapshot(project), "joint_unit_ids": [str(u) for u in sorted(set(joint or []))]}
        if joint is not None
        else audit.snapshot(project),
    )
    return project


async def link_need(
    session: AsyncSession, principal: Principal, project: Project, need_id: uuid.UUID
) -> None:
    _editable(project, "link_need")
    need = await _need_for_link(session, principal, project, need_id)
    await _link_need(session, principal, project, need)
    await _touch(session, project)
    await audit.record(
        session,
        principal,
        "project.link_need",
        "project",
        project.id,
        org_id=project.org_id,
        after={"need_id": str(need_id)},
    )


async def unlink_need(
    session: AsyncSession, principal: Principal, project: Project, need_id: uuid.UUID
) -> None:
    """The need leaves the project and goes back to the list (accepted), to be matched again."""
    _editable(project, "unlink_need")
    row = await session.get(ProjectNeed, (project.id, need_id))
    if row is None:
        raise not_found("project_need")
    need = (
        await session.execute(
            select(Need).where(Need.id == need_id).with_for_update().execution_options(populate_existing=True)
        )
    ).scalar_one()
    await session.delete(row)
    if need.state == NeedState.in_project:
        await lists.set_need_state(
            session, need, NeedState.accepted, by=principal, reason=f"unlinked from project {project.id}"
        )
    await _touch(session, project)
    await audit.record(
        session,
        principal,
        "project.unlink_need",
        "project",
        project.id,
        org_id=project.org_id,
        after={"need_id": str(need_id)},
    )


async def add_commitment(
    session: AsyncSession, principal: Principal, project: Project, data: CommitmentCreate
) -> ResourceCommitment:
    _editable(project, "commit")
    await _check_resource(session, principal, data.resource_id)
    commitment = await _commit(session, principal, project, data.resource_id, data.quantity)
    await _touch(session, project)
    await audit.record(
        session,
        principal,
        "project.commit",
        "project",
        project.id,
        org_id=project.org_id,
        after={"commitment_id": str(commitment.id), **data.model_dump(mode="json")},
    )
    return commitment


async def _release(
    session: AsyncSession, principal: Principal, commitment: ResourceCommitment, reason: str | None
) -> None:
    await lists.release_quantity(session, commitment.resource_id, commitment.quantity, by=principal)
    commitment.released_at = utcnow()
    commitment.released_by = principal.id
    commitment.release_reason = reason


async def remove_commitment(
    session: AsyncSession,
    principal: Principal,
    project: Project,
    commitment_id: uuid.UUID,
    reason: str | None,
) -> None:
    _editable(project, "release")
    commitment = (
        await session.execute(
            select(ResourceCommitment)
            .where(ResourceCommitment.id == commitment_id, ResourceCommitment.project_id == project.id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if commitment is None:
        raise not_found("commitment")
    if commitment.released_at is not None:
        raise illegal_transition("released", "release")
    await _release(session, principal, commitment, reason)
    await _touch(session, project)
    await audit.record(
        session,
        principal,
        "project.release",
        "project",
        project.id,
        org_id=project.org_id,
        after={
            "commitment_id": str(commitment.id),
            "resource_id": str(commitment.resource_id),
            "quantity": commitment.quantity,
        },
        reason=reason,
    )


async def _touch(session: AsyncSession, project: Project) -> None:
    """A change to what the project holds is a change to the project: a new version (ETag)."""
    project.updated_at = utcnow()
    await session.flush()


# --- milestones ---------------------------------------------------------------------------


async def add_milestone(
    session: AsyncSession, principal: Principal, project: Project, data: MilestoneCreate
) -> Milestone:
    _editable(project, "add_milestone")
    milestone = Milestone(project_id=project.id, title=data.title, due_on=data.due_on)
    session.add(milestone)
    await session.flush()
    await audit.record(
        session,
        principal,
        "project.add_milestone",
        "project",
        project.id,
        org_id=project.org_id,
        after=audit.snapshot(milestone),
    )
    return milestone


async def get_milestone(session: AsyncSession, project: Project, milestone_id: uuid.UUID) -> Milestone:
    milestone = (
        await session.execute(
            select(Milestone).where(Milestone.id == milestone_id, Milestone.project_id == project.id)
        )
    ).scalar_one_or_none()
    if milestone is None:
        raise not_found("milestone")
    return milestone


async def update_milestone(
    session: AsyncSession, principal: Principal, project: Project, milestone: Milestone, data: MilestoneUpdate
) -> Milestone:
    _editable(project, "update_milestone")
    changes = data.model_dump(exclude_unset=True)
    if "title" in changes and changes["title"] is None:
        raise _field_error("title", "may not be null")
    before = audit.snapshot(milestone)
    done = changes.pop("done", None)
    for key, value in changes.items():
        setattr(milestone, key, value)
    if done is True and milestone.done_at is None:
        milestone.done_at, milestone.done_by = utcnow(), principal.id
    elif done is False:
        milestone.done_at, milestone.done_by = None, None
    await session.flush()
    await audit.record(
        session,
        principal,
        "project.update_milestone",
        "project",
        project.id,
        org_id=project.org_id,
        before=before,
        after=audit.snapshot(milestone),
    )
    return milestone


async def delete_milestone(
    session: AsyncSession, principal: Principal, project: Project, milestone: Milestone
) -> None:
    _editable(project, "delete_milestone")
    before = audit.snapshot(milestone)
    await session.delete(milestone)
    await session.flush()
    await audit.record(
        session,
        principal,
        "project.delete_milestone",
        "project",
        project.id,
        org_id=project.org_id,
        before=before,
    )


# --- progress -----------------------------------------------------------------------------


async def _manages(session: AsyncSession, principal: Principal, project: Project) -> bool:
    """The principal is staff over the project (`projects:write` reaches it)."""
    if not principal.can(Perm.projects_write):
        return False
    cond = scope_condition(Project, principal, Perm.projects_write)
    return bool((await session.execute(select(exists().where(Project.id == project.id, cond)))).scalar())


async def _working_units(session: AsyncSession, project: Project) -> set[uuid.UUID]:
    joint = (await _joint_units(session, [project.id]))[project.id]
    return {*joint, *([project.lead_unit_id] if project.lead_unit_id else [])}


async def _reporting_unit(
    session: AsyncSession, principal: Principal, project: Project, requested: uuid.UUID | None
) -> uuid.UUID | None:
    """The working unit a progress entry is reported for: a liaison's own (lead or joint) unit, or
    any working unit staff report for. Anyone else may see the project but not report on it: 403."""
    working = await _working_units(session, project)
    own = _liaison_units(principal, Perm.projects_progress) & working
    if requested is not None and requested in own:
        return requested
    if requested is None and own:
        return min(own)
    if await _manages(session, principal, project):
        if requested is not None and requested not in working:
            raise _field_error("unit_id", "not a unit working on the project")
        return requested
    raise ProblemError("forbidden")


async def add_progress(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID, data: ProgressCreate
) -> ProgressEntry:
    project = await get(session, principal, project_id, Perm.projects_progress)
    unit_id = await _reporting_unit(session, principal, project, data.unit_id)
    if project.state != ProjectState.in_progress:
        raise illegal_transition(str(project.state), "report_progress")
    entry = ProgressEntry(
        project_id=project.id,
        note=data.note,
        percent=data.percent,
        photos=list(data.photos),
        unit_id=unit_id,
        created_by=principal.id,
    )
    session.add(entry)
    await session.flush()
    await audit.record(
        session,
        principal,
        "project.progress",
        "project",
        project.id,
        org_id=project.org_id,
        after=audit.snapshot(entry),
    )
    return entry


def progress_query(project: Project) -> Select[Any]:
    return select(ProgressEntry).where(ProgressEntry.project_id == project.id)


# --- claiming -----------------------------------------------------------------------------


def _check_claimable(project: Project) -> None:
    if project.state not in CLAIMABLE_STATES:
        raise illegal_transition(str(project.state), "claim")
    if project.lead_unit_id is not None:
        raise ProblemError("project_claimed")


async def claim_method_for(session: AsyncSession, project: Project, unit_id: uuid.UUID) -> ClaimMethod:
    """How `unit_id` may claim the project now: paired (first claim), hall (open to the street), or
    409 `claim_not_open` while only paired units may."""
    paired = exists(paired_units(project.org_id).where(Agreement.unit_id == unit_id))
    if (await session.execute(select(paired))).scalar():
        return ClaimMethod.paired
    street_open = select(
        exists().where(
            Project.id == project.id,
            Project.street_opens_at <= func.now(),
            in_project_street(frozenset({unit_id})),
        )
    )
    if (await session.execute(street_open)).scalar():
        return ClaimMethod.hall
    opens_at = project.street_opens_at.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M")
    raise ProblemError("claim_not_open", opens_at=opens_at)


async def _check_claim_reach(session: AsyncSession, project_id: uuid.UUID, unit_id: uuid.UUID) -> None:
    """The project is one the unit could ever claim (or works on): else it does not exist for it.

    Wider than what the unit sees (`liaison_reach`), which hides a project once another unit has
    claimed it: the unit that lost a race, or clicked a stale hall, learns "already claimed" (409)."""
    units = frozenset({unit_id})
    paired = exists(paired_units(Project.org_id).where(Agreement.unit_id == unit_id))
    reach = or_(liaison_reach(units), paired, in_project_street(units))
    if (await session.execute(select(Project.id).where(Project.id == project_id, reach))).first() is None:
        raise not_found("project")


async def claim(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID, unit_id: uuid.UUID | None
) -> Project:
    """A liaison claims the project for its unit (paired units first, then the whole street), or
    staff assign a lead unit. Of two claims at once one wins; the other waits for the row lock and
    answers 409 `project_claimed`."""
    own = _liaison_units(principal, Perm.projects_claim)
    as_liaison = unit_id in own if unit_id is not None else bool(own)
    if as_liaison:
        if unit_id is None:
            if len(own) > 1:
                raise _field_error("unit_id", "say which of your units claims it")
            unit_id = next(iter(own))
        await _check_claim_reach(session, project_id, unit_id)
        project = await lock(session, project_id)
        _check_claimable(project)
        method = await claim_method_for(session, project, unit_id)
    else:
        require(principal, Perm.projects_write)
        project = await load_for_write(session, principal, project_id)
        if unit_id is None:
            raise _field_error("unit_id", "the unit to assign as lead")
        _check_claimable(project)
        await _check_units(session, project.org_id, [unit_id])
        method = ClaimMethod.assigned
    before = audit.snapshot(project)
    _assign_lead(project, principal, unit_id, method)
    # A joint unit that takes the lead is no longer also a joint unit.
    await session.execute(
        delete(ProjectUnit).where(ProjectUnit.project_id == project.id, ProjectUnit.unit_id == unit_id)
    )
    await session.flush()
    await audit.record(
        session,
        principal,
        "project.claim",
        "project",
        project.id,
        org_id=project.org_id,
        before=before,
        after=audit.snapshot(project),
        reason=method.value,
    )
    return project


# --- the state machine --------------------------------------------------------------------


def _check_move(project: Project, target: ProjectState) -> None:
    if target not in TRANSITIONS[ProjectState(project.state)]:
        raise illegal_transition(str(project.state), ACTIONS.get(target, target.value))


async def _release_all(
    session: AsyncSession, principal: Principal | None, project: Project, reason: str | None
) -> None:
    active = (
        await session.execute(
            select(ResourceCommitment)
            .where(ResourceCommitment.project_id == project.id, ResourceCommitment.released_at.is_(None))
            .order_by(ResourceCommitment.resource_id)  # one lock order for every releaser
            .with_for_update()
        )
    ).scalars()
    for commitment in active:
        await lists.release_quantity(session, commitment.resource_id, commitment.quantity, by=principal)
        commitment.released_at = utcnow()
        commitment.released_by = principal.id if principal else None
        commitment.release_reason = reason


async def _needs_in(session: AsyncSession, project: Project, state: NeedState) -> list[Need]:
    return list(
        (
            await session.execute(
                select(Need)
                .join(ProjectNeed, ProjectNeed.need_id == Need.id)
                .where(ProjectNeed.project_id == project.id, Need.state == state)
                .order_by(Need.id)
                .with_for_update(of=Need)
                .execution_options(populate_existing=True)
            )
        ).scalars()
    )


async def _move_needs(
    session: AsyncSession, principal: Principal | None, project: Project, target: NeedState, reason: str
) -> None:
    for need in await _needs_in(session, project, NeedState.in_project):
        await lists.set_need_state(session, need, target, by=principal, reason=reason)


async def _set_state(
    session: AsyncSession,
    principal: Principal,
    project: Project,
    target: ProjectState,
    reason: str | None,
    before: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Project:
    project.state = target
    project.state_reason = reason
    project.state_changed_by = principal.id
    project.state_changed_at = utcnow()
    await session.flush()
    await audit.record(
        session,
        principal,
        f"project.{ACTIONS[target]}",
        "project",
        project.id,
        org_id=project.org_id,
        before=before,
        after={**audit.snapshot(project), **(extra or {})},
        reason=reason,
    )
    return project


async def transition(
    session: AsyncSession, principal: Principal, project: Project, data: ProjectTransition
) -> Project:
    """start / complete (a note; the needs are resolved) / evaluate (a rating) / cancel (a reason;
    commitments released, needs back to the list). Approving and rejecting are a meeting's."""
    target = data.to
    if target in DECIDED_BY_MEETING:
        raise ProblemError("decision_required")
    _check_move(project, target)
    before = audit.snapshot(project)
    now = utcnow()
    if target == ProjectState.completed:
        if data.note is None:
            raise _field_error("note", "completing a project needs a completion note")
        project.completion_note, project.completed_at, project.completed_by = data.note, now, principal.id
        await _move_needs(session, principal, project, NeedState.resolved, f"project {project.id} completed")
    elif target == ProjectState.evaluated:
        if data.rating is None:
            raise _field_error("rating", "an evaluation needs a rating (1–5)")
        project.evaluation_rating, project.evaluation_note = data.rating, data.note
        project.evaluated_at, project.evaluated_by = now, principal.id
    elif target == ProjectState.cancelled:
        if data.reason is None:
            raise _field_error("reason", "cancelling a project needs a reason")
        await _release_all(session, principal, project, data.reason)
        await _move_needs(session, principal, project, NeedState.accepted, f"project {project.id} cancelled")
    return await _set_state(session, principal, project, target, data.reason, before)


async def apply_decision(
    session: AsyncSession,
    principal: Principal,
    project: Project,
    outcome: DecisionOutcome,
    *,
    decision_id: uuid.UUID,
    note: str | None,
) -> Project:
    """A held meeting's decision approves or rejects a proposed project (a deferral changes nothing).
    The caller has checked the meeting and holds the project's row lock (`lock`), so of two
    decisions at once the second sees the first's outcome: 409."""
    if outcome == DecisionOutcome.defer:
        return project
    target = ProjectState.approved if outcome == DecisionOutcome.approve else ProjectState.rejected
    _check_move(project, target)
    before = audit.snapshot(project)
    if target == ProjectState.rejected:
        await _release_all(session, principal, project, note or "rejected by the meeting")
        await _move_needs(session, principal, project, NeedState.accepted, f"project {project.id} rejected")
    return await _set_state(
        session, principal, project, target, note, before, extra={"decision_id": str(decision_id)}
    )
