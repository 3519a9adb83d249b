"""Agreement templates and co-building agreements (共建协议)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status

from gongjian.agreements import service
from gongjian.agreements.models import Agreement, AgreementState, AgreementTemplate
from gongjian.agreements.schemas import (
    AgreementCreate,
    AgreementOut,
    AgreementReason,
    AgreementSignatureCreate,
    AgreementTemplateCreate,
    AgreementTemplateOut,
    AgreementTemplateUpdate,
    AgreementUpdate,
    SigningCodeOut,
)
from gongjian.auth.deps import CurrentPrincipal
from gongjian.core.access import Perm, require
from gongjian.core.concurrency import IfMatch, check_if_match, set_etag
from gongjian.core.db import SessionDep
from gongjian.core.errors import problem_responses
from gongjian.core.pagination import Page, PageParamsDep, paginate

router = APIRouter(prefix="/api/v1", tags=["agreements"])

# --- templates ----------------------------------------------------------------------------


@router.get(
    "/agreement-templates",
    response_model=Page[AgreementTemplateOut],
    summary="List agreement templates: those kept in the caller's scope and by the organizations above it",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_agreement_templates(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    org_id: uuid.UUID | None = None,
    is_active: bool | None = None,
) -> Page[AgreementTemplateOut]:
    require(principal, Perm.agreements_read)
    stmt = service.template_list_query(principal, org_id=org_id, is_active=is_active)
    rows, cursor = await paginate(session, stmt, AgreementTemplate, page)
    return Page(items=[AgreementTemplateOut.model_validate(t) for t in rows], next_cursor=cursor)


@router.post(
    "/agreement-templates",
    response_model=AgreementTemplateOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create an agreement template (clauses with {{community}}, {{unit}}, {{term_from}}, {{term_to}})",
    responses=problem_responses(401, 403, 404, 422),
)
async def create_agreement_template(
    session: SessionDep, principal: CurrentPrincipal, body: AgreementTemplateCreate, response: Response
) -> AgreementTemplateOut:
    template = await service.create_template(session, principal, body)
    set_etag(response, template)
    response.headers["Location"] = f"{router.prefix}/agreement-templates/{template.id}"
    return AgreementTemplateOut.model_validate(template)


@router.get(
    "/agreement-templates/{template_id}",
    response_model=AgreementTemplateOut,
    summary="Get an agreement template",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_agreement_template(
    session: SessionDep, principal: CurrentPrincipal, template_id: uuid.UUID, response: Response
) -> AgreementTemplateOut:
    template = await service.get_template(session, principal, template_id)
    set_etag(response, template)
    return AgreementTemplateOut.model_validate(template)


@router.patch(
    "/agreement-templates/{template_id}",
    response_model=AgreementTemplateOut,
    summary="Edit an agreement template (If-Match with the ETag); drafts already made keep their clauses",
    responses=problem_responses(401, 403, 404, 412, 422),
)
async def update_agreement_template(
    session: SessionDep,
    principal: CurrentPrincipal,
    template_id: uuid.UUID,
    body: AgreementTemplateUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> AgreementTemplateOut:
    template = await service.get_template(session, principal, template_id, Perm.agreements_write)
    check_if_match(if_match, template)
    template = await service.update_template(session, principal, template, body)
    set_etag(response, template)
    return AgreementTemplateOut.model_validate(template)


@router.delete(
    "/agreement-templates/{template_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an agreement template; drafts already made keep their clauses",
    responses=problem_responses(401, 403, 404, 412),
)
async def delete_agreement_template(
    session: SessionDep, principal: CurrentPrincipal, template_id: uuid.UUID, if_match: IfMatch = None
) -> Response:
    template = await service.get_template(session, principal, template_id, Perm.agreements_write)
    check_if_match(if_match, template)
    await service.delete_template(session, principal, template)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- agreements ---------------------------------------------------------------------------


async def _respond(session: SessionDep, agreement: Agreement, response: Response) -> AgreementOut:
    set_etag(response, agreement)
    return await service.to_out(session, agreement)


@router.get(
    "/agreements",
    response_model=Page[AgreementOut],
    summary="List agreements in scope (a liaison: their unit's; community staff: their community's)",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_agreements(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    community_id: uuid.UUID | None = None,
    unit_id: uuid.UUID | None = None,
    state: AgreementState | None = None,
    number: Annotated[str | None, Query(max_length=32, description="Every version of one agreement")] = None,
) -> Page[AgreementOut]:
    require(principal, Perm.agreements_read)
    stmt = service.list_query(
        principal, community_id=community_id, unit_id=unit_id, state=state, number=number
    )
    rows, cursor = await paginate(session, stmt, Agreement, page)
    return Page(items=await service.to_outs(session, rows), next_cursor=cursor)


@router.post(
    "/agreements",
    response_model=AgreementOut,
    status_code=status.HTTP_201_CREATED,
    summary="Draft an agreement between a community and a unit of its street, from a template or clauses",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_agreement(
    session: SessionDep, principal: CurrentPrincipal, body: AgreementCreate, response: Response
) -> AgreementOut:
    agreement = await service.create_draft(session, principal, body)
    response.headers["Location"] = f"{router.prefix}/agreements/{agreement.id}"
    return await _respond(session, agreement, response)


@router.get(
    "/agreements/{agreement_id}",
    response_model=AgreementOut,
    summary="Get an agreement version with its commitments, signatures and content hash",
    responses=problem_responses(401, 403, 404, 422),
)
async def get_agreement(
    session: SessionDep, principal: CurrentPrincipal, agreement_id: uuid.UUID, response: Response
) -> AgreementOut:
    agreement = await service.get(session, principal, agreement_id)
    return await _respond(session, agreement, response)


@router.patch(
    "/agreements/{agreement_id}",
    response_model=AgreementOut,
    summary="Edit a draft (If-Match with the ETag); a sent or active agreement answers 409",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def update_agreement(
    session: SessionDep,
    principal: CurrentPrincipal,
    agreement_id: uuid.UUID,
    body: AgreementUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> AgreementOut:
    require(principal, Perm.agreements_write)
    agreement = await service.get(session, principal, agreement_id, Perm.agreements_write, for_update=True)
    check_if_match(if_match, agreement)
    agreement = await service.update_draft(session, principal, agreement, body)
    return await _respond(session, agreement, response)


@router.get(
    "/agreements/{agreement_id}/versions",
    response_model=list[AgreementOut],
    summary="Every version of this agreement's number, oldest first",
    responses=problem_responses(401, 403, 404, 422),
)
async def list_agreement_versions(
    session: SessionDep, principal: CurrentPrincipal, agreement_id: uuid.UUID
) -> list[AgreementOut]:
    agreement = await service.get(session, principal, agreement_id)
    return await service.to_outs(session, await service.versions(session, principal, agreement))


@router.post(
    "/agreements/{agreement_id}/send",
    response_model=AgreementOut,
    summary="Send a draft for signature: its canonical content is frozen and hashed (SHA-256)",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def send_agreement(
    session: SessionDep,
    principal: CurrentPrincipal,
    agreement_id: uuid.UUID,
    response: Response,
    if_match: IfMatch = None,
) -> AgreementOut:
    require(principal, Perm.agreements_write)
    agreement = await service.get(session, principal, agreement_id, Perm.agreements_write, for_update=True)
    check_if_match(if_match, agreement)
    agreement = await service.send(session, principal, agreement)
    return await _respond(session, agreement, response)


@router.post(
    "/agreements/{agreement_id}/signing-codes",
    response_model=SigningCodeOut,
    status_code=status.HTTP_201_CREATED,
    summary="Send the signer a one-time code (to the in-app inbox) to re-authenticate with at signing",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_signing_code(
    session: SessionDep, principal: CurrentPrincipal, agreement_id: uuid.UUID
) -> SigningCodeOut:
    code = await service.issue_signing_code(session, principal, agreement_id)
    return SigningCodeOut(expires_at=code.expires_at, delivered_to="inbox")


@router.post(
    "/agreements/{agreement_id}/signatures",
    response_model=AgreementOut,
    status_code=status.HTTP_201_CREATED,
    summary="Sign as one side: the content hash viewed, the password or a one-time code, and optionally "
    "a handwritten signature image; the second signature makes the agreement active",
    responses=problem_responses(401, 403, 404, 409, 422, 423),
)
async def sign_agreement(
    session: SessionDep,
    principal: CurrentPrincipal,
    agreement_id: uuid.UUID,
    body: AgreementSignatureCreate,
    request: Request,
    response: Response,
    user_agent: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> AgreementOut:
    client_ip = request.client.host if request.client else None
    agreement = await service.sign(
        session, principal, agreement_id, body, client_ip=client_ip, user_agent=user_agent
    )
    response.headers["Location"] = f"{router.prefix}/agreements/{agreement.id}"
    return await _respond(session, agreement, response)


@router.post(
    "/agreements/{agreement_id}/decline",
    response_model=AgreementOut,
    summary="Decline an agreement awaiting signatures, with a reason (either side): back to draft",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def decline_agreement(
    session: SessionDep,
    principal: CurrentPrincipal,
    agreement_id: uuid.UUID,
    body: AgreementReason,
    response: Response,
    if_match: IfMatch = None,
) -> AgreementOut:
    require(principal, Perm.agreements_sign)
    agreement = await service.get(session, principal, agreement_id, Perm.agreements_sign, for_update=True)
    check_if_match(if_match, agreement)
    agreement = await service.decline(session, principal, agreement, body.reason)
    return await _respond(session, agreement, response)


@router.post(
    "/agreements/{agreement_id}/terminate",
    response_model=AgreementOut,
    summary="Terminate an active agreement early, with a reason (either side)",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def terminate_agreement(
    session: SessionDep,
    principal: CurrentPrincipal,
    agreement_id: uuid.UUID,
    body: AgreementReason,
    response: Response,
    if_match: IfMatch = None,
) -> AgreementOut:
    require(principal, Perm.agreements_sign)
    agreement = await service.get(session, principal, agreement_id, Perm.agreements_sign, for_update=True)
    check_if_match(if_match, agreement)
    agreement = await service.terminate(session, principal, agreement, body.reason)
    return await _respond(session, agreement, response)


@router.post(
    "/agreements/{agreement_id}/amendments",
    response_model=AgreementOut,
    status_code=status.HTTP_201_CREATED,
    summary="Amend an active agreement: a new draft version (same number), signed again; once active it "
    "supersedes this one",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def amend_agreement(
    session: SessionDep, principal: CurrentPrincipal, agreement_id: uuid.UUID, response: Response
) -> AgreementOut:
    require(principal, Perm.agreements_write)
    agreement = await service.get(session, principal, agreement_id, Perm.agreements_write, for_update=True)
    amendment = await service.amend(session, principal, agreement)
    response.headers["Location"] = f"{router.prefix}/agreements/{amendment.id}"
    return await _respond(session, amendment, response)
