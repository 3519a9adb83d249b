"""The cryptography helpers: passwords, personal data at rest, masking."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag

from gongjian.core.errors import ProblemError
from gongjian.core.security import (
    check_password_strength,
    decrypt_pii,
    encrypt_pii,
    hash_password,
    mask_id_number,
    mask_phone,
    pii_lookup_hash,
    verify_password,
)


@pytest.mark.parametrize("password", ["Abcdef1!", "abcdef1!", "ABCDEF1!", "abcdEFGH1", "密码Abc12345"])
def test_strong_passwords_pass(password: str):
    check_password_strength(password)


@pytest.mark.parametrize(
    "password", ["Abc1!", "abcdefgh", "abcdefg1", "ABCDEFGH", "12345678", "abcd!@#$", ""]
)
def test_weak_passwords_fail(password: str):
    with pytest.raises(ProblemError) as exc:
        check_password_strength(password)
    assert exc.value.code == "weak_password" and exc.value.status == 422


def test_password_hashing():
    hashed = hash_password("Demo@2026")
    assert hashed.startswith("$argon2id$") and "Demo@2026" not in hashed
    assert verify_password("Demo@2026", hashed)
    assert not verify_password("Demo@2027", hashed)
    assert not verify_password("Demo@2026", None)
    assert not verify_password("Demo@2026", "not a hash")


def test_personal_data_at_rest():
    token = encrypt_pii("13800138000")
    assert token is not None and token.startswith("v1:") and "13800138000" not in token
    assert encrypt_pii("13800138000") != token  # a fresh nonce each time
    assert decrypt_pii(token) == "13800138000"
    assert encrypt_pii(None) is None and decrypt_pii(None) is None
    # The look-up hash is keyed, stable and normalised (trimmed, upper-case X).
    assert pii_lookup_hash("11010519491231002x") == pii_lookup_hash(" 11010519491231002X ")
    assert pii_lookup_hash("13800138000") != pii_lookup_hash("13800138001")
    assert pii_lookup_hash(None) is None
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(InvalidTag):
        decrypt_pii(tampered)


def test_masks():
    assert mask_phone("13800138000") == "138****8000"
    assert mask_phone("12345") == "*****"
    assert mask_phone(None) is None and mask_phone("") == ""
    assert mask_id_number("11010519491231002X") == "110***********002X"
    assert mask_id_number("12345") == "********"
    assert mask_id_number(None) is None
