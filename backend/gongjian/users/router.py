from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from gongjian.auth.deps import CurrentPrincipal
from gongjian.auth.models import RoleAssignment, User
from gongjian.core.access import Perm, Role, get_visible, require
from gongjian.core.concurrency import IfMatch, check_if_match, set_etag
from gongjian.core.db import SessionDep
from gongjian.core.errors import not_found, problem_responses
from gongjian.core.pagination import Page, PageParamsDep, paginate
from gongjian.users import service
from gongjian.users.schemas import (
    PasswordChange,
    RoleAssignmentIn,
    RoleAssignmentOut,
    UserCreate,
    UserOut,
    UserUpdate,
)

router = APIRouter(prefix="/api/v1/users", tags=["users"])


async def _out(session: SessionDep, principal: CurrentPrincipal, user: User) -> UserOut:
    return service.to_out(user, (await service.assignments_of(session, [user.id], principal))[user.id])


@router.get(
    "",
    response_model=Page[UserOut],
    summary="List users in scope",
    responses=problem_responses(400, 401, 403, 422),
)
async def list_users(
    session: SessionDep,
    principal: CurrentPrincipal,
    page: PageParamsDep,
    q: Annotated[str | None, Query(max_length=50)] = None,
    role: Role | None = None,
) -> Page[UserOut]:
    require(principal, Perm.users_read)
    rows, cursor = await paginate(session, service.list_query(principal, q, role), User, page)
    assignments = await service.assignments_of(session, [u.id for u in rows], principal)
    return Page(items=[service.to_out(u, assignments[u.id]) for u in rows], next_cursor=cursor)


@router.post(
    "",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a user with role assignments in one's subtree",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_user(
    session: SessionDep, principal: CurrentPrincipal, body: UserCreate, response: Response
) -> UserOut:
    require(principal, Perm.users_write)
    user = await service.create(session, principal, body)
    set_etag(response, user)
    return await _out(session, principal, user)


@router.post(
    "/me/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change one's own password (other sessions are logged out)",
    responses=problem_responses(401, 404, 422),
)
async def change_my_password(
    session: SessionDep, principal: CurrentPrincipal, body: PasswordChange
) -> Response:
    # Anyone may change their own password, whatever their roles: no scope check on oneself.
    user = await session.get(User, principal.id, with_for_update=True) if principal.kind == "user" else None
    if user is None:
        raise not_found("user")
    await service.change_password(session, principal, user, body.current_password, body.new_password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{user_id}", response_model=UserOut, summary="Get a user", responses=problem_responses(401, 404, 422)
)
async def get_user(
    session: SessionDep, principal: CurrentPrincipal, user_id: uuid.UUID, response: Response
) -> UserOut:
    user = await service.get(session, principal, user_id)
    set_etag(response, user)
    return await _out(session, principal, user)


@router.patch(
    "/{user_id}",
    response_model=UserOut,
    summary="Edit or disable a user",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def update_user(
    session: SessionDep,
    principal: CurrentPrincipal,
    user_id: uuid.UUID,
    body: UserUpdate,
    response: Response,
    if_match: IfMatch = None,
) -> UserOut:
    require(principal, Perm.users_write)
    user = await service.get(session, principal, user_id, Perm.users_write)
    check_if_match(if_match, user)
    user = await service.update(session, principal, user, body)
    set_etag(response, user)
    return await _out(session, principal, user)


@router.post(
    "/{user_id}/role-assignments",
    response_model=RoleAssignmentOut,
    status_code=status.HTTP_201_CREATED,
    summary="Grant a role",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def add_role_assignment(
    session: SessionDep, principal: CurrentPrincipal, user_id: uuid.UUID, body: RoleAssignmentIn
) -> RoleAssignmentOut:
    require(principal, Perm.users_write)
    user = await service.get(session, principal, user_id, Perm.users_write)
    return RoleAssignmentOut.model_validate(await service.add_assignment(session, principal, user, body))


@router.delete(
    "/{user_id}/role-assignments/{assignment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Withdraw a role",
    responses=problem_responses(401, 403, 404),
)
async def remove_role_assignment(
    session: SessionDep, principal: CurrentPrincipal, user_id: uuid.UUID, assignment_id: uuid.UUID
) -> Response:
    require(principal, Perm.users_write)
    assignment = await get_visible(
        session, RoleAssignment, assignment_id, principal, Perm.users_write, name="role_assignment"
    )
    if assignment.user_id != user_id:
        raise not_found("role_assignment")
    await service.remove_assignment(session, principal, assignment)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
