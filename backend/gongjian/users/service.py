"""Accounts and their role assignments, managed by admins within their subtree."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, false, select
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.auth.models import RoleAssignment, User
from gongjian.auth.service import revoke_user_sessions
from gongjian.core import audit
from gongjian.core.access import Perm, Principal, Role, get_visible, scope_condition, visible
from gongjian.core.db import contains, utcnow
from gongjian.core.errors import ProblemError
from gongjian.core.security import (
    check_password_strength,
    decrypt_pii,
    encrypt_pii,
    hash_password,
    mask_phone,
    pii_lookup_hash,
    verify_password,
)
from gongjian.organizations.models import Organization
from gongjian.resident_units.models import ResidentUnit
from gongjian.users.schemas import RoleAssignmentIn, RoleAssignmentOut, UserCreate, UserOut, UserUpdate


def list_query(principal: Principal, q: str | None = None, role: Role | None = None) -> Select[Any]:
    stmt = visible(select(User), User, principal, Perm.users_read)
    if q:
        stmt = stmt.where(contains(User.username, q) | contains(User.display_name, q))
    if role:
        # Only roles held in the caller's scope count: another subtree's grants are not theirs to see.
        held = select(RoleAssignment.user_id).where(
            RoleAssignment.role == role, scope_condition(RoleAssignment, principal, Perm.users_read)
        )
        stmt = stmt.where(User.id.in_(held))
    return stmt


async def get(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID, perm: Perm = Perm.users_read
) -> User:
    return await get_visible(session, User, user_id, principal, perm, name="user")


async def assignments_of(
    session: AsyncSession, user_ids: list[uuid.UUID], principal: Principal | None = None
) -> dict[uuid.UUID, list[RoleAssignment]]:
    """The users' role assignments; with `principal`, only those it may see (its own, and those
    in its scope): a user also holding a role in another subtree does not reveal it."""
    out: dict[uuid.UUID, list[RoleAssignment]] = {uid: [] for uid in user_ids}
    if user_ids:
        stmt = select(RoleAssignment).where(RoleAssignment.user_id.in_(user_ids))
        if principal is not None:
            own = RoleAssignment.user_id == principal.id if principal.kind == "user" else false()
            stmt = stmt.where(own | scope_condition(RoleAssignment, principal, Perm.users_read))
        rows = await session.execute(stmt.order_by(RoleAssignment.created_at, RoleAssignment.id))
        for ra in rows.scalars():
            out[ra.user_id].append(ra)
    return out


def to_out(user: User, assignments: list[RoleAssignment]) -> UserOut:
    return UserOut(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        phone=mask_phone(decrypt_pii(user.phone_encrypted)),
        is_active=user.is_active,
        last_login_at=user.last_login_at,
        created_at=user.created_at,
        version=user.version,
        role_assignments=[RoleAssignmentOut.model_validate(a) for a in assignments],
    )


async def _resolve_assignment(
    session: AsyncSession, principal: Principal, data: RoleAssignmentIn
) -> RoleAssignment:
    """Check the caller may grant this role here; liaisons are anchored to their unit's community."""
    if data.role == Role.platform_admin:
        if not any(g.is_global for g in principal.grants_for(Perm.users_write)):
            raise ProblemError("forbidden")
        return RoleAssignment(role=data.role, org_id=None, unit_id=None)
    if data.role == Role.unit_liaison:
        if data.unit_id is None:
            raise ProblemError(
                "validation_error",
                errors=[
                    {
                        "loc": ["body", "role_assignments", "unit_id"],
                        "msg": "required for unit_liaison",
                        "type": "missing",
                    }
                ],
            )
        unit = await get_visible(
            session, ResidentUnit, data.unit_id, principal, Perm.units_write, name="resident_unit"
        )
        await get_visible(
            session, Organization, unit.community_id, principal, Perm.users_write, name="organization"
        )
        return RoleAssignment(role=data.role, org_id=unit.community_id, unit_id=unit.id)
    if data.org_id is None:
        raise ProblemError(
            "validation_error",
            errors=[
                {
                    "loc": ["body", "role_assignments", "org_id"],
                    "msg": "required for this role",
                    "type": "missing",
                }
            ],
        )
    if data.unit_id is not None:
        raise ProblemError(
            "validation_error",
            errors=[
                {
                    "loc": ["body", "role_assignments", "unit_id"],
                    "msg": "only for unit_liaison",
                    "type": "value_error",
                }
            ],
        )
    await get_visible(session, Organization, data.org_id, principal, Perm.users_write, name="organization")
    return RoleAssignment(role=data.role, org_id=data.org_id)


async def create(session: AsyncSession, principal: Principal, data: UserCreate) -> User:
    check_password_strength(data.password)
    assignments = [await _resolve_assignment(session, principal, a) for a in data.role_assignments]
    if (await session.execute(select(User.id).where(User.username == data.username))).first():
        raise ProblemError("duplicate", object="user")
    phone_hash = pii_lookup_hash(data.phone)
    if phone_hash and (await session.execute(select(User.id).where(User.phone_hash == phone_hash))).first():
        raise ProblemError("duplicate", object="user")
    user = User(
        username=data.username,
        display_name=data.display_name,
        password_hash=hash_password(data.password),
        phone_encrypted=encrypt_pii(data.phone),
        phone_hash=phone_hash,
    )
    session.add(user)
    await session.flush()
    for a in assignments:
        a.user_id = user.id
        a.created_by = principal.user_id
        session.add(a)
    await session.flush()
    await audit.record(
        session,
        principal,
        "user.create",
        "user",
        user.id,
        org_id=assignments[0].org_id,
        after=audit.snapshot(user),
    )
    return user


async def _ensure_manages_all_of(session: AsyncSession, principal: Principal, user: User) -> None:
    """Editing an account acts on every role it holds: the caller must hold users:write over all
    of them (so a community secretary cannot disable someone who is also another community's
    admin, or a platform admin)."""
    beyond = select(RoleAssignment.id).where(
        RoleAssignment.user_id == user.id, ~scope_condition(RoleAssignment, principal, Perm.users_write)
    )
    if (await session.execute(beyond.limit(1))).first() is not None:
        raise ProblemError("forbidden")


async def update(session: AsyncSession, principal: Principal, user: User, data: UserUpdate) -> User:
    await _ensure_manages_all_of(session, principal, user)
    before = audit.snapshot(user)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("is_active") is False and user.id == principal.id:
        raise ProblemError("cannot_disable_self")
    if "phone" in changes:
        phone = changes.pop("phone")
        phone_hash = pii_lookup_hash(phone)
        taken = select(User.id).where(User.phone_hash == phone_hash, User.id != user.id)
        if phone_hash and (await session.execute(taken)).first():
            raise ProblemError("duplicate", object="user")
        user.phone_encrypted = encrypt_pii(phone)
        user.phone_hash = phone_hash
    for key, value in changes.items():
        if value is not None:
            setattr(user, key, value)
    if changes.get("is_active") is False:
        # Access tokens stop at once (each request reloads the user); refresh tokens are revoked.
        await revoke_user_sessions(session, user.id)
    await session.flush()
    await audit.record(
        session,
        principal,
        "user.update",
        "user",
        user.id,
        org_id=await _home_org(session, user),
        before=before,
        after=audit.snapshot(user),
    )
    return user


async def _home_org(session: AsyncSession, user: User) -> uuid.UUID | None:
    """The org an audit entry about this user is filed under (its first assignment's)."""
    row = await session.execute(
        select(RoleAssignment.org_id)
        .where(RoleAssignment.user_id == user.id)
        .order_by(RoleAssignment.created_at, RoleAssignment.id)
        .limit(1)
    )
    return row.scalar_one_or_none()


async def add_assignment(
    session: AsyncSession, principal: Principal, user: User, data: RoleAssignmentIn
) -> RoleAssignment:
    assignment = await _resolve_assignment(session, principal, data)
    assignment.user_id = user.id
    assignment.created_by = principal.user_id
    exists = await session.execute(
        select(RoleAssignment.id).where(
            RoleAssignment.user_id == user.id,
            RoleAssignment.role == assignment.role,
            RoleAssignment.org_id.is_not_distinct_from(assignment.org_id),
            RoleAssignment.unit_id.is_not_distinct_from(assignment.unit_id),
        )
    )
    if exists.first():
        raise ProblemError("duplicate", object="role_assignment")
    session.add(assignment)
    await session.flush()
    await audit.record(
        session,
        principal,
        "role_assignment.create",
        "user",
        user.id,
        org_id=assignment.org_id,
        after={
            "role": assignment.role,
            "org_id": str(assignment.org_id),
            "unit_id": str(assignment.unit_id) if assignment.unit_id else None,
        },
    )
    return assignment


async def remove_assignment(session: AsyncSession, principal: Principal, assignment: RoleAssignment) -> None:
    # Another admin must do it, so the platform always keeps one who can act.
    if assignment.role == Role.platform_admin and assignment.user_id == principal.user_id:
        raise ProblemError("cannot_remove_own_admin")
    await audit.record(
        session,
        principal,
        "role_assignment.delete",
        "user",
        assignment.user_id,
        org_id=assignment.org_id,
        before={"role": assignment.role, "org_id": str(assignment.org_id)},
    )
    await session.delete(assignment)
    await session.flush()


async def change_password(
    session: AsyncSession, principal: Principal, user: User, current: str, new: str
) -> None:
    """Change one's own password; every other session (refresh token) is revoked."""
    if not verify_password(current, user.password_hash):
        raise ProblemError(
            "wrong_current_password",
            errors=[{"loc": ["body", "current_password"], "msg": "wrong password", "type": "value_error"}],
        )
    check_password_strength(new)
    user.password_hash = hash_password(new)
    user.password_changed_at = utcnow()
    await revoke_user_sessions(session, user.id)
    await audit.record(
        session, principal, "user.password_change", "user", user.id, org_id=await _home_org(session, user)
    )
