"""Test harness: a real PostgreSQL (embedded by default, TEST_DATABASE_URL when set),
a fresh database per run migrated with Alembic, tables emptied after every test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

os.environ.setdefault("ENVIRONMENT", "test")
os.environ.setdefault("SECRET_KEY", "test-signing-key-" + "x" * 40)
os.environ.setdefault("PII_KEY", "test-pii-key-" + "y" * 40)
os.environ.pop("DATABASE_URL", None)

import asyncpg
import httpx
import pytest

from gongjian.core import db, jobs, jobs_schema, storage
from gongjian.core.migrations import upgrade
from gongjian.main import create_app, normalise_url
from gongjian.models import Base

ROOT = Path(__file__).resolve().parents[1]


def _server_url() -> str:
    explicit = os.environ.get("TEST_DATABASE_URL")
    if explicit:
        return normalise_url(explicit)
    from gongjian.core.embedded import start_embedded

    data_dir = Path(os.environ.get("TEST_DATA_DIR", ROOT / ".data" / "test"))
    return start_embedded(data_dir, database="postgres")


def _with_database(url: str, name: str) -> str:
    parts = urlparse(url)
    return urlunparse(parts._replace(path="/" + name))


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _admin_exec(server_url: str, sql: str) -> None:
    parts = urlparse(_asyncpg_dsn(server_url))
    query = dict(p.split("=", 1) for p in parts.query.split("&") if p)
    conn = await asyncpg.connect(
        host=query.get("host") or parts.hostname, port=parts.port, user=parts.username or "postgres",
        database="postgres",
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def database_url() -> AsyncIterator[str]:
    server = _server_url()
    name = f"gongjian_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_admin_exec(server, f'CREATE DATABASE "{name}"'))
    url = _with_database(server, name)
    upgrade(url)
    yield url
    asyncio.run(_admin_exec(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[object]:
    eng = db.init_engine(database_url, pool_size=20, max_overflow=20)
    yield eng
    await db.dispose_engine()


_TABLES = [f'"{t.name}"' for t in reversed(Base.metadata.sorted_tables)] + [
    f'"{t}"' for t in jobs_schema.TABLES  # the job queue's too
]
# DELETE with foreign-key triggers off (the test role is a superuser): a TRUNCATE of every table
# costs ~0.1 s a test, twenty times more, as it replaces each table's files.
_CLEAN = "SET LOCAL session_replication_role = replica; " + " ".join(f"DELETE FROM {t};" for t in _TABLES)


@pytest.fixture(autouse=True)
def _storage(tmp_path: Path) -> Any:
    """Files a test stores (signed PDFs, signature images) go to its own temporary folder."""
    storage.set_storage(storage.LocalStorage(tmp_path / "storage"))
    yield
    storage.set_storage(None)


@pytest.fixture(autouse=True)
async def _clean(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    if "engine" not in request.fixturenames:
        yield
        return
    yield
    async with db.get_engine().begin() as conn:
        raw = await conn.get_raw_connection()
        await raw.driver_connection.execute(_CLEAN)  # type: ignore[union-attr]  # asyncpg: many statements


@pytest.fixture
def run_jobs(engine: object) -> Callable[..., Awaitable[None]]:
    """`await run_jobs()` works the test database's job queue until no job is due (options:
    workers, concurrency, queues; see jobs.run_until_empty)."""
    url = db.get_engine().url

    async def run(**options: Any) -> None:
        await jobs.run_until_empty(url, **options)

    return run


@pytest.fixture(scope="session")
def app(engine: object) -> object:
    return create_app()


@pytest.fixture
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
async def session(engine: object) -> AsyncIterator[object]:
    async with db.sessionmaker()() as s:
        yield s
