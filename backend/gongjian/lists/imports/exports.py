"""The XLSX template and the exports of the resources and needs lists, in the import's columns.

An export holds the communities and grids its rows name, so it re-imports as it is: rows keep their
`external_ref` as `ref` (or their id when they have none, which the import recognises).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.core.access import Perm, Principal, ensure_org_in_scope, in_subtree, require, visible
from gongjian.grids.models import GridCell
from gongjian.lists.imports.format import SECTION_TITLES, SECTIONS, flatten
from gongjian.lists.imports.workbook import Sheet, write_workbook
from gongjian.lists.models import Need, Resource
from gongjian.organizations.models import Organization

NOTES_SHEET = "填写说明"
_NOTES_INTRO = (
    "本模板与清单 JSON 交换格式（communities、grids、resources、needs）的字段一一对应；"
    "各表第一行为列名（嵌套字段以“.”连接，如 available.from），请勿修改，从第二行起每行一条记录。"
    "社区按名称匹配上级组织下已有的社区，勾选“新建缺失的社区和网格”时自动新建；"
    "资源和需求按 ref 更新已导入的记录，不会重复。任何一行有误时整个文件都不导入（除非选择部分导入），"
    "并逐行列出错误。"
)


def template() -> bytes:
    """The empty workbook to fill in: one sheet per section, and the notes sheet (Chinese)."""
    notes: list[list[Any]] = [[_NOTES_INTRO, "", "", ""]]
    for section, columns in SECTIONS.items():
        for c in columns:
            notes.append(
                [
                    f"{section}（{SECTION_TITLES[section]}）",
                    c.key,
                    "必填" if c.required else "选填",
                    c.note,
                    c.example,
                ]
            )
    sheets = [Sheet(section, [c.key for c in columns]) for section, columns in SECTIONS.items()]
    sheets.append(
        Sheet(
            NOTES_SHEET,
            ["表", "列名", "是否必填", "说明", "示例"],
            notes,
            widths=(22, 22, 10, 60, 24),
            wrap=True,
        )
    )
    return write_workbook(sheets)


def _unique(ref: str, used: set[str], fallback: str) -> str:
    if ref in used:
        ref = fallback
    used.add(ref)
    return ref


async def export(
    session: AsyncSession, principal: Principal, section: str, org_id: uuid.UUID | None
) -> tuple[bytes, str]:
    """The workbook of the resources or needs the caller may see (under `org_id` when given), and a
    file name for it."""
    require(principal, Perm.lists_read)
    model: Any = Resource if section == "resources" else Need
    stmt = visible(select(model), model, principal, Perm.lists_read)
    name = SECTION_TITLES[section]
    if org_id is not None:
        org: Organization = await ensure_org_in_scope(session, principal, org_id, Perm.lists_read)
        stmt = stmt.where(
            model.org_id.in_(select(Organization.id).where(in_subtree(Organization.path, org.path)))
        )
        name = f"{org.short_name or org.name}{name}"
    rows = list((await session.execute(stmt.order_by(model.created_at, model.id))).scalars())
    communities, community_refs = await _communities(session, {r.org_id for r in rows})
    grids, grid_refs = await _grids(session, {r.grid_id for r in rows if r.grid_id}, community_refs)
    used: set[str] = set()
    items = [
        (_resource if section == "resources" else _need)(
            r, _unique(r.external_ref or str(r.id), used, str(r.id)), community_refs, grid_refs
        )
        for r in rows
    ]
    sheets = [
        Sheet("communities", [c.key for c in SECTIONS["communities"]], communities),
        Sheet("grids", [c.key for c in SECTIONS["grids"]], grids),
        Sheet(section, [c.key for c in SECTIONS[section]], (flatten(i, section) for i in items)),
    ]
    return write_workbook(sheets), f"{name}.xlsx"


async def _communities(
    session: AsyncSession, ids: set[uuid.UUID]
) -> tuple[list[list[Any]], dict[uuid.UUID, str]]:
    if not ids:
        return [], {}
    orgs = list((await session.execute(select(Organization).where(Organization.id.in_(ids)))).scalars())
    parent_ids = {o.parent_id for o in orgs if o.parent_id}
    parents = (
        dict(
            (
                await session.execute(
                    select(Organization.id, Organization.name).where(Organization.id.in_(parent_ids))
                )
            ).all()
        )
        if parent_ids
        else {}
    )
    used: set[str] = set()
    refs: dict[uuid.UUID, str] = {}
    rows: list[list[Any]] = []
    for org in sorted(orgs, key=lambda o: o.path):
        ref = _unique(org.external_ref or org.code or f"C{org.seq}", used, f"C{org.seq}")
        refs[org.id] = ref
        rows.append(
            flatten(
                {
                    "ref": ref,
                    "name": org.name,
                    "street": parents.get(org.parent_id) if org.parent_id else None,
                },
                "communities",
            )
        )
    return rows, refs


async def _grids(
    session: AsyncSession, ids: set[uuid.UUID], community_refs: dict[uuid.UUID, str]
) -> tuple[list[list[Any]], dict[uuid.UUID, str]]:
    if not ids:
        return [], {}
    cells = (await session.execute(select(GridCell).where(GridCell.id.in_(ids)))).scalars()
    used: set[str] = set()
    refs: dict[uuid.UUID, str] = {}
    rows: list[list[Any]] = []
    for cell in sorted(cells, key=lambda c: (community_refs.get(c.community_id, ""), c.code)):
        ref = _unique(cell.external_ref or cell.code, used, f"{cell.code}-{str(cell.id)[:8]}")
        refs[cell.id] = ref
        center = {
            "lat": round((cell.min_lat + cell.max_lat) / 2, 7),
            "lng": round((cell.min_lng + cell.max_lng) / 2, 7),
        }
        row = {
            "ref": ref,
            "community_ref": community_refs.get(cell.community_id),
            "name": cell.name,
            "center": center,
        }
        rows.append(flatten(row, "grids"))
    return rows, refs


def _location(lat: float | None, lng: float | None) -> dict[str, float] | None:
    return {"lat": lat, "lng": lng} if lat is not None and lng is not None else None


def _resource(
    r: Resource, ref: str, communities: dict[uuid.UUID, str], grids: dict[uuid.UUID, str]
) -> dict[str, Any]:
    return {
        "ref": ref,
        "provider": {"name": r.provider_name, "kind": r.provider_kind},
        "community_ref": communities.get(r.org_id),
        "grid_ref": grids.get(r.grid_id) if r.grid_id else None,
        "category": r.category,
        "title": r.title,
        "description": r.description,
        "quantity": r.quantity,
        "unit": r.quantity_unit,
        "available": {
            "from": r.available_from.isoformat(),
            "to": r.available_to.isoformat(),
            "weekdays": list(r.weekdays),
        },
        "location": _location(r.lat, r.lng),
        "serves_radius_km": r.serves_radius_km,
    }


def _need(
    n: Need, ref: str, communities: dict[uuid.UUID, str], grids: dict[uuid.UUID, str]
) -> dict[str, Any]:
    return {
        "ref": ref,
        "community_ref": communities.get(n.org_id),
        "grid_ref": grids.get(n.grid_id) if n.grid_id else None,
        "category": n.category,
        "title": n.title,
        "description": n.description,
        "beneficiaries": n.beneficiaries,
        "urgency": n.urgency,
        "wanted": {"from": n.wanted_from.isoformat(), "to": n.wanted_to.isoformat()},
        "location": _location(n.lat, n.lng),
    }
