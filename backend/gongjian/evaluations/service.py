"""Two-way evaluation (双向评议): rubrics, yearly windows, the two sides' ratings and their roll-up.

The rules:
- a window is per agreement (its number) and year; `open_windows` opens one for every agreement in
  force during the year (the year-end job calls it), staff may open one for a single agreement;
- the community side is rated by an org_admin or org_staff of the community itself, the unit side
  by the unit's liaison; once each, and only between `opens_at` and `closes_at` (else 409);
- a side's rating (its scores, total and comment) is shown to the other side only once both have
  submitted or the window has closed; until then the other side learns only that it was submitted.
  Anyone whose scope covers both sides (a platform admin) sees both. For the same reason the audit
  log records who submitted, never the scores;
- a rating counts in the yearly scores only once it is shown to both sides (revealed), so a score
  never leaks a rating early. The unit's yearly score is the average total of the community-side
  ratings of its windows that year; the community's, of the unit-side ratings.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, distinct, func, or_, select, update
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from gongjian.agreements.models import Agreement, AgreementState, Side
from gongjian.core import audit
from gongjian.core.access import (
    SELF_ONLY_ROLES,
    Perm,
    Principal,
    Role,
    ensure_org_in_scope,
    get_visible,
    require,
    visible,
)
from gongjian.core.db import utcnow
from gongjian.core.errors import ProblemError
from gongjian.evaluations.models import (
    EvaluationRubric,
    EvaluationRubricItem,
    EvaluationSubmission,
    EvaluationWindow,
)
from gongjian.evaluations.schemas import (
    RubricCreate,
    RubricItemOut,
    RubricOut,
    SideOut,
    SubmissionCreate,
    SubmissionOut,
    WindowCreate,
    WindowOut,
    WindowStatus,
    WindowUpdate,
    YearScore,
)
from gongjian.organizations.models import Organization, OrgLevel

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
# How long a window stays open unless staff say otherwise.
WINDOW_DAYS = 30

# The side a rating is about: the community side rates the unit, the unit side the community.
RATES = {Side.community: "unit", Side.unit: "community"}

# Rubrics apply when no county or street has set one: (key, label, description, weight, max_score).
DEFAULT_RUBRICS: dict[Side, tuple[str, list[tuple[str, str, str, int, int]]]] = {
    Side.community: (
        "社区评议驻区单位（默认）",
        [
            ("commitments_kept", "履行承诺", "协议承诺的资源、项目、活动是否兑现", 30, 10),
            ("activities_joined", "参加活动", "参加统一活动日、主题党日等共建活动", 20, 10),
            ("members_reported", "党员报到", "在职党员到居住社区报到并参加服务", 20, 10),
            ("responsiveness", "响应及时", "对社区需求和派单的响应速度", 15, 10),
            ("resources_shared", "资源共享", "场地、设备、专业力量向社区开放", 15, 10),
        ],
    ),
    Side.unit: (
        "驻区单位评议社区（默认）",
        [
            ("commitments_kept", "履行承诺", "社区承诺的事项是否兑现", 30, 10),
            ("support", "服务保障", "为单位和职工提供的服务与便利", 25, 10),
            ("responsiveness", "沟通协调", "对单位诉求的回应和协调", 25, 10),
            ("activities_organised", "活动组织", "共建活动的组织和成效", 20, 10),
        ],
    ),
}

# Agreement versions that were in force at some time: signed by both sides, whatever happened since.
SIGNED_STATES = (
    AgreementState.active,
    AgreementState.expired,
    AgreementState.terminated,
    AgreementState.superseded,
)


# --- periods ----------------------------------------------------------------------------------


def year_bounds(year: int) -> tuple[datetime, datetime]:
    """The year as [start, end) instants, in local (Asia/Shanghai) time."""
    return (
        datetime(year, 1, 1, tzinfo=LOCAL_TZ),
        datetime(year + 1, 1, 1, tzinfo=LOCAL_TZ),
    )


def local_year(at: datetime | None = None) -> int:
    return (at or utcnow()).astimezone(LOCAL_TZ).year


def in_force_during(year: int) -> ColumnElement[bool]:
    """Agreement versions in force at some time during `year`: signed by both sides (and not
    activated after the year ended), a term overlapping the year, and not terminated or superseded
    before it began."""
    start, end = year_bounds(year)
    return and_(
        Agreement.state.in_(SIGNED_STATES),
        # The state says it was signed; a version activated after the year is not of it.
        or_(Agreement.activated_at.is_(None), Agreement.activated_at < end),
        Agreement.term_from <= date(year, 12, 31),
        Agreement.term_to >= date(year, 1, 1),
        or_(Agreement.terminated_at.is_(None), Agreement.terminated_at >= start),
        or_(Agreement.superseded_at.is_(None), Agreement.superseded_at >= start),
    )


def in_force_latest(year: int) -> Select[Any]:
    """Per agreement number, the latest version in force during `year` (its commitments stand)."""
    return (
        select(Agreement)
        .where(in_force_during(year))
        .order_by(Agreement.number, Agreement.version_no.desc())
        .ext(distinct_on(Agreement.number))
    )


def _local_text(at: datetime) -> str:
    return at.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M")


# --- rubrics ----------------------------------------------------------------------------------


def _field_error(loc: list[str], msg: str) -> ProblemError:
    return ProblemError("validation_error", errors=[{"loc": loc, "msg": msg, "type": "value_error"}])


async def items_of(
    session: AsyncSession, rubric_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[EvaluationRubricItem]]:
    ids = sorted(set(rubric_ids))
    out: dict[uuid.UUID, list[EvaluationRubricItem]] = {i: [] for i in ids}
    if not ids:
        return out
    stmt = (
        select(EvaluationRubricItem)
        .where(EvaluationRubricItem.rubric_id.in_(ids))
        .order_by(EvaluationRubricItem.rubric_id, EvaluationRubricItem.position)
    )
    for item in (await session.execute(stmt)).scalars():
        out[item.rubric_id].append(item)
    return out


def rubric_out(rubric: EvaluationRubric, items: Sequence[EvaluationRubricItem]) -> RubricOut:
    return RubricOut(
        id=rubric.id,
        org_id=rubric.org_id,
        side=rubric.side,
        name=rubric.name,
        items=[RubricItemOut.model_validate(i) for i in items],
        retired_at=rubric.retired_at,
        created_at=rubric.created_at,
    )


def builtin_rubric_out(side: Side) -> RubricOut:
    name, items = DEFAULT_RUBRICS[side]
    return RubricOut(
        id=None,
        org_id=None,
        side=side,
        name=name,
        items=[
            RubricItemOut(key=k, label=label, description=d, weight=w, max_score=m)
            for k, label, d, w, m in items
        ],
        retired_at=None,
        created_at=None,
    )


def _new_items(
    rubric_id: uuid.UUID, specs: Iterable[tuple[str, str, str, int, int]]
) -> list[EvaluationRubricItem]:
    return [
        EvaluationRubricItem(
            rubric_id=rubric_id, key=k, label=label, description=d, weight=w, max_score=m, position=n
        )
        for n, (k, label, d, w, m) in enumerate(specs)
    ]


async def default_rubric(session: AsyncSession, side: Side) -> EvaluationRubric:
    """The built-in default rubric of `side`, seeded from `DEFAULT_RUBRICS` the first time."""
    current = select(EvaluationRubric).where(
        EvaluationRubric.org_id.is_(None),
        EvaluationRubric.side == side,
        EvaluationRubric.retired_at.is_(None),
    )
    rubric = (await session.execute(current)).scalar_one_or_none()
    if rubric is not None:
        return rubric
    name, specs = DEFAULT_RUBRICS[side]
    # Two first windows at once: the partial unique index lets one seed, the other waits and reads it.
    new_id = uuid.uuid4()
    inserted = (
        await session.execute(
            insert(EvaluationRubric)
            .values(id=new_id, org_id=None, side=side, name=name)
            .on_conflict_do_nothing()
            .returning(EvaluationRubric.id)
        )
    ).scalar_one_or_none()
    if inserted is not None:
        session.add_all(_new_items(new_id, specs))
        await session.flush()
    return (await session.execute(current)).scalar_one()


def ancestor_paths(path: str) -> list[str]:
    """'/1/5/9/' → ['/1/', '/1/5/', '/1/5/9/']: the organization and every one above it."""
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[: n + 1]) + "/" for n in range(len(parts))]


async def configured_rubric(session: AsyncSession, org_path: str, side: Side) -> EvaluationRubric | None:
    """The current rubric of `side` set by the nearest organization at or above `org_path`."""
    stmt = (
        select(EvaluationRubric)
        .join(Organization, Organization.id == EvaluationRubric.org_id)
        .where(
            Organization.path.in_(ancestor_paths(org_path)),
            EvaluationRubric.side == side,
            EvaluationRubric.retired_at.is_(None),
        )
        .order_by(Organization.depth.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def _org_path(session: AsyncSession, org_id: uuid.UUID) -> str:
    return str(
        (await session.execute(select(Organization.path).where(Organization.id == org_id))).scalar_one()
    )


async def window_rubrics(
    session: AsyncSession, community_id: uuid.UUID, cache: dict[uuid.UUID, tuple[uuid.UUID, uuid.UUID]]
) -> tuple[uuid.UUID, uuid.UUID]:
    """The rubrics a window of the community takes now: (the community side's, the unit side's)."""
    if community_id not in cache:
        path = await _org_path(session, community_id)
        ids = []
        for side in (Side.community, Side.unit):
            rubric = await configured_rubric(session, path, side) or await default_rubric(session, side)
            ids.append(rubric.id)
        cache[community_id] = (ids[0], ids[1])
    return cache[community_id]


async def effective_rubric(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, side: Side
) -> RubricOut:
    """What a window of a community under `org_id` would take now (the built-in default unsaved)."""
    org = await ensure_org_in_scope(session, principal, org_id, Perm.evaluations_read)
    rubric = await configured_rubric(session, org.path, side)
    if rubric is None:
        found = (
            await session.execute(
                select(EvaluationRubric).where(
                    EvaluationRubric.org_id.is_(None),
                    EvaluationRubric.side == side,
                    EvaluationRubric.retired_at.is_(None),
                )
            )
        ).scalar_one_or_none()
        if found is None:
            return builtin_rubric_out(side)
        rubric = found
    return rubric_out(rubric, (await items_of(session, [rubric.id]))[rubric.id])


async def get_rubric(session: AsyncSession, principal: Principal, rubric_id: uuid.UUID) -> EvaluationRubric:
    return await get_visible(
        session, EvaluationRubric, rubric_id, principal, Perm.evaluations_read, name="evaluation_rubric"
    )


def rubric_list_query(
    principal: Principal, *, org_id: uuid.UUID | None, side: Side | None, current: bool | None
) -> Select[Any]:
    stmt = visible(select(EvaluationRubric), EvaluationRubric, principal, Perm.evaluations_read)
    if org_id is not None:
        stmt = stmt.where(EvaluationRubric.org_id == org_id)
    if side is not None:
        stmt = stmt.where(EvaluationRubric.side == side)
    if current is True:
        stmt = stmt.where(EvaluationRubric.retired_at.is_(None))
    elif current is False:
        stmt = stmt.where(EvaluationRubric.retired_at.is_not(None))
    return stmt


async def create_rubric(session: AsyncSession, principal: Principal, data: RubricCreate) -> EvaluationRubric:
    """A county or street organization's new rubric for one side; it retires the one before it.
    Windows already open keep the rubric they opened with."""
    require(principal, Perm.evaluations_manage)
    org = await ensure_org_in_scope(session, principal, data.org_id, Perm.evaluations_manage)
    if org.level not in (OrgLevel.county, OrgLevel.street):
        raise ProblemError("invalid_rubric_org")
    # Two new rubrics of one organization at once: the second retires the first (last one wins).
    await session.execute(
        select(Organization.id).where(Organization.id == org.id).with_for_update(key_share=True)
    )
    now = utcnow()
    await session.execute(
        update(EvaluationRubric)
        .where(
            EvaluationRubric.org_id == org.id,
            EvaluationRubric.side == data.side,
            EvaluationRubric.retired_at.is_(None),
        )
        .values(retired_at=now)
        .execution_options(synchronize_session=False)
    )
    rubric = EvaluationRubric(org_id=org.id, side=data.side, name=data.name, created_by=principal.user_id)
    session.add(rubric)
    await session.flush()
    session.add_all(
        _new_items(rubric.id, ((i.key, i.label, i.description, i.weight, i.max_score) for i in data.items))
    )
    await session.flush()
    await audit.record(
        session,
        principal,
        "evaluation_rubric.create",
        "evaluation_rubric",
        rubric.id,
        org_id=org.id,
        after={**audit.snapshot(rubric), "items": [i.model_dump() for i in data.items]},
    )
    return rubric


# --- scores -----------------------------------------------------------------------------------


def check_scores(items: Sequence[EvaluationRubricItem], scores: dict[str, float]) -> None:
    """Every item of the rubric scored, nothing else, each from 0 to the item's max_score: else 422."""
    errors: list[dict[str, Any]] = []
    by_key = {i.key: i for i in items}
    for key in by_key.keys() - scores.keys():
        errors.append({"loc": ["body", "scores", key], "msg": "missing score", "type": "missing"})
    for key in scores.keys() - by_key.keys():
        errors.append({"loc": ["body", "scores", key], "msg": "not an item of the rubric", "type": "extra"})
    for key, value in scores.items():
        item = by_key.get(key)
        if item is not None and not 0 <= value <= item.max_score:
            errors.append(
                {
                    "loc": ["body", "scores", key],
                    "msg": f"must be between 0 and {item.max_score}",
                    "type": "out_of_range",
                }
            )
    if errors:
        raise ProblemError("invalid_scores", errors=sorted(errors, key=lambda e: e["loc"][2]))


def weighted_total(items: Sequence[EvaluationRubricItem], scores: dict[str, float]) -> Decimal:
    """The weighted share of the maximum, on 0–100, to two decimals."""
    weights = sum(i.weight for i in items)
    share = sum(
        (Decimal(i.weight) * Decimal(str(scores[i.key])) / Decimal(i.max_score) for i in items), Decimal(0)
    )
    return (share * 100 / weights).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


# --- who rates, who sees ----------------------------------------------------------------------


def rater_sides(principal: Principal, window: EvaluationWindow) -> set[Side]:
    """The sides the principal rates for in this window: the community's own org_admin or
    org_staff for the community, the unit's liaison for the unit. Nobody above them rates."""
    sides: set[Side] = set()
    for grant in principal.grants_for(Perm.evaluations_submit):
        if grant.unit_id is not None:
            if grant.unit_id == window.unit_id:
                sides.add(Side.unit)
        elif grant.role in (Role.org_admin, Role.org_staff) and grant.org_id == window.community_id:
            sides.add(Side.community)
    return sides


def _viewer_sides(principal: Principal, community_path: str, unit_id: uuid.UUID) -> set[Side]:
    """The sides whose view the principal shares: the community's (an org grant over it) and the
    unit's (a liaison grant on it)."""
    sides: set[Side] = set()
    for grant in principal.grants_for(Perm.evaluations_read):
        if grant.is_global:
            return {Side.community, Side.unit}
        if grant.unit_id is not None:
            if grant.unit_id == unit_id:
                sides.add(Side.unit)
        elif (
            grant.org_path is not None
            and grant.role not in SELF_ONLY_ROLES
            and community_path.startswith(grant.org_path)
        ):
            sides.add(Side.community)
    return sides


def status_of(window: EvaluationWindow, now: datetime) -> WindowStatus:
    if now < window.opens_at:
        return WindowStatus.scheduled
    if now >= window.closes_at:
        return WindowStatus.closed
    return WindowStatus.open


@dataclass
class _Context:
    submissions: dict[uuid.UUID, dict[Side, EvaluationSubmission]]
    paths: dict[uuid.UUID, str]
    rubrics: dict[uuid.UUID, RubricOut]


async def _context(session: AsyncSession, windows: Sequence[EvaluationWindow]) -> _Context:
    ids = [w.id for w in windows]
    submissions: dict[uuid.UUID, dict[Side, EvaluationSubmission]] = {i: {} for i in ids}
    if ids:
        rows = await session.execute(
            select(EvaluationSubmission).where(EvaluationSubmission.window_id.in_(ids))
        )
        for sub in rows.scalars():
            submissions[sub.window_id][Side(sub.side)] = sub
    communities = sorted({w.community_id for w in windows})
    paths: dict[uuid.UUID, str] = {}
    if communities:
        rows2 = await session.execute(
            select(Organization.id, Organization.path).where(Organization.id.in_(communities))
        )
        paths = {oid: path for oid, path in rows2}
    rubric_ids = {w.community_rubric_id for w in windows} | {w.unit_rubric_id for w in windows}
    rubrics: dict[uuid.UUID, RubricOut] = {}
    if rubric_ids:
        items = await items_of(session, rubric_ids)
        found = await session.execute(
            select(EvaluationRubric).where(EvaluationRubric.id.in_(sorted(rubric_ids)))
        )
        rubrics = {r.id: rubric_out(r, items[r.id]) for r in found.scalars()}
    return _Context(submissions, paths, rubrics)


def _submission_out(sub: EvaluationSubmission) -> SubmissionOut:
    return SubmissionOut(
        id=sub.id,
        window_id=sub.window_id,
        side=sub.side,
        rubric_id=sub.rubric_id,
        scores={k: float(v) for k, v in sub.scores.items()},
        total=float(sub.total),
        comment=sub.comment,
        submitted_by=sub.submitted_by,
        submitted_at=sub.submitted_at,
    )


def _window_out(principal: Principal, window: EvaluationWindow, ctx: _Context, now: datetime) -> WindowOut:
    subs = ctx.submissions.get(window.id, {})
    status = status_of(window, now)
    revealed = len(subs) == 2 or status == WindowStatus.closed
    viewer = _viewer_sides(principal, ctx.paths.get(window.community_id, ""), window.unit_id)
    sides = []
    for side, rubric_id in ((Side.community, window.community_rubric_id), (Side.unit, window.unit_rubric_id)):
        sub = subs.get(side)
        shown = sub is not None and (revealed or side in viewer)
        sides.append(
            SideOut(
                side=side,
                rates=RATES[side],
                rubric=ctx.rubrics[rubric_id],
                submitted=sub is not None,
                submission=_submission_out(sub) if shown and sub is not None else None,
            )
        )
    can_submit = sorted(rater_sides(principal, window) - subs.keys()) if status == WindowStatus.open else []
    return WindowOut(
        id=window.id,
        agreement_id=window.agreement_id,
        agreement_number=window.agreement_number,
        community_id=window.community_id,
        unit_id=window.unit_id,
        year=window.year,
        opens_at=window.opens_at,
        closes_at=window.closes_at,
        status=status,
        revealed=revealed,
        can_submit=can_submit,
        sides=sides,
        opened_by=window.opened_by,
        version=window.version,
        created_at=window.created_at,
    )


async def window_out_many(
    session: AsyncSession, principal: Principal, windows: Sequence[EvaluationWindow]
) -> list[WindowOut]:
    ctx = await _context(session, windows)
    now = utcnow()
    return [_window_out(principal, w, ctx, now) for w in windows]


async def window_out(session: AsyncSession, principal: Principal, window: EvaluationWindow) -> WindowOut:
    return (await window_out_many(session, principal, [window]))[0]


# --- windows ----------------------------------------------------------------------------------


async def get_window(
    session: AsyncSession,
    principal: Principal,
    window_id: uuid.UUID,
    perm: Perm = Perm.evaluations_read,
    *,
    for_update: bool = False,
) -> EvaluationWindow:
    return await get_visible(
        session, EvaluationWindow, window_id, principal, perm, name="evaluation_window", for_update=for_update
    )


def window_list_query(
    principal: Principal,
    *,
    year: int | None = None,
    community_id: uuid.UUID | None = None,
    unit_id: uuid.UUID | None = None,
    agreement_number: str | None = None,
) -> Select[Any]:
    stmt = visible(select(EvaluationWindow), EvaluationWindow, principal, Perm.evaluations_read)
    if year is not None:
        stmt = stmt.where(EvaluationWindow.year == year)
    if community_id is not None:
        stmt = stmt.where(EvaluationWindow.community_id == community_id)
    if unit_id is not None:
        stmt = stmt.where(EvaluationWindow.unit_id == unit_id)
    if agreement_number is not None:
        stmt = stmt.where(EvaluationWindow.agreement_number == agreement_number)
    return stmt


async def get_agreement(
    session: AsyncSession, principal: Principal, agreement_id: uuid.UUID, perm: Perm = Perm.evaluations_read
) -> Agreement:
    return await get_visible(session, Agreement, agreement_id, principal, perm, name="agreement")


async def _insert_window(
    session: AsyncSession,
    agreement: Agreement,
    year: int,
    opens_at: datetime,
    closes_at: datetime,
    opened_by: uuid.UUID | None,
    rubrics: dict[uuid.UUID, tuple[uuid.UUID, uuid.UUID]] | None = None,
) -> EvaluationWindow | None:
    """The new window, or None when the agreement's window of the year exists already."""
    community_rubric_id, unit_rubric_id = await window_rubrics(
        session, agreement.community_id, {} if rubrics is None else rubrics
    )
    new_id = uuid.uuid4()
    inserted = (
        await session.execute(
            insert(EvaluationWindow)
            .values(
                id=new_id,
                agreement_id=agreement.id,
                agreement_number=agreement.number,
                community_id=agreement.community_id,
                unit_id=agreement.unit_id,
                year=year,
                opens_at=opens_at,
                closes_at=closes_at,
                community_rubric_id=community_rubric_id,
                unit_rubric_id=unit_rubric_id,
                opened_by=opened_by,
            )
            .on_conflict_do_nothing(index_elements=["agreement_number", "year"])
            .returning(EvaluationWindow.id)
        )
    ).scalar_one_or_none()
    if inserted is None:
        return None
    return (await session.execute(select(EvaluationWindow).where(EvaluationWindow.id == new_id))).scalar_one()


async def open_windows(
    session: AsyncSession, year: int, *, today: date, principal: Principal | None = None
) -> list[EvaluationWindow]:
    """Open the evaluation windows of `year`: one per agreement (number) in force at some time
    during the year, on its latest version in force, from local midnight of `today` for
    `WINDOW_DAYS` days. Idempotent: an agreement whose window of the year exists (however it was
    opened) is skipped. Returns the windows it opened (to notify both sides). Never commits."""
    opens_at = datetime.combine(today, time.min, LOCAL_TZ)
    closes_at = opens_at + timedelta(days=WINDOW_DAYS)
    have = select(EvaluationWindow.agreement_number).where(EvaluationWindow.year == year)
    stmt = in_force_latest(year).where(Agreement.number.not_in(have))
    opened: list[EvaluationWindow] = []
    rubrics: dict[uuid.UUID, tuple[uuid.UUID, uuid.UUID]] = {}
    for agreement in (await session.execute(stmt)).scalars().all():
        window = await _insert_window(session, agreement, year, opens_at, closes_at, None, rubrics)
        if window is not None:
            opened.append(window)
            await _audit_window(session, principal, "evaluation_window.open", window)
    return opened


async def _audit_window(
    session: AsyncSession,
    principal: Principal | None,
    action: str,
    window: EvaluationWindow,
    before: dict[str, Any] | None = None,
) -> None:
    await audit.record(
        session,
        principal,
        action,
        "evaluation_window",
        window.id,
        org_id=window.community_id,
        before=before,
        after=audit.snapshot(window),
    )


async def open_window(
    session: AsyncSession, principal: Principal, agreement_id: uuid.UUID, data: WindowCreate
) -> EvaluationWindow:
    """Staff open one agreement's window for a year (before or beside the year-end job)."""
    require(principal, Perm.evaluations_manage)
    agreement = await get_agreement(session, principal, agreement_id, Perm.evaluations_manage)
    latest = (
        await session.execute(in_force_latest(data.year).where(Agreement.number == agreement.number))
    ).scalar_one_or_none()
    if latest is None:
        raise ProblemError("agreement_not_in_force", year=data.year)
    opens_at = data.opens_at or utcnow()
    closes_at = data.closes_at or opens_at + timedelta(days=WINDOW_DAYS)
    if closes_at <= opens_at:
        raise _field_error(["body", "closes_at"], "must be after opens_at")
    window = await _insert_window(session, latest, data.year, opens_at, closes_at, principal.user_id)
    if window is None:
        raise ProblemError("evaluation_window_exists", year=data.year)
    await _audit_window(session, principal, "evaluation_window.open", window)
    return window


async def update_window(
    session: AsyncSession, principal: Principal, window: EvaluationWindow, data: WindowUpdate
) -> EvaluationWindow:
    """Move the opening or the closing (extend, or close early). The opening stays put once a side
    has submitted. The caller holds the window's row lock."""
    before = audit.snapshot(window)
    changes = data.model_dump(exclude_unset=True)
    for key in ("opens_at", "closes_at"):
        if key in changes and changes[key] is None:
            raise _field_error(["body", key], "may not be null")
    opens_at = changes.get("opens_at", window.opens_at)
    closes_at = changes.get("closes_at", window.closes_at)
    if closes_at <= opens_at:
        raise _field_error(["body", "closes_at"], "must be after opens_at")
    if opens_at != window.opens_at:
        submitted = select(EvaluationSubmission.id).where(EvaluationSubmission.window_id == window.id)
        if (await session.execute(submitted.limit(1))).first() is not None:
            raise ProblemError("evaluation_window_started")
    window.opens_at, window.closes_at = opens_at, closes_at
    await session.flush()
    await _audit_window(session, principal, "evaluation_window.update", window, before)
    return window


# --- submissions ------------------------------------------------------------------------------


def _pick_side(principal: Principal, window: EvaluationWindow, asked: Side | None) -> Side:
    sides = rater_sides(principal, window)
    if asked is not None:
        if asked not in sides:
            raise ProblemError("evaluation_not_rater")
        return asked
    if not sides:
        raise ProblemError("evaluation_not_rater")
    if len(sides) > 1:
        raise ProblemError("evaluation_side_required")
    return next(iter(sides))


async def submit(
    session: AsyncSession, principal: Principal, window_id: uuid.UUID, data: SubmissionCreate
) -> EvaluationSubmission:
    """One side's rating. The window's row lock serializes the raters of a side: of two at once,
    the second finds the first's rating (409); the unique (window, side) is the backstop."""
    require(principal, Perm.evaluations_submit)
    window = await get_window(session, principal, window_id, for_update=True)
    side = _pick_side(principal, window, data.side)
    now = utcnow()
    if now < window.opens_at:
        raise ProblemError("evaluation_window_not_open", opens_at=_local_text(window.opens_at))
    if now >= window.closes_at:
        raise ProblemError("evaluation_window_closed", closes_at=_local_text(window.closes_at))
    done = select(EvaluationSubmission.id).where(
        EvaluationSubmission.window_id == window.id, EvaluationSubmission.side == side
    )
    if (await session.execute(done)).first() is not None:
        raise ProblemError("evaluation_already_submitted")
    rubric_id = window.community_rubric_id if side == Side.community else window.unit_rubric_id
    items = (await items_of(session, [rubric_id]))[rubric_id]
    check_scores(items, data.scores)
    submission = EvaluationSubmission(
        window_id=window.id,
        side=side,
        rubric_id=rubric_id,
        scores=dict(data.scores),
        total=weighted_total(items, data.scores),
        comment=data.comment,
        submitted_by=principal.id,
        submitted_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(submission)
            await session.flush()
    except IntegrityError as exc:
        raise ProblemError("evaluation_already_submitted") from exc
    # Who and which side only: the community's audit log must not show the unit's rating early.
    await audit.record(
        session,
        principal,
        "evaluation.submit",
        "evaluation_window",
        window.id,
        org_id=window.community_id,
        after={"side": str(side), "submission_id": str(submission.id)},
    )
    return submission


def submission_out(submission: EvaluationSubmission) -> SubmissionOut:
    return _submission_out(submission)


# --- yearly scores ----------------------------------------------------------------------------


def _revealed(windows: Select[Any], now: datetime) -> tuple[Any, ColumnElement[bool]]:
    """Submission counts of the `windows` (a SELECT of their ids), and the condition "the window
    is revealed": both sides have submitted, or it has closed."""
    counts = (
        select(EvaluationSubmission.window_id, func.count().label("n"))
        .where(EvaluationSubmission.window_id.in_(windows))
        .group_by(EvaluationSubmission.window_id)
        .subquery()
    )
    return counts, or_(EvaluationWindow.closes_at <= now, func.coalesce(counts.c.n, 0) >= 2)


async def yearly_scores(
    session: AsyncSession,
    subject: Side,
    ids: Iterable[uuid.UUID],
    years: Iterable[int] | None = None,
) -> dict[tuple[uuid.UUID, int], YearScore]:
    """Per (unit or community id, year): the subject's yearly score, from the other side's
    revealed ratings. `subject` is the side rated: `unit` for units, `community` for communities."""
    id_list = sorted(set(ids))
    if not id_list:
        return {}
    column = EvaluationWindow.unit_id if subject == Side.unit else EvaluationWindow.community_id
    rater = Side.community if subject == Side.unit else Side.unit
    counts, revealed = _revealed(select(EvaluationWindow.id).where(column.in_(id_list)), utcnow())
    rating = aliased(EvaluationSubmission)
    stmt = (
        select(
            column,
            EvaluationWindow.year,
            func.count(distinct(EvaluationWindow.id)),
            func.avg(rating.total).filter(revealed),
            func.count(rating.id).filter(revealed),
        )
        .outerjoin(counts, counts.c.window_id == EvaluationWindow.id)
        .outerjoin(rating, and_(rating.window_id == EvaluationWindow.id, rating.side == rater))
        .where(column.in_(id_list))
        .group_by(column, EvaluationWindow.year)
    )
    if years is not None:
        stmt = stmt.where(EvaluationWindow.year.in_(sorted(set(years))))
    out: dict[tuple[uuid.UUID, int], YearScore] = {}
    for subject_id, year, windows, avg, ratings in await session.execute(stmt):
        score = (
            None
            if avg is None
            else float(Decimal(str(avg)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
        )
        out[(subject_id, year)] = YearScore(year=year, score=score, ratings=ratings, windows=windows)
    return out


async def score_history(session: AsyncSession, subject: Side, subject_id: uuid.UUID) -> list[YearScore]:
    scores = await yearly_scores(session, subject, [subject_id])
    return [scores[key] for key in sorted(scores, key=lambda k: k[1])]
