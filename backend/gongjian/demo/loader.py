"""Load the demo county through the domain services, as a system principal.

Going through the services means the demo obeys the same rules as the API (validation,
scope checks, audit entries). `load` never commits: the caller owns the transaction, so
a failure halfway leaves nothing behind. One seeded random generator drives every choice,
so every load builds the same county (only ids and timestamps differ).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.auth.models import User
from gongjian.core.access import ROLE_PERMISSIONS, Grant, Principal, Role
from gongjian.demo import data
from gongjian.grids import service as grid_service
from gongjian.grids.models import GridCell, GridLayer
from gongjian.grids.schemas import BuildingCreate, GridCellCreate
from gongjian.lists.imports.format import parse_json
from gongjian.lists.imports.service import Importer
from gongjian.members import service as member_service
from gongjian.members.models import Member, MemberCategory, ReportingKind
from gongjian.members.schemas import MemberCreate, ReportingCreate
from gongjian.organizations import service as org_service
from gongjian.organizations.models import Organization, OrgKind, OrgLevel
from gongjian.organizations.schemas import CommitteeMemberCreate, OrganizationCreate
from gongjian.resident_units import service as unit_service
from gongjian.resident_units.models import PartyOrgMode, ResidentUnit, UnitType
from gongjian.resident_units.schemas import ResidentUnitCreate
from gongjian.users import service as user_service
from gongjian.users.schemas import RoleAssignmentIn, UserCreate


def system_principal(name: str = "system") -> Principal:
    """A platform-wide actor for work done by the program itself (audited with this name)."""
    return Principal(
        kind="system",
        id=uuid.UUID(int=0),
        name=name,
        grants=[Grant(role=Role.platform_admin, perms=ROLE_PERMISSIONS[Role.platform_admin])],
    )


SYSTEM = system_principal()
DEMO = system_principal("demo")


async def has_organizations(session: AsyncSession) -> bool:
    return (await session.execute(select(Organization.id).limit(1))).first() is not None


async def is_loaded(session: AsyncSession) -> bool:
    stmt = select(Organization.id).where(Organization.code == data.COUNTY.code).limit(1)
    return (await session.execute(stmt)).first() is not None


@dataclass
class Community:
    spec: data.CommunitySpec
    org: Organization
    retired_branch: Organization
    cell_branches: list[Organization]
    rings: list[list[data.Point]]
    joint_branch: Organization | None = None
    cells: list[GridCell] = field(default_factory=list)
    units: list[ResidentUnit] = field(default_factory=list)

    @property
    def short(self) -> str:
        return self.spec.short_name.removesuffix("党委")


@dataclass
class County:
    rng: random.Random
    streets: dict[str, Organization] = field(default_factory=dict)
    communities: dict[str, Community] = field(default_factory=dict)
    units: dict[str, ResidentUnit] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def bump(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


async def load(session: AsyncSession) -> dict[str, int]:
    """Build the whole demo county in the session's transaction; returns what was created."""
    c = County(rng=random.Random(data.SEED))  # noqa: S311 - demo data, not secrets
    organs, soe = await _build_tree(session, c)
    await _build_units(session, c, organs, soe)
    await _build_users(session, c)
    await _build_grids(session, c)
    in_service = await _build_members(session, c)
    await _build_reportings(session, c, in_service)
    await _build_lists(session, c)
    return dict(sorted(c.counts.items()))


# --- the organization tree ---------------------------------------------------------------------


def _kind_from_name(name: str) -> OrgKind:
    if name.endswith("党总支"):
        return OrgKind.general_branch
    if name.endswith("党委"):
        return OrgKind.committee
    return OrgKind.branch


async def _org(
    session: AsyncSession, c: County, parent: Organization | None, kind: OrgKind, name: str,
    *, level: OrgLevel = OrgLevel.other, **extra: Any,
) -> Organization:
    body = OrganizationCreate(
        name=name, kind=kind, parent_id=parent.id if parent else None, level=level, **extra
    )
    org = await org_service.create(session, DEMO, body)
    c.bump("organizations")
    return org


async def _named(
    session: AsyncSession, c: County, parent: Organization | None, kind: OrgKind, spec: data.OrgSpec,
    level: OrgLevel = OrgLevel.other, **extra: Any,
) -> Organization:
    return await _org(session, c, parent, kind, spec.name, level=level, short_name=spec.short_name,
                      code=spec.code, address=spec.address, **extra)


async def _build_tree(session: AsyncSession, c: County) -> tuple[Organization, Organization]:
    county = await _named(session, c, None, OrgKind.county_committee, data.COUNTY, OrgLevel.county,
                          established_on=date(1949, 10, 1))
    organs = await _named(session, c, county, OrgKind.working_committee, data.ORGANS_COMMITTEE)
    soe = await _named(session, c, county, OrgKind.committee, data.SOE_COMMITTEE)
    for s in data.STREETS:
        street = await _named(session, c, county, OrgKind.working_committee, s.org, OrgLevel.street)
        c.streets[s.key] = street
        for cs in s.communities:
            org = await _named(session, c, street, OrgKind.committee, cs.org, OrgLevel.community,
                               contact_phone=f"0574-6{c.rng.randrange(10**6):06d}")
            short = cs.short_name.removesuffix("党委")
            # 网格党支部: one branch per grid cell, and a branch for the retired members.
            cell_branches = [
                await _org(session, c, org, OrgKind.branch, f"{short}第{data.NUMERALS[i]}网格党支部",
                           code=f"{cs.code}-G{i + 1}")
                for i in range(cs.cells)
            ]
            retired = await _org(session, c, org, OrgKind.branch, f"{short}离退休党员党支部",
                                 code=f"{cs.code}-LT")
            c.communities[cs.key] = Community(
                spec=cs, org=org, retired_branch=retired, cell_branches=cell_branches,
                rings=data.cell_polygons(c.rng, cs.offset, cs.cells),
            )
    return organs, soe


# --- resident units and the community committee ------------------------------------------------


async def _unit_party_org(
    session: AsyncSession, c: County, community: Community, spec: data.UnitSpec,
    organs: Organization, soe: Organization,
) -> Organization | None:
    mode = PartyOrgMode(spec.party_mode)
    if mode == PartyOrgMode.single:
        assert spec.party_org is not None
        # Agencies and institutions belong to the organs committee, state firms to the SOE
        # committee; a private firm's own branch sits under its community (两新组织).
        parents = {UnitType.agency: organs, UnitType.institution: organs, UnitType.soe: soe}
        parent = parents.get(UnitType(spec.type), community.org)
        kind = _kind_from_name(spec.party_org)
        return await _org(session, c, parent, kind, spec.party_org, level=OrgLevel.unit)
    if mode == PartyOrgMode.joint:
        if community.joint_branch is None:
            community.joint_branch = await _org(
                session, c, community.org, OrgKind.branch, f"{community.short}非公企业联合党支部",
                level=OrgLevel.unit,
            )
        return community.joint_branch
    if mode == PartyOrgMode.attached:
        return community.cell_branches[0]  # a small social org's members sit in a community branch (挂靠)
    return None


async def _build_units(session: AsyncSession, c: County, organs: Organization, soe: Organization) -> None:
    for community in c.communities.values():
        for spec in community.spec.units:
            party_org = await _unit_party_org(session, c, community, spec, organs, soe)
            lng, lat = data.point_in_ring(c.rng, c.rng.choice(community.rings))
            body = ResidentUnitCreate(
                name=spec.name, type=UnitType(spec.type), credit_code=data.credit_code(c.rng, spec.authority),
                community_id=community.org.id, address=f"宁川县{spec.address}", lat=lat, lng=lng,
                party_org_mode=PartyOrgMode(spec.party_mode),
                party_org_id=party_org.id if party_org else None,
                contact_name=spec.contact, contact_phone=data.phone(c.rng),
            )
            unit = await unit_service.create(session, DEMO, body)
            c.bump("resident_units")
            c.units[spec.key] = unit
            community.units.append(unit)
        # 社区大党委: leaders of the larger units sit on the community committee as part-time members.
        for unit in community.units[:3]:
            body_member = CommitteeMemberCreate(
                name=unit.contact_name or data.person_name(c.rng, True), position="兼职委员",
                resident_unit_id=unit.id, unit_position="党组织书记" if unit.party_org_id else "负责人",
                term_start=date(2024, 1, 1), term_end=date(2028, 12, 31),
            )
            await org_service.add_committee_member(session, DEMO, community.org, body_member)
            c.bump("committee_members")


# --- logins ------------------------------------------------------------------------------------


async def _build_users(session: AsyncSession, c: County) -> None:
    for username, display_name, role, where in data.DEMO_USERS:
        taken = (await session.execute(select(User.id).where(User.username == username))).first()
        if taken is not None:
            continue  # e.g. an `admin` made with `gongjian create-admin` first: left as it is
        assignment = RoleAssignmentIn(role=Role(role))
        if where is not None:
            what, key = where.split(":")
            if what == "unit":
                assignment.unit_id = c.units[key].id
            elif what == "street":
                assignment.org_id = c.streets[key].id
            elif what == "community":
                assignment.org_id = c.communities[key].org.id
            elif what == "unit_party_org":
                assignment.org_id = c.units[key].party_org_id
        body = UserCreate(username=username, display_name=display_name, password=data.PASSWORD,
                          role_assignments=[assignment])
        c.users[username] = await user_service.create(session, DEMO, body)
        c.bump("users")


# --- grid cells and buildings ------------------------------------------------------------------

LAYER_CHOICES = (
    [GridLayer.party, GridLayer.public_order, GridLayer.sanitation],
    [GridLayer.party, GridLayer.public_order],
    [GridLayer.party, GridLayer.sanitation],
)


async def _build_grids(session: AsyncSession, c: County) -> None:
    # The community secretaries lead their first cell (社区书记兼网格长); the grid worker serves it.
    leaders = {"donghu": c.users.get("secretary"), "beimen": c.users.get("secretary2")}
    for key, community in c.communities.items():
        spec = community.spec
        street_name = spec.address.split("路")[0].split("街")[0].split("巷")[0]
        for i, ring in enumerate(community.rings):
            estate = spec.estates[i % len(spec.estates)]
            leader = leaders.get(key) if i == 0 else None
            worker = c.users.get("gridworker") if key == "donghu" and i == 0 else None
            cell = await grid_service.create_cell(
                session, DEMO,
                GridCellCreate(
                    community_id=community.org.id,
                    code=f"{spec.code.rsplit('-', 1)[-1]}{i + 1:02d}",
                    name=f"{community.short}第{data.NUMERALS[i]}网格（{estate}）",
                    boundary={"type": "Polygon", "coordinates": [[list(p) for p in ring]]},
                    layers=c.rng.choice(LAYER_CHOICES),
                    party_branch_id=community.cell_branches[i].id,
                    leader_id=leader.id if leader else None,
                    worker_ids=[worker.id] if worker else [],
                ),
            )
            community.cells.append(cell)
            c.bump("grid_cells")
            for b in range(c.rng.randint(3, 5)):
                floors = c.rng.choice((6, 7, 11, 18, 26))
                entrances = c.rng.randint(1, 3)
                lng, lat = data.point_in_ring(c.rng, ring)
                body = BuildingCreate(
                    name=f"{estate}{b + 1}幢", address=f"宁川县{street_name}{estate}{b + 1}幢",
                    households=floors * entrances * c.rng.choice((2, 2, 3, 4)),
                    floors=floors, units=entrances,
                    building_leader_name=data.person_name(c.rng, c.rng.random() < 0.4), lat=lat, lng=lng,
                )
                await grid_service.create_building(session, DEMO, cell, body)
                c.bump("buildings")


# --- party members -----------------------------------------------------------------------------

# (category, share, birth years)
CATEGORIES = (
    (MemberCategory.in_service, 0.45, (1966, 2001)),
    (MemberCategory.retired, 0.35, (1936, 1964)),
    (MemberCategory.floating, 0.10, (1972, 2000)),
    (MemberCategory.hardship, 0.10, (1940, 1975)),
)


def _category(rng: random.Random) -> tuple[MemberCategory, tuple[int, int]]:
    roll = rng.random()
    for category, share, years in CATEGORIES:
        if roll < share:
            return category, years
        roll -= share
    return CATEGORIES[0][0], CATEGORIES[0][2]


def _unique(make: Any, used: set[str]) -> str:
    while (value := make()) in used:
        pass
    used.add(value)
    return str(value)


async def _build_members(session: AsyncSession, c: County) -> list[tuple[Member, str]]:
    """200 members spread over the communities; returns the in-service ones with their estate."""
    rng = c.rng
    employers = [u for u in c.units.values() if u.party_org_id is not None]
    used_ids: set[str] = set()
    used_phones: set[str] = set()
    in_service: list[tuple[Member, str]] = []
    communities = list(c.communities.values())
    member_user = c.users.get("member")
    for n in range(data.MEMBERS):
        community = communities[n * len(communities) // data.MEMBERS]
        # The `member` login is the first member of 东湖: a teacher who lives there.
        linked = n == 0 and member_user is not None
        category, (first_year, last_year) = _category(rng)
        if linked:
            category, (first_year, last_year) = MemberCategory.in_service, (1985, 1992)
        male = linked or rng.random() < 0.55
        birth = data.birth_date(rng, first_year, last_year)
        local = category != MemberCategory.floating or rng.random() < 0.3
        id_number = _unique(lambda: data.id_number(rng, birth, male, local), used_ids)  # noqa: B023
        phone = _unique(lambda: data.phone(rng), used_phones) if rng.random() < 0.95 else None
        idx = rng.randrange(len(community.cells))
        employer: ResidentUnit | None = None
        org = community.retired_branch if category == MemberCategory.retired else community.cell_branches[idx]
        if linked:
            employer = c.units[data.MEMBER_EMPLOYER]
        elif category == MemberCategory.in_service and rng.random() < 0.8:
            employer = rng.choice(employers)
        if employer is not None and employer.party_org_id is not None:
            # An in-service member's membership is in their employer's party org (they report
            # to the community where they live: 双报到).
            org = await session.get_one(Organization, employer.party_org_id)
        joined = birth + timedelta(days=365 * rng.randint(19, 32) + rng.randrange(365))
        name = data.person_name(rng, male)
        if linked and member_user is not None:
            name = member_user.display_name
        body = MemberCreate(
            name=name, id_number=id_number, phone=phone, org_id=org.id, category=category,
            employer_unit_id=employer.id if employer else None, residence_community_id=community.org.id,
            grid_cell_id=community.cells[idx].id, joined_party_on=min(joined, date(2025, 6, 30)),
            user_id=member_user.id if linked and member_user else None,
        )
        member = await member_service.create(session, DEMO, body)
        c.bump("members")
        if category == MemberCategory.in_service:
            in_service.append((member, community.spec.estates[idx % len(community.spec.estates)]))
    return in_service


# --- 双报到 --------------------------------------------------------------------------------------

REPORT_NOTES = (
    "本人住在{estate}，可参加周末志愿服务",
    "擅长法律咨询，愿为居民提供义务服务",
    "可以辅导中小学生课业",
    "有医护经验，可参与社区健康义诊",
    "愿意参与楼道环境整治和垃圾分类宣传",
    None,
)
RETURN_REASON = "请补充所在单位党组织信息"
DEREGISTER_REASON = "已搬离本社区"


async def _report(session: AsyncSession, c: County, body: ReportingCreate, outcome: str) -> None:
    """Submit a reporting and take it to `outcome`: submit, accept, return or deregister."""
    reporting = await member_service.submit(session, DEMO, body)
    c.bump("reportings")
    if outcome == "return":
        await member_service.transition(session, DEMO, reporting, "return", RETURN_REASON)
    elif outcome in ("accept", "deregister"):
        await member_service.transition(session, DEMO, reporting, "accept", None)
        if outcome == "deregister":
            await member_service.transition(session, DEMO, reporting, "deregister", DEREGISTER_REASON)


async def _build_reportings(session: AsyncSession, c: County, in_service: list[tuple[Member, str]]) -> None:
    rng = c.rng
    # Units with a party org report to their community; the second of each community awaits review.
    for community in c.communities.values():
        reporting_units = [u for u in community.units if u.party_org_id is not None]
        for i, unit in enumerate(reporting_units):
            body = ReportingCreate(kind=ReportingKind.unit, resident_unit_id=unit.id,
                                   note="单位党组织到社区报到")
            await _report(session, c, body, "submit" if i == 1 else "accept")
    # In-service members report to the community they live in; not all of them have yet.
    for n, (member, estate) in enumerate(in_service):
        if n > 0 and rng.random() < 0.3:
            continue
        roll = rng.random()
        if n == 0 or roll < 0.7:
            outcome = "accept"
        elif roll < 0.85:
            outcome = "submit"
        elif roll < 0.95:
            outcome = "return"
        else:
            outcome = "deregister"
        note = rng.choice(REPORT_NOTES)
        body = ReportingCreate(kind=ReportingKind.member, member_id=member.id,
                               note=note.format(estate=estate) if note else None)
        await _report(session, c, body, outcome)


# --- the resources and needs lists ---------------------------------------------------------------

# The public sample of the lists (shared/data/matching/public.json without its evaluation labels).
LISTS_FILE = Path(__file__).with_name("lists.json")
LISTS_STREET = "chengzhong"


async def _build_lists(session: AsyncSession, c: County) -> None:
    """Import the sample lists under 城中街道 as `POST /lists/imports?create_missing=true` would: its
    东湖 and 桃源 are the street's own communities; the others (书院, and a 北门 of its own: the one
    of the demo is in 江北) are created with their grid cells. One street holds the whole sample, so
    the street's matching run sees every resource the sample's needs are labelled with."""
    importer = Importer(session, DEMO, c.streets[LISTS_STREET], create_missing=True, partial=False)
    report = await importer.run(parse_json(LISTS_FILE.read_bytes()))
    if report.failed:
        raise RuntimeError(f"demo lists: {[e.message(english=True) for e in report.errors[:5]]}")
    for section in ("resources", "needs"):
        c.counts[section] = report.counts[section]["created"]
    c.counts["organizations"] += report.counts["communities"]["created"]
    c.counts["grid_cells"] += report.counts["grids"]["created"]
