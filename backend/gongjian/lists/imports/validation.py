"""Every row of an upload checked on its own: fields present and of the right type, values in range,
refs unique within their section. What needs the database (which community, which grid) is checked
by the service afterwards, with the same kind of row error."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from gongjian.lists.imports.format import SECTIONS, Document, get
from gongjian.lists.models import ListCategory, ProviderKind, Urgency

MAX_QUANTITY = 10**12
MAX_BENEFICIARIES = 1_000_000
MAX_RADIUS_KM = 20_000.0
MIN_YEAR, MAX_YEAR = 2000, 2100
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# code: (Chinese, English); `{…}` are filled from the error's params.
MESSAGES: dict[str, tuple[str, str]] = {
    "not_a_list": ("“{section}”应为数组", "{section} must be a list"),
    "not_an_object": ("该行应为对象", "the row must be an object"),
    "missing": ("缺少必填字段", "required field is missing"),
    "wrong_type": ("类型错误，应为{expected}", "wrong type: expected {expected}"),
    "blank": ("不能为空白", "must not be blank"),
    "too_long": ("长度超过{max}个字符", "longer than {max} characters"),
    "invalid_characters": ("含有无效字符", "contains invalid characters"),
    "negative": ("不能为负数", "must not be negative"),
    "too_large": ("不能大于{max}", "must not exceed {max}"),
    "invalid_date": ("日期应为YYYY-MM-DD格式的有效日期", "must be a valid YYYY-MM-DD date"),
    "date_out_of_range": ("日期应在{min}至{max}年之间", "the date must lie in the years {min} to {max}"),
    "window_order": ("结束日期早于开始日期", "the window ends before it starts"),
    "invalid_location": (
        "位置缺失或无效：需要纬度lat（-90～90）和经度lng（-180～180）",
        "missing or invalid location: lat (-90..90) and lng (-180..180) are required",
    ),
    "invalid_choice": ("取值“{value}”无效，可选：{choices}", "invalid value {value!r}; one of: {choices}"),
    "invalid_weekdays": (
        "星期应为1（周一）至7（周日）的整数列表，且不能为空",
        "weekdays must be a non-empty list of integers 1 (Monday) to 7 (Sunday)",
    ),
    "duplicate_ref": ("编号“{ref}”在文件中重复（第{first}行已出现）", "ref {ref!r} repeats row {first}"),
    "unknown_community": ("找不到社区“{ref}”", "unknown community {ref!r}"),
    "ambiguous_community": (
        "名为“{name}”的社区不止一个，无法确定",
        "more than one community is named {name!r}",
    ),
    "community_create_forbidden": (
        "找不到社区“{ref}”，且无权在所选组织下新建社区",
        "unknown community {ref!r}, and no permission to create communities under this organization",
    ),
    "community_parent_invalid": (
        "找不到社区“{ref}”，且所选组织下不能新建社区（请选择街道党工委等上级组织）",
        "unknown community {ref!r}; communities cannot be created under this organization (choose a street)",
    ),
    "unknown_grid": ("找不到网格“{ref}”", "unknown grid {ref!r}"),
    "grid_create_forbidden": (
        "找不到网格“{ref}”，且无权新建网格",
        "unknown grid {ref!r}, and no permission to create grids",
    ),
    "grid_needs_center": (
        "新建网格“{ref}”需要中心点坐标（center.lat、center.lng）",
        "creating grid {ref!r} needs its center (center.lat, center.lng)",
    ),
    "grid_not_in_community": (
        "网格“{ref}”不属于社区“{community}”",
        "grid {ref!r} is not in community {community!r}",
    ),
    "quantity_below_committed": (
        "数量不能少于已承诺给项目的{committed}",
        "the quantity cannot fall below the {committed} committed",
    ),
    "failed": ("导入中断，未写入任何数据", "the import stopped; nothing was written"),
}

_EXPECTED_ZH = {"text": "文本", "integer": "整数", "number": "数字", "date": "日期文本", "object": "对象"}


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


@dataclass
class RowError:
    """What is wrong with one field of one row (`index` None: the whole section)."""

    section: str
    index: int | None
    row: int | None
    ref: str | None
    field: str | None
    code: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def message(self, english: bool = False) -> str:
        zh, en = MESSAGES[self.code]
        params = dict(self.params)
        if not english and "expected" in params:
            params["expected"] = _EXPECTED_ZH.get(params["expected"], params["expected"])
        return (en if english else zh).format_map(_Blank(params))

    def as_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "index": self.index,
            "row": self.row,
            "ref": self.ref,
            "field": self.field,
            "code": self.code,
            "params": self.params,
            "message": self.message(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RowError:
        return cls(
            d["section"],
            d.get("index"),
            d.get("row"),
            d.get("ref"),
            d.get("field"),
            d["code"],
            dict(d.get("params") or {}),
        )


# --- typed rows ---------------------------------------------------------------------------------


@dataclass
class Base:
    index: int
    row: int
    ref: str


@dataclass
class CommunityIn(Base):
    name: str
    center: tuple[float, float] | None  # (lat, lng)


@dataclass
class GridIn(Base):
    community_ref: str
    name: str
    center: tuple[float, float] | None


@dataclass
class ResourceIn(Base):
    provider_name: str
    provider_kind: ProviderKind
    community_ref: str
    grid_ref: str | None
    category: ListCategory
    title: str
    description: str
    quantity: int
    unit: str
    available_from: date
    available_to: date
    weekdays: list[int]
    lat: float
    lng: float
    serves_radius_km: float | None


@dataclass
class NeedIn(Base):
    community_ref: str
    grid_ref: str | None
    category: ListCategory
    title: str
    description: str
    beneficiaries: int
    urgency: Urgency
    wanted_from: date
    wanted_to: date
    lat: float
    lng: float


@dataclass
class Parsed:
    communities: list[CommunityIn] = dataclasses.field(default_factory=list)
    grids: list[GridIn] = dataclasses.field(default_factory=list)
    resources: list[ResourceIn] = dataclasses.field(default_factory=list)
    needs: list[NeedIn] = dataclasses.field(default_factory=list)


# --- reading one row ----------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Row:
    """Reads the fields of one row, collecting an error for each field that is wrong."""

    def __init__(self, section: str, index: int, row: int, raw: dict[str, Any]) -> None:
        self.section, self.index, self.line, self.raw = section, index, row, raw
        ref = raw.get("ref")
        self.ref = ref.strip() if isinstance(ref, str) else None
        self.errors: list[RowError] = []

    def error(self, key: str | None, code: str, **params: Any) -> None:
        self.errors.append(RowError(self.section, self.index, self.line, self.ref, key, code, params))

    def _present(self, key: str, required: bool) -> Any:
        value = get(self.raw, key)
        if value is None and required:
            self.error(key, "missing")
        return value

    def text(self, key: str, *, required: bool = True, max_length: int = 200) -> str | None:
        value = self._present(key, required)
        if value is None:
            return None
        if not isinstance(value, str):
            self.error(key, "wrong_type", expected="text")
            return None
        value = value.strip()
        if "\x00" in value:
            self.error(key, "invalid_characters")
        elif required and not value:
            self.error(key, "blank")
        elif len(value) > max_length:
            self.error(key, "too_long", max=max_length)
        else:
            return value
        return None

    def integer(self, key: str, *, required: bool = True, maximum: int) -> int | None:
        value = self._present(key, required)
        if value is None:
            return None
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            self.error(key, "wrong_type", expected="integer")
        elif value < 0:
            self.error(key, "negative")
        elif value > maximum:
            self.error(key, "too_large", max=maximum)
        else:
            return value
        return None

    def number(self, key: str, *, required: bool = True, maximum: float) -> float | None:
        value = self._present(key, required)
        if value is None:
            return None
        if not _is_number(value) or not math.isfinite(value):
            self.error(key, "wrong_type", expected="number")
        elif value < 0:
            self.error(key, "negative")
        elif value > maximum:
            self.error(key, "too_large", max=maximum)
        else:
            return float(value)
        return None

    def day(self, key: str) -> date | None:
        value = self._present(key, True)
        if value is None:
            return None
        if not isinstance(value, str):
            self.error(key, "wrong_type", expected="date")
            return None
        try:
            if not _DATE.match(value.strip()):
                raise ValueError(value)
            parsed = date.fromisoformat(value.strip())
        except ValueError:
            self.error(key, "invalid_date")
            return None
        if not MIN_YEAR <= parsed.year <= MAX_YEAR:
            self.error(key, "date_out_of_range", min=MIN_YEAR, max=MAX_YEAR)
            return None
        return parsed

    def window(self, prefix: str) -> tuple[date, date] | None:
        start, end = self.day(f"{prefix}.from"), self.day(f"{prefix}.to")
        if start is None or end is None:
            return None
        if end < start:
            self.error(f"{prefix}.to", "window_order")
            return None
        return start, end

    def choice(self, key: str, enum: type[StrEnum], *, default: StrEnum | None = None) -> Any:
        value = self._present(key, default is None)
        if value is None:
            return default
        if not isinstance(value, str):
            self.error(key, "wrong_type", expected="text")
            return None
        try:
            return enum(value.strip())
        except ValueError:
            shown = value if len(value) <= 40 else value[:40] + "…"
            self.error(key, "invalid_choice", value=shown, choices=", ".join(e.value for e in enum))
            return None

    def weekdays(self, key: str) -> list[int] | None:
        value = get(self.raw, key)
        if value is None:
            return [1, 2, 3, 4, 5, 6, 7]
        ok = (
            isinstance(value, list)
            and 0 < len(value) <= 7
            and all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 7 for d in value)
        )
        if not ok:
            self.error(key, "invalid_weekdays")
            return None
        return sorted(set(value))

    def point(self, key: str, *, required: bool) -> tuple[float, float] | None:
        """(lat, lng) of `key`: {"lat": …, "lng": …}; one `invalid_location` error for any fault."""
        value = self.raw.get(key)
        if value is None and not required:
            return None
        lat, lng = get(self.raw, f"{key}.lat"), get(self.raw, f"{key}.lng")
        if not (
            isinstance(value, dict)
            and _is_number(lat)
            and _is_number(lng)
            and math.isfinite(lat)
            and math.isfinite(lng)
            and -90 <= lat <= 90
            and -180 <= lng <= 180
        ):
            self.error(key, "invalid_location")
            return None
        return float(lat), float(lng)

    @property
    def ok(self) -> bool:
        return not self.errors


# --- the sections -------------------------------------------------------------------------------


def _community(r: _Row) -> CommunityIn | None:
    ref, name = r.text("ref", max_length=100), r.text("name", max_length=100)
    r.text("street", required=False, max_length=100)
    center = r.point("center", required=False)
    if not r.ok:
        return None
    assert ref is not None and name is not None
    return CommunityIn(r.index, r.line, ref, name, center)


def _grid(r: _Row) -> GridIn | None:
    ref, community_ref = r.text("ref", max_length=100), r.text("community_ref", max_length=100)
    name = r.text("name", max_length=100)
    center = r.point("center", required=False)
    if not r.ok:
        return None
    assert ref is not None and community_ref is not None and name is not None
    return GridIn(r.index, r.line, ref, community_ref, name, center)


def _resource(r: _Row) -> ResourceIn | None:
    values: dict[str, Any] = {
        "ref": r.text("ref", max_length=100),
        "provider_name": r.text("provider.name"),
        "provider_kind": r.choice("provider.kind", ProviderKind),
        "community_ref": r.text("community_ref", max_length=100),
        "grid_ref": r.text("grid_ref", required=False, max_length=100) or None,
        "category": r.choice("category", ListCategory),
        "title": r.text("title"),
        "description": r.text("description", required=False, max_length=5000) or "",
        "quantity": r.integer("quantity", maximum=MAX_QUANTITY),
        "unit": r.text("unit", max_length=20),
        "weekdays": r.weekdays("available.weekdays"),
        "serves_radius_km": r.number("serves_radius_km", required=False, maximum=MAX_RADIUS_KM),
    }
    window, location = r.window("available"), r.point("location", required=True)
    if not r.ok or window is None or location is None:
        return None
    return ResourceIn(
        index=r.index,
        row=r.line,
        available_from=window[0],
        available_to=window[1],
        lat=location[0],
        lng=location[1],
        **values,
    )


def _need(r: _Row) -> NeedIn | None:
    values: dict[str, Any] = {
        "ref": r.text("ref", max_length=100),
        "community_ref": r.text("community_ref", max_length=100),
        "grid_ref": r.text("grid_ref", required=False, max_length=100) or None,
        "category": r.choice("category", ListCategory),
        "title": r.text("title"),
        "description": r.text("description", required=False, max_length=5000) or "",
        "beneficiaries": r.integer("beneficiaries", required=False, maximum=MAX_BENEFICIARIES),
        "urgency": r.choice("urgency", Urgency, default=Urgency.normal),
    }
    if values["beneficiaries"] is None and get(r.raw, "beneficiaries") is None:
        values["beneficiaries"] = 1
    window, location = r.window("wanted"), r.point("location", required=True)
    if not r.ok or window is None or location is None:
        return None
    return NeedIn(
        index=r.index,
        row=r.line,
        wanted_from=window[0],
        wanted_to=window[1],
        lat=location[0],
        lng=location[1],
        **values,
    )


_READERS: dict[str, Any] = {
    "communities": _community,
    "grids": _grid,
    "resources": _resource,
    "needs": _need,
}


def validate(doc: Document) -> tuple[Parsed, list[RowError]]:
    """The rows that are valid on their own, and an error for every fault of the others.

    A ref repeated within a section is an error on each repetition (the first row stands)."""
    parsed = Parsed()
    errors: list[RowError] = []
    for section in SECTIONS:
        rows = doc.sections.get(section)
        if not isinstance(rows, list):
            errors.append(RowError(section, None, None, None, None, "not_a_list", {"section": section}))
            continue
        first_row: dict[str, int] = {}
        out: list[Any] = getattr(parsed, section)
        for index, raw in enumerate(rows):
            number = doc.row_number(section, index)
            if not isinstance(raw, dict):
                errors.append(
                    RowError(section, index, number, None, None, "not_an_object", {"expected": "object"})
                )
                continue
            r = _Row(section, index, number, raw)
            item = _READERS[section](r)
            if r.ref is not None and r.ref in first_row:
                r.error("ref", "duplicate_ref", ref=r.ref, first=first_row[r.ref])
                item = None
            elif r.ref:
                first_row[r.ref] = number
            errors.extend(r.errors)
            if item is not None:
                out.append(item)
    return parsed, errors
