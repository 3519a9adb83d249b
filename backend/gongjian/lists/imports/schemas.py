from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from gongjian.lists.imports.models import ImportFormat, ImportStatus, ListImport
from gongjian.lists.imports.validation import RowError


class Progress(BaseModel):
    done: int = Field(description="Rows handled so far")
    total: int = Field(description="Rows in the file")


class KindCounts(BaseModel):
    created: int = 0
    updated: int = 0
    unchanged: int = Field(default=0, description="Already there exactly as in the file")
    skipped: int = Field(default=0, description="Invalid rows left out (`partial`), or refused")


class ImportCounts(BaseModel):
    communities: KindCounts = Field(default_factory=KindCounts)
    grids: KindCounts = Field(default_factory=KindCounts)
    resources: KindCounts = Field(default_factory=KindCounts)
    needs: KindCounts = Field(default_factory=KindCounts)


class RowErrorOut(BaseModel):
    section: str = Field(description="communities | grids | resources | needs (the sheet), or `file`")
    index: int | None = Field(
        description="0-based position of the row in its section; null: the whole section"
    )
    row: int | None = Field(description="The row's line in its sheet (XLSX, header = 1), or index + 1 (JSON)")
    ref: str | None = Field(description="The row's `ref`, when it has a readable one")
    field: str | None = Field(description="The column at fault, dotted for nested keys (`available.to`)")
    code: str = Field(description="Stable error code")
    message: str = Field(description="What is wrong (Chinese, or English with Accept-Language: en)")


class ImportSummaryOut(BaseModel):
    id: uuid.UUID
    parent_org_id: uuid.UUID
    status: ImportStatus = Field(description="queued → running → completed | failed")
    format: ImportFormat
    filename: str | None
    create_missing: bool
    partial: bool
    progress: Progress
    counts: ImportCounts
    error_count: int = Field(description="How many row errors (all of them, even beyond those listed)")
    created_by: str = Field(description="Who uploaded it")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ImportOut(ImportSummaryOut):
    errors: list[RowErrorOut] = Field(
        description="Row errors (at most 1000): why a failed import wrote nothing, or the rows a partial one "
        "left out"
    )


def _summary_fields(imp: ListImport) -> dict[str, object]:
    return {
        "id": imp.id,
        "parent_org_id": imp.parent_org_id,
        "status": imp.status,
        "format": imp.format,
        "filename": imp.filename,
        "create_missing": imp.create_missing,
        "partial": imp.partial,
        "progress": Progress(done=imp.progress_done, total=imp.progress_total),
        "counts": ImportCounts.model_validate(imp.counts or {}),
        "error_count": imp.error_count,
        "created_by": imp.actor_name,
        "created_at": imp.created_at,
        "started_at": imp.started_at,
        "finished_at": imp.finished_at,
    }


def summary_out(imp: ListImport) -> ImportSummaryOut:
    return ImportSummaryOut.model_validate(_summary_fields(imp))


def import_out(imp: ListImport, *, english: bool = False) -> ImportOut:
    errors = []
    for stored in imp.errors or []:
        e = RowError.from_dict(stored)
        errors.append(
            RowErrorOut(
                section=e.section,
                index=e.index,
                row=e.row,
                ref=e.ref,
                field=e.field,
                code=e.code,
                message=e.message(english),
            )
        )
    return ImportOut.model_validate({**_summary_fields(imp), "errors": errors})
