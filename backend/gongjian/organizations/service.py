"""The organization tree: create, edit, move and delete nodes, keep paths right."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.core import audit
from gongjian.core.access import Perm, Principal, get_visible, in_subtree, subtree_upper_bound, visible
from gongjian.core.db import contains
from gongjian.core.errors import ProblemError
from gongjian.organizations.models import ALLOWED_PARENTS, CommitteeMember, Organization, OrgKind, OrgLevel
from gongjian.organizations.schemas import (
    CommitteeMemberCreate,
    OrganizationCreate,
    OrganizationUpdate,
)

# Serialises subtree moves: two concurrent moves could otherwise each pass the
# "not under my own descendant" check and together make a cycle.
_MOVE_LOCK_KEY = 0x6A_6F_72_67  # arbitrary, stable


def _check_parent_kind(kind: OrgKind, parent: Organization | None) -> None:
    parent_kind = OrgKind(parent.kind) if parent else None
    if parent_kind not in ALLOWED_PARENTS[kind]:
        raise ProblemError(
            "invalid_parent", kind=kind.value, parent_kind=parent_kind.value if parent_kind else "-"
        )


async def get(
    session: AsyncSession,
    principal: Principal,
    org_id: uuid.UUID,
    perm: Perm = Perm.organizations_read,
    *,
    for_update: bool = False,
) -> Organization:
    return await get_visible(session, Organization, org_id, principal, perm, name="organization",
                             for_update=for_update)


def list_query(
    principal: Principal,
    *,
    kind: OrgKind | None = None,
    level: str | None = None,
    parent_id: uuid.UUID | None = None,
    under: Organization | None = None,
    q: str | None = None,
) -> Select[Any]:
    stmt = visible(select(Organization), Organization, principal, Perm.organizations_read)
    if kind is not None:
        stmt = stmt.where(Organization.kind == kind)
    if level is not None:
        stmt = stmt.where(Organization.level == level)
    if parent_id is not None:
        stmt = stmt.where(Organization.parent_id == parent_id)
    if under is not None:
        stmt = stmt.where(in_subtree(Organization.path, under.path), Organization.id != under.id)
    if q:
        stmt = stmt.where(contains(Organization.name, q))
    return stmt


async def create(session: AsyncSession, principal: Principal, data: OrganizationCreate) -> Organization:
    parent: Organization | None = None
    if data.parent_id is not None:
        parent = await get_visible(
            session, Organization, data.parent_id, principal, Perm.organizations_write, name="organization"
        )
        # Creates share the move lock: a move in progress finishes first (its UPDATE would not see a
        # child inserted meanwhile and would leave it under the old path), then we read the new path.
        await session.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": _MOVE_LOCK_KEY})
        # Share-lock the parent so a concurrent move cannot change its path under us.
        await session.execute(
            select(Organization.id).where(Organization.id == parent.id).with_for_update(read=True)
        )
        await session.refresh(parent)
    elif not any(g.is_global for g in principal.grants_for(Perm.organizations_write)):
        # Only the platform admin may plant a new root.
        raise ProblemError("forbidden")
    _check_parent_kind(data.kind, parent)
    next_seq = text("SELECT nextval(pg_get_serial_sequence('organizations', 'seq'))")
    seq = (await session.execute(next_seq)).scalar_one()
    org = Organization(
        **data.model_dump(),
        seq=seq,
        path=(parent.path if parent else "/") + f"{seq}/",
        depth=(parent.depth + 1) if parent else 0,
    )
    session.add(org)
    await session.flush()
    await audit.record(session, principal, "organization.create", "organization", org.id, org_id=org.id,
                       after=audit.snapshot(org))
    return org


async def update_org(
    session: AsyncSession, principal: Principal, org: Organization, data: OrganizationUpdate
) -> Organization:
    before = audit.snapshot(org)
    changes = data.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if key in ("name", "level") and value is None:
            continue  # not nullable: an explicit null leaves the value as it is
        setattr(org, key, value)
    await session.flush()
    await audit.record(session, principal, "organization.update", "organization", org.id, org_id=org.id,
                       before=before, after=audit.snapshot(org))
    return org


async def move(
    session: AsyncSession, principal: Principal, org: Organization, new_parent_id: uuid.UUID
) -> Organization:
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MOVE_LOCK_KEY})
    await session.refresh(org)
    new_parent = await get_visible(
        session, Organization, new_parent_id, principal, Perm.organizations_write, name="organization"
    )
    if new_parent.path.startswith(org.path):
        raise ProblemError("move_into_descendant")
    _check_parent_kind(OrgKind(org.kind), new_parent)
    if org.parent_id == new_parent.id:
        return org
    before = audit.snapshot(org)
    old_path, new_path = org.path, new_parent.path + f"{org.seq}/"
    delta = new_parent.depth + 1 - org.depth
    # All descendants in one statement, in this request's transaction.
    await session.execute(
        update(Organization)
        .where(Organization.path >= old_path, Organization.path < subtree_upper_bound(old_path),
               Organization.id != org.id)
        .values(
            path=func.concat(new_path, func.substr(Organization.path, len(old_path) + 1)),
            depth=Organization.depth + delta,
        )
        .execution_options(synchronize_session=False)
    )
    org.parent_id = new_parent.id
    org.path = new_path
    org.depth = org.depth + delta
    await session.flush()
    await audit.record(session, principal, "organization.move", "organization", org.id, org_id=org.id,
                       before=before, after=audit.snapshot(org))
    return org


async def delete(session: AsyncSession, principal: Principal, org: Organization) -> None:
    has_child = (
        await session.execute(select(Organization.id).where(Organization.parent_id == org.id).limit(1))
    ).first()
    if has_child:
        raise ProblemError("has_children")
    # Nor with other domains' data attached to it (resident units, ...).
    only_this = select(Organization.id).where(Organization.id == org.id)
    for counter in COUNTERS.values():
        if (await session.execute(counter(only_this))).scalar_one():
            raise ProblemError("has_children")
    before = audit.snapshot(org)
    await audit.record(session, principal, "organization.delete", "organization", org.id,
                       org_id=org.parent_id, before=before)
    await session.delete(org)
    await session.flush()


async def counts(session: AsyncSession, org: Organization) -> dict[str, Any]:
    in_tree = in_subtree(Organization.path, org.path)
    rows = (
        await session.execute(
            select(Organization.kind, func.count())
            .where(in_tree, Organization.id != org.id)
            .group_by(Organization.kind)
        )
    ).all()
    by_kind = {kind: n for kind, n in rows}
    children = (
        await session.execute(select(func.count()).where(Organization.parent_id == org.id))
    ).scalar_one()
    subtree_ids = select(Organization.id).where(in_tree)
    extra: dict[str, int] = {}
    for name, counter in COUNTERS.items():
        extra[name] = (await session.execute(counter(subtree_ids))).scalar_one()
    return {
        "organization_id": org.id,
        "descendants": sum(by_kind.values()),
        "children": children,
        "by_kind": by_kind,
        **extra,
    }


def _count_units(subtree_ids: Select[Any]) -> Select[Any]:
    from gongjian.resident_units.models import ResidentUnit

    return select(func.count()).select_from(ResidentUnit).where(ResidentUnit.community_id.in_(subtree_ids))


# Other domains' figures shown on a node; each takes the subtree's id query.
COUNTERS: dict[str, Any] = {"resident_units": _count_units}


async def add_committee_member(
    session: AsyncSession, principal: Principal, org: Organization, data: CommitteeMemberCreate
) -> CommitteeMember:
    if org.level != OrgLevel.community:
        # Part-time members (兼职委员) sit on a community committee (社区大党委) only.
        raise ProblemError("invalid_community")
    if data.resident_unit_id is not None:
        from gongjian.resident_units.models import ResidentUnit

        await get_visible(session, ResidentUnit, data.resident_unit_id, principal, Perm.units_read,
                          name="resident_unit")
    if data.term_start and data.term_end and data.term_end < data.term_start:
        raise ProblemError(
            "validation_error",
            errors=[{"loc": ["body", "term_end"], "msg": "before term_start", "type": "value_error"}],
        )
    member = CommitteeMember(organization_id=org.id, **data.model_dump())
    session.add(member)
    await session.flush()
    await audit.record(session, principal, "committee_member.create", "committee_member", member.id,
                       org_id=org.id, after=audit.snapshot(member))
    return member


async def remove_committee_member(
    session: AsyncSession, principal: Principal, member: CommitteeMember
) -> None:
    await audit.record(session, principal, "committee_member.delete", "committee_member", member.id,
                       org_id=member.organization_id, before=audit.snapshot(member))
    await session.delete(member)
    await session.flush()
