"""The project list as an XLSX workbook (the lists' workbook helper), one row per project."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.lists.imports.workbook import Sheet, write_workbook
from gongjian.lists.models import Need, Resource
from gongjian.meetings.models import Decision, DecisionOutcome, Meeting
from gongjian.organizations.models import Organization
from gongjian.projects.models import Project, ProjectNeed, ProjectUnit, ResourceCommitment
from gongjian.resident_units.models import ResidentUnit

LOCAL_TZ = ZoneInfo("Asia/Shanghai")

# Headers are the API's field names, as in the lists' exports.
COLUMNS = (
    "id",
    "title",
    "org",
    "state",
    "lead_unit",
    "claim_method",
    "joint_units",
    "responsible_name",
    "budget",
    "plan.from",
    "plan.to",
    "needs",
    "commitments",
    "decision.meeting",
    "decision.outcome",
    "decision.decided_at",
    "completed_at",
    "completion_note",
    "evaluation_rating",
    "created_at",
)
_WIDTHS = (38, 30, 20, 12, 20, 12, 30, 12, 12, 12, 12, 40, 40, 30, 10, 18, 18, 30, 10, 18)


def _local(value: datetime | None) -> str | None:
    return value.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M") if value else None


async def _names(session: AsyncSession, model: Any, ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not ids:
        return {}
    rows = await session.execute(select(model.id, model.name).where(model.id.in_(ids)))
    return {i: n for i, n in rows}


async def _grouped(session: AsyncSession, stmt: Select[uuid.UUID, str]) -> dict[uuid.UUID, list[str]]:
    out: dict[uuid.UUID, list[str]] = defaultdict(list)
    for project_id, text in await session.execute(stmt):
        out[project_id].append(text)
    return out


async def _decisions(
    session: AsyncSession, ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[str, str, datetime]]:
    rows = await session.execute(
        select(Decision.project_id, Meeting.title, Decision.outcome, Decision.decided_at)
        .join(Meeting, Meeting.id == Decision.meeting_id)
        .where(Decision.project_id.in_(ids), Decision.outcome != DecisionOutcome.defer)
        .order_by(Decision.decided_at)
    )
    # Oldest first: the latest decision is the one kept.
    return {pid: (title, outcome, at) for pid, title, outcome, at in rows if pid is not None}


def _row(
    p: Project,
    orgs: dict[uuid.UUID, str],
    units: dict[uuid.UUID, str],
    joint: dict[uuid.UUID, list[uuid.UUID]],
    needs: dict[uuid.UUID, list[str]],
    commitments: dict[uuid.UUID, list[str]],
    decisions: dict[uuid.UUID, tuple[str, str, datetime]],
) -> Sequence[Any]:
    decision = decisions.get(p.id)
    return (
        str(p.id),
        p.title,
        orgs.get(p.org_id),
        str(p.state),
        units.get(p.lead_unit_id) if p.lead_unit_id else None,
        str(p.claim_method) if p.claim_method else None,
        "、".join(sorted(units.get(u, "") for u in joint.get(p.id, []))),
        p.responsible_name,
        p.budget,
        p.plan_from,
        p.plan_to,
        "；".join(needs.get(p.id, [])),
        "；".join(commitments.get(p.id, [])),
        decision[0] if decision else None,
        str(decision[1]) if decision else None,
        _local(decision[2]) if decision else None,
        _local(p.completed_at),
        p.completion_note,
        p.evaluation_rating,
        _local(p.created_at),
    )


async def workbook(session: AsyncSession, stmt: Select[Any]) -> bytes:
    """The projects `stmt` selects (already filtered to the caller's scope), oldest first."""
    projects = list((await session.execute(stmt.order_by(Project.created_at, Project.id))).scalars())
    ids = [p.id for p in projects]
    joint_rows = (
        await session.execute(
            select(ProjectUnit.project_id, ProjectUnit.unit_id).where(ProjectUnit.project_id.in_(ids))
        )
    ).all()
    joint: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for project_id, unit_id in joint_rows:
        joint[project_id].append(unit_id)
    unit_ids = {p.lead_unit_id for p in projects if p.lead_unit_id} | {u for _, u in joint_rows}
    orgs = await _names(session, Organization, {p.org_id for p in projects})
    units = await _names(session, ResidentUnit, unit_ids)
    needs = await _grouped(
        session,
        select(ProjectNeed.project_id, Need.title)
        .join(Need, Need.id == ProjectNeed.need_id)
        .where(ProjectNeed.project_id.in_(ids))
        .order_by(ProjectNeed.linked_at),
    )
    commitments = await _grouped(
        session,
        select(
            ResourceCommitment.project_id,
            func.concat(Resource.title, " × ", ResourceCommitment.quantity, Resource.quantity_unit),
        )
        .join(Resource, Resource.id == ResourceCommitment.resource_id)
        .where(ResourceCommitment.project_id.in_(ids), ResourceCommitment.released_at.is_(None))
        .order_by(ResourceCommitment.created_at),
    )
    decisions = await _decisions(session, ids)
    rows = [_row(p, orgs, units, joint, needs, commitments, decisions) for p in projects]
    return write_workbook([Sheet("projects", COLUMNS, rows, widths=_WIDTHS)])
