"""Generic XLSX workbooks: write sheets of rows, read sheets back as dicts keyed by the header row.

Nothing here knows about the lists; any domain can export a table with `write_workbook` and answer it
with `xlsx_response`, and read an uploaded one with `read_workbook`.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import quote

from fastapi import Response
from openpyxl import Workbook, load_workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.utils.exceptions import InvalidFileException
from openpyxl.worksheet.worksheet import Worksheet

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# An XLSX file is a ZIP archive.
ZIP_MAGIC = b"PK\x03\x04"

_HEADER_FONT = Font(bold=True)
_HEADER_FILL = PatternFill("solid", fgColor="DDEBF7")


@dataclass
class Sheet:
    """A sheet to write: a header row of `columns`, then `rows` (each a sequence in column order)."""

    name: str
    columns: Sequence[str]
    rows: Iterable[Sequence[Any]] = ()
    widths: Sequence[int] = ()
    wrap: bool = False


@dataclass
class SheetData:
    """A sheet read back: its header and its non-empty rows as (row number in the sheet, {column: value})."""

    name: str
    columns: list[str]
    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


class WorkbookError(ValueError):
    """The bytes are not a readable XLSX workbook, or it is too large."""


def _cell_value(value: Any) -> Any:
    if isinstance(value, str):
        # Characters XML 1.0 cannot hold would make openpyxl refuse the whole file.
        return ILLEGAL_CHARACTERS_RE.sub("", value)
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return value


def _cell(ws: Worksheet, value: Any) -> WriteOnlyCell:
    cell = WriteOnlyCell(ws, value=_cell_value(value))
    if isinstance(value, str) and value.startswith("="):
        # Text, never a formula: a description starting with "=" must not run in Excel.
        cell.data_type = "s"
    return cell


def write_workbook(sheets: Sequence[Sheet]) -> bytes:
    """The XLSX file of `sheets`, in order, streaming rows (write-only mode: any number of rows)."""
    wb = Workbook(write_only=True)
    for sheet in sheets:
        ws = wb.create_sheet(title=sheet.name[:31])
        for i, width in enumerate(sheet.widths or [max(12, min(40, len(c) * 2)) for c in sheet.columns]):
            ws.column_dimensions[get_column_letter(i + 1)].width = width
        ws.freeze_panes = "A2"
        header = []
        for name in sheet.columns:
            cell = _cell(ws, name)
            cell.font, cell.fill = _HEADER_FONT, _HEADER_FILL
            header.append(cell)
        ws.append(header)
        wrap = Alignment(wrap_text=True, vertical="top") if sheet.wrap else None
        for row in sheet.rows:
            cells = [_cell(ws, v) for v in row]
            if wrap is not None:
                for cell in cells:
                    cell.alignment = wrap
            ws.append(cells)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _header(values: Sequence[Any]) -> list[str]:
    names = [str(v).strip() if v is not None else "" for v in values]
    while names and not names[-1]:
        names.pop()
    return names


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        # A date typed into Excel comes back as midnight of that day.
        return value.date() if value.time() == datetime.min.time() else value
    if isinstance(value, date | str | int | float | bool):
        return value
    return str(value)


def read_workbook(data: bytes, *, max_rows: int = 100_000, max_columns: int = 100) -> dict[str, SheetData]:
    """Every sheet of an XLSX file: the first row is the header, blank rows are left out.

    Cell values come back as Python values (str, int, float, bool, date or datetime); a cell whose
    header is blank is ignored. Raises `WorkbookError` when the bytes are not an XLSX workbook or a
    sheet holds more than `max_rows` rows.
    """
    if not data.startswith(ZIP_MAGIC):
        raise WorkbookError("not an XLSX file")
    try:
        wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError, TypeError) as exc:
        raise WorkbookError("not a readable XLSX file") from exc
    sheets: dict[str, SheetData] = {}
    try:
        for ws in wb.worksheets:
            rows = ws.iter_rows(values_only=True, max_col=max_columns)
            header: list[str] | None = None
            data_rows: list[tuple[int, dict[str, Any]]] = []
            for number, values in enumerate(rows, start=1):
                if header is None:
                    if all(_is_blank(v) for v in values):
                        continue
                    header = _header(values)
                    continue
                if all(_is_blank(v) for v in values):
                    continue
                if len(data_rows) >= max_rows:
                    raise WorkbookError(f"sheet {ws.title} has more than {max_rows} rows")
                row = {
                    name: _plain(value)
                    for name, value in zip(header, values, strict=False)
                    if name and not _is_blank(value)
                }
                data_rows.append((number, row))
            sheets[ws.title.strip()] = SheetData(ws.title.strip(), header or [], data_rows)
    except WorkbookError:
        raise
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, TypeError) as exc:
        raise WorkbookError("not a readable XLSX file") from exc
    finally:
        wb.close()
    return sheets


def xlsx_response(content: bytes, filename: str) -> Response:
    """The workbook as a download named `filename` (UTF-8 names allowed, RFC 6266)."""
    ascii_name = filename.encode("ascii", "ignore").decode().replace('"', "")
    if not ascii_name.rsplit(".", 1)[0]:
        ascii_name = "export.xlsx"  # a Chinese name: old clients get this one, others filename*
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
    return Response(content, media_type=XLSX_MEDIA_TYPE, headers={"Content-Disposition": disposition})
