"""All token, password and personal-data cryptography lives here.

- Access tokens: JWT (python-jose), HS256 only: the algorithm list is pinned so an
  `alg: none` or an RS/HS confusion token is refused.
- Passwords and client secrets: argon2id (argon2-cffi).
- Refresh tokens: random, stored as SHA-256 (they are high-entropy, a slow hash adds nothing).
- Personal data at rest: AES-256-GCM; equality look-ups through a keyed HMAC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jose import JWTError, jwt

from gongjian.core.config import get_settings
from gongjian.core.errors import ProblemError

JWT_ALGORITHM = "HS256"
ALLOWED_ALGORITHMS = [JWT_ALGORITHM]

_hasher = PasswordHasher()
# A fixed hash to verify against when the user does not exist, so timing does not tell.
_DUMMY_HASH = _hasher.hash("not-a-real-password-Gj1!")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, hashed: str | None) -> bool:
    try:
        return _hasher.verify(hashed or _DUMMY_HASH, password) and hashed is not None
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(hashed: str) -> bool:
    return _hasher.check_needs_rehash(hashed)


_CLASSES = [r"[a-z]", r"[A-Z]", r"[0-9]", r"[^A-Za-z0-9]"]


def check_password_strength(password: str) -> None:
    """等保2.0 practice: at least 8 characters of at least 3 character classes."""
    classes = sum(1 for c in _CLASSES if re.search(c, password))
    if len(password) < 8 or classes < 3:
        raise ProblemError("weak_password")


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def create_access_token(
    *, subject: str, kind: str, roles: list[str], scopes: list[str] | None = None, ttl: int | None = None
) -> tuple[str, int]:
    settings = get_settings()
    expires_in = ttl or settings.access_token_ttl_seconds
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": subject,
        "kind": kind,
        "roles": roles,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=expires_in)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    if scopes is not None:
        claims["scope"] = " ".join(scopes)
    return jwt.encode(claims, settings.signing_key, algorithm=JWT_ALGORITHM), expires_in


# Three base64url segments, nothing else: the decoder itself skips stray characters.
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
MAX_TOKEN_LENGTH = 4096


def invalid_token_error() -> ProblemError:
    return ProblemError("invalid_token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def decode_access_token(token: str) -> dict[str, Any]:
    """The verified claims of one of our access tokens, or 401 `invalid_token`.

    Refused: anything not shaped as a signed JWT, any algorithm but HS256 (so `alg: none`
    and key-confusion tokens), a bad signature, a wrong issuer or audience, an expired token
    and one missing exp / iat / sub / iss / aud.
    """
    settings = get_settings()
    if len(token) > MAX_TOKEN_LENGTH or not _JWT_SHAPE.match(token):
        raise invalid_token_error()
    try:
        # One parse: jwt.decode refuses any `alg` outside ALLOWED_ALGORITHMS before it checks the
        # signature (python-jose's jws._verify_signature), so no separate look at the header.
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.signing_key,
            algorithms=ALLOWED_ALGORITHMS,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={
                "require_exp": True,
                "require_iat": True,
                "require_sub": True,
                "require_aud": True,
                "require_iss": True,
            },
        )
    except (JWTError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise invalid_token_error() from exc
    if not isinstance(claims, dict):
        raise invalid_token_error()
    return claims


# --- personal data at rest -------------------------------------------------------------


@lru_cache(maxsize=4)
def _derived_keys(master: str) -> tuple[bytes, bytes]:
    def derive(info: bytes) -> bytes:
        return HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(master.encode())

    return derive(b"gongjian pii encryption v1"), derive(b"gongjian pii lookup v1")


def _keys() -> tuple[bytes, bytes]:
    return _derived_keys(get_settings().pii_encryption_key)


def encrypt_pii(value: str | None) -> str | None:
    if value is None:
        return None
    enc_key, _ = _keys()
    nonce = os.urandom(12)
    ct = AESGCM(enc_key).encrypt(nonce, value.encode(), b"pii")
    return "v1:" + base64.urlsafe_b64encode(nonce + ct).decode()


def decrypt_pii(token: str | None) -> str | None:
    if token is None:
        return None
    enc_key, _ = _keys()
    raw = base64.urlsafe_b64decode(token.removeprefix("v1:").encode())
    return AESGCM(enc_key).decrypt(raw[:12], raw[12:], b"pii").decode()


def pii_lookup_hash(value: str | None) -> str | None:
    """Keyed hash for equality search on encrypted fields (normalised first)."""
    if value is None:
        return None
    _, lookup_key = _keys()
    return hmac.new(lookup_key, value.strip().upper().encode(), hashlib.sha256).hexdigest()


def mask_phone(phone: str | None) -> str | None:
    if not phone:
        return phone
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 11 else "*" * len(phone)


def mask_id_number(id_number: str | None) -> str | None:
    if not id_number:
        return id_number
    return id_number[:3] + "*" * (len(id_number) - 7) + id_number[-4:] if len(id_number) > 8 else "*" * 8
