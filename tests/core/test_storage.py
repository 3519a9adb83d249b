"""File storage: the local folder backend, key safety, and the S3 backend's configuration and calls
(through botocore's Stubber: no network)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from pydantic import ValidationError

from gongjian.core import storage
from gongjian.core.config import Settings
from gongjian.core.storage import (
    InvalidKey,
    KeyNotFound,
    LocalStorage,
    S3Storage,
    StorageError,
    check_key,
    new_key,
    storage_from_settings,
)

BAD_KEYS = [
    "",
    "../outside",
    "a/../../outside",
    "a/./b",
    "/etc/passwd",
    ".hidden",
    "a/.hidden",
    "a//b",
    "a/",
    "a\\b",
    "a b",
    "名字.pdf",
    "x" * 501,
    "a\x00b",
]


def files_in(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.is_file()]


async def test_local_round_trip(tmp_path: Path) -> None:
    s = LocalStorage(tmp_path)
    key = "agreements/3f2a/doc-v1.pdf"
    assert not await s.exists(key)
    assert await s.put(b"%PDF-1.4 one", key, content_type="application/pdf") == key
    assert await s.exists(key)
    assert await s.get(key) == b"%PDF-1.4 one"
    assert (tmp_path / "agreements" / "3f2a" / "doc-v1.pdf").read_bytes() == b"%PDF-1.4 one"
    await s.put(b"two", key)  # replaces
    assert await s.get(key) == b"two"
    await s.delete(key)
    assert not await s.exists(key)
    await s.delete(key)  # deleting what is not there is no error
    # No temporary files left behind by the atomic writes.
    assert files_in(tmp_path) == []


async def test_local_missing_key(tmp_path: Path) -> None:
    s = LocalStorage(tmp_path)
    with pytest.raises(KeyNotFound):
        await s.get("signatures/nothing.png")
    (tmp_path / "adir").mkdir()
    with pytest.raises(KeyNotFound):
        await s.get("adir")  # a folder is not a stored object
    assert not await s.exists("adir")


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_unsafe_keys_refused(tmp_path: Path, key: str) -> None:
    s = LocalStorage(tmp_path / "root")
    with pytest.raises(InvalidKey):
        await s.put(b"x", key)
    with pytest.raises(InvalidKey):
        await s.get(key)
    with pytest.raises(InvalidKey):
        await s.exists(key)
    with pytest.raises(InvalidKey):
        await s.delete(key)
    assert not (tmp_path / "outside").exists()


async def test_symlink_out_of_the_folder_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    s = LocalStorage(root)
    with pytest.raises(InvalidKey):
        await s.get("link/secret.txt")
    with pytest.raises(InvalidKey):
        await s.put(b"x", "link/new.txt")
    assert not (outside / "new.txt").exists()


async def test_unreadable_file_is_a_storage_error(tmp_path: Path) -> None:
    s = LocalStorage(tmp_path)
    await s.put(b"x", "blocked/file")
    # A file where a folder is needed: the write cannot happen and says so.
    with pytest.raises(StorageError):
        await s.put(b"y", "blocked/file/child")


def test_new_key() -> None:
    a, b = new_key("signatures", ".png"), new_key("/signatures/", ".png")
    assert a != b
    assert a.startswith("signatures/") and a.endswith(".png")
    assert check_key(a) == a and check_key(b) == b


def test_local_by_default(tmp_path: Path) -> None:
    s = storage_from_settings(Settings(data_dir=tmp_path))
    assert isinstance(s, LocalStorage)
    assert s.root == (tmp_path / "storage").resolve()
    s = storage_from_settings(Settings(data_dir=tmp_path, storage_dir=tmp_path / "files"))
    assert isinstance(s, LocalStorage)
    assert s.root == (tmp_path / "files").resolve()


def test_s3_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "STORAGE_BACKEND": "s3",
        "S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "S3_BUCKET": "gongjian-files",
        "S3_ACCESS_KEY": "minio",
        "S3_SECRET_KEY": "minio-secret",
        "S3_REGION": "cn-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    s = storage_from_settings(Settings())
    assert isinstance(s, S3Storage)
    assert s.bucket == "gongjian-files"
    assert s.client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert s.client.meta.region_name == "cn-east-1"
    assert s.client.meta.config.s3["addressing_style"] == "path"
    creds = s.client._request_signer._credentials
    assert (creds.access_key, creds.secret_key) == ("minio", "minio-secret")


def test_s3_needs_a_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_BACKEND", "s3")
    monkeypatch.delenv("S3_BUCKET", raising=False)
    with pytest.raises(ValidationError, match="S3_BUCKET"):
        Settings()
    with pytest.raises(ValidationError):
        Settings(storage_backend="ftp")  # type: ignore[arg-type]


def _stubbed() -> tuple[S3Storage, Stubber]:
    s = S3Storage("bucket", endpoint_url="http://127.0.0.1:9000", access_key="a", secret_key="b",
                  region="us-east-1")
    return s, Stubber(s.client)


async def test_s3_calls() -> None:
    s, stub = _stubbed()
    key = "agreements/1/abc.pdf"
    stub.add_response("put_object", {}, {"Bucket": "bucket", "Key": key, "Body": b"pdf",
                                         "ContentType": "application/pdf"})
    stub.add_response("get_object", {"Body": StreamingBody(io.BytesIO(b"pdf"), 3)},
                      {"Bucket": "bucket", "Key": key})
    stub.add_response("head_object", {}, {"Bucket": "bucket", "Key": key})
    stub.add_response("delete_object", {}, {"Bucket": "bucket", "Key": key})
    stub.add_client_error("head_object", "404", http_status_code=404, expected_params={"Bucket": "bucket",
                                                                                          "Key": key})
    stub.add_client_error("get_object", "NoSuchKey", http_status_code=404)
    stub.add_client_error("get_object", "AccessDenied", http_status_code=403)
    with stub:
        assert await s.put(b"pdf", key, content_type="application/pdf") == key
        assert await s.get(key) == b"pdf"
        assert await s.exists(key)
        await s.delete(key)
        assert not await s.exists(key)
        with pytest.raises(KeyNotFound):
            await s.get(key)
        with pytest.raises(StorageError, match="AccessDenied"):
            await s.get(key)
    stub.assert_no_pending_responses()


async def test_s3_refuses_unsafe_keys() -> None:
    s, stub = _stubbed()
    with stub:  # no call reaches the client
        for key in BAD_KEYS:
            with pytest.raises(InvalidKey):
                await s.put(b"x", key)


async def test_configured_storage_is_made_once(tmp_path: Path) -> None:
    local = LocalStorage(tmp_path)
    storage.set_storage(local)
    try:
        assert storage.get_storage() is local
    finally:
        storage.set_storage(None)
    assert storage.get_storage() is storage.get_storage()
    storage.set_storage(None)
