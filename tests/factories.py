"""Plain async factories: build objects through the services, as the API would."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.auth.models import RoleAssignment, User
from gongjian.core.access import ROLE_PERMISSIONS, Grant, Principal, Role
from gongjian.core.security import create_access_token, hash_password
from gongjian.organizations import service as org_service
from gongjian.organizations.models import Organization, OrgKind, OrgLevel
from gongjian.organizations.schemas import OrganizationCreate
from gongjian.resident_units.models import ResidentUnit, UnitType

PASSWORD = "Demo@2026"
_PASSWORD_HASH = hash_password(PASSWORD)

SYSTEM = Principal(
    kind="user",
    id=uuid.UUID(int=0),
    name="system",
    grants=[Grant(role=Role.platform_admin, perms=ROLE_PERMISSIONS[Role.platform_admin])],
)


async def make_org(
    session: AsyncSession, parent: Organization | None, kind: OrgKind, name: str,
    level: OrgLevel = OrgLevel.other,
) -> Organization:
    body = OrganizationCreate(name=name, kind=kind, parent_id=parent.id if parent else None, level=level)
    return await org_service.create(session, SYSTEM, body)


_credit_counter = 0


def credit_code() -> str:
    """A valid unified social credit code (GB 32100), different each call."""
    from gongjian.core.validators import credit_code_check_char

    global _credit_counter
    _credit_counter += 1
    body = f"91330100{_credit_counter:09d}"
    return body + credit_code_check_char(body)


async def make_unit(session: AsyncSession, community: Organization, name: str = "测试单位",
                    type: UnitType = UnitType.soe) -> ResidentUnit:
    unit = ResidentUnit(name=name, type=type, credit_code=credit_code(), community_id=community.id)
    session.add(unit)
    await session.flush()
    return unit


async def make_user(
    session: AsyncSession, username: str, role: Role, org: Organization | None = None,
    unit: ResidentUnit | None = None,
) -> User:
    user = User(username=username, display_name=username, password_hash=_PASSWORD_HASH)
    session.add(user)
    await session.flush()
    org_id = unit.community_id if unit is not None else (org.id if org else None)
    session.add(RoleAssignment(user_id=user.id, role=role, org_id=org_id, unit_id=unit.id if unit else None))
    await session.flush()
    return user


def token_for(user: User, roles: list[str] | None = None) -> str:
    token, _ = create_access_token(subject=str(user.id), kind="user", roles=roles or [])
    return token


@dataclass
class World:
    """A small county: two streets, three communities, a unit, and a user per role."""

    orgs: dict[str, Organization] = field(default_factory=dict)
    units: dict[str, ResidentUnit] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def h(self, who: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", **extra}


async def build_world(session: AsyncSession) -> World:
    w = World()
    county = await make_org(session, None, OrgKind.county_committee, "宁川县委", OrgLevel.county)
    street_a = await make_org(session, county, OrgKind.working_committee, "城中街道党工委", OrgLevel.street)
    street_b = await make_org(session, county, OrgKind.working_committee, "城北街道党工委", OrgLevel.street)
    a1 = await make_org(session, street_a, OrgKind.committee, "东湖社区党委", OrgLevel.community)
    a2 = await make_org(session, street_a, OrgKind.committee, "桃源社区党委", OrgLevel.community)
    b1 = await make_org(session, street_b, OrgKind.committee, "北门社区党委", OrgLevel.community)
    a1_branch = await make_org(session, a1, OrgKind.branch, "东湖社区第一党支部")
    b1_branch = await make_org(session, b1, OrgKind.branch, "北门社区第一党支部")
    w.orgs.update(county=county, street_a=street_a, street_b=street_b, a1=a1, a2=a2, b1=b1,
                  a1_branch=a1_branch, b1_branch=b1_branch)
    w.units["a1"] = await make_unit(session, a1, "东湖供电所")
    w.units["b1"] = await make_unit(session, b1, "北门医院", UnitType.institution)
    specs: list[tuple[str, Role, Any, Any]] = [
        ("admin", Role.platform_admin, None, None),
        ("street", Role.org_staff, street_a, None),
        ("secretary", Role.org_admin, a1, None),
        ("staff", Role.org_staff, a1, None),
        ("secretary2", Role.org_admin, b1, None),
        ("gridworker", Role.grid_worker, a1, None),
        ("liaison", Role.unit_liaison, None, w.units["a1"]),
        ("member", Role.member, a1_branch, None),
        ("resident", Role.resident, a1, None),
    ]
    for name, role, org, unit in specs:
        user = await make_user(session, name, role, org, unit)
        w.users[name] = user
        w.tokens[name] = token_for(user, [role.value])
    await session.commit()
    return w
