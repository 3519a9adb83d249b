"""Meetings: scheduling, the agenda, attendance, minutes, and the decisions that approve projects."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from sqlalchemy import Select, delete, false, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.core import audit
from gongjian.core.access import (
    Perm,
    Principal,
    ensure_org_in_scope,
    get_visible,
    in_subtree,
    require,
    visible,
)
from gongjian.core.db import utcnow
from gongjian.core.errors import ProblemError, illegal_transition, not_found
from gongjian.meetings.models import (
    AgendaItem,
    Attendance,
    Decision,
    DecisionOutcome,
    Meeting,
    MeetingInvitee,
    MeetingKind,
    MeetingState,
)
from gongjian.meetings.schemas import (
    AgendaItemCreate,
    AgendaItemOut,
    AttendanceOut,
    AttendanceSet,
    DecisionCreate,
    DecisionOut,
    MeetingCreate,
    MeetingDetail,
    MeetingOut,
    MeetingTransition,
    MeetingUpdate,
)
from gongjian.organizations.models import Organization, OrgLevel
from gongjian.projects import service as projects
from gongjian.projects.models import Project
from gongjian.resident_units.models import ResidentUnit

M = MeetingState
TRANSITIONS: dict[MeetingState, frozenset[MeetingState]] = {
    M.scheduled: frozenset({M.held, M.cancelled}),
    M.held: frozenset({M.minutes_published}),
    M.minutes_published: frozenset(),
    M.cancelled: frozenset(),
}
ACTIONS: dict[MeetingState, str] = {
    M.held: "hold",
    M.minutes_published: "publish_minutes",
    M.cancelled: "cancel",
    M.scheduled: "schedule",
}
# The agenda and attendance are kept until the minutes are out.
OPEN_STATES = frozenset({M.scheduled, M.held})


def _field_error(field: str, msg: str) -> ProblemError:
    return ProblemError(
        "validation_error", errors=[{"loc": ["body", field], "msg": msg, "type": "value_error"}]
    )


# --- loading and output ----------------------------------------------------------------------


async def get(
    session: AsyncSession, principal: Principal, meeting_id: uuid.UUID, perm: Perm = Perm.meetings_read
) -> Meeting:
    return await get_visible(session, Meeting, meeting_id, principal, perm, name="meeting")


async def load_for_write(session: AsyncSession, principal: Principal, meeting_id: uuid.UUID) -> Meeting:
    """A meeting the principal runs, locked: agenda, decisions and state changes on one meeting
    happen one at a time."""
    await get(session, principal, meeting_id, Perm.meetings_write)
    stmt = (
        select(Meeting)
        .where(Meeting.id == meeting_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one()


async def list_query(
    session: AsyncSession,
    principal: Principal,
    *,
    org_id: uuid.UUID | None = None,
    state: MeetingState | None = None,
    kind: MeetingKind | None = None,
    project_id: uuid.UUID | None = None,
) -> Select[Any]:
    stmt = visible(select(Meeting), Meeting, principal, Perm.meetings_read)
    if org_id is not None:
        path = (await session.execute(select(Organization.path).where(Organization.id == org_id))).scalar()
        if path is None:
            return stmt.where(false())  # an unknown org holds no meetings (as the lists answer)
        stmt = stmt.where(
            Meeting.org_id.in_(select(Organization.id).where(in_subtree(Organization.path, path)))
        )
    if state is not None:
        stmt = stmt.where(Meeting.state == state)
    if kind is not None:
        stmt = stmt.where(Meeting.kind == kind)
    if project_id is not None:
        stmt = stmt.where(
            Meeting.id.in_(select(AgendaItem.meeting_id).where(AgendaItem.project_id == project_id))
        )
    return stmt


def to_out(meeting: Meeting) -> MeetingOut:
    return MeetingOut(**_out_fields(meeting))


def _out_fields(meeting: Meeting) -> dict[str, Any]:
    return {
        "id": meeting.id,
        "org_id": meeting.org_id,
        "kind": meeting.kind,
        "title": meeting.title,
        "scheduled_at": meeting.scheduled_at,
        "location": meeting.location,
        "state": meeting.state,
        "held_at": meeting.held_at,
        "published_at": meeting.published_at,
        "created_by": meeting.created_by,
        "state_reason": meeting.state_reason,
        "state_changed_by": meeting.state_changed_by,
        "state_changed_at": meeting.state_changed_at,
        "version": meeting.version,
        "created_at": meeting.created_at,
        "updated_at": meeting.updated_at,
    }


async def _all(session: AsyncSession, stmt: Select[Any]) -> list[Any]:
    return list((await session.execute(stmt)).scalars())


async def to_detail(session: AsyncSession, meeting: Meeting) -> MeetingDetail:
    invitees = await _all(session, select(MeetingInvitee).where(MeetingInvitee.meeting_id == meeting.id))
    agenda = await _all(
        session, select(AgendaItem).where(AgendaItem.meeting_id == meeting.id).order_by(AgendaItem.position)
    )
    attendance = await _all(
        session,
        select(Attendance)
        .where(Attendance.meeting_id == meeting.id)
        .order_by(Attendance.name, Attendance.id),
    )
    decisions = await _all(
        session,
        select(Decision).where(Decision.meeting_id == meeting.id).order_by(Decision.decided_at, Decision.id),
    )
    return MeetingDetail(
        **_out_fields(meeting),
        minutes=meeting.minutes,
        invited_org_ids=sorted(i.org_id for i in invitees if i.org_id is not None),
        invited_unit_ids=sorted(i.unit_id for i in invitees if i.unit_id is not None),
        agenda=[AgendaItemOut.model_validate(a) for a in agenda],
        attendance=[AttendanceOut.model_validate(a) for a in attendance],
        decisions=[DecisionOut.model_validate(d) for d in decisions],
    )


# --- what a meeting refers to ------------------------------------------------------------------


async def _holding_org(session: AsyncSession, principal: Principal, org_id: uuid.UUID) -> Organization:
    org: Organization = await ensure_org_in_scope(session, principal, org_id, Perm.meetings_write)
    if org.level not in (OrgLevel.street, OrgLevel.community):
        raise ProblemError("invalid_meeting_org")
    return org


async def _check_invitees(
    session: AsyncSession, principal: Principal, org_ids: Sequence[uuid.UUID], unit_ids: Sequence[uuid.UUID]
) -> None:
    """Invited orgs and units are ones the principal sees (anything else answers as missing)."""
    for org_id in set(org_ids):
        await get_visible(
            session, Organization, org_id, principal, Perm.organizations_read, name="organization"
        )
    for unit_id in set(unit_ids):
        await get_visible(session, ResidentUnit, unit_id, principal, Perm.units_read, name="resident_unit")


async def _set_invitees(
    session: AsyncSession,
    meeting: Meeting,
    org_ids: Sequence[uuid.UUID] | None,
    unit_ids: Sequence[uuid.UUID] | None,
) -> None:
    if org_ids is not None:
        await session.execute(
            delete(MeetingInvitee).where(
                MeetingInvitee.meeting_id == meeting.id, MeetingInvitee.org_id.is_not(None)
            )
        )
        session.add_all(MeetingInvitee(meeting_id=meeting.id, org_id=o) for o in sorted(set(org_ids)))
    if unit_ids is not None:
        await session.execute(
            delete(MeetingInvitee).where(
                MeetingInvitee.meeting_id == meeting.id, MeetingInvitee.unit_id.is_not(None)
            )
        )
        session.add_all(MeetingInvitee(meeting_id=meeting.id, unit_id=u) for u in sorted(set(unit_ids)))


async def _org_path(session: AsyncSession, org_id: uuid.UUID) -> str:
    return str(
        (await session.execute(select(Organization.path).where(Organization.id == org_id))).scalar_one()
    )


async def check_decides(session: AsyncSession, meeting: Meeting, project: Project) -> None:
    """A meeting decides the projects of its own org and of the orgs under it, nothing else."""
    meeting_path = await _org_path(session, meeting.org_id)
    if not (await _org_path(session, project.org_id)).startswith(meeting_path):
        raise ProblemError("project_outside_meeting_org")


# --- meetings -----------------------------------------------------------------------------------


async def create(session: AsyncSession, principal: Principal, data: MeetingCreate) -> Meeting:
    require(principal, Perm.meetings_write)
    org = await _holding_org(session, principal, data.org_id)
    await _check_invitees(session, principal, data.invited_org_ids, data.invited_unit_ids)
    meeting = Meeting(
        org_id=org.id,
        kind=data.kind,
        title=data.title,
        scheduled_at=data.scheduled_at.astimezone(UTC),
        location=data.location,
        state=MeetingState.scheduled,
        created_by=principal.id,
    )
    session.add(meeting)
    await session.flush()
    await _set_invitees(session, meeting, data.invited_org_ids, data.invited_unit_ids)
    for item in data.agenda:
        await _add_item(session, principal, meeting, item)
    await session.flush()
    await audit.record(
        session,
        principal,
        "meeting.schedule",
        "meeting",
        meeting.id,
        org_id=meeting.org_id,
        after={
            **audit.snapshot(meeting),
            "invited_org_ids": [str(o) for o in data.invited_org_ids],
            "invited_unit_ids": [str(u) for u in data.invited_unit_ids],
        },
    )
    return meeting


async def update(
    session: AsyncSession, principal: Principal, meeting: Meeting, data: MeetingUpdate
) -> Meeting:
    changes = data.model_dump(exclude_unset=True)
    minutes = "minutes" in changes
    details = set(changes) - {"minutes"}
    if details and meeting.state != MeetingState.scheduled:
        raise illegal_transition(str(meeting.state), "update")
    if minutes and meeting.state != MeetingState.held:
        raise illegal_transition(str(meeting.state), "write_minutes")
    for key in ("kind", "title", "scheduled_at"):
        if key in changes and changes[key] is None:
            raise _field_error(key, "may not be null")
    if changes.get("scheduled_at") is not None:
        changes["scheduled_at"] = changes["scheduled_at"].astimezone(UTC)
    org_ids = changes.pop("invited_org_ids", None)
    unit_ids = changes.pop("invited_unit_ids", None)
    await _check_invitees(session, principal, org_ids or [], unit_ids or [])
    before = audit.snapshot(meeting)
    if org_ids is not None or unit_ids is not None:
        # Before the meeting's own changes: the DELETE's autoflush must not write them separately.
        await _set_invitees(session, meeting, org_ids, unit_ids)
        meeting.updated_at = utcnow()  # the invitations are part of the meeting: a new version
    for key, value in changes.items():
        setattr(meeting, key, value)
    await session.flush()
    await audit.record(
        session,
        principal,
        "meeting.update",
        "meeting",
        meeting.id,
        org_id=meeting.org_id,
        before=before,
        after={
            **audit.snapshot(meeting),
            **({"invited_org_ids": [str(o) for o in org_ids]} if org_ids is not None else {}),
            **({"invited_unit_ids": [str(u) for u in unit_ids]} if unit_ids is not None else {}),
        },
    )
    return meeting


async def transition(
    session: AsyncSession, principal: Principal, meeting: Meeting, data: MeetingTransition
) -> Meeting:
    """hold / publish the minutes (written first) / cancel (a scheduled one, with a reason)."""
    target = data.to
    if target not in TRANSITIONS[MeetingState(meeting.state)]:
        raise illegal_transition(str(meeting.state), ACTIONS[target])
    if target == MeetingState.cancelled and data.reason is None:
        raise _field_error("reason", "cancelling a meeting needs a reason")
    if target == MeetingState.minutes_published and not (meeting.minutes or "").strip():
        raise ProblemError("minutes_required")
    before = audit.snapshot(meeting)
    now = utcnow()
    if target == MeetingState.held:
        meeting.held_at = now
    elif target == MeetingState.minutes_published:
        meeting.published_at = now
    meeting.state = target
    meeting.state_reason = data.reason
    meeting.state_changed_by = principal.id
    meeting.state_changed_at = now
    await session.flush()
    await audit.record(
        session,
        principal,
        f"meeting.{ACTIONS[target]}",
        "meeting",
        meeting.id,
        org_id=meeting.org_id,
        before=before,
        after=audit.snapshot(meeting),
        reason=data.reason,
    )
    return meeting


# --- agenda -------------------------------------------------------------------------------------


async def _add_item(
    session: AsyncSession, principal: Principal, meeting: Meeting, data: AgendaItemCreate
) -> AgendaItem:
    if data.project_id is not None:
        project = await projects.get(session, principal, data.project_id)
        await check_decides(session, meeting, project)
    last = (
        await session.execute(
            select(func.max(AgendaItem.position)).where(AgendaItem.meeting_id == meeting.id)
        )
    ).scalar()
    item = AgendaItem(
        meeting_id=meeting.id,
        position=(last or 0) + 1,
        title=data.title,
        description=data.description,
        project_id=data.project_id,
    )
    session.add(item)
    await session.flush()
    return item


async def add_agenda_item(
    session: AsyncSession, principal: Principal, meeting: Meeting, data: AgendaItemCreate
) -> AgendaItem:
    if meeting.state not in OPEN_STATES:
        raise illegal_transition(str(meeting.state), "add_agenda_item")
    item = await _add_item(session, principal, meeting, data)
    meeting.updated_at = utcnow()
    await session.flush()
    await audit.record(
        session,
        principal,
        "meeting.add_agenda_item",
        "meeting",
        meeting.id,
        org_id=meeting.org_id,
        after=audit.snapshot(item),
    )
    return item


async def remove_agenda_item(
    session: AsyncSession, principal: Principal, meeting: Meeting, item_id: uuid.UUID
) -> None:
    if meeting.state not in OPEN_STATES:
        raise illegal_transition(str(meeting.state), "remove_agenda_item")
    item = await _agenda_item(session, meeting, item_id)
    if (await session.execute(select(Decision.id).where(Decision.agenda_item_id == item.id))).first():
        raise ProblemError("decision_exists")
    before = audit.snapshot(item)
    await session.delete(item)
    meeting.updated_at = utcnow()
    await session.flush()
    await audit.record(
        session,
        principal,
        "meeting.remove_agenda_item",
        "meeting",
        meeting.id,
        org_id=meeting.org_id,
        before=before,
    )


async def _agenda_item(session: AsyncSession, meeting: Meeting, item_id: uuid.UUID) -> AgendaItem:
    item = (
        await session.execute(
            select(AgendaItem).where(AgendaItem.id == item_id, AgendaItem.meeting_id == meeting.id)
        )
    ).scalar_one_or_none()
    if item is None:
        raise not_found("agenda_item")
    return item


# --- attendance ---------------------------------------------------------------------------------


async def set_attendance(
    session: AsyncSession, principal: Principal, meeting: Meeting, data: AttendanceSet
) -> list[Attendance]:
    """Replace the attendance list (roll call before or at the meeting; fixed once minutes are out)."""
    if meeting.state not in OPEN_STATES:
        raise illegal_transition(str(meeting.state), "record_attendance")
    seen: set[tuple[str, uuid.UUID]] = set()
    for i, entry in enumerate(data.entries):
        ref = entry.user_id or entry.unit_id or entry.org_id
        if ref is not None:
            if (entry.attendee_kind.value, ref) in seen:
                raise ProblemError(
                    "validation_error",
                    errors=[
                        {"loc": ["body", "entries", str(i)], "msg": "listed twice", "type": "value_error"}
                    ],
                )
            seen.add((entry.attendee_kind.value, ref))
    await _check_attendees(session, principal, data)
    await session.execute(delete(Attendance).where(Attendance.meeting_id == meeting.id))
    rows = [Attendance(meeting_id=meeting.id, **e.model_dump()) for e in data.entries]
    session.add_all(rows)
    meeting.updated_at = utcnow()
    await session.flush()
    await audit.record(
        session,
        principal,
        "meeting.attendance",
        "meeting",
        meeting.id,
        org_id=meeting.org_id,
        after={"entries": [e.model_dump(mode="json") for e in data.entries]},
    )
    return rows


async def _check_attendees(session: AsyncSession, principal: Principal, data: AttendanceSet) -> None:
    from gongjian.auth.models import User

    users = {e.user_id for e in data.entries if e.user_id is not None}
    if users:
        found = set((await session.execute(select(User.id).where(User.id.in_(users)))).scalars())
        if users - found:
            raise not_found("user")
    await _check_invitees(
        session,
        principal,
        [e.org_id for e in data.entries if e.org_id is not None],
        [e.unit_id for e in data.entries if e.unit_id is not None],
    )


# --- decisions ----------------------------------------------------------------------------------


async def decide(
    session: AsyncSession, principal: Principal, meeting: Meeting, data: DecisionCreate
) -> Decision:
    """Record the meeting's decision on one agenda item; on a linked project, approve or reject it.

    Only a held meeting decides (not a scheduled one, not one whose minutes are out); only the
    projects of the meeting's org or of an org under it; only a proposed project. The caller holds
    the meeting's row lock and this takes the project's, so of two decisions on one project at once
    (in two meetings, or on two agenda items) one approves and the other answers 409."""
    if meeting.state != MeetingState.held:
        raise illegal_transition(str(meeting.state), "decide")
    item = await _agenda_item(session, meeting, data.agenda_item_id)
    if (await session.execute(select(Decision.id).where(Decision.agenda_item_id == item.id))).first():
        raise ProblemError("decision_exists")
    deciding = data.outcome != DecisionOutcome.defer
    if deciding and item.project_id is None:
        raise ProblemError("agenda_item_without_project")
    project = await projects.lock(session, item.project_id) if item.project_id is not None else None
    if project is not None and deciding:
        await check_decides(session, meeting, project)
    decision = Decision(
        meeting_id=meeting.id,
        agenda_item_id=item.id,
        project_id=item.project_id,
        outcome=data.outcome,
        note=data.note,
        votes_for=data.votes_for,
        votes_against=data.votes_against,
        votes_abstain=data.votes_abstain,
        decided_by=principal.id,
        decided_at=utcnow(),
    )
    try:
        async with session.begin_nested():
            session.add(decision)
            await session.flush()
    except IntegrityError as exc:  # pragma: no cover - the meeting's lock orders deciders first
        raise ProblemError("decision_exists") from exc
    if project is not None:
        await projects.apply_decision(
            session, principal, project, data.outcome, decision_id=decision.id, note=data.note
        )
    meeting.updated_at = utcnow()
    await session.flush()
    await audit.record(
        session,
        principal,
        f"meeting.decide_{data.outcome.value}",
        "meeting",
        meeting.id,
        org_id=meeting.org_id,
        after=audit.snapshot(decision),
        reason=data.note,
    )
    return decision
