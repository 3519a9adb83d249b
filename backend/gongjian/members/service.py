"""Party members and 双报到 reporting: the rules, the state machine and the audit trail."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from gongjian.auth.models import User
from gongjian.core import audit
from gongjian.core.access import (
    Perm,
    Principal,
    ensure_org_in_scope,
    get_visible,
    require,
    scope_condition,
    visible,
)
from gongjian.core.db import contains, utcnow
from gongjian.core.errors import ProblemError, illegal_transition, not_found
from gongjian.core.security import decrypt_pii, encrypt_pii, mask_id_number, mask_phone, pii_lookup_hash
from gongjian.core.validators import is_valid_id_number
from gongjian.members.models import (
    Gender,
    Member,
    MemberCategory,
    MemberStatus,
    Reporting,
    ReportingKind,
    ReportingState,
)
from gongjian.members.schemas import (
    MemberCreate,
    MemberOut,
    MemberPersonalData,
    MemberUpdate,
    ReportingCreate,
    ReportingOut,
)
from gongjian.organizations.models import Organization, OrgLevel
from gongjian.organizations.service import COUNTERS
from gongjian.resident_units.models import ResidentUnit

# --- members ---------------------------------------------------------------------------


def _field_error(field: str, msg: str) -> ProblemError:
    return ProblemError(
        "validation_error", errors=[{"loc": ["body", field], "msg": msg, "type": "value_error"}]
    )


def normalise_id_number(value: str) -> str:
    """The ID number in canonical form (trimmed, upper-case X), or 422 `invalid_id_number`."""
    value = value.strip().upper()
    if not is_valid_id_number(value):
        raise ProblemError("invalid_id_number")
    return value


def facts_from_id_number(id_number: str) -> tuple[date, Gender]:
    """Birth date and gender encoded in a valid GB 11643 number (odd 17th digit: male)."""
    birth = date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))
    return birth, Gender.male if int(id_number[16]) % 2 else Gender.female


def to_out(member: Member) -> MemberOut:
    return MemberOut(
        id=member.id,
        name=member.name,
        gender=member.gender,
        birth_date=member.birth_date,
        phone=mask_phone(decrypt_pii(member.phone_encrypted)),
        id_number=mask_id_number(decrypt_pii(member.id_number_encrypted)) or "",
        org_id=member.org_id,
        category=member.category,
        employer_unit_id=member.employer_unit_id,
        residence_community_id=member.residence_community_id,
        grid_cell_id=member.grid_cell_id,
        joined_party_on=member.joined_party_on,
        user_id=member.user_id,
        status=member.status,
        external_ref=member.external_ref,
        version=member.version,
        created_at=member.created_at,
        updated_at=member.updated_at,
    )


async def get(
    session: AsyncSession,
    principal: Principal,
    member_id: uuid.UUID,
    perm: Perm = Perm.members_read,
    *,
    for_update: bool = False,
) -> Member:
    return await get_visible(
        session, Member, member_id, principal, perm, name="member", for_update=for_update
    )


def list_query(
    principal: Principal,
    *,
    org_id: uuid.UUID | None = None,
    category: MemberCategory | None = None,
    status: MemberStatus | None = None,
    residence_community_id: uuid.UUID | None = None,
    grid_cell_id: uuid.UUID | None = None,
    q: str | None = None,
    id_number: str | None = None,
    phone: str | None = None,
) -> Select[Any]:
    stmt = visible(select(Member), Member, principal, Perm.members_read)
    if org_id is not None:
        stmt = stmt.where(Member.org_id == org_id)
    if category is not None:
        stmt = stmt.where(Member.category == category)
    if status is not None:
        stmt = stmt.where(Member.status == status)
    if residence_community_id is not None:
        stmt = stmt.where(Member.residence_community_id == residence_community_id)
    if grid_cell_id is not None:
        stmt = stmt.where(Member.grid_cell_id == grid_cell_id)
    if q:
        stmt = stmt.where(contains(Member.name, q))
    if id_number is not None:
        stmt = stmt.where(Member.id_number_hash == pii_lookup_hash(normalise_id_number(id_number)))
    if phone is not None:
        stmt = stmt.where(Member.phone_hash == pii_lookup_hash(phone))
    return stmt


async def _check_community(session: AsyncSession, community_id: uuid.UUID) -> None:
    # A member may live, and report, outside the caller's subtree: this checks only that the
    # community exists and is one; it reveals nothing else about it.
    level = (
        await session.execute(select(Organization.level).where(Organization.id == community_id))
    ).scalar_one_or_none()
    if level is None:
        raise not_found("organization")
    if level != OrgLevel.community:
        raise ProblemError("not_a_community")


async def _grid_community(session: AsyncSession, grid_cell_id: uuid.UUID) -> uuid.UUID:
    from gongjian.grids.models import GridCell

    community_id: uuid.UUID | None = (
        await session.execute(select(GridCell.community_id).where(GridCell.id == grid_cell_id))
    ).scalar_one_or_none()
    if community_id is None:
        raise not_found("grid_cell")
    return community_id


async def _exists(session: AsyncSession, model: Any, object_id: uuid.UUID, name: str) -> None:
    found = (await session.execute(select(model.id).where(model.id == object_id))).first()
    if found is None:
        raise not_found(name)


_REQUIRED = ("name", "id_number", "gender", "birth_date", "org_id", "category", "status")


async def _apply(
    session: AsyncSession, principal: Principal, member: Member, changes: dict[str, Any]
) -> None:
    """Validate `changes` against the member's current values and set them."""
    for key in _REQUIRED:
        if key in changes and changes[key] is None:
            raise _field_error(key, "may not be null")

    if "id_number" in changes:
        id_number = normalise_id_number(changes.pop("id_number"))
        id_hash = pii_lookup_hash(id_number)
        if id_hash != member.id_number_hash:
            clash = select(Member.id).where(Member.id_number_hash == id_hash)
            if member.id is not None:
                clash = clash.where(Member.id != member.id)
            if (await session.execute(clash)).first() is not None:
                raise ProblemError("duplicate", object="member")
            member.id_number_encrypted = encrypt_pii(id_number) or ""
            member.id_number_hash = id_hash or ""
        birth, gender = facts_from_id_number(id_number)
        for key, derived in (("birth_date", birth), ("gender", gender)):
            given = changes.pop(key, None)
            if given is not None and given != derived:
                raise _field_error(key, "does not match the ID number")
            setattr(member, key, derived)
    else:
        for key in ("birth_date", "gender"):
            given = changes.pop(key, None)
            if given is not None and given != getattr(member, key):
                raise _field_error(key, "does not match the ID number")

    if "phone" in changes:
        phone = changes.pop("phone")
        member.phone_encrypted = encrypt_pii(phone)
        member.phone_hash = pii_lookup_hash(phone)

    if changes.get("org_id") is not None and changes["org_id"] != member.org_id:
        await ensure_org_in_scope(session, principal, changes["org_id"], Perm.members_write)
    if changes.get("employer_unit_id") is not None:
        await _exists(session, ResidentUnit, changes["employer_unit_id"], "resident_unit")
    if changes.get("residence_community_id") is not None:
        await _check_community(session, changes["residence_community_id"])
    if changes.get("user_id") is not None and changes["user_id"] != member.user_id:
        await _exists(session, User, changes["user_id"], "user")
        linked = select(Member.id).where(Member.user_id == changes["user_id"])
        if (await session.execute(linked)).first() is not None:
            raise ProblemError("member_account_linked")

    for key, value in changes.items():
        setattr(member, key, value)

    if member.grid_cell_id is not None and ("grid_cell_id" in changes or "residence_community_id" in changes):
        grid_community = await _grid_community(session, member.grid_cell_id)
        if member.residence_community_id is None:
            member.residence_community_id = grid_community
        elif member.residence_community_id != grid_community:
            raise ProblemError("grid_not_in_community")


async def create(session: AsyncSession, principal: Principal, data: MemberCreate) -> Member:
    changes = data.model_dump(exclude_none=True)
    member = Member()
    await _apply(session, principal, member, changes)
    session.add(member)
    await session.flush()
    await audit.record(
        session,
        principal,
        "member.create",
        "member",
        member.id,
        org_id=member.org_id,
        after=audit.snapshot(member),
    )
    return member


async def update_member(
    session: AsyncSession, principal: Principal, member: Member, data: MemberUpdate
) -> Member:
    before = audit.snapshot(member)
    linked_before = member.user_id
    await _apply(session, principal, member, data.model_dump(exclude_unset=True))
    await session.flush()
    if member.user_id != linked_before:
        # Reportings carry the member's account for the owner's scope; keep it in step.
        await session.execute(
            update(Reporting)
            .where(Reporting.member_id == member.id)
            .values(user_id=member.user_id, version=Reporting.version + 1)
            .execution_options(synchronize_session=False)
        )
    await audit.record(
        session,
        principal,
        "member.update",
        "member",
        member.id,
        org_id=member.org_id,
        before=before,
        after=audit.snapshot(member),
    )
    return member


async def read_personal_data(
    session: AsyncSession, principal: Principal, member: Member
) -> MemberPersonalData:
    """The full phone and ID number; the read itself is audited (PIPL)."""
    await audit.record(
        session,
        principal,
        "member.pii_read",
        "member",
        member.id,
        org_id=member.org_id,
        after={"fields": ["phone", "id_number"]},
    )
    return MemberPersonalData(
        id=member.id,
        name=member.name,
        phone=decrypt_pii(member.phone_encrypted),
        id_number=decrypt_pii(member.id_number_encrypted) or "",
    )


def _count_members(subtree_ids: Select[Any]) -> Select[Any]:
    return select(func.count()).select_from(Member).where(Member.org_id.in_(subtree_ids))


COUNTERS["members"] = _count_members


# --- 双报到 reporting --------------------------------------------------------------------


def _reporting_readable(principal: Principal) -> ColumnElement[bool]:
    return scope_condition(Reporting, principal, Perm.reports_read)


def reporting_out(reporting: Reporting) -> ReportingOut:
    return ReportingOut.model_validate(reporting)


async def get_reporting(session: AsyncSession, principal: Principal, reporting_id: uuid.UUID) -> Reporting:
    return await get_visible(session, Reporting, reporting_id, principal, Perm.reports_read, name="reporting")


def reporting_list_query(
    principal: Principal,
    *,
    kind: ReportingKind | None = None,
    state: ReportingState | None = None,
    active: bool | None = None,
    community_id: uuid.UUID | None = None,
    member_id: uuid.UUID | None = None,
    resident_unit_id: uuid.UUID | None = None,
) -> Select[Any]:
    stmt = select(Reporting).where(_reporting_readable(principal))
    if kind is not None:
        stmt = stmt.where(Reporting.kind == kind)
    if state is not None:
        stmt = stmt.where(Reporting.state == state)
    is_active = Reporting.state.in_([ReportingState.submitted, ReportingState.accepted]) & (
        Reporting.deregistered_at.is_(None)
    )
    if active is True:
        stmt = stmt.where(is_active)
    elif active is False:
        stmt = stmt.where(~is_active)
    if community_id is not None:
        stmt = stmt.where(Reporting.community_id == community_id)
    if member_id is not None:
        stmt = stmt.where(Reporting.member_id == member_id)
    if resident_unit_id is not None:
        stmt = stmt.where(Reporting.resident_unit_id == resident_unit_id)
    return stmt


async def submit(session: AsyncSession, principal: Principal, data: ReportingCreate) -> Reporting:
    """A member reports for themself, a liaison for their unit, staff for anyone in their scope."""
    require(principal, Perm.reports_submit)
    user_id: uuid.UUID | None = None
    if data.kind == ReportingKind.member:
        if data.member_id is None:
            raise _field_error("member_id", "required for a member's reporting")
        if data.resident_unit_id is not None:
            raise _field_error("resident_unit_id", "not allowed for a member's reporting")
        member = await get(session, principal, data.member_id, Perm.reports_submit)
        if member.category != MemberCategory.in_service or member.status != MemberStatus.active:
            raise ProblemError("member_not_reportable")
        community_id = data.community_id or member.residence_community_id
        if community_id is None:
            raise _field_error("community_id", "required: the member's residence community is not recorded")
        if member.residence_community_id is not None and community_id != member.residence_community_id:
            raise _field_error("community_id", "must be the community the member lives in")
        user_id = member.user_id
        subject = Reporting.member_id == member.id
    else:
        if data.resident_unit_id is None:
            raise _field_error("resident_unit_id", "required for a unit's reporting")
        if data.member_id is not None:
            raise _field_error("member_id", "not allowed for a unit's reporting")
        unit = await get_visible(
            session, ResidentUnit, data.resident_unit_id, principal, Perm.reports_submit, name="resident_unit"
        )
        community_id = data.community_id or unit.community_id
        if community_id != unit.community_id:
            raise _field_error("community_id", "must be the community the unit sits in")
        subject = Reporting.resident_unit_id == unit.id
    await _check_community(session, community_id)

    already = select(Reporting.id).where(
        subject,
        Reporting.state.in_([ReportingState.submitted, ReportingState.accepted]),
        Reporting.deregistered_at.is_(None),
    )
    if (await session.execute(already)).first() is not None:
        raise ProblemError("reporting_active")

    reporting = Reporting(
        kind=data.kind,
        member_id=data.member_id,
        resident_unit_id=data.resident_unit_id,
        community_id=community_id,
        user_id=user_id,
        state=ReportingState.submitted,
        note=data.note,
        submitted_by=principal.user_id,
    )
    try:
        # A concurrent submission for the same member or unit trips the partial unique index.
        async with session.begin_nested():
            session.add(reporting)
            await session.flush()
    except IntegrityError as exc:
        raise ProblemError("reporting_active") from exc
    await audit.record(
        session,
        principal,
        "reporting.submit",
        "reporting",
        reporting.id,
        org_id=community_id,
        after=audit.snapshot(reporting),
        reason=data.note,
    )
    return reporting


def _state_label(reporting: Reporting) -> str:
    return "deregistered" if reporting.deregistered_at is not None else str(reporting.state)


async def load_for_review(session: AsyncSession, principal: Principal, reporting_id: uuid.UUID) -> Reporting:
    """The reporting, locked, if the principal reviews for its community; 403 without the right at all."""
    require(principal, Perm.reports_review)
    return await get_visible(
        session, Reporting, reporting_id, principal, Perm.reports_review, name="reporting", for_update=True
    )


async def transition(
    session: AsyncSession, principal: Principal, reporting: Reporting, action: str, reason: str | None
) -> Reporting:
    """accept / return (reason required) / deregister (reason required): one step of the state machine.

    The caller holds the row lock (`load_for_review`), so of two reviewers acting at once the
    second sees the first one's outcome and gets `illegal_transition`.
    """
    before = audit.snapshot(reporting)
    now = utcnow()
    if action in ("accept", "return"):
        if reporting.state != ReportingState.submitted:
            raise illegal_transition(_state_label(reporting), action)
        reporting.state = ReportingState.accepted if action == "accept" else ReportingState.returned
        reporting.decided_by = principal.user_id
        reporting.decided_at = now
        reporting.reason = reason
    elif action == "deregister":
        if reporting.state != ReportingState.accepted or reporting.deregistered_at is not None:
            raise illegal_transition(_state_label(reporting), action)
        reporting.deregistered_by = principal.user_id
        reporting.deregistered_at = now
        reporting.deregistration_reason = reason
    else:  # pragma: no cover - the router only passes the three actions above
        raise ValueError(action)
    await session.flush()
    await audit.record(
        session,
        principal,
        f"reporting.{action}",
        "reporting",
        reporting.id,
        org_id=reporting.community_id,
        before=before,
        after=audit.snapshot(reporting),
        reason=reason,
    )
    return reporting
