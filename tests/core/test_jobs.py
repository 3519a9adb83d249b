"""The job queue: enqueue in the request's transaction, run, retry, lock, concurrency, lifespan worker."""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.resources
import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import procrastinate
import pytest
from fastapi import FastAPI, HTTPException
from procrastinate.job_context import JobContext
from sqlalchemy import text

from gongjian.core import db, jobs, jobs_schema
from gongjian.core.config import get_settings
from gongjian.core.db import SessionDep
from gongjian.main import create_app

# What the test tasks did, by task; emptied before each test.
RAN: dict[str, list[Any]] = {}


@jobs.job("tests.record", retry=False)
async def record(label: str, n: int = 0) -> None:
    RAN.setdefault("record", []).append((label, n))


@jobs.app.task(name="tests.sees_itself", pass_context=True, retry=False)
async def sees_itself(context: JobContext) -> None:
    # A task reads the database through its own session, and sees its job running.
    assert context.job.id is not None
    async with jobs.task_session() as session:
        RAN.setdefault("sees_itself", []).append(await jobs.job_status(session, context.job.id))


@jobs.job("tests.fail", retry=procrastinate.RetryStrategy(max_attempts=2))
async def fail() -> None:
    RAN.setdefault("fail", []).append(1)
    raise RuntimeError("always fails")


@jobs.job("tests.fail_default_policy")
async def fail_default_policy() -> None:
    RAN.setdefault("fail_default_policy", []).append(1)
    raise RuntimeError("fails once, retried later")


@jobs.app.task(name="tests.timed", pass_context=True, retry=False)
async def timed(context: JobContext, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(seconds)
    RAN.setdefault("timed", []).append((context.job.id, context.worker_name, start, loop.time()))


@pytest.fixture(autouse=True)
def _forget_runs() -> None:
    RAN.clear()


async def _jobs(session: Any) -> list[Any]:
    # The tests' own jobs: a worker started just after 03:41 also defers the nightly jobs.prune.
    rows = await session.execute(text(
        "SELECT id, task_name, status, attempts, args, lock, queue_name, scheduled_at "
        "FROM procrastinate_jobs WHERE task_name LIKE 'tests.%' ORDER BY id"
    ))
    return list(rows)


async def _events(session: Any, job_id: int) -> list[str]:
    rows = await session.scalars(
        text("SELECT type FROM procrastinate_events WHERE job_id = :id ORDER BY id"), {"id": job_id}
    )
    return list(rows)


# --- enqueue and run ----------------------------------------------------------------------------


async def test_enqueued_job_runs_the_task_with_its_arguments(session, run_jobs):
    job_id = await jobs.enqueue(session, "tests.record", label="东湖", n=3)
    assert await jobs.job_status(session, job_id) is jobs.Status.TODO
    await session.commit()

    await run_jobs()

    assert RAN["record"] == [("东湖", 3)]
    [row] = await _jobs(session)
    assert (row.id, row.task_name, row.queue_name) == (job_id, "tests.record", "default")
    assert row.status == "succeeded"
    assert row.args == {"label": "东湖", "n": 3}
    assert await _events(session, job_id) == ["deferred", "started", "succeeded"]


async def test_task_uses_the_database_and_its_context(session, run_jobs):
    job_id = await jobs.enqueue(session, "tests.sees_itself")
    await session.commit()
    await run_jobs()
    assert RAN["sees_itself"] == [jobs.Status.DOING]
    assert await jobs.job_status(session, job_id) is jobs.Status.SUCCEEDED


async def test_rolled_back_transaction_leaves_no_job(session):
    await jobs.enqueue(session, "tests.record", label="gone")
    await session.rollback()
    assert await _jobs(session) == []
    assert await session.scalar(text("SELECT count(*) FROM procrastinate_events")) == 0


async def test_job_status_of_unknown_job_is_none(session):
    assert await jobs.job_status(session, 123456) is None


async def test_enqueue_refuses_what_a_worker_could_not_run(session):
    with pytest.raises(jobs.TaskNotFound):
        await jobs.enqueue(session, "tests.no_such_task")
    with pytest.raises(TypeError, match="unexpected keyword argument 'labl'"):
        await jobs.enqueue(session, "tests.record", label="a", labl="typo")
    with pytest.raises(TypeError, match="missing a required argument: 'label'"):
        await jobs.enqueue(session, "tests.record")
    with pytest.raises(TypeError, match="JSON values"):
        await jobs.enqueue(session, "tests.record", label=datetime.now(UTC))
    assert await _jobs(session) == []


async def test_queueing_lock_allows_one_waiting_job_and_keeps_the_transaction(session):
    first = await jobs.enqueue(session, "tests.record", label="a", queueing_lock="org-1")
    with pytest.raises(jobs.AlreadyEnqueued):
        await jobs.enqueue(session, "tests.record", label="b", queueing_lock="org-1")
    other = await jobs.enqueue(session, "tests.record", label="c", queueing_lock="org-2")
    await session.commit()
    assert [r.id for r in await _jobs(session)] == [first, other]


async def test_scheduled_job_waits_for_its_time(session, run_jobs):
    job_id = await jobs.enqueue(
        session, "tests.record", label="later", scheduled_at=datetime.now(UTC) + timedelta(hours=1)
    )
    await session.commit()
    await run_jobs()
    assert "record" not in RAN
    assert await jobs.job_status(session, job_id) is jobs.Status.TODO


async def test_queues_are_worked_separately(session, run_jobs):
    slow = await jobs.enqueue(session, "tests.record", queue="bulk", label="bulk")
    fast = await jobs.enqueue(session, "tests.record", label="default")
    await session.commit()

    await run_jobs(queues=["default"])
    assert RAN["record"] == [("default", 0)]
    assert await jobs.job_status(session, slow) is jobs.Status.TODO

    await run_jobs()
    assert RAN["record"] == [("default", 0), ("bulk", 0)]
    assert {r.id: r.queue_name for r in await _jobs(session)} == {slow: "bulk", fast: "default"}


# --- retries ------------------------------------------------------------------------------------


async def test_failing_task_is_retried_per_policy_then_fails(session, run_jobs):
    job_id = await jobs.enqueue(session, "tests.fail")
    await session.commit()

    await run_jobs()

    assert len(RAN["fail"]) == 3  # the first attempt and max_attempts=2 retries
    [row] = await _jobs(session)
    assert (row.status, row.attempts) == ("failed", 3)
    transitions = [e for e in await _events(session, job_id) if e != "scheduled"]  # retry_at: now
    assert transitions == [
        "deferred", "started", "deferred_for_retry", "started", "deferred_for_retry", "started", "failed"
    ]


async def test_default_policy_retries_later_with_backoff(session, run_jobs):
    job_id = await jobs.enqueue(session, "tests.fail_default_policy")
    await session.commit()

    await run_jobs()  # one attempt; the retry is not due yet

    assert len(RAN["fail_default_policy"]) == 1
    [row] = await _jobs(session)
    assert (row.id, row.status, row.attempts) == (job_id, "todo", 1)
    wait = (row.scheduled_at - datetime.now(UTC)).total_seconds()
    assert 0 < wait <= jobs.DEFAULT_RETRY.exponential_wait


# --- workers at once, locks ---------------------------------------------------------------------


async def test_two_workers_never_run_the_same_job_twice(session, run_jobs):
    ids = [await jobs.enqueue(session, "tests.timed", seconds=0.01) for _ in range(40)]
    await session.commit()

    await run_jobs(workers=2, concurrency=3)

    ran = [job_id for job_id, *_ in RAN["timed"]]
    assert sorted(ran) == ids  # each job once, none lost
    rows = await session.execute(text(
        "SELECT job_id, count(*) FROM procrastinate_events WHERE type = 'started' GROUP BY job_id"
    ))
    assert {job_id: n for job_id, n in rows} == dict.fromkeys(ids, 1)
    assert {row.status for row in await _jobs(session)} == {"succeeded"}


def _overlaps(runs: list[Any]) -> bool:
    spans = sorted((start, end) for _, _, start, end in runs)
    return any(later_start < earlier_end for (_, earlier_end), (later_start, _) in itertools.pairwise(spans))


async def test_jobs_sharing_a_lock_run_one_at_a_time_in_order(session, run_jobs):
    ids = [await jobs.enqueue(session, "tests.timed", lock="org-1", seconds=0.1) for _ in range(3)]
    await session.commit()

    await run_jobs(workers=2, concurrency=3)

    runs = RAN["timed"]
    assert [job_id for job_id, *_ in sorted(runs, key=lambda r: r[2])] == ids
    assert not _overlaps(runs)


async def test_jobs_without_a_lock_run_side_by_side(session, run_jobs):
    # The contrast that makes the lock test meaningful: the same jobs, unlocked, overlap.
    for _ in range(3):
        await jobs.enqueue(session, "tests.timed", seconds=0.2)
    await session.commit()
    await run_jobs(concurrency=3)
    assert _overlaps(RAN["timed"])


# --- the API process's worker -------------------------------------------------------------------


def _app_with_job_routes() -> FastAPI:
    app = create_app()

    @app.post("/test-jobs")
    async def start(session: SessionDep, seconds: float = 0.0) -> dict[str, int]:
        return {"job_id": await jobs.enqueue(session, "tests.timed", seconds=seconds)}

    @app.post("/test-jobs/failing")
    async def start_then_fail(session: SessionDep) -> None:
        await jobs.enqueue(session, "tests.timed", seconds=0)
        raise HTTPException(status_code=409, detail="refused after enqueuing")

    return app


async def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def _until(predicate: Any) -> None:
    async with asyncio.timeout(10):
        while not await predicate():  # noqa: ASYNC110 - the database state has no event to wait on
            await asyncio.sleep(0.02)


async def _workers(session: Any) -> int:
    await session.rollback()  # a fresh snapshot
    return int(await session.scalar(text("SELECT count(*) FROM procrastinate_workers")))


async def test_request_enqueues_and_run_jobs_executes(session, run_jobs):
    app = _app_with_job_routes()
    async with await _client(app) as client:
        r = await client.post("/test-jobs/failing")
        assert r.status_code == 409
        assert await _jobs(session) == []  # the request failed: its job is gone with it
        r = await client.post("/test-jobs")
        assert r.status_code == 200
    await run_jobs()
    assert [job_id for job_id, *_ in RAN["timed"]] == [r.json()["job_id"]]


async def test_lifespan_worker_runs_jobs_of_requests_and_stops_cleanly(session):
    assert get_settings().run_worker  # the default: `make run` needs no second process
    app = _app_with_job_routes()

    async def job_done() -> bool:
        return bool(RAN.get("timed"))

    async def registered() -> bool:
        return await _workers(session) == 1

    async with app.router.lifespan_context(app), await _client(app) as client:
        await _until(registered)
        first = (await client.post("/test-jobs")).json()["job_id"]
        await _until(job_done)  # woken by the commit's NOTIFY (or, failing that, the 5 s poll)
        assert RAN["timed"][0][:2] == (first, "api-worker")

        # A job still running at shutdown is given time to finish.
        slow = (await client.post("/test-jobs", params={"seconds": 0.5})).json()["job_id"]

        async def slow_started() -> bool:
            await session.rollback()
            return await jobs.job_status(session, slow) is jobs.Status.DOING

        await _until(slow_started)

    assert [job_id for job_id, *_ in RAN["timed"]] == [first, slow]
    await session.rollback()
    assert await jobs.job_status(session, slow) is jobs.Status.SUCCEEDED
    assert await _workers(session) == 0  # the worker unregistered itself
    assert jobs.app.connector is jobs._IDLE  # and released its connections


async def test_no_lifespan_worker_when_run_worker_is_off(monkeypatch, session):
    monkeypatch.setenv("RUN_WORKER", "false")
    get_settings.cache_clear()
    try:
        app = _app_with_job_routes()
        async with app.router.lifespan_context(app):
            await asyncio.sleep(0)
            names = {task.get_name() for task in asyncio.all_tasks()}
            assert "gongjian-jobs-worker" not in names
    finally:
        monkeypatch.delenv("RUN_WORKER")
        get_settings.cache_clear()


async def test_one_connection_of_the_queue_at_a_time(engine):
    async with jobs.connected(db.get_engine().url):
        with pytest.raises(RuntimeError, match="already connected"):
            async with jobs.connected(db.get_engine().url):
                pass
    assert jobs.app.connector is jobs._IDLE


# --- connection string ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+asyncpg://postgres@/gongjian?host=/tmp/gongjian-1000/pg",
            {"host": "/tmp/gongjian-1000/pg", "user": "postgres", "dbname": "gongjian"},
        ),
        (
            "postgresql+asyncpg://app:p%40ss%20w@db.example:6432/gj?ssl=require&command_timeout=5",
            {"host": "db.example", "port": "6432", "user": "app", "password": "p@ss w", "dbname": "gj",
             "sslmode": "require"},
        ),
        (
            "postgresql+asyncpg://u@h/d?ssl=true",
            {"host": "h", "user": "u", "dbname": "d", "sslmode": "require"},
        ),
    ],
)
def test_psycopg_conninfo_from_our_urls(url: str, expected: dict[str, str]) -> None:
    import psycopg.conninfo

    parsed = psycopg.conninfo.conninfo_to_dict(jobs.psycopg_conninfo(url))
    assert parsed == {**expected, "application_name": "gongjian-jobs"}


# --- the vendored schema ------------------------------------------------------------------------


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_vendored_schema_is_the_installed_procrastinates() -> None:
    installed = importlib.metadata.version("procrastinate")
    vendored = jobs_schema.SCHEMA_FILE.read_text(encoding="utf-8")
    assert f"procrastinate {jobs_schema.VENDORED_VERSION} schema" in vendored.splitlines()[0]
    sql = importlib.resources.files("procrastinate.sql")
    upstream = sql.joinpath("schema.sql").read_text(encoding="utf-8")
    if installed == jobs_schema.VENDORED_VERSION:
        assert vendored.endswith(upstream), "the vendored schema must be procrastinate's, verbatim"

    # Schema changes since the vendored version come as procrastinate migration files; each needs
    # an Alembic revision applying it (see the header of the vendored file).
    files = sql.joinpath("migrations").iterdir()
    newer = sorted(
        f.name for f in files
        if f.name.endswith(".sql") and _version(f.name) > _version(jobs_schema.VENDORED_VERSION)
    )
    missing = [name for name in newer if name not in jobs_schema.APPLIED_MIGRATIONS]
    assert not missing, f"procrastinate {installed} changed its schema: write a revision applying {missing}"
