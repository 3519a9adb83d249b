"""The job queue's schema (procrastinate's tables, types and functions), owned by Alembic.

procrastinate ships its schema as SQL; we vendor the installed version's file under
migrations/sql and apply it from our own revision, so one tool (Alembic) owns the whole database.
Autogenerate and the models-vs-migrations test must not see these objects as strays: they are
not in our models, hence `include_name`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from gongjian.core.migrations import ROOT

SCHEMA_FILE = ROOT / "migrations" / "sql" / "procrastinate_schema.sql"
VENDORED_VERSION = "3.10.0"
# Files of procrastinate/sql/migrations applied by later revisions (after an upgrade past the
# vendored version); empty while the vendored schema is the installed one.
APPLIED_MIGRATIONS: tuple[str, ...] = ()

PREFIX = "procrastinate_"
# Children first, so TRUNCATE and DROP need no CASCADE into anything of ours.
TABLES = (
    "procrastinate_events", "procrastinate_periodic_defers", "procrastinate_jobs", "procrastinate_workers"
)
# Every function schema.sql creates. procrastinate_fetch_job_v2 returns the jobs row type, so it
# goes before the tables; the trigger functions only after them (the triggers go with the table).
_ROW_TYPED_FUNCTIONS = ("procrastinate_fetch_job_v2",)
_FUNCTIONS = (
    "procrastinate_defer_jobs_v1",
    "procrastinate_defer_periodic_job_v2",
    "procrastinate_finish_job_v1",
    "procrastinate_cancel_job_v1",
    "procrastinate_retry_job_v1",
    "procrastinate_retry_job_v2",
    "procrastinate_notify_queue_job_inserted_v1",
    "procrastinate_notify_queue_abort_job_v1",
    "procrastinate_trigger_function_status_events_insert_v1",
    "procrastinate_trigger_function_status_events_update_v1",
    "procrastinate_trigger_function_scheduled_events_v1",
    "procrastinate_trigger_abort_requested_events_procedure_v1",
    "procrastinate_unlink_periodic_defers_v1",
    "procrastinate_register_worker_v1",
    "procrastinate_unregister_worker_v1",
    "procrastinate_update_heartbeat_v1",
    "procrastinate_prune_stalled_workers_v1",
)
_TYPES = ("procrastinate_job_to_defer_v1", "procrastinate_job_event_type", "procrastinate_job_status")


def upgrade(op: Any) -> None:
    """Create the job queue's schema (call from the revision's upgrade())."""
    for statement in split_statements(SCHEMA_FILE.read_text(encoding="utf-8")):
        op.execute(_literal(statement))


def downgrade(op: Any) -> None:
    """Drop every object `upgrade` created (call from the revision's downgrade()).

    The plpgsql language the schema file "creates" is built into PostgreSQL and stays."""
    for name in _ROW_TYPED_FUNCTIONS:
        op.execute(f"DROP FUNCTION {name}")
    op.execute(f"DROP TABLE {', '.join(TABLES)}")
    for name in _FUNCTIONS:
        op.execute(f"DROP FUNCTION {name}")
    op.execute(f"DROP TYPE {', '.join(_TYPES)}")


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic filter: leave the job queue's tables out of autogenerate and model comparison."""
    return not (type_ == "table" and name is not None and name.startswith(PREFIX))


def _literal(statement: str) -> sa.TextClause:
    # text() would take ":name" as a bind parameter; the SQL is run exactly as written.
    return sa.text(statement.replace(":", r"\:"))


def split_statements(script: str) -> list[str]:
    """The statements of an SQL script, split at top-level semicolons.

    The script is executed statement by statement because asyncpg prepares what it runs and a
    prepared statement holds one command. Quotes, dollar-quoted bodies ($$ ... $$) and comments
    are skipped over, so semicolons inside them do not split."""
    statements, start = [], 0
    for end in _top_level_semicolons(script):
        statement = script[start:end].strip()
        if _has_code(statement):
            statements.append(statement)
        start = end + 1
    if _has_code(script[start:]):
        statements.append(script[start:].strip())
    return statements


def _top_level_semicolons(sql: str) -> Iterator[int]:
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if sql.startswith("--", i):
            i = _after(sql, "\n", i + 2)
        elif sql.startswith("/*", i):
            i = _after(sql, "*/", i + 2)
        elif char in "'\"":
            i = _after(sql, char, i + 1)
        elif char == "$" and (tag := _dollar_tag(sql, i)):
            i = _after(sql, tag, i + len(tag))
        else:
            if char == ";":
                yield i
            i += 1


def _after(sql: str, closing: str, start: int) -> int:
    end = sql.find(closing, start)
    if end < 0:
        raise ValueError(f"unterminated {closing!r} in SQL script")
    return end + len(closing)


def _dollar_tag(sql: str, i: int) -> str | None:
    end = sql.find("$", i + 1)
    if end < 0:
        return None
    tag = sql[i : end + 1]
    inner = tag[1:-1]
    return tag if inner == "" or (inner.replace("_", "a").isalnum() and not inner[0].isdigit()) else None


def _has_code(text: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in text.splitlines())
