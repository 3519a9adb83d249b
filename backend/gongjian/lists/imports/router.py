"""Import of the lists (JSON or XLSX, as a background job), the XLSX template, and the XLSX exports.

Registered before the resources and needs routers: `/resources/export.xlsx` must not be taken for
`/resources/{resource_id}`.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from gongjian.auth.deps import CurrentPrincipal
from gongjian.core.access import Perm, require
from gongjian.core.db import SessionDep
from gongjian.core.errors import ProblemError, problem_responses, wants_english
from gongjian.core.pagination import Page, PageParamsDep, paginate
from gongjian.lists.imports import exports, service
from gongjian.lists.imports.models import ImportStatus, ListImport
from gongjian.lists.imports.schemas import ImportOut, ImportSummaryOut, import_out, summary_out
from gongjian.lists.imports.workbook import XLSX_MEDIA_TYPE, xlsx_response

router = APIRouter(prefix="/api/v1")

_ROWS: dict[str, Any] = {"type": "array", "items": {}}
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "The lists in the interchange format (shared/data/matching/public.json): a JSON object with "
            "`communities`, `grids`, `resources` and `needs` (other keys, `gold` among them, are ignored); "
            "or the XLSX template filled in (raw, or as the `file` part of a multipart form). "
            f"At most {service.MAX_UPLOAD_BYTES // (1024 * 1024)} MB."
        ),
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {name: _ROWS for name in ("communities", "grids", "resources", "needs")},
                }
            },
            XLSX_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}
_XLSX_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {XLSX_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        "description": "An XLSX workbook",
    }
}


async def _read_limited(chunks: Any) -> bytes:
    data = bytearray()
    async for chunk in chunks:
        data.extend(chunk)
        if len(data) > service.MAX_UPLOAD_BYTES:
            raise ProblemError("payload_too_large")
    return bytes(data)


async def _upload(request: Request) -> tuple[bytes, str | None]:
    """The uploaded file and its name: the raw body, or the `file` part of a multipart form."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > service.MAX_UPLOAD_BYTES + 64 * 1024:
        raise ProblemError("payload_too_large")
    content_type = request.headers.get("content-type", "").lower()
    if not content_type.startswith("multipart/form-data"):
        return await _read_limited(request.stream()), None
    try:
        form = await request.form(max_files=1, max_fields=10)
    except MultiPartException as exc:
        raise ProblemError("invalid_import_file", reason="unreadable multipart form") from exc
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ProblemError("invalid_import_file", reason="no `file` part in the form")
    data = await upload.read(service.MAX_UPLOAD_BYTES + 1)
    if len(data) > service.MAX_UPLOAD_BYTES:
        raise ProblemError("payload_too_large")
    return data, upload.filename


@router.get(
    "/lists/imports/template.xlsx",
    tags=["imports"],
    response_class=Response,
    summary="The XLSX template of the import (sheets communities, grids, resources, needs, and notes)",
    responses={**_XLSX_RESPONSE, **problem_responses(401, 403)},
)
async def download_template(principal: CurrentPrincipal) -> Response:
    require(principal, Perm.lists_write)
    return xlsx_response(exports.template(), "清单导入模板.xlsx")


@router.post(
    "/lists/imports",
    tags=["imports"],
    response_model=ImportOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Import communities, grids, resources and needs under an organization (a background job)",
    description=(
        "Answers at once with the import, `queued`; poll `GET /lists/imports/{id}` until it is "
        "`completed` or `failed`. Rows are upserted by `ref` (kept as `external_ref`) under the "
        "organization; communities are matched by name among its communities. Every row is validated: "
        "with any invalid row nothing is written and the import fails with row errors, unless `partial` "
        "imports the valid rows and lists the others."
    ),
    openapi_extra=_UPLOAD_BODY,
    responses=problem_responses(400, 401, 403, 404, 413, 422),
)
async def create_import(
    request: Request,
    session: SessionDep,
    principal: CurrentPrincipal,
    response: Response,
    parent_org_id: Annotated[uuid.UUID, Query(description="The street or community to import under")],
    create_missing: Annotated[
        bool, Query(description="Create the communities and grid cells the file names but that do not exist")
    ] = False,
    partial: Annotated[bool, Query(description="Import the valid rows and report the others")] = False,
) -> ImportOut:
    parent = await service.check_parent(session, principal, parent_org_id)
    data, filename = await _upload(request)
    imp = await service.create_import(
        session, principal, parent, data, filename=filename, create_missing=create_missing, partial=partial
    )
    response.headers["Location"] = f"{router.prefix}/lists/imports/{imp.id}"
    return import_out(imp, english=wants_english(request))


@router.get(
    "/lists/imports",
    tags=["imports"],
    response_model=Page[ImportSummaryOut],
    summary="List imports under the organizations in scope, oldest first",
    responses=problem_responses(400, 401, 403, 404, 422),
)
async def list_imports(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    org_id: Annotated[
        uuid.UUID | None, Query(description="Imports under this organization's subtree")
    ] = None,
    import_status: Annotated[ImportStatus | None, Query(alias="status")] = None,
) -> Page[ImportSummaryOut]:
    stmt = await service.list_query(session, principal, org_id=org_id, status=import_status)
    rows, cursor = await paginate(session, stmt, ListImport, page)
    return Page(items=[summary_out(r) for r in rows], next_cursor=cursor)


@router.get(
    "/lists/imports/{import_id}",
    tags=["imports"],
    response_model=ImportOut,
    summary="An import: status, progress, counts and row errors",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_import(
    request: Request, session: SessionDep, principal: CurrentPrincipal, import_id: uuid.UUID
) -> ImportOut:
    imp = await service.get_import(session, principal, import_id)
    return import_out(imp, english=wants_english(request))


@router.get(
    "/resources/export.xlsx",
    tags=["resources"],
    response_class=Response,
    summary="Export the resources in scope to XLSX, in the import's columns (re-importable)",
    responses={**_XLSX_RESPONSE, **problem_responses(401, 403, 404, 422)},
)
async def export_resources(
    session: SessionDep,
    principal: CurrentPrincipal,
    org_id: Annotated[uuid.UUID | None, Query(description="Only under this organization")] = None,
) -> Response:
    content, filename = await exports.export(session, principal, "resources", org_id)
    return xlsx_response(content, filename)


@router.get(
    "/needs/export.xlsx",
    tags=["needs"],
    response_class=Response,
    summary="Export the needs in scope to XLSX, in the import's columns (re-importable)",
    responses={**_XLSX_RESPONSE, **problem_responses(401, 403, 404, 422)},
)
async def export_needs(
    session: SessionDep,
    principal: CurrentPrincipal,
    org_id: Annotated[uuid.UUID | None, Query(description="Only under this organization")] = None,
) -> Response:
    content, filename = await exports.export(session, principal, "needs", org_id)
    return xlsx_response(content, filename)
