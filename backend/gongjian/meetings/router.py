"""Joint and consultation meetings: schedule, agenda, attendance, minutes, decisions."""

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
from gongjian.meetings import service
from gongjian.meetings.models import Meeting, MeetingKind, MeetingState
from gongjian.meetings.schemas import (
    AgendaItemCreate,
    AttendanceSet,
    DecisionCreate,
    MeetingCreate,
    MeetingDetail,
    MeetingOut,
    MeetingTransition,
    MeetingUpdate,
)

router = APIRouter(prefix="/api/v1", tags=["meetings"])

_WRITE = problem_responses(401, 403, 404, 409, 412, 422)
_ACT = problem_responses(401, 403, 404, 409, 422)  # no If-Match


async def _detail(session: SessionDep, response: Response, meeting: Meeting) -> MeetingDetail:
    set_etag(response, meeting)
    return await service.to_detail(session, meeting)


@router.get(
    "/meetings",
    response_model=Page[MeetingOut],
    summary="List meetings in scope",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_meetings(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    org_id: Annotated[
        uuid.UUID | None, Query(description="Meetings held by this organization and the ones under it")
    ] = None,
    state: MeetingState | None = None,
    kind: MeetingKind | None = None,
    project_id: Annotated[
        uuid.UUID | None, Query(description="Meetings with this project on the agenda")
    ] = None,
) -> Page[MeetingOut]:
    require(principal, Perm.meetings_read)
    stmt = await service.list_query(
        session, principal, org_id=org_id, state=state, kind=kind, project_id=project_id
    )
    rows, cursor = await paginate(session, stmt, Meeting, page)
    return Page(items=[service.to_out(m) for m in rows], next_cursor=cursor)


@router.post(
    "/meetings",
    response_model=MeetingDetail,
    status_code=status.HTTP_201_CREATED,
    summary="Schedule a meeting of a street or community organization, with invitations and agenda",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_meeting(
    session: SessionDep, principal: CurrentPrincipal, body: MeetingCreate, response: Response
) -> MeetingDetail:
    meeting = await service.create(session, principal, body)
    response.headers["Location"] = f"{router.prefix}/meetings/{meeting.id}"
    return await _detail(session, response, meeting)


@router.get(
    "/meetings/{meeting_id}",
    response_model=MeetingDetail,
    summary="Get a meeting: invitations, agenda, attendance, minutes and decisions",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_meeting(
    session: SessionDep, principal: CurrentPrincipal, meeting_id: uuid.UUID, response: Response
) -> MeetingDetail:
    meeting = await service.get(session, principal, meeting_id)
    return await _detail(session, response, meeting)


@router.patch(
    "/meetings/{meeting_id}",
    response_model=MeetingDetail,
    summary="Edit a scheduled meeting, or write the minutes of a held one (If-Match with the ETag)",
    responses=_WRITE,
)
async def update_meeting(
    session: SessionDep,
    principal: CurrentPrincipal,
    meeting_id: uuid.UUID,
    body: MeetingUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> MeetingDetail:
    meeting = await service.load_for_write(session, principal, meeting_id)
    check_if_match(if_match, meeting)
    meeting = await service.update(session, principal, meeting, body)
    return await _detail(session, response, meeting)


@router.post(
    "/meetings/{meeting_id}/transitions",
    response_model=MeetingDetail,
    summary="Hold a meeting, publish its minutes, or cancel a scheduled one",
    responses=_WRITE,
)
async def transition_meeting(
    session: SessionDep,
    principal: CurrentPrincipal,
    meeting_id: uuid.UUID,
    body: MeetingTransition,
    response: Response,
    if_match: IfMatch = None,
) -> MeetingDetail:
    meeting = await service.load_for_write(session, principal, meeting_id)
    check_if_match(if_match, meeting)
    meeting = await service.transition(session, principal, meeting, body)
    return await _detail(session, response, meeting)


@router.post(
    "/meetings/{meeting_id}/agenda-items",
    response_model=MeetingDetail,
    status_code=status.HTTP_201_CREATED,
    summary="Add an agenda item (it may link a project of the meeting's organization or one under it)",
    responses=_ACT,
)
async def add_agenda_item(
    session: SessionDep,
    principal: CurrentPrincipal,
    meeting_id: uuid.UUID,
    body: AgendaItemCreate,
    response: Response,
) -> MeetingDetail:
    meeting = await service.load_for_write(session, principal, meeting_id)
    await service.add_agenda_item(session, principal, meeting, body)
    return await _detail(session, response, meeting)


@router.delete(
    "/meetings/{meeting_id}/agenda-items/{item_id}",
    response_model=MeetingDetail,
    summary="Remove an agenda item that has no decision",
    responses=_ACT,
)
async def remove_agenda_item(
    session: SessionDep,
    principal: CurrentPrincipal,
    meeting_id: uuid.UUID,
    item_id: uuid.UUID,
    response: Response,
) -> MeetingDetail:
    meeting = await service.load_for_write(session, principal, meeting_id)
    await service.remove_agenda_item(session, principal, meeting, item_id)
    return await _detail(session, response, meeting)


@router.put(
    "/meetings/{meeting_id}/attendance",
    response_model=MeetingDetail,
    summary="Record the attendance (replaces the list; until the minutes are published)",
    responses=_WRITE,
)
async def set_attendance(
    session: SessionDep,
    principal: CurrentPrincipal,
    meeting_id: uuid.UUID,
    body: AttendanceSet,
    response: Response,
    if_match: IfMatch = None,
) -> MeetingDetail:
    meeting = await service.load_for_write(session, principal, meeting_id)
    check_if_match(if_match, meeting)
    await service.set_attendance(session, principal, meeting, body)
    return await _detail(session, response, meeting)


@router.post(
    "/meetings/{meeting_id}/decisions",
    response_model=MeetingDetail,
    status_code=status.HTTP_201_CREATED,
    summary="Record a held meeting's decision on an agenda item (approve / reject / defer its project)",
    responses=_ACT,
)
async def decide(
    session: SessionDep,
    principal: CurrentPrincipal,
    meeting_id: uuid.UUID,
    body: DecisionCreate,
    response: Response,
) -> MeetingDetail:
    meeting = await service.load_for_write(session, principal, meeting_id)
    await service.decide(session, principal, meeting, body)
    return await _detail(session, response, meeting)
