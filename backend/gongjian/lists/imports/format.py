"""The interchange format of the lists (shared/data/matching/public.json), described once as columns.

The same description serves the JSON reader, the XLSX template and reader, and the exports: a sheet's
header names the JSON keys, nested ones dotted (`available.from`), so an export re-imports and a
workbook holds exactly what a JSON file holds. Keys the format does not know (`gold`, the evaluation
labels of the public file, among them) are ignored.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from gongjian.lists.imports.workbook import ZIP_MAGIC, WorkbookError, read_workbook
from gongjian.lists.models import ListCategory, ProviderKind, Urgency


class Kind(StrEnum):
    text = "text"
    integer = "integer"
    number = "number"
    date = "date"
    weekdays = "weekdays"


@dataclass(frozen=True)
class Column:
    key: str  # dotted path in a JSON row; the header of the XLSX column
    kind: Kind
    required: bool
    note: str  # for the template's notes sheet (Chinese)
    example: str = ""


def _choices(enum: type[StrEnum]) -> str:
    return " / ".join(e.value for e in enum)


_CENTER = (
    Column("center.lat", Kind.number, False, "中心点纬度（WGS-84，-90～90）", "25.421"),
    Column("center.lng", Kind.number, False, "中心点经度（WGS-84，-180～180）", "103.178"),
)
_LOCATION = (
    Column("location.lat", Kind.number, True, "位置纬度（WGS-84，-90～90）", "25.42382"),
    Column("location.lng", Kind.number, True, "位置经度（WGS-84，-180～180）", "103.17575"),
)

SECTIONS: dict[str, tuple[Column, ...]] = {
    "communities": (
        Column("ref", Kind.text, True, "社区编号，文件内唯一，供网格、资源、需求引用", "C1"),
        Column("name", Kind.text, True, "社区名称；按名称匹配上级组织下已有的社区", "书院社区"),
        Column("street", Kind.text, False, "所属街道，仅供参考，不参与匹配", "城中街道"),
        *_CENTER,
    ),
    "grids": (
        Column("ref", Kind.text, True, "网格编号，文件内唯一", "C1-G1"),
        Column("community_ref", Kind.text, True, "所属社区编号（communities 表的 ref）", "C1"),
        Column("name", Kind.text, True, "网格名称", "第一网格（书院巷片区）"),
        *(
            Column(c.key, c.kind, c.required, c.note + "；新建网格时以此为中心画边界", c.example)
            for c in _CENTER
        ),
    ),
    "resources": (
        Column("ref", Kind.text, True, "资源编号，文件内唯一；再次导入时按此更新", "R001"),
        Column(
            "provider.name",
            Kind.text,
            True,
            "提供方名称；与本社区驻区单位同名时自动关联该单位",
            "宁川县人民医院",
        ),
        Column("provider.kind", Kind.text, True, f"提供方类型：{_choices(ProviderKind)}", "institution"),
        Column("community_ref", Kind.text, True, "所属社区编号", "C2"),
        Column("grid_ref", Kind.text, False, "所属网格编号，可不填", "C2-G2"),
        Column("category", Kind.text, True, f"类别：{_choices(ListCategory)}", "service"),
        Column("title", Kind.text, True, "标题（200字以内）", "专家团队下社区义诊"),
        Column("description", Kind.text, False, "说明（5000字以内）", "每月安排专家下社区义诊一次"),
        Column("quantity", Kind.integer, True, "数量，不小于0的整数", "12"),
        Column("unit", Kind.text, True, "数量单位，如 次、人、小时、元、件", "次"),
        Column("available.from", Kind.date, True, "可提供开始日期（YYYY-MM-DD）", "2026-01-01"),
        Column("available.to", Kind.date, True, "可提供结束日期（YYYY-MM-DD），不早于开始日期", "2026-12-31"),
        Column(
            "available.weekdays",
            Kind.weekdays,
            False,
            "可提供的星期，1（周一）～7（周日），逗号分隔；不填为每天",
            "2,4",
        ),
        *_LOCATION,
        Column("serves_radius_km", Kind.number, False, "服务半径（公里），不填为不限", "8"),
    ),
    "needs": (
        Column("ref", Kind.text, True, "需求编号，文件内唯一；再次导入时按此更新", "N001"),
        Column("community_ref", Kind.text, True, "所属社区编号", "C1"),
        Column("grid_ref", Kind.text, False, "所属网格编号", "C1-G1"),
        Column("category", Kind.text, True, f"类别：{_choices(ListCategory)}", "service"),
        Column("title", Kind.text, True, "标题（200字以内）", "高龄独居老人吃饭难"),
        Column(
            "description", Kind.text, False, "说明（5000字以内）", "希望能有个就近吃午饭或者送餐上门的地方"
        ),
        Column("beneficiaries", Kind.integer, False, "受益人数，不小于0的整数，不填为1", "24"),
        Column("urgency", Kind.text, False, f"紧急程度：{_choices(Urgency)}，不填为 normal", "high"),
        Column("wanted.from", Kind.date, True, "希望开始日期（YYYY-MM-DD）", "2026-03-01"),
        Column("wanted.to", Kind.date, True, "希望结束日期（YYYY-MM-DD），不早于开始日期", "2026-12-31"),
        *_LOCATION,
    ),
}

SECTION_TITLES = {"communities": "社区", "grids": "网格", "resources": "资源清单", "needs": "需求清单"}
# A sheet may also be named by its Chinese title.
_SHEET_ALIASES = {
    **{name: name for name in SECTIONS},
    **{title: name for name, title in SECTION_TITLES.items()},
    "资源": "resources",
    "需求": "needs",
}
COLUMNS: dict[str, dict[str, Column]] = {s: {c.key: c for c in cols} for s, cols in SECTIONS.items()}


class FormatError(ValueError):
    """The upload is neither the JSON nor the XLSX form of the interchange format."""


@dataclass
class Document:
    """The four sections of an upload, rows as JSON objects, whichever form it came in.

    `row_numbers[section][i]` is where row i sits in its sheet (XLSX); JSON rows have none.
    A section that is not a list is kept as it came, for validation to report.
    """

    sections: dict[str, Any]
    row_numbers: dict[str, list[int]] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(len(v) for v in self.sections.values() if isinstance(v, list))

    def row_number(self, section: str, index: int) -> int:
        numbers = self.row_numbers.get(section)
        return numbers[index] if numbers is not None else index + 1


def get(row: dict[str, Any], key: str) -> Any:
    """The value at a dotted key of a JSON row, None when any level is absent."""
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def flatten(row: dict[str, Any], section: str) -> list[Any]:
    """A JSON row as the values of its section's columns, in column order (for a sheet)."""
    return [get(row, c.key) for c in SECTIONS[section]]


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[last] = value
    return out


# --- JSON ---------------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(data: bytes) -> Document:
    try:
        doc = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise FormatError("not valid JSON") from exc
    if not isinstance(doc, dict):
        raise FormatError("the JSON document must be an object with communities, grids, resources, needs")
    return Document({name: doc.get(name) if doc.get(name) is not None else [] for name in SECTIONS})


# --- XLSX ---------------------------------------------------------------------------------------

_INT = re.compile(r"^[+-]?\d+$")
_WEEKDAY_SPLIT = re.compile(r"[\s,，、;；/]+")


def _as_text(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))  # a ref typed as a number: 12, not 12.0
    if isinstance(value, int | float | date):
        return str(value) if not isinstance(value, date) else value.isoformat()
    return value.strip() if isinstance(value, str) else value


def _as_integer(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT.match(value.strip()):
        return int(value.strip())
    return value


def _as_number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


def _as_date(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    return value.strip() if isinstance(value, str) else value


def _as_weekdays(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, float) and value.is_integer():
        return [int(value)]
    if isinstance(value, str):
        parts = [p for p in _WEEKDAY_SPLIT.split(value.strip()) if p]
        if parts and all(_INT.match(p) for p in parts):
            return [int(p) for p in parts]
    return value


_COERCE = {
    Kind.text: _as_text,
    Kind.integer: _as_integer,
    Kind.number: _as_number,
    Kind.date: _as_date,
    Kind.weekdays: _as_weekdays,
}


def parse_xlsx(data: bytes) -> Document:
    """Sheets named as the sections (or their Chinese titles); a cell is taken as its column's kind
    when it reads as one (a number typed as text, a date cell), else left for validation to refuse."""
    try:
        sheets = read_workbook(data)
    except WorkbookError as exc:
        raise FormatError(str(exc)) from exc
    sections: dict[str, Any] = {name: [] for name in SECTIONS}
    numbers: dict[str, list[int]] = {name: [] for name in SECTIONS}
    known = {title: _SHEET_ALIASES.get(title) or _SHEET_ALIASES.get(title.lower()) for title in sheets}
    if not any(known.values()):
        raise FormatError("no sheet named communities, grids, resources or needs")
    for title, sheet in sheets.items():
        name = known[title]
        if name is None:
            continue  # the notes sheet, or anything else the user keeps in the workbook
        columns = COLUMNS[name]
        for number, cells in sheet.rows:
            flat = {key: _COERCE[columns[key].kind](value) for key, value in cells.items() if key in columns}
            sections[name].append(_nest(flat))
            numbers[name].append(number)
    return Document(sections, numbers)


def parse_upload(data: bytes) -> tuple[str, Document]:
    """("xlsx" | "json", the document), recognising the form by its content."""
    if data.startswith(ZIP_MAGIC):
        return "xlsx", parse_xlsx(data)
    return "json", parse_json(data)
