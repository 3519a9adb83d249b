"""Who is asked to act for each side of an agreement: its signers (reminded to sign, told of its
end) and, for the yearly evaluation, its raters.

They are among those the services let act (`agreements.service.signing_sides`,
`evaluations.service.rater_sides`), chosen so that someone is always asked and nobody far above:
- signing, the community side (甲方): the org_admins of the community itself; when it has none,
  those of the nearest organization above it that has (an org_admin over the community signs for
  it); the unit side (乙方): the unit's liaisons;
- rating, the community side: the org_admins and org_staff of the community itself (nobody above it
  rates); the unit side: the unit's liaisons.
Disabled accounts are never asked.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, Protocol

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.agreements.models import Side
from gongjian.auth.models import RoleAssignment, User
from gongjian.core.access import Role
from gongjian.organizations.models import Organization


class Parties(Protocol):
    """An Agreement, an EvaluationWindow: anything naming the two sides."""

    community_id: uuid.UUID
    unit_id: uuid.UUID


def _holders(roles: Iterable[Role]) -> Select[Any]:
    return (
        select(RoleAssignment.user_id)
        .join(User, User.id == RoleAssignment.user_id)
        .where(User.is_active, RoleAssignment.role.in_(list(roles)))
    )


async def _ids(session: AsyncSession, stmt: Select[Any]) -> list[uuid.UUID]:
    return list((await session.execute(stmt.distinct().order_by(RoleAssignment.user_id))).scalars().all())


async def _liaisons(session: AsyncSession, unit_id: uuid.UUID) -> list[uuid.UUID]:
    return await _ids(session, _holders([Role.unit_liaison]).where(RoleAssignment.unit_id == unit_id))


def _ancestor_paths(path: str) -> list[str]:
    """'/1/5/9/' → ['/1/', '/1/5/', '/1/5/9/']: the organization and every one above it."""
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:n]) + "/" for n in range(1, len(parts) + 1)]


async def signers_for(session: AsyncSession, agreement: Parties, side: Side) -> list[uuid.UUID]:
    """The users asked to sign for `side` of `agreement`, in a stable order (see the module)."""
    if side == Side.unit:
        return await _liaisons(session, agreement.unit_id)
    path = await session.scalar(select(Organization.path).where(Organization.id == agreement.community_id))
    if path is None:
        return []
    admins = (
        _holders([Role.org_admin])
        .join(Organization, Organization.id == RoleAssignment.org_id)
        .where(RoleAssignment.unit_id.is_(None), Organization.path.in_(_ancestor_paths(path)))
        .add_columns(func.length(Organization.path).label("depth"))
    )
    rows = (await session.execute(admins)).all()
    if not rows:
        return []
    nearest = max(row.depth for row in rows)
    return sorted({row.user_id for row in rows if row.depth == nearest})


async def raters_for(session: AsyncSession, parties: Parties, side: Side) -> list[uuid.UUID]:
    """The users asked to rate for `side` in a yearly evaluation, in a stable order (see the module)."""
    if side == Side.unit:
        return await _liaisons(session, parties.unit_id)
    stmt = _holders([Role.org_admin, Role.org_staff]).where(
        RoleAssignment.org_id == parties.community_id, RoleAssignment.unit_id.is_(None)
    )
    return await _ids(session, stmt)
