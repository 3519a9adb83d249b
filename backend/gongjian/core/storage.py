"""Where files live: signed agreement PDFs, handwritten signature images.

One interface (`Storage`: put bytes → key, get, delete, exists) with two backends:
- `LocalStorage`, the default: a folder (`STORAGE_DIR`, else `DATA_DIR/storage`);
- `S3Storage` with `STORAGE_BACKEND=s3`: any S3-compatible service (MinIO, OSS, COS, AWS), through
  boto3, imported only then (`pip install 'gongjian[s3]'`).

Keys are relative, slash-separated names made of `[A-Za-z0-9._-]` segments that never start with a
dot, so a key can neither climb out of the folder nor name a hidden file; the database keeps keys,
never paths or URLs, so a deployment can move its files between backends.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread

from gongjian.core.config import Settings, get_settings

KEY_MAX_LENGTH = 500  # the key columns are String(500)
_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")


class StorageError(Exception):
    """The storage could not do what was asked (a bad key, the backend failing)."""


class InvalidKey(StorageError, ValueError):
    pass


class KeyNotFound(StorageError, KeyError):
    pass


def check_key(key: str) -> str:
    if len(key) > KEY_MAX_LENGTH or not _KEY.fullmatch(key):
        raise InvalidKey(f"invalid storage key: {key[:80]!r}")
    return key


def new_key(prefix: str, suffix: str = "") -> str:
    """A fresh unguessable key under `prefix`, e.g. new_key("signatures", ".png")."""
    return check_key(f"{prefix.strip('/')}/{uuid.uuid4().hex}{suffix}")


class Storage(Protocol):
    async def put(self, data: bytes, key: str, *, content_type: str = "application/octet-stream") -> str:
        """Store `data` under `key` (replacing what was there) and return the key."""
        ...

    async def get(self, key: str) -> bytes:
        """The bytes under `key`; `KeyNotFound` when there are none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove `key`; nothing happens when it is not there."""
        ...

    async def exists(self, key: str) -> bool: ...


class LocalStorage:
    """Files in a folder. Writes go to a temporary file renamed into place, so a reader never
    sees half a file and a crash leaves no truncated one."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        # The key pattern already forbids "..": this also stops a symlink inside the folder.
        if not path.is_relative_to(self.root):
            raise InvalidKey(f"invalid storage key: {key[:80]!r}")
        return path

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _read(self, path: Path, key: str) -> bytes:
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyNotFound(key) from None
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc}") from exc

    async def put(self, data: bytes, key: str, *, content_type: str = "application/octet-stream") -> str:
        try:
            await anyio.to_thread.run_sync(self._write, self._path(key), data)
        except OSError as exc:
            raise StorageError(f"cannot write {key}: {exc}") from exc
        return key

    async def get(self, key: str) -> bytes:
        return await anyio.to_thread.run_sync(self._read, self._path(key), key)

    async def delete(self, key: str) -> None:
        await anyio.to_thread.run_sync(partial(self._path(key).unlink, missing_ok=True))

    async def exists(self, key: str) -> bool:
        return await anyio.to_thread.run_sync(self._path(key).is_file)


class S3Storage:
    """An S3-compatible bucket. boto3 is synchronous: each call runs in a worker thread (its
    clients are thread-safe)."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        if client is None:
            client = _s3_client(endpoint_url, access_key, secret_key, region)
        self.client = client

    async def put(self, data: bytes, key: str, *, content_type: str = "application/octet-stream") -> str:
        await self._call(
            "put_object", key, Bucket=self.bucket, Key=check_key(key), Body=data, ContentType=content_type
        )
        return key

    async def get(self, key: str) -> bytes:
        response = await self._call("get_object", key, Bucket=self.bucket, Key=check_key(key))
        body = response["Body"]
        try:
            data: bytes = await anyio.to_thread.run_sync(body.read)
        except Exception as exc:
            raise StorageError(f"cannot read {key}: {exc}") from exc
        finally:
            body.close()
        return data

    async def delete(self, key: str) -> None:
        await self._call("delete_object", key, Bucket=self.bucket, Key=check_key(key))

    async def exists(self, key: str) -> bool:
        try:
            await self._call("head_object", key, Bucket=self.bucket, Key=check_key(key))
        except KeyNotFound:
            return False
        return True

    async def _call(self, operation: str, key: str, **params: Any) -> Any:
        """One client call in a worker thread; its failures as KeyNotFound or StorageError."""
        try:
            return await anyio.to_thread.run_sync(partial(getattr(self.client, operation), **params))
        except Exception as exc:
            if _is_missing(exc):
                raise KeyNotFound(key) from None
            raise StorageError(f"{operation} {key} failed: {exc}") from exc


def _is_missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}


def _s3_client(endpoint_url: str | None, access_key: str | None, secret_key: str | None,
               region: str | None) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("STORAGE_BACKEND=s3 needs boto3: pip install 'gongjian[s3]'") from exc
    # Path-style addresses: MinIO and most self-hosted S3 services serve no bucket subdomains.
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=config,
    )


def storage_from_settings(settings: Settings) -> Storage:
    if settings.storage_backend == "s3":
        if not settings.s3_bucket:
            raise RuntimeError("STORAGE_BACKEND=s3 needs S3_BUCKET")
        return S3Storage(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            region=settings.s3_region,
        )
    return LocalStorage(settings.storage_dir or settings.data_dir / "storage")


_storage: Storage | None = None


def get_storage() -> Storage:
    """The configured storage, made once per process."""
    global _storage
    if _storage is None:
        _storage = storage_from_settings(get_settings())
    return _storage


def set_storage(storage: Storage | None) -> None:
    """Use `storage` from now on (tests; a deployment wiring its own); None: back to the settings."""
    global _storage
    _storage = storage
