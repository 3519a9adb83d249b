"""Models and migrations agree; every revision upgrades a populated database and downgrades cleanly."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from gongjian.core.jobs_schema import include_name
from gongjian.core.migrations import alembic_config, downgrade, upgrade
from gongjian.models import Base
from tests.conftest import _admin_exec, _server_url, _with_database


@pytest.fixture(scope="module")
def scratch_url() -> Iterator[str]:
    server = _server_url()
    name = f"gongjian_mig_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin_exec(server, f'CREATE DATABASE "{name}"'))
    yield _with_database(server, name)
    asyncio.run(_admin_exec(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _run(url: str, fn):  # type: ignore[no-untyped-def]
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _diff(conn):  # type: ignore[no-untyped-def]
    ctx = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name})
    return compare_metadata(ctx, Base.metadata)


def _tables(conn):  # type: ignore[no-untyped-def]
    return set(inspect(conn).get_table_names())


def _procrastinate_objects(conn):  # type: ignore[no-untyped-def]
    """The job queue's functions, types and relations left in the database (should be none at base)."""
    return set(conn.execute(text(
        "SELECT proname FROM pg_proc WHERE proname LIKE 'procrastinate%' "
        "UNION SELECT typname FROM pg_type WHERE typname LIKE '%procrastinate%' "
        "UNION SELECT relname FROM pg_class WHERE relname LIKE '%procrastinate%'"
    )).scalars())


def _populate(conn):  # type: ignore[no-untyped-def]
    conn.execute(text(
        "INSERT INTO organizations "
        "(id, seq, path, depth, kind, level, name, version, created_at, updated_at) "
        "VALUES (gen_random_uuid(), 1, '/1/', 0, 'county_committee', 'county', '宁川县委', 1, now(), now())"
    ))


def test_models_match_migrations(scratch_url: str) -> None:
    upgrade(scratch_url)
    diff = asyncio.run(_run(scratch_url, _diff))
    assert diff == [], f"models and migrations disagree: {diff}"


def test_each_revision_round_trips_on_populated_database(scratch_url: str) -> None:
    script = ScriptDirectory.from_config(alembic_config())
    revisions = list(reversed(list(script.walk_revisions())))
    downgrade(scratch_url, "base")
    assert asyncio.run(_run(scratch_url, _tables)) <= {"alembic_version"}
    assert asyncio.run(_run(scratch_url, _procrastinate_objects)) == set()
    for index, rev in enumerate(revisions):
        upgrade(scratch_url, rev.revision)
        if index == 0:
            asyncio.run(_run(scratch_url, _populate))
        # Down one step and up again with data in place: each revision is reversible.
        downgrade(scratch_url, rev.down_revision or "base")
        upgrade(scratch_url, rev.revision)
        if index == 0:
            asyncio.run(_run(scratch_url, _populate))
    downgrade(scratch_url, "base")
    assert asyncio.run(_run(scratch_url, _tables)) <= {"alembic_version"}
    assert asyncio.run(_run(scratch_url, _procrastinate_objects)) == set()
    upgrade(scratch_url)


