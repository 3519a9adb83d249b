"""Imports of the lists: accept an upload, run it as a background job, report row by row.

The request checks who asks and that the file is readable, stores it and queues the job
(`run_import`). The job validates every row, resolves communities and grids under the parent
organization, and then writes everything in ONE transaction: with any invalid row (and `partial`
off) it writes nothing. Progress is committed on a second connection as the batches go, so a poller
sees it while the data transaction is still open.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, bindparam, exists, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import undefer

from gongjian.core import audit, db, jobs
from gongjian.core.access import (
    Grant,
    Perm,
    Principal,
    Role,
    ensure_org_in_scope,
    get_visible,
    in_subtree,
    require,
    scope_condition,
    visible,
)
from gongjian.core.db import utcnow
from gongjian.core.errors import ProblemError
from gongjian.grids import service as grid_service
from gongjian.grids.models import GridCell, GridLayer
from gongjian.grids.schemas import GridCellCreate
from gongjian.lists.imports.format import SECTIONS, Document, FormatError, parse_upload
from gongjian.lists.imports.models import ImportFormat, ImportStatus, ListImport
from gongjian.lists.imports.validation import (
    CommunityIn,
    GridIn,
    NeedIn,
    ResourceIn,
    RowError,
    validate,
)
from gongjian.lists.models import Need, NeedSource, NeedState, Resource, ResourceState
from gongjian.matching.text import index_tokens
from gongjian.organizations import service as org_service
from gongjian.organizations.models import ALLOWED_PARENTS, Organization, OrgKind, OrgLevel
from gongjian.organizations.schemas import OrganizationCreate
from gongjian.resident_units.models import ResidentUnit

log = logging.getLogger("gongjian.lists.imports")

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_STORED_ERRORS = 1000
BATCH = 500
# A grid cell needs a polygon boundary; the file gives only a center. A new cell is drawn as a square of
# ±0.002° (about 440 m by 400 m at these latitudes) around it, to be redrawn by the community later.
GRID_HALF_SIDE = 0.002
# One import writes at a time: two imports creating the same missing community or the same new
# external_ref would otherwise both pass their checks. (Also the namespace of the per-import locks.)
_IMPORT_LOCK_KEY = 0x6A_6C_69_6D  # arbitrary, stable
# Name suffixes of a community party organization that a file's community name may leave out.
_ORG_SUFFIXES = ("党委", "党总支", "党支部", "委员会")

Progress = Callable[[int], Awaitable[None]]

# --- the request side ---------------------------------------------------------------------------


async def holds(session: AsyncSession, principal: Principal, org: Organization, perm: Perm) -> bool:
    """Whether the principal holds `perm` on `org` (through any grant reaching it)."""
    stmt = select(exists().where(Organization.id == org.id, scope_condition(Organization, principal, perm)))
    return bool((await session.execute(stmt)).scalar())


async def check_parent(session: AsyncSession, principal: Principal, parent_org_id: uuid.UUID) -> Organization:
    """The organization to import under, if the caller may write lists there (404 out of scope)."""
    require(principal, Perm.lists_write)
    parent: Organization = await ensure_org_in_scope(session, principal, parent_org_id, Perm.lists_write)
    return parent


async def create_import(
    session: AsyncSession,
    principal: Principal,
    parent: Organization,
    data: bytes,
    *,
    filename: str | None = None,
    create_missing: bool = False,
    partial: bool = False,
    enqueue: bool = True,
) -> ListImport:
    """Check the file, store the import, queued, and queue its job in the request's transaction
    (`enqueue=False`: the caller runs it, as the CLI does)."""
    try:
        fmt, doc = parse_upload(data)
    except FormatError as exc:
        raise ProblemError("invalid_import_file", reason=str(exc)) from exc
    perms = {Perm.lists_read, Perm.lists_write}
    if create_missing:
        # Creating communities and grids is what the caller may do anyway; without that right the
        # missing ones are row errors, as if create_missing were off.
        for perm in (Perm.organizations_write, Perm.grids_write):
            if await holds(session, principal, parent, perm):
                perms.add(perm)
    imp = ListImport(
        parent_org_id=parent.id,
        status=ImportStatus.queued,
        format=ImportFormat(fmt),
        filename=filename[:255] if filename else None,
        payload=data,
        create_missing=create_missing,
        partial=partial,
        progress_done=0,
        progress_total=doc.total_rows,
        counts={},
        errors=[],
        error_count=0,
        actor_kind=principal.kind,
        actor_id=principal.id,
        actor_name=principal.name[:100],
        perms=sorted(p.value for p in perms),
    )
    session.add(imp)
    await session.flush()
    await audit.record(
        session,
        principal,
        "list_import.create",
        "list_import",
        imp.id,
        org_id=parent.id,
        after={
            "format": fmt,
            "filename": imp.filename,
            "rows": doc.total_rows,
            "create_missing": create_missing,
            "partial": partial,
        },
    )
    if enqueue:
        await jobs.enqueue(session, IMPORT_TASK, import_id=str(imp.id))
    return imp


async def get_import(session: AsyncSession, principal: Principal, import_id: uuid.UUID) -> ListImport:
    return await get_visible(session, ListImport, import_id, principal, Perm.lists_read, name="list_import")


async def list_query(
    session: AsyncSession, principal: Principal, *, org_id: uuid.UUID | None, status: ImportStatus | None
) -> Select[Any]:
    require(principal, Perm.lists_read)
    stmt = visible(select(ListImport), ListImport, principal, Perm.lists_read)
    if org_id is not None:
        org: Organization = await ensure_org_in_scope(session, principal, org_id, Perm.lists_read)
        under = select(Organization.id).where(in_subtree(Organization.path, org.path))
        stmt = stmt.where(ListImport.parent_org_id.in_(under))
    if status is not None:
        stmt = stmt.where(ListImport.status == status)
    return stmt


async def import_now(
    principal: Principal,
    parent_org_id: uuid.UUID,
    data: bytes,
    *,
    filename: str | None = None,
    create_missing: bool = False,
    partial: bool = False,
) -> ListImport:
    """Import at once in this process, without the queue (the CLI): the same checks, the same job."""
    maker = db.sessionmaker()
    async with maker() as session:
        parent = await check_parent(session, principal, parent_org_id)
        imp = await create_import(
            session,
            principal,
            parent,
            data,
            filename=filename,
            create_missing=create_missing,
            partial=partial,
            enqueue=False,
        )
        await session.commit()
    await run_import(imp.id)
    async with maker() as session:
        return await session.get_one(ListImport, imp.id)


def report_lines(imp: ListImport) -> list[str]:
    """The outcome of an import, for a terminal."""
    lines = [f"import {imp.id}: {imp.status}"]
    for section in SECTIONS:
        c = (imp.counts or {}).get(section) or {}
        figures = ", ".join(f"{k} {c.get(k, 0)}" for k in ("created", "updated", "unchanged", "skipped"))
        lines.append(f"  {section}: {figures}")
    if imp.error_count:
        lines.append(f"  errors ({imp.error_count}):")
        for stored in imp.errors or []:
            e = RowError.from_dict(stored)
            where = f"{e.section} row {e.row}" if e.row is not None else e.section
            ref = f" ({e.ref})" if e.ref else ""
            at = f" {e.field}" if e.field else ""
            lines.append(f"    {where}{ref}{at}: {e.message(english=True)}")
    return lines


# --- the job --------------------------------------------------------------------------------------

IMPORT_TASK = "lists.import"


@jobs.job(IMPORT_TASK)
async def import_job(import_id: str) -> None:
    await run_import(uuid.UUID(import_id))


def acting_principal(imp: ListImport, parent: Organization) -> Principal:
    """Who the job acts as: the uploader, with the permissions they held on the parent when they asked,
    reaching the parent's subtree only."""
    grant = Grant(
        role=Role.org_staff,
        org_id=parent.id,
        org_path=parent.path,
        perms=frozenset(Perm(p) for p in imp.perms),
    )
    return Principal(
        kind=imp.actor_kind, id=imp.actor_id or uuid.UUID(int=0), name=imp.actor_name, grants=[grant]
    )


async def run_import(import_id: uuid.UUID) -> None:
    """Run a queued import to `completed` or `failed` (the job).

    Safe to deliver twice: a run holds a lock on its import for as long as its transaction lasts, so
    a second delivery meanwhile does nothing, and one after a crashed run (whose transaction and lock
    died with it) runs the import again."""
    maker = db.sessionmaker()

    async def record(**values: Any) -> None:
        async with maker() as s:
            await s.execute(update(ListImport).where(ListImport.id == import_id).values(**values))
            await s.commit()

    async def progress(done: int) -> None:
        await record(progress_done=func.least(done, ListImport.progress_total))

    try:
        async with maker() as session:
            if not await _claim(session, import_id):
                return
            await record(status=ImportStatus.running, started_at=utcnow(), progress_done=0)
            report = await _run(session, import_id, progress)
            if not report.failed:
                await _finish(session, import_id, report)
                await session.commit()
                return
            await session.rollback()
    except Exception:
        log.exception("list import %s stopped", import_id)
        report = Report(errors=[RowError("file", None, None, None, None, "failed")], failed=True)
    async with maker() as session:
        await _finish(session, import_id, report)
        await session.commit()


async def _claim(session: AsyncSession, import_id: uuid.UUID) -> bool:
    """Lock the import for this transaction, if no other run holds it and it is still to be run; then
    wait for the imports ahead of it (one import writes at a time)."""
    key = int.from_bytes(import_id.bytes[:4], "big", signed=True)
    locked = await session.execute(
        text("SELECT pg_try_advisory_xact_lock(:ns, :key)"), {"ns": _IMPORT_LOCK_KEY, "key": key}
    )
    if not locked.scalar():
        return False  # running elsewhere
    status = (
        await session.execute(select(ListImport.status).where(ListImport.id == import_id))
    ).scalar_one_or_none()
    if status not in (ImportStatus.queued, ImportStatus.running):
        return False  # already run (or gone)
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _IMPORT_LOCK_KEY})
    return True


async def _run(session: AsyncSession, import_id: uuid.UUID, progress: Progress) -> Report:
    stmt = select(ListImport).where(ListImport.id == import_id).options(undefer(ListImport.payload))
    imp = (await session.execute(stmt)).scalar_one()
    parent = await session.get(Organization, imp.parent_org_id)
    if parent is None:
        return Report(errors=[RowError("file", None, None, None, None, "failed")], failed=True)
    _, doc = parse_upload(imp.payload)
    importer = Importer(
        session,
        acting_principal(imp, parent),
        parent,
        create_missing=imp.create_missing,
        partial=imp.partial,
        progress=progress,
    )
    return await importer.run(doc)


async def _finish(session: AsyncSession, import_id: uuid.UUID, report: Report) -> None:
    status = ImportStatus.failed if report.failed else ImportStatus.completed
    values: dict[str, Any] = {
        "status": status,
        "counts": report.counts,
        "errors": [e.as_dict() for e in report.errors[:MAX_STORED_ERRORS]],
        "error_count": len(report.errors),
        "finished_at": utcnow(),
    }
    if not report.failed:
        values["progress_done"] = ListImport.progress_total
    await session.execute(update(ListImport).where(ListImport.id == import_id).values(**values))
    imp = await session.get(ListImport, import_id)
    if imp is not None:
        await audit.record(
            session,
            _actor(imp),
            f"list_import.{status.value}",
            "list_import",
            imp.id,
            org_id=imp.parent_org_id,
            after={"counts": report.counts, "errors": len(report.errors)},
        )


def _actor(imp: ListImport) -> Principal:
    return Principal(kind=imp.actor_kind, id=imp.actor_id or uuid.UUID(int=0), name=imp.actor_name)


# --- the import itself ----------------------------------------------------------------------------


@dataclass
class Report:
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: list[RowError] = field(default_factory=list)
    failed: bool = False


@dataclass(eq=False)
class _Community:
    """A community the file's rows belong to: an existing organization, or one to create."""

    ref: str
    name: str
    org_id: uuid.UUID | None
    center: tuple[float, float] | None = None
    row: CommunityIn | None = None
    # Grid cells belong to community-level organizations only (a street's own list has none).
    has_cells: bool = True


@dataclass(eq=False)
class _Grid:
    ref: str
    community: _Community
    cell_id: uuid.UUID | None
    row: GridIn | None = None
    center: tuple[float, float] | None = None


T = TypeVar("T", GridIn, ResourceIn, NeedIn)


@dataclass(eq=False)
class _Planned(Generic[T]):
    """A row of the file with what it resolved to."""

    item: T
    community: _Community
    grid: _Grid | None = None


@dataclass
class _Existing:
    """The columns of a stored resource or need that an import compares and updates."""

    values: dict[str, Any]

    @property
    def id(self) -> uuid.UUID:
        return uuid.UUID(str(self.values["id"]))


def _name_keys(name: str) -> set[str]:
    keys = {name}
    for suffix in _ORG_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            keys.add(name.removesuffix(suffix))
    return keys


def _counter() -> dict[str, int]:
    return {"created": 0, "updated": 0, "unchanged": 0, "skipped": 0}


class Importer:
    """One import's work, in the session's transaction (the caller commits or rolls back)."""

    def __init__(
        self,
        session: AsyncSession,
        principal: Principal,
        parent: Organization,
        *,
        create_missing: bool,
        partial: bool,
        progress: Progress | None = None,
    ) -> None:
        self.session = session
        self.principal = principal
        self.parent = parent
        self.create_missing = create_missing
        self.partial = partial
        self._progress = progress
        self.errors: list[RowError] = []
        self.counts = {section: _counter() for section in SECTIONS}
        self.done = 0
        self._bad: dict[str, set[int]] = {section: set() for section in SECTIONS}
        # Existing community organizations under the parent, by exact and by loose name, and by ref.
        self._by_name: dict[str, list[Organization]] = {}
        self._by_loose_name: dict[str, list[Organization]] = {}
        self._by_org_ref: dict[str, list[Organization]] = {}
        self._communities: dict[str, _Community] = {}  # the file's, by ref
        self._fallback: dict[str, _Community | None] = {}  # refs not in the file, by ref
        self._new_by_name: dict[str, _Community] = {}  # the communities to create, by name
        self._targets: dict[uuid.UUID, _Community] = {}
        self._grids: dict[str, _Grid] = {}  # the file's, by ref
        self._cells: dict[uuid.UUID, list[tuple[uuid.UUID, str | None, str, str]]] = {}
        self._cell_targets: dict[uuid.UUID, _Grid] = {}

    # --- bookkeeping ---------------------------------------------------------------------------

    def _error(self, item: Any, section: str, field_name: str | None, code: str, **params: Any) -> None:
        self.errors.append(RowError(section, item.index, item.row, item.ref, field_name, code, params))
        self._bad[section].add(item.index)

    async def _advance(self, n: int) -> None:
        self.done += n
        if self._progress is not None:
            await self._progress(self.done)

    # --- the whole run -------------------------------------------------------------------------

    async def run(self, doc: Document) -> Report:
        parsed, errors = validate(doc)
        self.errors.extend(errors)
        for e in errors:
            if e.index is not None:
                self._bad[e.section].add(e.index)
        await self._load_communities()
        self._plan_communities(parsed.communities)
        grids = self._in_communities(parsed.grids, "grids")
        resources = self._in_communities(parsed.resources, "resources")
        needs = self._in_communities(parsed.needs, "needs")
        await self._load_cells()
        self._plan_grids(grids)
        resources = [r for r in resources if self._grid_ok(r, "resources")]
        needs = [n for n in needs if self._grid_ok(n, "needs")]
        existing_resources = await self._existing(Resource, resources)
        existing_needs = await self._existing(Need, needs)
        resources = [r for r in resources if self._quantity_ok(r.item, existing_resources.get(r.item.ref))]
        for section, bad in self._bad.items():
            self.counts[section]["skipped"] = len(bad)
        if self.errors and not self.partial:
            return Report(self._failed_counts(), self._sorted_errors(), failed=True)
        await self._create_communities()
        await self._create_grids()
        await self._write_resources(resources, existing_resources)
        await self._write_needs(needs, existing_needs)
        return Report(self.counts, self._sorted_errors())

    def _failed_counts(self) -> dict[str, dict[str, int]]:
        return {s: {**_counter(), "skipped": c["skipped"]} for s, c in self.counts.items()}

    def _sorted_errors(self) -> list[RowError]:
        order = {s: i for i, s in enumerate(SECTIONS)}
        return sorted(
            self.errors, key=lambda e: (order.get(e.section, -1), e.index if e.index is not None else -1)
        )

    # --- communities ---------------------------------------------------------------------------

    async def _load_communities(self) -> None:
        rows = (
            await self.session.execute(
                select(Organization).where(
                    in_subtree(Organization.path, self.parent.path),
                    # The parent itself too, whatever its level: an export of a street's own list names it.
                    or_(Organization.level == OrgLevel.community, Organization.id == self.parent.id),
                )
            )
        ).scalars()
        for org in rows:
            names = {org.name} | ({org.short_name} if org.short_name else set())
            for name in names:
                self._by_name.setdefault(name, []).append(org)
            for key in set().union(*(_name_keys(n) for n in names)):
                self._by_loose_name.setdefault(key, []).append(org)
            if org.external_ref:
                self._by_org_ref.setdefault(org.external_ref, []).append(org)

    def _match_name(self, name: str) -> list[Organization]:
        exact = self._by_name.get(name, [])
        if exact:
            return exact
        found: dict[uuid.UUID, Organization] = {}
        for key in _name_keys(name):
            for org in self._by_loose_name.get(key, []):
                found[org.id] = org
        return list(found.values())

    def _creatable(self) -> str | None:
        """Why missing communities cannot be created here (None: they can)."""
        if Perm.organizations_write not in self._perms():
            return "community_create_forbidden"
        parent_kind = OrgKind(self.parent.kind)
        if self.parent.level == OrgLevel.community or parent_kind not in ALLOWED_PARENTS[OrgKind.committee]:
            return "community_parent_invalid"
        return None

    def _perms(self) -> frozenset[Perm]:
        return frozenset().union(*(g.perms for g in self.principal.grants))

    def _target(self, org: Organization, ref: str, row: CommunityIn | None = None) -> _Community:
        target = self._targets.get(org.id)
        if target is None:
            target = self._targets[org.id] = _Community(
                ref, org.name, org.id, row.center if row else None, row, org.level == OrgLevel.community
            )
        return target

    def _plan_communities(self, rows: Sequence[CommunityIn]) -> None:
        for c in rows:
            matches = self._match_name(c.name)
            if len(matches) > 1:
                self._error(c, "communities", "name", "ambiguous_community", name=c.name)
            elif matches:
                self._communities[c.ref] = self._target(matches[0], c.ref, c)
            elif not self.create_missing:
                self._error(c, "communities", "name", "unknown_community", ref=c.name)
            elif (why := self._creatable()) is not None:
                self._error(c, "communities", "name", why, ref=c.name)
            else:
                # Two refs naming one new community make one community.
                new = self._new_by_name.get(c.name) or _Community(c.ref, c.name, None, c.center, c)
                self._communities[c.ref] = self._new_by_name[c.name] = new

    def _lookup_community(self, ref: str) -> _Community | None:
        """A community named by a row but not listed in the file: an existing one, by its
        external_ref or its name."""
        if ref not in self._fallback:
            matches = self._by_org_ref.get(ref) or self._match_name(ref)
            self._fallback[ref] = self._target(matches[0], ref) if len(matches) == 1 else None
        return self._fallback[ref]

    def _in_communities(self, items: Sequence[T], section: str) -> list[_Planned[T]]:
        """The rows whose community is known, each with it; an error for each of the others."""
        planned = []
        for item in items:
            if item.index in self._bad[section]:
                continue
            community = self._communities.get(item.community_ref) or self._lookup_community(
                item.community_ref
            )
            if community is None:
                self._error(item, section, "community_ref", "unknown_community", ref=item.community_ref)
            else:
                planned.append(_Planned(item, community))
        return planned

    async def _create_communities(self) -> None:
        created = 0
        for community in self._communities.values():
            if community.org_id is not None:
                continue
            body = OrganizationCreate(
                name=community.name,
                kind=OrgKind.committee,
                parent_id=self.parent.id,
                level=OrgLevel.community,
                external_ref=community.ref,
            )
            org = await org_service.create(self.session, self.principal, body)
            community.org_id = org.id
            created += 1
        listed = len({id(c) for c in self._communities.values()})
        self.counts["communities"]["created"] = created
        self.counts["communities"]["unchanged"] = listed - created
        await self._advance(self.counts["communities"]["skipped"] + len(self._communities))

    # --- grids ---------------------------------------------------------------------------------

    async def _load_cells(self) -> None:
        ids = [t.org_id for t in self._targets.values() if t.org_id is not None]
        if not ids:
            return
        rows = await self.session.execute(
            select(
                GridCell.id, GridCell.community_id, GridCell.external_ref, GridCell.code, GridCell.name
            ).where(GridCell.community_id.in_(ids))
        )
        for cell_id, community_id, ref, code, name in rows:
            self._cells.setdefault(community_id, []).append((cell_id, ref, code, name))

    def _find_cell(self, community: _Community, ref: str, name: str | None) -> uuid.UUID | None:
        cells = self._cells.get(community.org_id, []) if community.org_id else []
        # By external_ref, then by code, then by name (the first that finds one).
        for column, wanted in ((1, ref), (2, ref), (3, name)):
            found = [c[0] for c in cells if wanted is not None and c[column] == wanted]
            if found:
                return found[0]
        return None

    def _plan_grids(self, rows: Sequence[_Planned[GridIn]]) -> None:
        for p in rows:
            g, community = p.item, p.community
            cell_id = self._find_cell(community, g.ref, g.name)
            center = g.center or community.center
            if cell_id is not None:
                target = self._cell_targets.get(cell_id) or _Grid(g.ref, community, cell_id, g)
                self._cell_targets[cell_id] = target
                self._grids[g.ref] = target
            elif not self.create_missing or not community.has_cells:
                self._error(g, "grids", "ref", "unknown_grid", ref=g.ref)
            elif Perm.grids_write not in self._perms():
                self._error(g, "grids", "ref", "grid_create_forbidden", ref=g.ref)
            elif center is None:
                self._error(g, "grids", "center", "grid_needs_center", ref=g.ref)
            else:
                self._grids[g.ref] = _Grid(g.ref, community, None, g, center)

    def _grid_ok(self, planned: _Planned[Any], section: str) -> bool:
        item, community = planned.item, planned.community
        if item.grid_ref is None:
            return True
        grid = self._grids.get(item.grid_ref)
        if grid is None:
            cell_id = self._find_cell(community, item.grid_ref, None)
            if cell_id is None:
                self._error(item, section, "grid_ref", "unknown_grid", ref=item.grid_ref)
                return False
            grid = self._cell_targets.get(cell_id) or _Grid(item.grid_ref, community, cell_id)
            self._cell_targets[cell_id] = grid
        if grid.community is not community:
            self._error(
                item,
                section,
                "grid_ref",
                "grid_not_in_community",
                ref=item.grid_ref,
                community=item.community_ref,
            )
            return False
        planned.grid = grid
        return True

    async def _create_grids(self) -> None:
        created, listed = 0, {id(g) for g in self._grids.values()}
        used: dict[uuid.UUID, set[str]] = {}
        for grid in self._grids.values():
            if grid.cell_id is not None:
                continue
            assert grid.community.org_id is not None and grid.center is not None and grid.row is not None
            community_id = grid.community.org_id
            if community_id not in used:
                used[community_id] = {c[2] for c in self._cells.get(community_id, [])}
            body = GridCellCreate(
                community_id=community_id,
                code=_free_code(grid.ref, used[community_id]),
                name=grid.row.name,
                boundary=_square(*grid.center),
                layers=[GridLayer.party],
                external_ref=grid.ref,
            )
            cell = await grid_service.create_cell(self.session, self.principal, body)
            grid.cell_id = cell.id
            created += 1
        self.counts["grids"]["created"] = created
        self.counts["grids"]["unchanged"] = len(listed) - created
        await self._advance(self.counts["grids"]["skipped"] + len(self._grids))

    # --- resources and needs -------------------------------------------------------------------

    async def _existing(self, model: Any, planned: Sequence[_Planned[Any]]) -> dict[str, _Existing]:
        """The stored rows the file's refs name under the parent, by ref, locked until the import
        commits.

        A ref names the row with that external_ref (the one in the row's own community when several
        communities use it), or, when it is the id of a row without an external_ref (as an export
        writes it), that row."""
        if not planned:
            return {}
        table = model.__table__
        under = select(Organization.id).where(in_subtree(Organization.path, self.parent.path))
        refs = [p.item.ref for p in planned]
        by_id = {str(u): ref for ref in refs if (u := _as_uuid(ref)) is not None}
        found: dict[str, list[dict[str, Any]]] = {}
        for chunk in _chunks(refs, 5000):
            condition = table.c.external_ref.in_(chunk)
            chunk_ids = [u for u in (_as_uuid(r) for r in chunk) if u is not None]
            if chunk_ids:
                condition = or_(condition, and_(table.c.id.in_(chunk_ids), table.c.external_ref.is_(None)))
            stmt = (
                select(table)
                .where(table.c.org_id.in_(under), condition)
                .order_by(table.c.created_at, table.c.id)
                .with_for_update()
            )
            for row in (await self.session.execute(stmt)).mappings():
                ref = row["external_ref"] if row["external_ref"] is not None else by_id[str(row["id"])]
                found.setdefault(ref, []).append(dict(row))
        existing: dict[str, _Existing] = {}
        for p in planned:
            candidates = found.get(p.item.ref)
            if candidates:
                own = p.community.org_id
                existing[p.item.ref] = _Existing(
                    next((c for c in candidates if c["org_id"] == own), candidates[0])
                )
        return existing

    def _quantity_ok(self, r: ResourceIn, old: _Existing | None) -> bool:
        if old is None:
            return True
        committed = int(old.values["quantity"]) - int(old.values["remaining_quantity"])
        if r.quantity < committed:
            self._error(r, "resources", "quantity", "quantity_below_committed", committed=committed)
            return False
        return True

    async def _tokens(self, planned: Sequence[_Planned[Any]]) -> list[str]:
        # jieba is CPU work: off the event loop, so the API process stays responsive.
        pairs = [(p.item.title, p.item.description) for p in planned]
        return await asyncio.to_thread(lambda: [index_tokens(t, d) for t, d in pairs])

    def _actor_id(self) -> uuid.UUID | None:
        return self.principal.id if self.principal.kind in ("user", "client") else None

    async def _units(self, planned: Sequence[_Planned[ResourceIn]]) -> dict[tuple[uuid.UUID, str], uuid.UUID]:
        """Resident units named as providers, in the community of the row."""
        org_ids = {p.community.org_id for p in planned if p.community.org_id is not None}
        names = {p.item.provider_name for p in planned}
        if not org_ids:
            return {}
        rows = await self.session.execute(
            select(ResidentUnit.id, ResidentUnit.community_id, ResidentUnit.name)
            .where(ResidentUnit.community_id.in_(org_ids), ResidentUnit.name.in_(names))
            .order_by(ResidentUnit.created_at)
        )
        units: dict[tuple[uuid.UUID, str], uuid.UUID] = {}
        for unit_id, community_id, name in rows:
            units.setdefault((community_id, name), unit_id)
        return units

    async def _write_resources(
        self, planned: list[_Planned[ResourceIn]], existing: dict[str, _Existing]
    ) -> None:
        units = await self._units(planned)
        for batch in _chunks(planned, BATCH):
            tokens = await self._tokens(batch)
            inserts: list[dict[str, Any]] = []
            updates: list[dict[str, Any]] = []
            for p, search_tokens in zip(batch, tokens, strict=True):
                r, community, grid = p.item, p.community, p.grid
                assert community.org_id is not None
                values: dict[str, Any] = {
                    "org_id": community.org_id,
                    "unit_id": units.get((community.org_id, r.provider_name)),
                    "provider_kind": r.provider_kind.value,
                    "provider_name": r.provider_name,
                    "grid_id": grid.cell_id if grid else None,
                    "category": r.category.value,
                    "title": r.title,
                    "description": r.description,
                    "quantity": r.quantity,
                    "quantity_unit": r.unit,
                    "available_from": r.available_from,
                    "available_to": r.available_to,
                    "weekdays": r.weekdays,
                    "lat": r.lat,
                    "lng": r.lng,
                    "serves_radius_km": r.serves_radius_km,
                    "year": r.available_from.year,
                    "search_tokens": search_tokens,
                }
                old = existing.get(r.ref)
                if old is None:
                    inserts.append(
                        {
                            **values,
                            "id": uuid.uuid4(),
                            "external_ref": r.ref,
                            "remaining_quantity": r.quantity,
                            "state": (
                                ResourceState.exhausted if r.quantity == 0 else ResourceState.available
                            ).value,
                            "created_by": self._actor_id(),
                        }
                    )
                    continue
                if values["unit_id"] is None and old.values["org_id"] == community.org_id:
                    # A unit found by its name is linked; one linked otherwise (its liaison published
                    # it) is kept.
                    values["unit_id"] = old.values["unit_id"]
                committed = int(old.values["quantity"]) - int(old.values["remaining_quantity"])
                values["remaining_quantity"] = r.quantity - committed
                values["state"] = _resource_state(old.values["state"], r.quantity, committed)
                self._changed(old, values, updates, "resources")
            await self._insert(Resource, inserts, "resources")
            await self._update(Resource, updates)
            await self._advance(len(batch))

    async def _write_needs(self, planned: list[_Planned[NeedIn]], existing: dict[str, _Existing]) -> None:
        for batch in _chunks(planned, BATCH):
            tokens = await self._tokens(batch)
            inserts: list[dict[str, Any]] = []
            updates: list[dict[str, Any]] = []
            for p, search_tokens in zip(batch, tokens, strict=True):
                n, community, grid = p.item, p.community, p.grid
                values: dict[str, Any] = {
                    "org_id": community.org_id,
                    "grid_id": grid.cell_id if grid else None,
                    "category": n.category.value,
                    "title": n.title,
                    "description": n.description,
                    "beneficiaries": n.beneficiaries,
                    "urgency": n.urgency.value,
                    "wanted_from": n.wanted_from,
                    "wanted_to": n.wanted_to,
                    "lat": n.lat,
                    "lng": n.lng,
                    "year": n.wanted_from.year,
                    "search_tokens": search_tokens,
                }
                old = existing.get(n.ref)
                if old is None:
                    inserts.append(
                        {
                            **values,
                            "id": uuid.uuid4(),
                            "external_ref": n.ref,
                            "source": NeedSource.import_.value,
                            "state": NeedState.collected.value,
                            "photos": [],
                            "raised_by": self._actor_id(),
                        }
                    )
                    continue
                self._changed(old, values, updates, "needs")
            await self._insert(Need, inserts, "needs")
            await self._update(Need, updates)
            await self._advance(len(batch))

    def _changed(
        self, old: _Existing, values: dict[str, Any], updates: list[dict[str, Any]], section: str
    ) -> None:
        if all(old.values.get(k) == v for k, v in values.items()):
            self.counts[section]["unchanged"] += 1
            return
        updates.append({"_id": old.id, **values})
        self.counts[section]["updated"] += 1

    async def _insert(self, model: Any, rows: list[dict[str, Any]], section: str) -> None:
        if not rows:
            return
        now = utcnow()
        for row in rows:
            row.update(created_at=now, updated_at=now, version=1)
        await self.session.execute(insert(model.__table__), rows)
        self.counts[section]["created"] += len(rows)

    async def _update(self, model: Any, rows: list[dict[str, Any]]) -> None:
        """One UPDATE per row in one round trip (executemany), bumping the version as any edit does
        (a client holding the old ETag gets 412)."""
        if not rows:
            return
        table = model.__table__
        keys = [k for k in rows[0] if k != "_id"]
        stmt = (
            update(table)
            .where(table.c.id == bindparam("_id"))
            .values(
                {
                    **{k: bindparam(f"v_{k}") for k in keys},
                    "version": table.c.version + 1,
                    "updated_at": bindparam("v_updated_at"),
                }
            )
        )
        now = utcnow()
        params = [{"_id": r["_id"], "v_updated_at": now, **{f"v_{k}": r[k] for k in keys}} for r in rows]
        await self.session.execute(stmt, params)


def _resource_state(state: str, quantity: int, committed: int) -> str:
    if state == ResourceState.withdrawn:
        return state
    if quantity - committed == 0:
        return ResourceState.exhausted.value
    return (ResourceState.partly_committed if committed > 0 else ResourceState.available).value


def _square(lat: float, lng: float) -> dict[str, Any]:
    d = GRID_HALF_SIDE
    south, north = max(-90.0, lat - d), min(90.0, lat + d)
    west, east = max(-180.0, lng - d), min(180.0, lng + d)
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Polygon", "coordinates": [ring]}


def _free_code(ref: str, used: set[str]) -> str:
    """A grid code (letters, digits, - and _) unique in the community, from the file's ref if it can."""
    base = re.sub(r"[^A-Za-z0-9_-]", "", ref)[:44] or "G"
    code, n = base, 1
    while code in used:
        n += 1
        code = f"{base}-{n}"
    used.add(code)
    return code


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
