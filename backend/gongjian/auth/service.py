"""Logins, token rotation, lockout and API clients."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.auth.models import ApiClient, LoginFailure, RefreshToken, RoleAssignment, User
from gongjian.core import audit
from gongjian.core.access import (
    CLIENT_SCOPES,
    ROLE_PERMISSIONS,
    Grant,
    Perm,
    Principal,
    Role,
    ensure_org_in_scope,
    require,
)
from gongjian.core.config import get_settings
from gongjian.core.db import utcnow
from gongjian.core.errors import ProblemError
from gongjian.core.security import (
    create_access_token,
    hash_password,
    invalid_token_error,
    new_token,
    password_needs_rehash,
    pii_lookup_hash,
    sha256_hex,
    verify_password,
)
from gongjian.organizations.models import Organization


class TokenPair:
    def __init__(
        self, access_token: str, expires_in: int, refresh_token: str | None, scope: str | None = None
    ) -> None:
        self.access_token = access_token
        self.expires_in = expires_in
        self.refresh_token = refresh_token
        self.scope = scope


async def find_user_by_login(session: AsyncSession, login: str) -> User | None:
    login = login.strip()
    stmt = select(User).where(User.username == login)
    user = (await session.execute(stmt)).scalar_one_or_none()
    if user is None and login.isdigit():
        stmt = select(User).where(User.phone_hash == pii_lookup_hash(login))
        user = (await session.execute(stmt)).scalar_one_or_none()
    return user


async def _check_lockout(session: AsyncSession, user: User) -> None:
    """423 while the account is locked: `login_max_failures` failures within the window lock it
    for `login_lockout_seconds` from the last of them. Failures older than that never count."""
    settings = get_settings()
    window = timedelta(seconds=settings.login_lockout_seconds)
    now = utcnow()
    recent = list(
        (
            await session.execute(
                select(LoginFailure.at)
                .where(LoginFailure.user_id == user.id, LoginFailure.at > now - 2 * window)
                .order_by(LoginFailure.at.desc())
                .limit(settings.login_max_failures)
            )
        ).scalars()
    )
    if len(recent) < settings.login_max_failures or recent[0] - recent[-1] > window:
        return
    locked_until = recent[0] + window
    seconds = math.ceil((locked_until - now).total_seconds())
    if seconds <= 0:
        return
    raise ProblemError(
        "account_locked", minutes=math.ceil(seconds / 60), headers={"Retry-After": str(seconds)}
    )


async def authenticate(session: AsyncSession, login: str, password: str) -> User:
    """Check a password login (username or phone).

    The user's row is locked for the check, so concurrent guesses are counted one by one
    and never exceed the limit. A failure is committed at once, so the request's rollback
    on the 401 does not erase it.
    """
    user = await find_user_by_login(session, login)
    if user is None:
        verify_password(password, None)
        raise ProblemError("invalid_credentials")
    await session.execute(select(User.id).where(User.id == user.id).with_for_update())
    await _check_lockout(session, user)
    if not verify_password(password, user.password_hash):
        now = utcnow()
        window = timedelta(seconds=get_settings().login_lockout_seconds)
        await session.execute(
            delete(LoginFailure).where(LoginFailure.user_id == user.id, LoginFailure.at < now - 2 * window)
        )
        session.add(LoginFailure(user_id=user.id, at=now))
        await session.commit()
        await _check_lockout(session, user)
        raise ProblemError("invalid_credentials")
    if not user.is_active:
        raise ProblemError("account_disabled")
    await session.execute(delete(LoginFailure).where(LoginFailure.user_id == user.id))
    if password_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = utcnow()
    return user


def _grant(role: str, org_id: uuid.UUID | None, path: str | None, unit_id: uuid.UUID | None) -> Grant:
    r = Role(role)
    return Grant(role=r, org_id=org_id, org_path=path, unit_id=unit_id, perms=ROLE_PERMISSIONS[r])


async def load_grants(session: AsyncSession, user_id: uuid.UUID) -> list[Grant]:
    stmt = (
        select(RoleAssignment.role, RoleAssignment.org_id, Organization.path, RoleAssignment.unit_id)
        .outerjoin(Organization, Organization.id == RoleAssignment.org_id)
        .where(RoleAssignment.user_id == user_id)
    )
    return [_grant(*row) for row in (await session.execute(stmt)).all()]


# The active user and their grants in one round trip. This runs on every request, so the statement
# is built once, with the user id as a bound parameter: SQLAlchemy then reuses its memoized cache key
# and compiled form instead of rebuilding the joins and re-hashing them on every request.
_USER_PRINCIPAL = (
    select(
        User.username,
        RoleAssignment.role,
        RoleAssignment.org_id,
        Organization.path,
        RoleAssignment.unit_id,
    )
    .outerjoin(RoleAssignment, RoleAssignment.user_id == User.id)
    .outerjoin(Organization, Organization.id == RoleAssignment.org_id)
    .where(User.id == bindparam("user_id"), User.is_active.is_(True))
)


async def _load_user_principal(session: AsyncSession, user_id: uuid.UUID) -> Principal | None:
    """The active user and their grants in one round trip (this runs on every request)."""
    rows = (await session.execute(_USER_PRINCIPAL, {"user_id": user_id})).all()
    if not rows:
        return None
    grants = [
        _grant(role, org_id, path, unit_id) for _, role, org_id, path, unit_id in rows if role is not None
    ]
    return Principal(kind="user", id=user_id, name=rows[0].username, grants=grants)


async def issue_tokens(session: AsyncSession, user: User, family_id: uuid.UUID | None = None) -> TokenPair:
    grants = await load_grants(session, user.id)
    roles = sorted({g.role.value for g in grants})
    access, expires_in = create_access_token(subject=str(user.id), kind="user", roles=roles)
    refresh = new_token()
    session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family_id or uuid.uuid4(),
            token_hash=sha256_hex(refresh),
            expires_at=utcnow() + timedelta(seconds=get_settings().refresh_token_ttl_seconds),
        )
    )
    return TokenPair(access, expires_in, refresh)


async def revoke_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def rotate_refresh_token(session: AsyncSession, refresh_token: str) -> TokenPair:
    """Exchange a refresh token for a new pair. A token presented twice means it leaked:
    the whole family is revoked (committed even though this request fails)."""
    stmt = select(RefreshToken).where(RefreshToken.token_hash == sha256_hex(refresh_token)).with_for_update()
    token = (await session.execute(stmt)).scalar_one_or_none()
    if token is None or token.revoked_at is not None or token.expires_at <= utcnow():
        raise ProblemError("invalid_grant")
    if token.used_at is not None:
        await revoke_family(session, token.family_id)
        await session.commit()
        raise ProblemError("invalid_grant")
    user = await session.get(User, token.user_id)
    if user is None or not user.is_active:
        raise ProblemError("invalid_grant")
    token.used_at = utcnow()
    return await issue_tokens(session, user, family_id=token.family_id)


async def logout(session: AsyncSession, principal: Principal, refresh_token: str | None) -> None:
    if refresh_token:
        token = (
            await session.execute(
                select(RefreshToken).where(RefreshToken.token_hash == sha256_hex(refresh_token))
            )
        ).scalar_one_or_none()
        if token is not None and token.user_id == principal.id:
            await revoke_family(session, token.family_id)
            return
    # Without a token of theirs in hand, log out everywhere.
    await revoke_user_sessions(session, principal.id)


async def authenticate_client(session: AsyncSession, client_id: str, secret: str) -> ApiClient:
    client = (
        await session.execute(select(ApiClient).where(ApiClient.client_id == client_id))
    ).scalar_one_or_none()
    if client is None:
        verify_password(secret, None)
        raise ProblemError("invalid_client", headers={"WWW-Authenticate": "Basic"})
    if not verify_password(secret, client.secret_hash) or client.revoked_at is not None:
        raise ProblemError("invalid_client", headers={"WWW-Authenticate": "Basic"})
    client.last_used_at = utcnow()
    return client


def issue_client_token(client: ApiClient, requested: list[str] | None) -> TokenPair:
    """An access token (no refresh token) carrying the requested scopes, all of the client's
    when none are asked for; asking for a scope the client does not hold is `invalid_scope`."""
    if requested:
        unknown = sorted(set(requested) - set(client.scopes))
        if unknown:
            raise ProblemError("invalid_scope", scope=" ".join(unknown)[:200])
        scopes = sorted(set(requested))
    else:
        scopes = sorted(client.scopes)
    access, expires_in = create_access_token(subject=str(client.id), kind="client", roles=[], scopes=scopes)
    return TokenPair(access, expires_in, None, scope=" ".join(scopes))


async def load_principal(session: AsyncSession, claims: dict[str, object]) -> Principal:
    """The caller behind verified token claims, as the database says now: a revoked client,
    a disabled or deleted user, or a withdrawn role stops working at once."""
    kind = claims.get("kind", "user")
    if kind not in ("user", "client"):
        raise invalid_token_error()
    try:
        subject = uuid.UUID(str(claims["sub"]))
    except (KeyError, ValueError) as exc:
        raise invalid_token_error() from exc
    if kind == "client":
        row = (
            await session.execute(
                select(ApiClient, Organization.path)
                .join(Organization, Organization.id == ApiClient.org_id)
                .where(ApiClient.id == subject, ApiClient.revoked_at.is_(None))
            )
        ).one_or_none()
        if row is None:
            raise invalid_token_error()
        client, path = row
        token_scopes = str(claims.get("scope", "")).split()
        perms = frozenset(Perm(s) for s in token_scopes if s in client.scopes and s in CLIENT_SCOPES)
        grant = Grant(role=Role.org_staff, org_id=client.org_id, org_path=path, perms=perms)
        return Principal(kind="client", id=client.id, name=client.name, grants=[grant])
    principal = await _load_user_principal(session, subject)
    if principal is None:
        raise invalid_token_error()
    return principal


async def revoke_user_sessions(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Revoke every refresh token of a user (logout everywhere, password change, disabling)."""
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def create_api_client(
    session: AsyncSession, principal: Principal, *, name: str, scopes: list[str], org_id: uuid.UUID
) -> tuple[ApiClient, str]:
    """Register a client on an org subtree in the caller's scope, with scopes the caller itself
    holds there. The secret is returned once and only its hash is kept."""
    require(principal, Perm.clients_write)
    await ensure_org_in_scope(session, principal, org_id, Perm.clients_write)
    for scope in sorted(set(scopes)):
        if scope not in CLIENT_SCOPES:
            raise ProblemError("invalid_scope", scope=scope[:50])
        await ensure_org_in_scope(session, principal, org_id, Perm(scope))
    secret = new_token(32)
    client = ApiClient(
        name=name,
        client_id="gjc_" + new_token(12),
        secret_hash=hash_password(secret),
        scopes=sorted(set(scopes)),
        org_id=org_id,
        created_by=principal.user_id,
    )
    session.add(client)
    await session.flush()
    await audit.record(
        session,
        principal,
        "api_client.create",
        "api_client",
        client.id,
        org_id=org_id,
        after={"name": name, "scopes": client.scopes},
    )
    return client, secret


async def revoke_api_client(session: AsyncSession, principal: Principal, client: ApiClient) -> None:
    if client.revoked_at is None:
        client.revoked_at = utcnow()
        await audit.record(
            session, principal, "api_client.revoke", "api_client", client.id, org_id=client.org_id
        )
