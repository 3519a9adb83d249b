"""Resident units (驻区单位): where they sit, their party org, who speaks for them.

Staff reach a unit through the community it sits in; a liaison (unit_liaison granted
on one unit) reaches only that unit, may edit it but not move it to another community
nor delete it.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.auth.models import RoleAssignment, User
from gongjian.core import audit
from gongjian.core.access import Perm, Principal, Role, ensure_org_in_scope, get_visible, visible
from gongjian.core.db import contains
from gongjian.core.errors import ProblemError
from gongjian.core.validators import is_valid_credit_code
from gongjian.organizations.models import Organization, OrgLevel
from gongjian.resident_units.models import PartyOrgMode, ResidentUnit, UnitType
from gongjian.resident_units.schemas import ResidentUnitCreate, ResidentUnitUpdate


def _field_error(field: str, msg: str) -> list[dict[str, Any]]:
    return [{"loc": ["body", field], "msg": msg, "type": "value_error"}]


def normalize_credit_code(code: str) -> str:
    return code.strip().upper()


def checked_credit_code(code: str) -> str:
    normalized = normalize_credit_code(code)
    if not is_valid_credit_code(normalized):
        raise ProblemError(
            "invalid_credit_code",
            errors=_field_error("credit_code", "GB 32100 check failed"),
        )
    return normalized


def list_query(
    principal: Principal,
    *,
    community_id: uuid.UUID | None = None,
    type: UnitType | None = None,
    q: str | None = None,
    credit_code: str | None = None,
) -> Select[Any]:
    stmt = visible(select(ResidentUnit), ResidentUnit, principal, Perm.units_read)
    if community_id is not None:
        stmt = stmt.where(ResidentUnit.community_id == community_id)
    if type is not None:
        stmt = stmt.where(ResidentUnit.type == type)
    if credit_code:
        stmt = stmt.where(ResidentUnit.credit_code == normalize_credit_code(credit_code))
    if q:
        stmt = stmt.where(
            or_(contains(ResidentUnit.name, q), contains(ResidentUnit.address, q))
        )
    return stmt


async def get(
    session: AsyncSession, principal: Principal, unit_id: uuid.UUID, perm: Perm = Perm.units_read
) -> ResidentUnit:
    return await get_visible(session, ResidentUnit, unit_id, principal, perm, name="resident_unit")


def _staff_grants_only(principal: Principal) -> Principal:
    """The principal as seen through its organization grants alone (no liaison grants)."""
    return replace(principal, grants=[g for g in principal.grants if g.unit_id is None])


async def reached_as_staff(session: AsyncSession, principal: Principal, unit: ResidentUnit) -> bool:
    """Whether the principal holds units:write on the unit through an organization grant,
    not only as its liaison."""
    stmt = visible(
        select(ResidentUnit.id).where(ResidentUnit.id == unit.id),
        ResidentUnit,
        _staff_grants_only(principal),
        Perm.units_write,
    )
    return (await session.execute(stmt)).first() is not None


async def _community(session: AsyncSession, principal: Principal, community_id: uuid.UUID) -> Organization:
    org: Organization = await ensure_org_in_scope(session, principal, community_id, Perm.units_write)
    if org.level != OrgLevel.community:
        raise ProblemError(
            "invalid_community",
            errors=_field_error("community_id", "not a community"),
        )
    return org


def _check_party_org_pair(mode: PartyOrgMode, party_org_id: uuid.UUID | None) -> None:
    if (mode == PartyOrgMode.none) != (party_org_id is None):
        raise ProblemError(
            "party_org_mismatch",
            errors=_field_error("party_org_id", "must match party_org_mode"),
        )


async def _ensure_code_free(session: AsyncSession, code: str, except_id: uuid.UUID | None = None) -> None:
    # Uniqueness is platform-wide, whoever can see the other unit (the unique index enforces it too).
    stmt = select(ResidentUnit.id).where(ResidentUnit.credit_code == code)
    if except_id is not None:
        stmt = stmt.where(ResidentUnit.id != except_id)
    if (await session.execute(stmt.limit(1))).first() is not None:
        raise ProblemError("duplicate", object="resident_unit")


async def create(session: AsyncSession, principal: Principal, data: ResidentUnitCreate) -> ResidentUnit:
    code = checked_credit_code(data.credit_code)
    _check_party_org_pair(data.party_org_mode, data.party_org_id)
    await _community(session, principal, data.community_id)
    if data.party_org_id is not None:
        await ensure_org_in_scope(session, principal, data.party_org_id, Perm.units_write)
    await _ensure_code_free(session, code)
    unit = ResidentUnit(**data.model_dump(exclude={"credit_code"}), credit_code=code)
    session.add(unit)
    await session.flush()
    await audit.record(
        session,
        principal,
        "resident_unit.create",
        "resident_unit",
        unit.id,
        org_id=unit.community_id,
        after=audit.snapshot(unit),
    )
    return unit


async def update(
    session: AsyncSession, principal: Principal, unit: ResidentUnit, data: ResidentUnitUpdate
) -> ResidentUnit:
    changes = data.model_dump(exclude_unset=True)
    if "community_id" in changes and changes["community_id"] == unit.community_id:
        del changes["community_id"]
    if "community_id" in changes:
        if not await reached_as_staff(session, principal, unit):
            raise ProblemError("forbidden")  # a liaison does not move their unit
        await _community(session, principal, changes["community_id"])
    if "credit_code" in changes:
        changes["credit_code"] = checked_credit_code(changes["credit_code"])
        if changes["credit_code"] != unit.credit_code:
            await _ensure_code_free(session, changes["credit_code"], except_id=unit.id)
    if "party_org_mode" in changes or "party_org_id" in changes:
        mode = PartyOrgMode(changes.get("party_org_mode", unit.party_org_mode))
        party_org_id = changes.get("party_org_id", unit.party_org_id)
        _check_party_org_pair(mode, party_org_id)
        if party_org_id is not None and party_org_id != unit.party_org_id:
            await ensure_org_in_scope(session, principal, party_org_id, Perm.units_write)
    if "lat" in changes or "lng" in changes:
        lat = changes.get("lat", unit.lat)
        lng = changes.get("lng", unit.lng)
        if (lat is None) != (lng is None):
            raise ProblemError(
                "validation_error",
                errors=_field_error("lat", "lat and lng go together"),
            )
    before = audit.snapshot(unit)
    old_community = unit.community_id
    for key, value in changes.items():
        setattr(unit, key, value)
    await session.flush()
    await audit.record(
        session,
        principal,
        "resident_unit.update",
        "resident_unit",
        unit.id,
        org_id=unit.community_id,
        before=before,
        after=audit.snapshot(unit),
        reason=f"moved from community {old_community}" if unit.community_id != old_community else None,
    )
    return unit


async def delete(session: AsyncSession, principal: Principal, unit: ResidentUnit) -> None:
    if not await reached_as_staff(session, principal, unit):
        raise ProblemError("forbidden")  # a liaison does not delete their unit
    await audit.record(
        session,
        principal,
        "resident_unit.delete",
        "resident_unit",
        unit.id,
        org_id=unit.community_id,
        before=audit.snapshot(unit),
    )
    await session.delete(unit)
    await session.flush()


def liaisons_query(unit: ResidentUnit) -> Select[Any]:
    """The liaison assignments on a unit the caller has already reached (through `get`)."""
    return select(RoleAssignment).where(
        RoleAssignment.unit_id == unit.id, RoleAssignment.role == Role.unit_liaison
    )


async def users_by_id(session: AsyncSession, user_ids: list[uuid.UUID]) -> dict[uuid.UUID, User]:
    if not user_ids:
        return {}
    rows = await session.execute(select(User).where(User.id.in_(user_ids)))
    return {u.id: u for u in rows.scalars()}
