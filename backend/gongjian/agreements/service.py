"""Co-building agreements: templates, drafts, the frozen canonical content, signing by both sides
with re-authentication, decline, termination, amendments and expiry.

Who acts for a side (`signing_sides`): for the community (甲方) an org_admin whose subtree holds
the community (or a platform admin); for the unit (乙方) that unit's liaison. Staff (org_staff,
org_admin) draft, send and amend; only the sides' authorized persons sign, decline and terminate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import importlib
import importlib.util
import io
import json
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from gongjian.agreements.models import (
    Agreement,
    AgreementCommitment,
    AgreementNumberCounter,
    AgreementSignature,
    AgreementState,
    AgreementTemplate,
    AuthMethod,
    CommitmentKind,
    Side,
    SigningCode,
    active_agreement_units,
)
from gongjian.agreements.schemas import (
    SIGNATURE_IMAGE_MAX_BYTES,
    AgreementCommitmentIn,
    AgreementCommitmentOut,
    AgreementCreate,
    AgreementOut,
    AgreementSignatureCreate,
    AgreementSignatureOut,
    AgreementTemplateCreate,
    AgreementTemplateUpdate,
    AgreementUpdate,
    Clause,
)
from gongjian.auth.models import User
from gongjian.core import audit
from gongjian.core.access import (
    SELF_ONLY_ROLES,
    Grant,
    Perm,
    Principal,
    Role,
    ensure_org_in_scope,
    get_visible,
    grants_condition,
    require,
    scope_condition,
)
from gongjian.core.db import utcnow
from gongjian.core.errors import ProblemError, illegal_transition, not_found
from gongjian.core.security import pii_lookup_hash
from gongjian.organizations.models import Organization, OrgLevel
from gongjian.resident_units.models import ResidentUnit

SHANGHAI = ZoneInfo("Asia/Shanghai")
CANONICAL_FORMAT = "gongjian-agreement/1"
SIGNING_CODE_TTL = timedelta(minutes=10)
SIGNING_CODE_MAX_ATTEMPTS = 5

# --- hooks --------------------------------------------------------------------------------

AgreementHook = Callable[[AsyncSession, Agreement], Awaitable[None]]

# Other domains (notifications, reminders) react to agreement events without this module knowing
# them: register with `@on_event("activated")`; hooks run inside the acting request's transaction.
HOOKS: dict[str, list[AgreementHook]] = {
    event: [] for event in ("sent", "signed", "activated", "declined", "terminated", "expired")
}


def on_event(event: str) -> Callable[[AgreementHook], AgreementHook]:
    if event not in HOOKS:
        raise ValueError(f"unknown agreement event {event!r}")

    def register(hook: AgreementHook) -> AgreementHook:
        HOOKS[event].append(hook)
        return hook

    return register


async def _fire(event: str, session: AsyncSession, agreement: Agreement) -> None:
    for hook in HOOKS[event]:
        await hook(session, agreement)


async def on_activated(session: AsyncSession, agreement: Agreement) -> None:
    """Both sides have signed: render and store the signed PDF (once, in the activating
    transaction, so an activation never commits without its document), then the hooks."""
    if importlib.util.find_spec("gongjian.agreements.document") is not None:
        document = importlib.import_module("gongjian.agreements.document")
        await document.render_and_store(session, agreement)
    await _fire("activated", session, agreement)


# --- pairing (used by the project claim hall and the standings) ---------------------------


async def paired_unit_ids(session: AsyncSession, community_id: uuid.UUID) -> set[uuid.UUID]:
    """The units holding an active agreement with the community."""
    return set((await session.execute(active_agreement_units(community_id))).scalars())


# --- clauses and placeholders ------------------------------------------------------------

PLACEHOLDERS = ("community", "unit", "term_from", "term_to")
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


def check_placeholders(clauses: Iterable[Clause]) -> None:
    for clause in clauses:
        for name in _PLACEHOLDER.findall(clause.title + "\n" + clause.body):
            if name not in PLACEHOLDERS:
                raise ProblemError(
                    "invalid_placeholder",
                    placeholder="{{" + name + "}}",
                    allowed=", ".join("{{" + p + "}}" for p in PLACEHOLDERS),
                )


def _date_zh(value: date) -> str:
    return f"{value.year}年{value.month}月{value.day}日"


def fill_clauses(clauses: Iterable[Clause], values: dict[str, str]) -> list[dict[str, Any]]:
    """The clauses with their {{placeholders}} replaced (checked first: unknown ones are refused)."""
    clauses = list(clauses)
    check_placeholders(clauses)

    def fill(text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)

    return [{"key": c.key, "title": fill(c.title), "body": fill(c.body)} for c in clauses]


def _field_error(loc: Sequence[str | int], msg: str) -> ProblemError:
    return ProblemError(
        "validation_error", errors=[{"loc": ["body", *loc], "msg": msg, "type": "value_error"}]
    )


def _check_term(term_from: date, term_to: date) -> None:
    if term_to < term_from:
        raise ProblemError("invalid_term")


# --- templates ----------------------------------------------------------------------------


def _ancestor_paths(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) + "/" for i in range(1, len(parts))]


def template_reach(principal: Principal) -> ColumnElement[bool]:
    """Templates the principal may read and draft from: those kept in their subtree, and those
    kept by the organizations above it (a community drafts from its street's or county's)."""
    grants = principal.grants_for(Perm.agreements_read)
    own = grants_condition(AgreementTemplate, principal, grants)
    above = {
        p
        for g in grants
        if g.org_path is not None and g.unit_id is None and g.role not in SELF_ONLY_ROLES
        for p in _ancestor_paths(g.org_path)
    }
    if not above:
        return own
    ancestors = select(Organization.id).where(Organization.path.in_(sorted(above)))
    return own | AgreementTemplate.org_id.in_(ancestors)


def template_list_query(
    principal: Principal, *, org_id: uuid.UUID | None = None, is_active: bool | None = None
) -> Select[Any]:
    stmt = select(AgreementTemplate).where(template_reach(principal))
    if org_id is not None:
        stmt = stmt.where(AgreementTemplate.org_id == org_id)
    if is_active is not None:
        stmt = stmt.where(AgreementTemplate.is_active.is_(is_active))
    return stmt


async def get_template(
    session: AsyncSession, principal: Principal, template_id: uuid.UUID, perm: Perm = Perm.agreements_read
) -> AgreementTemplate:
    """Read: a template kept in or above the caller's scope. Write: one kept in it; one the caller
    only reads (kept above) answers 403."""
    require(principal, perm)
    if perm == Perm.agreements_read:
        readable = await _readable_template(session, principal, template_id)
        if readable is None:
            raise not_found("agreement_template")
        return readable
    try:
        return await get_visible(
            session, AgreementTemplate, template_id, principal, perm, name="agreement_template"
        )
    except ProblemError as exc:
        if exc.code == "not_found" and await _readable_template(session, principal, template_id):
            raise ProblemError("forbidden") from exc
        raise


async def _readable_template(
    session: AsyncSession, principal: Principal, template_id: uuid.UUID
) -> AgreementTemplate | None:
    stmt = select(AgreementTemplate).where(AgreementTemplate.id == template_id, template_reach(principal))
    return (await session.execute(stmt)).scalar_one_or_none()


async def create_template(
    session: AsyncSession, principal: Principal, data: AgreementTemplateCreate
) -> AgreementTemplate:
    require(principal, Perm.agreements_write)
    await ensure_org_in_scope(session, principal, data.org_id, Perm.agreements_write)
    check_placeholders(data.clauses)
    template = AgreementTemplate(
        org_id=data.org_id,
        name=data.name,
        clauses=[c.model_dump() for c in data.clauses],
        is_active=data.is_active,
        created_by=principal.user_id,
    )
    session.add(template)
    await session.flush()
    await audit.record(
        session,
        principal,
        "agreement_template.create",
        "agreement_template",
        template.id,
        org_id=template.org_id,
        after=audit.snapshot(template),
    )
    return template


async def update_template(
    session: AsyncSession, principal: Principal, template: AgreementTemplate, data: AgreementTemplateUpdate
) -> AgreementTemplate:
    before = audit.snapshot(template)
    if data.name is not None:
        template.name = data.name
    if data.clauses is not None:
        check_placeholders(data.clauses)
        template.clauses = [c.model_dump() for c in data.clauses]
    if data.is_active is not None:
        template.is_active = data.is_active
    await session.flush()
    await audit.record(
        session,
        principal,
        "agreement_template.update",
        "agreement_template",
        template.id,
        org_id=template.org_id,
        before=before,
        after=audit.snapshot(template),
    )
    return template


async def delete_template(session: AsyncSession, principal: Principal, template: AgreementTemplate) -> None:
    # Drafts made from it keep their copied clauses (template_id is set null).
    before = audit.snapshot(template)
    await session.delete(template)
    await session.flush()
    await audit.record(
        session,
        principal,
        "agreement_template.delete",
        "agreement_template",
        template.id,
        org_id=template.org_id,
        before=before,
    )


# --- agreements: reading -----------------------------------------------------------------


async def get(
    session: AsyncSession,
    principal: Principal,
    agreement_id: uuid.UUID,
    perm: Perm = Perm.agreements_read,
    *,
    for_update: bool = False,
) -> Agreement:
    return await get_visible(
        session, Agreement, agreement_id, principal, perm, name="agreement", for_update=for_update
    )


def list_query(
    principal: Principal,
    *,
    community_id: uuid.UUID | None = None,
    unit_id: uuid.UUID | None = None,
    state: AgreementState | None = None,
    number: str | None = None,
) -> Select[Any]:
    stmt = select(Agreement).where(scope_condition(Agreement, principal, Perm.agreements_read))
    if community_id is not None:
        stmt = stmt.where(Agreement.community_id == community_id)
    if unit_id is not None:
        stmt = stmt.where(Agreement.unit_id == unit_id)
    if state is not None:
        stmt = stmt.where(Agreement.state == state)
    if number is not None:
        stmt = stmt.where(Agreement.number == number)
    return stmt


async def versions(session: AsyncSession, principal: Principal, agreement: Agreement) -> list[Agreement]:
    """Every version of the agreement's number the principal reaches, oldest first."""
    stmt = (
        list_query(principal, number=agreement.number)
        .where(Agreement.community_id == agreement.community_id)
        .order_by(Agreement.version_no)
    )
    return list((await session.execute(stmt)).scalars())


async def commitments_of(session: AsyncSession, agreement_id: uuid.UUID) -> list[AgreementCommitment]:
    stmt = (
        select(AgreementCommitment)
        .where(AgreementCommitment.agreement_id == agreement_id)
        .order_by(AgreementCommitment.position, AgreementCommitment.id)
    )
    return list((await session.execute(stmt)).scalars())


async def signatures_of(session: AsyncSession, agreement_id: uuid.UUID) -> list[AgreementSignature]:
    stmt = (
        select(AgreementSignature)
        .where(AgreementSignature.agreement_id == agreement_id)
        .order_by(AgreementSignature.signed_at)
    )
    return list((await session.execute(stmt)).scalars())


def _signature_out(s: AgreementSignature) -> AgreementSignatureOut:
    return AgreementSignatureOut(
        id=s.id,
        side=s.side,
        signer_user_id=s.signer_user_id,
        signer_name=s.signer_name,
        signed_at=s.signed_at,
        content_hash=s.content_hash,
        auth_method=s.auth_method,
        has_image=s.image_key is not None,
    )


def _out(
    a: Agreement, commitments: list[AgreementCommitment], signatures: list[AgreementSignature]
) -> AgreementOut:
    return AgreementOut(
        id=a.id,
        number=a.number,
        version_no=a.version_no,
        previous_id=a.previous_id,
        superseded_by_id=a.superseded_by_id,
        community_id=a.community_id,
        unit_id=a.unit_id,
        template_id=a.template_id,
        title=a.title,
        clauses=[Clause.model_validate(c) for c in a.clauses],
        clause_sources=[Clause.model_validate(c) for c in a.clause_sources],
        term_from=a.term_from,
        term_to=a.term_to,
        state=a.state,
        commitments=[AgreementCommitmentOut.model_validate(c) for c in commitments],
        signatures=[_signature_out(s) for s in signatures],
        content_hash=a.content_hash,
        canonical_content=a.canonical_content,
        sent_at=a.sent_at,
        activated_at=a.activated_at,
        terminated_at=a.terminated_at,
        termination_reason=a.termination_reason,
        declined_at=a.declined_at,
        decline_reason=a.decline_reason,
        expired_at=a.expired_at,
        superseded_at=a.superseded_at,
        has_document=a.document_key is not None,
        document_sha256=a.document_sha256,
        version=a.version,
        created_at=a.created_at,
        updated_at=a.updated_at,
    )


async def to_out(session: AsyncSession, agreement: Agreement) -> AgreementOut:
    return (await to_outs(session, [agreement]))[0]


async def to_outs(session: AsyncSession, agreements: Sequence[Agreement]) -> list[AgreementOut]:
    """The agreements with their commitments and signatures, in two queries for the whole page."""
    ids = [a.id for a in agreements]
    if not ids:
        return []
    commitments: dict[uuid.UUID, list[AgreementCommitment]] = {i: [] for i in ids}
    signatures: dict[uuid.UUID, list[AgreementSignature]] = {i: [] for i in ids}
    stmt_c = (
        select(AgreementCommitment)
        .where(AgreementCommitment.agreement_id.in_(ids))
        .order_by(AgreementCommitment.position, AgreementCommitment.id)
    )
    for c in (await session.execute(stmt_c)).scalars():
        commitments[c.agreement_id].append(c)
    stmt_s = (
        select(AgreementSignature)
        .where(AgreementSignature.agreement_id.in_(ids))
        .order_by(AgreementSignature.signed_at)
    )
    for s in (await session.execute(stmt_s)).scalars():
        signatures[s.agreement_id].append(s)
    return [_out(a, commitments[a.id], signatures[a.id]) for a in agreements]


# --- agreements: drafting ----------------------------------------------------------------


async def _street_path(session: AsyncSession, org_path: str) -> str:
    """The path of the street above the org (its parent's, when no street is above it)."""
    street = (
        await session.execute(
            select(Organization.path).where(
                Organization.level == OrgLevel.street, func.starts_with(org_path, Organization.path)
            )
        )
    ).scalar()
    return street or (_ancestor_paths(org_path) or [org_path])[-1]


async def _parties(
    session: AsyncSession, principal: Principal, community_id: uuid.UUID, unit_id: uuid.UUID
) -> tuple[Organization, ResidentUnit]:
    """The community (in the caller's drafting scope, community level) and the unit, which must sit
    in the community's street; a unit elsewhere answers as if it did not exist."""
    community: Organization = await ensure_org_in_scope(
        session, principal, community_id, Perm.agreements_write
    )
    if community.level != OrgLevel.community:
        raise ProblemError("not_a_community")
    street = await _street_path(session, community.path)
    row = (
        await session.execute(
            select(ResidentUnit, Organization.path)
            .join(Organization, Organization.id == ResidentUnit.community_id)
            .where(ResidentUnit.id == unit_id)
        )
    ).one_or_none()
    if row is None or not row[1].startswith(street):
        raise ProblemError("unit_not_in_street")
    unit: ResidentUnit = row[0]
    return community, unit


def _placeholder_values(
    community: Organization, unit: ResidentUnit, term_from: date, term_to: date
) -> dict[str, str]:
    return {
        "community": community.name,
        "unit": unit.name,
        "term_from": _date_zh(term_from),
        "term_to": _date_zh(term_to),
    }


async def _next_number(session: AsyncSession) -> str:
    """GJ-<year>-<seq>: the per-year counter is bumped in one statement, so two drafts created at
    once never share a number."""
    year = datetime.now(SHANGHAI).year
    stmt = (
        pg_insert(AgreementNumberCounter)
        .values(year=year, last=1)
        .on_conflict_do_update(
            index_elements=[AgreementNumberCounter.year], set_={"last": AgreementNumberCounter.last + 1}
        )
        .returning(AgreementNumberCounter.last)
    )
    seq = (await session.execute(stmt)).scalar_one()
    return f"GJ-{year}-{seq:04d}"


def _shape_error(c: AgreementCommitmentIn) -> tuple[str, str] | None:
    """(field, message) when the commitment's fields do not fit its kind."""
    if c.kind != CommitmentKind.resource and c.resource_id is not None:
        return "resource_id", "only for kind resource"
    if c.kind != CommitmentKind.project and c.project_id is not None:
        return "project_id", "only for kind project"
    if c.kind != CommitmentKind.members_report and c.members_count is not None:
        return "members_count", "only for kind members_report"
    if c.kind == CommitmentKind.resource and (c.resource_id is None or c.quantity is None):
        return "resource_id", "kind resource needs resource_id and quantity"
    if c.kind == CommitmentKind.project and c.project_id is None:
        return "project_id", "kind project needs project_id"
    if c.kind == CommitmentKind.members_report:
        if c.side != Side.unit:
            return "side", "members are reported by the unit"
        if c.members_count is None:
            return "members_count", "kind members_report needs members_count"
    if c.kind in (CommitmentKind.activity, CommitmentKind.other) and not c.description.strip():
        return "description", f"kind {c.kind.value} needs a description"
    return None


async def _check_commitment_refs(
    session: AsyncSession,
    index: int,
    c: AgreementCommitmentIn,
    community: Organization,
    unit: ResidentUnit,
    street: str,
) -> None:
    """A resource is the promising side's own (the unit's; for the community one kept in it that no
    unit provides); a project belongs to the community's street."""
    from gongjian.lists.models import Resource
    from gongjian.projects.models import Project

    if c.resource_id is not None:
        row = (
            await session.execute(
                select(Resource.unit_id, Organization.path)
                .join(Organization, Organization.id == Resource.org_id)
                .where(Resource.id == c.resource_id)
            )
        ).one_or_none()
        owned = row is not None and (
            row[0] == unit.id if c.side == Side.unit else row[0] is None and row[1].startswith(community.path)
        )
        if not owned:
            raise _field_error(["commitments", index, "resource_id"], "no such resource of this side")
    if c.project_id is not None:
        path = (
            await session.execute(
                select(Organization.path)
                .join(Project, Project.org_id == Organization.id)
                .where(Project.id == c.project_id)
            )
        ).scalar_one_or_none()
        if path is None or not path.startswith(street):
            raise _field_error(
                ["commitments", index, "project_id"], "no such project in the community's street"
            )


async def _commitment_rows(
    session: AsyncSession, items: list[AgreementCommitmentIn], community: Organization, unit: ResidentUnit
) -> list[AgreementCommitment]:
    street = await _street_path(session, community.path)
    rows = []
    for index, c in enumerate(items):
        error = _shape_error(c)
        if error is not None:
            raise _field_error(["commitments", index, error[0]], error[1])
        await _check_commitment_refs(session, index, c, community, unit, street)
        rows.append(
            AgreementCommitment(
                side=c.side,
                kind=c.kind,
                resource_id=c.resource_id,
                project_id=c.project_id,
                quantity=c.quantity,
                recurrence=c.recurrence,
                members_count=c.members_count,
                description=c.description,
                position=index,
            )
        )
    return rows


async def create_draft(session: AsyncSession, principal: Principal, data: AgreementCreate) -> Agreement:
    require(principal, Perm.agreements_write)
    _check_term(data.term_from, data.term_to)
    community, unit = await _parties(session, principal, data.community_id, data.unit_id)
    clauses: list[Clause]
    if data.clauses is not None:
        clauses = data.clauses
    elif data.template_id is not None:
        template = await get_template(session, principal, data.template_id)
        if not template.is_active:
            raise ProblemError("template_inactive")
        clauses = [Clause.model_validate(c) for c in template.clauses]
    else:
        raise _field_error(["clauses"], "give clauses or a template_id")
    values = _placeholder_values(community, unit, data.term_from, data.term_to)
    filled = fill_clauses(clauses, values)
    sources = [c.model_dump() for c in clauses]
    commitments = await _commitment_rows(session, data.commitments, community, unit)
    agreement = Agreement(
        number=await _next_number(session),
        version_no=1,
        community_id=community.id,
        unit_id=unit.id,
        template_id=data.template_id,
        title=data.title or f"{community.name}与{unit.name}共建协议",
        clauses=filled,
        clause_sources=sources,
        term_from=data.term_from,
        term_to=data.term_to,
        state=AgreementState.draft,
        created_by=principal.user_id,
    )
    session.add(agreement)
    await session.flush()
    for row in commitments:
        row.agreement_id = agreement.id
    session.add_all(commitments)
    await session.flush()
    await audit.record(
        session,
        principal,
        "agreement.create",
        "agreement",
        agreement.id,
        org_id=agreement.community_id,
        after=audit.snapshot(agreement),
    )
    return agreement


def ensure_editable(agreement: Agreement) -> None:
    """Only a draft's content changes: sent or in force, a change is an amendment (409)."""
    if agreement.state in (AgreementState.pending_signatures, AgreementState.active):
        raise ProblemError("agreement_frozen")
    if agreement.state != AgreementState.draft:
        raise illegal_transition(str(agreement.state), "edit")


async def update_draft(
    session: AsyncSession, principal: Principal, agreement: Agreement, data: AgreementUpdate
) -> Agreement:
    ensure_editable(agreement)
    before = audit.snapshot(agreement)
    term_from = data.term_from or agreement.term_from
    term_to = data.term_to or agreement.term_to
    _check_term(term_from, term_to)
    community = await session.get_one(Organization, agreement.community_id)
    unit = await session.get_one(ResidentUnit, agreement.unit_id)
    sources = data.clauses
    if sources is None and agreement.clause_sources:
        sources = [Clause.model_validate(c) for c in agreement.clause_sources]
    if sources is not None:
        agreement.clauses = fill_clauses(sources, _placeholder_values(community, unit, term_from, term_to))
        agreement.clause_sources = [c.model_dump() for c in sources]
    if data.title is not None:
        agreement.title = data.title
    agreement.term_from, agreement.term_to = term_from, term_to
    if data.commitments is not None:
        rows = await _commitment_rows(session, data.commitments, community, unit)
        await session.execute(
            delete(AgreementCommitment).where(AgreementCommitment.agreement_id == agreement.id)
        )
        for row in rows:
            row.agreement_id = agreement.id
        session.add_all(rows)
    # A change of the commitments alone still bumps the version: the ETag covers the whole draft.
    agreement.updated_at = utcnow()
    await session.flush()
    await audit.record(
        session,
        principal,
        "agreement.update",
        "agreement",
        agreement.id,
        org_id=agreement.community_id,
        before=before,
        after=audit.snapshot(agreement),
    )
    return agreement


# --- the canonical content ---------------------------------------------------------------


def canonical_json(document: dict[str, Any]) -> str:
    """Deterministic JSON: sorted keys, no insignificant whitespace, UTF-8 text (not \\u escapes)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash_of(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _id(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None


async def canonical_document(session: AsyncSession, agreement: Agreement) -> dict[str, Any]:
    """What both sides sign: parties (ids and names), clauses, commitments, term, number and
    version, and the hash of the version it amends."""
    community = await session.get_one(Organization, agreement.community_id)
    unit = await session.get_one(ResidentUnit, agreement.unit_id)
    amends = None
    if agreement.previous_id is not None:
        amends = (
            await session.execute(select(Agreement.content_hash).where(Agreement.id == agreement.previous_id))
        ).scalar_one()
    commitments = await commitments_of(session, agreement.id)
    return {
        "format": CANONICAL_FORMAT,
        "number": agreement.number,
        "version_no": agreement.version_no,
        "amends": amends,
        "title": agreement.title,
        "parties": {
            "community": {"id": str(community.id), "name": community.name},
            "unit": {"id": str(unit.id), "name": unit.name, "credit_code": unit.credit_code},
        },
        "term": {"from": agreement.term_from.isoformat(), "to": agreement.term_to.isoformat()},
        "clauses": [{"key": c["key"], "title": c["title"], "body": c["body"]} for c in agreement.clauses],
        "commitments": [
            {
                "side": c.side,
                "kind": c.kind,
                "resource_id": _id(c.resource_id),
                "project_id": _id(c.project_id),
                "quantity": c.quantity,
                "recurrence": c.recurrence,
                "members_count": c.members_count,
                "description": c.description,
            }
            for c in commitments
        ],
    }


# --- who acts for a side -----------------------------------------------------------------


def _acts_for_community(grant: Grant, community_path: str) -> bool:
    if Perm.agreements_sign not in grant.perms:
        return False
    if grant.is_global:
        return True
    return (
        grant.role in (Role.org_admin, Role.platform_admin)
        and grant.unit_id is None
        and grant.org_path is not None
        and community_path.startswith(grant.org_path)
    )


async def signing_sides(session: AsyncSession, principal: Principal, agreement: Agreement) -> set[Side]:
    """The sides the principal is an authorized person of, for this agreement."""
    if principal.user_id is None:
        return set()
    sides: set[Side] = set()
    if any(
        g.role == Role.unit_liaison and g.unit_id == agreement.unit_id and Perm.agreements_sign in g.perms
        for g in principal.grants
    ):
        sides.add(Side.unit)
    community_path = (
        await session.execute(select(Organization.path).where(Organization.id == agreement.community_id))
    ).scalar_one()
    if any(_acts_for_community(g, community_path) for g in principal.grants):
        sides.add(Side.community)
    return sides


async def _acting_side(
    session: AsyncSession, principal: Principal, agreement: Agreement, wanted: Side | None
) -> Side:
    sides = await signing_sides(session, principal, agreement)
    if wanted is not None:
        if wanted not in sides:
            raise ProblemError("not_authorized_signer")
        return wanted
    if not sides:
        raise ProblemError("not_authorized_signer")
    if len(sides) > 1:
        raise ProblemError("signing_side_required")
    return next(iter(sides))


# --- sending, signing, declining, terminating --------------------------------------------


async def send(session: AsyncSession, principal: Principal, agreement: Agreement) -> Agreement:
    """Freeze the draft: its canonical content is written and hashed, and it awaits signatures.
    The caller holds the row lock."""
    if agreement.state != AgreementState.draft:
        raise illegal_transition(str(agreement.state), "send")
    before = audit.snapshot(agreement)
    canonical = canonical_json(await canonical_document(session, agreement))
    agreement.canonical_content = canonical
    agreement.content_hash = content_hash_of(canonical)
    agreement.state = AgreementState.pending_signatures
    agreement.sent_at = utcnow()
    agreement.sent_by = principal.user_id
    await session.flush()
    await audit.record(
        session,
        principal,
        "agreement.send",
        "agreement",
        agreement.id,
        org_id=agreement.community_id,
        before=before,
        after=audit.snapshot(agreement),
    )
    await _fire("sent", session, agreement)
    return agreement


_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


def decode_signature_image(value: str) -> tuple[bytes, str, str]:
    """(bytes, content type, suffix) of a base64 PNG or JPEG, its type told by its content and
    checked by decoding it; anything else is a 422."""
    error = ProblemError("invalid_signature_image", max_kb=SIGNATURE_IMAGE_MAX_BYTES // 1024)
    if value.startswith("data:"):
        _, _, value = value.partition(",")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise error from exc
    if not data or len(data) > SIGNATURE_IMAGE_MAX_BYTES:
        raise error
    if data.startswith(_PNG):
        content_type, suffix, fmt = "image/png", ".png", "PNG"
    elif data.startswith(_JPEG):
        content_type, suffix, fmt = "image/jpeg", ".jpg", "JPEG"
    else:
        raise error
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != fmt or image.width * image.height > 4096 * 4096:
                raise error
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise error from exc
    return data, content_type, suffix


async def _store_signature_image(value: str) -> str:
    from gongjian.core.storage import get_storage, new_key

    data, content_type, suffix = decode_signature_image(value)
    return await get_storage().put(data, new_key("signatures", suffix), content_type=content_type)


def _code_hash(agreement_id: uuid.UUID, user_id: uuid.UUID, code: str) -> str:
    # Keyed: six digits are no secret against a plain hash in a leaked database.
    return pii_lookup_hash(f"signing-code:{agreement_id}:{user_id}:{code}") or ""


async def issue_signing_code(
    session: AsyncSession, principal: Principal, agreement_id: uuid.UUID
) -> SigningCode:
    """A six-digit one-time code for re-authenticating at signing, put in the signer's in-app inbox
    and stored only as a keyed hash. A new code replaces the signer's earlier unused ones."""
    require(principal, Perm.agreements_sign)
    agreement = await get(session, principal, agreement_id, Perm.agreements_sign)
    if not await signing_sides(session, principal, agreement):
        raise ProblemError("not_authorized_signer")
    if agreement.state != AgreementState.pending_signatures:
        raise illegal_transition(str(agreement.state), "issue a signing code")
    user_id = principal.user_id
    assert user_id is not None  # signing_sides is empty for API clients
    now = utcnow()
    await session.execute(
        update(SigningCode)
        .where(
            SigningCode.agreement_id == agreement.id,
            SigningCode.user_id == user_id,
            SigningCode.used_at.is_(None),
        )
        .values(used_at=now)
    )
    code = f"{secrets.randbelow(10**6):06d}"
    row = SigningCode(
        user_id=user_id,
        agreement_id=agreement.id,
        code_hash=_code_hash(agreement.id, user_id, code),
        expires_at=now + SIGNING_CODE_TTL,
    )
    session.add(row)
    await session.flush()
    from gongjian.notifications.service import notify

    minutes = int(SIGNING_CODE_TTL.total_seconds() // 60)
    await notify(
        session,
        [user_id],
        kind="agreement.signing_code",
        title="共建协议签署验证码",
        body=f"您正在签署共建协议{agreement.number}（第{agreement.version_no}版），验证码{code}，"
        f"{minutes}分钟内有效。请勿告诉他人。",
        link=f"/agreements/{agreement.id}",
        payload={"agreement_id": str(agreement.id), "number": agreement.number},
    )
    await audit.record(
        session,
        principal,
        "agreement.signing_code",
        "agreement",
        agreement.id,
        org_id=agreement.community_id,
    )
    return row


async def _check_code(session: AsyncSession, agreement: Agreement, user_id: uuid.UUID, code: str) -> None:
    """Use up the signer's live code; a wrong guess is counted (committed at once, so the
    request's rollback does not erase it) and the code dies after a few."""
    row = (
        await session.execute(
            select(SigningCode)
            .where(
                SigningCode.agreement_id == agreement.id,
                SigningCode.user_id == user_id,
                SigningCode.used_at.is_(None),
                SigningCode.expires_at > func.now(),
            )
            .order_by(SigningCode.created_at.desc())
            .limit(1)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if row is None or row.attempts >= SIGNING_CODE_MAX_ATTEMPTS:
        raise ProblemError("reauthentication_failed")
    if not hmac.compare_digest(row.code_hash, _code_hash(agreement.id, user_id, code)):
        row.attempts += 1
        await session.commit()
        raise ProblemError("reauthentication_failed")
    row.used_at = utcnow()


async def _reauthenticate(
    session: AsyncSession, principal: Principal, agreement: Agreement, body: AgreementSignatureCreate
) -> AuthMethod:
    user_id = principal.user_id
    assert user_id is not None  # signing_sides is empty for API clients
    if body.one_time_code is not None:
        await _check_code(session, agreement, user_id, body.one_time_code)
        return AuthMethod.one_time_code
    from gongjian.auth.service import authenticate

    username = (await session.execute(select(User.username).where(User.id == user_id))).scalar_one()
    try:
        # The login check itself: failures count towards the account's lockout (423).
        await authenticate(session, username, body.password or "")
    except ProblemError as exc:
        if exc.code == "invalid_credentials":
            raise ProblemError("reauthentication_failed") from exc
        raise
    return AuthMethod.password


async def sign(
    session: AsyncSession,
    principal: Principal,
    agreement_id: uuid.UUID,
    body: AgreementSignatureCreate,
    *,
    client_ip: str | None,
    user_agent: str | None,
) -> Agreement:
    """One side signs the version whose hash the signer viewed. The agreement row is locked for the
    whole step, so of two signers at the same moment the second sees the first's signature and
    exactly one of them activates the agreement."""
    require(principal, Perm.agreements_sign)
    agreement = await get(session, principal, agreement_id, Perm.agreements_sign, for_update=True)
    side = await _acting_side(session, principal, agreement, body.side)
    if agreement.state in (AgreementState.draft, AgreementState.pending_signatures) and (
        agreement.content_hash != body.content_hash
    ):
        raise ProblemError("content_hash_mismatch")
    if agreement.state != AgreementState.pending_signatures:
        raise illegal_transition(str(agreement.state), "sign")
    signed = {s.side for s in await signatures_of(session, agreement.id)}
    if side in signed:
        raise ProblemError("already_signed")
    auth_method = await _reauthenticate(session, principal, agreement, body)
    image_key = (
        await _store_signature_image(body.signature_image) if body.signature_image is not None else None
    )
    signer = await session.get_one(User, principal.user_id)
    signature = AgreementSignature(
        agreement_id=agreement.id,
        side=side,
        signer_user_id=signer.id,
        signer_name=signer.display_name,
        signed_at=utcnow(),
        content_hash=body.content_hash,
        auth_method=auth_method,
        image_key=image_key,
        client_ip=client_ip,
        user_agent=(user_agent or "")[:500] or None,
    )
    try:
        async with session.begin_nested():
            session.add(signature)
            await session.flush()
    except IntegrityError as exc:  # pragma: no cover - the row lock makes this unreachable
        raise ProblemError("already_signed") from exc
    await audit.record(
        session,
        principal,
        "agreement.sign",
        "agreement",
        agreement.id,
        org_id=agreement.community_id,
        after={
            "side": side.value,
            "content_hash": body.content_hash,
            "auth_method": auth_method.value,
            "has_image": image_key is not None,
        },
    )
    await _fire("signed", session, agreement)
    if signed | {side} == set(Side):
        await _activate(session, principal, agreement)
    return agreement


async def _activate(session: AsyncSession, principal: Principal, agreement: Agreement) -> None:
    before = audit.snapshot(agreement)
    now = utcnow()
    agreement.state = AgreementState.active
    agreement.activated_at = now
    if agreement.previous_id is not None:
        previous = (
            await session.execute(
                select(Agreement).where(Agreement.id == agreement.previous_id).with_for_update()
            )
        ).scalar_one()
        # An old version ended meanwhile (terminated, expired) keeps that ending.
        if previous.state == AgreementState.active:
            prev_before = audit.snapshot(previous)
            previous.state = AgreementState.superseded
            previous.superseded_by_id = agreement.id
            previous.superseded_at = now
            await session.flush()
            await audit.record(
                session,
                principal,
                "agreement.supersede",
                "agreement",
                previous.id,
                org_id=previous.community_id,
                before=prev_before,
                after=audit.snapshot(previous),
            )
    await session.flush()
    await audit.record(
        session,
        principal,
        "agreement.activate",
        "agreement",
        agreement.id,
        org_id=agreement.community_id,
        before=before,
        after=audit.snapshot(agreement),
    )
    await on_activated(session, agreement)


async def decline(
    session: AsyncSession, principal: Principal, agreement: Agreement, reason: str
) -> Agreement:
    """Either side refuses what was sent: back to draft for editing. The round's signatures are
    removed (kept in the audit entry) and the frozen content cleared; it is hashed again at the
    next send. The caller holds the row lock (`get(..., Perm.agreements_sign, for_update=True)`)."""
    sides = await signing_sides(session, principal, agreement)
    if not sides:
        raise ProblemError("not_authorized_signer")
    if agreement.state != AgreementState.pending_signatures:
        raise illegal_transition(str(agreement.state), "decline")
    before = audit.snapshot(agreement)
    removed = [
        {
            "side": s.side,
            "signer_user_id": str(s.signer_user_id),
            "signer_name": s.signer_name,
            "signed_at": s.signed_at.isoformat(),
            "content_hash": s.content_hash,
        }
        for s in await signatures_of(session, agreement.id)
    ]
    await session.execute(delete(AgreementSignature).where(AgreementSignature.agreement_id == agreement.id))
    await session.execute(
        update(SigningCode)
        .where(SigningCode.agreement_id == agreement.id, SigningCode.used_at.is_(None))
        .values(used_at=utcnow())
    )
    agreement.state = AgreementState.draft
    agreement.canonical_content = None
    agreement.content_hash = None
    agreement.sent_at = None
    agreement.sent_by = None
    agreement.declined_at = utcnow()
    agreement.declined_by = principal.user_id
    agreement.decline_reason = reason
    await session.flush()
    await audit.record(
        session,
        principal,
        "agreement.decline",
        "agreement",
        agreement.id,
        org_id=agreement.community_id,
        before={**before, "signatures": removed},
        after={**audit.snapshot(agreement), "sides": sorted(sides)},
        reason=reason,
    )
    await _fire("declined", session, agreement)
    return agreement


async def terminate(
    session: AsyncSession, principal: Principal, agreement: Agreement, reason: str
) -> Agreement:
    """Either side ends an active agreement early, with a reason. The caller holds the row lock."""
    sides = await signing_sides(session, principal, agreement)
    if not sides:
        raise ProblemError("not_authorized_signer")
    if agreement.state != AgreementState.active:
        raise illegal_transition(str(agreement.state), "terminate")
    before = audit.snapshot(agreement)
    agreement.state = AgreementState.terminated
    agreement.terminated_at = utcnow()
    agreement.terminated_by = principal.user_id
    agreement.termination_reason = reason
    await session.flush()
    await audit.record(
        session,
        principal,
        "agreement.terminate",
        "agreement",
        agreement.id,
        org_id=agreement.community_id,
        before=before,
        after=audit.snapshot(agreement),
        reason=reason,
    )
    await _fire("terminated", session, agreement)
    return agreement


async def amend(session: AsyncSession, principal: Principal, agreement: Agreement) -> Agreement:
    """A new draft version of an active agreement (same number, next version_no), its content
    copied. The active version stays in force until the new one is signed by both sides. The caller
    holds the row lock, so two amendments at once make one version and one 409."""
    if agreement.state != AgreementState.active:
        raise illegal_transition(str(agreement.state), "amend")
    open_version = select(Agreement.id).where(
        Agreement.number == agreement.number,
        Agreement.state.in_([AgreementState.draft, AgreementState.pending_signatures]),
    )
    if (await session.execute(open_version)).first() is not None:
        raise ProblemError("agreement_version_open")
    last = (
        await session.execute(
            select(func.max(Agreement.version_no)).where(Agreement.number == agreement.number)
        )
    ).scalar_one()
    amendment = Agreement(
        number=agreement.number,
        version_no=last + 1,
        previous_id=agreement.id,
        community_id=agreement.community_id,
        unit_id=agreement.unit_id,
        template_id=agreement.template_id,
        title=agreement.title,
        clauses=[dict(c) for c in agreement.clauses],
        clause_sources=[dict(c) for c in agreement.clause_sources],
        term_from=agreement.term_from,
        term_to=agreement.term_to,
        state=AgreementState.draft,
        created_by=principal.user_id,
    )
    try:
        async with session.begin_nested():
            session.add(amendment)
            await session.flush()
    except IntegrityError as exc:  # pragma: no cover - the row lock makes this unreachable
        raise ProblemError("agreement_version_open") from exc
    session.add_all(
        AgreementCommitment(
            agreement_id=amendment.id,
            side=c.side,
            kind=c.kind,
            resource_id=c.resource_id,
            project_id=c.project_id,
            quantity=c.quantity,
            recurrence=c.recurrence,
            members_count=c.members_count,
            description=c.description,
            position=c.position,
        )
        for c in await commitments_of(session, agreement.id)
    )
    await session.flush()
    await audit.record(
        session,
        principal,
        "agreement.amend",
        "agreement",
        amendment.id,
        org_id=amendment.community_id,
        after=audit.snapshot(amendment),
    )
    return amendment


async def expire_due(session: AsyncSession, today: date) -> list[Agreement]:
    """Active agreements whose term ended before `today` become expired (a daily job calls this)."""
    rows = list(
        (
            await session.execute(
                select(Agreement)
                .where(Agreement.state == AgreementState.active, Agreement.term_to < today)
                .with_for_update(skip_locked=True)
            )
        ).scalars()
    )
    now = utcnow()
    for agreement in rows:
        agreement.state = AgreementState.expired
        agreement.expired_at = now
    await session.flush()
    for agreement in rows:
        await audit.record(
            session,
            None,
            "agreement.expire",
            "agreement",
            agreement.id,
            org_id=agreement.community_id,
            after={"state": AgreementState.expired.value, "term_to": agreement.term_to.isoformat()},
        )
        await _fire("expired", session, agreement)
    return rows
