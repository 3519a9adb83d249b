"""Background jobs on a PostgreSQL job queue (procrastinate): no second stateful service to run.

A domain declares a task in a module its router or service imports (the worker imports
`gongjian.main`, so every task reachable from a router is known to every worker):

    from gongjian.core import jobs

    @jobs.job("matching.run")
    async def run_matching(run_id: str) -> None:
        async with jobs.task_session() as session:
            ...

and enqueues it inside the request's own transaction, so the job exists if and only if the
request's writes commit (workers are woken by NOTIFY at commit):

    session.add(run)
    await session.flush()
    run.job_id = await jobs.enqueue(session, "matching.run", run_id=str(run.id))

Task arguments are JSON values (pass ids as strings). Tasks must be safe to run again: a failed
attempt is retried per the task's policy (DEFAULT_RETRY unless given), and a job still running
when its worker shuts down is aborted and retried. CPU-heavy work belongs in a sync task or in
`asyncio.to_thread`: async tasks run on the event loop of the API process that works the queue.

Who works the queue: every API process (lifespan, `background_worker`) unless RUN_WORKER=false,
and `gongjian worker` processes (`work`). Tests call `run_until_empty` (the `run_jobs` fixture).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import procrastinate
import psycopg.conninfo
import psycopg.pq
import sqlalchemy as sa
from procrastinate.exceptions import AlreadyEnqueued, TaskNotFound
from procrastinate.jobs import DEFAULT_QUEUE, Status
from procrastinate.manager import QUEUEING_LOCK_CONSTRAINT
from procrastinate.periodic import PeriodicRegistry
from procrastinate.retry import RetryValue
from procrastinate.tasks import Task
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.core import db
from gongjian.core.config import Settings, get_settings

__all__ = [
    "DEFAULT_RETRY",
    "AlreadyEnqueued",
    "Status",
    "TaskNotFound",
    "app",
    "background_worker",
    "connected",
    "enqueue",
    "job",
    "job_status",
    "psycopg_conninfo",
    "run_until_empty",
    "task_session",
    "work",
]

log = logging.getLogger("gongjian.jobs")

P = ParamSpec("P")
R = TypeVar("R")

# Retried three times, 4 s, 16 s and 64 s after the failures (transient faults: a deadlock, a
# restarted database); a task whose failure is final can pass retry=False.
DEFAULT_RETRY = procrastinate.RetryStrategy(max_attempts=3, exponential_wait=4)
# Finished (succeeded or cancelled) jobs are deleted after this long; failed ones are kept.
KEEP_FINISHED_HOURS = 30 * 24

# Not connected until a worker opens it (`connected`); requests never need it: they enqueue
# through their own session.
_IDLE = procrastinate.PsycopgConnector()
app = procrastinate.App(connector=_IDLE, import_paths=["gongjian.main"])


def job(
    name: str,
    *,
    retry: RetryValue = DEFAULT_RETRY,
    queue: str = DEFAULT_QUEUE,
    priority: int = 0,
    lock: str | None = None,
) -> Callable[[Callable[P, R]], Task[P, R, P]]:
    """Declare a task under a stable name (`domain.action`); jobs refer to it by that name.

    `lock`: jobs sharing a lock run one at a time, in order (e.g. one per organization)."""
    return app.task(name=name, retry=retry, queue=queue, priority=priority, lock=lock)


_DEFER = sa.text(
    # procrastinate's own defer (queries.sql "defer_jobs"): the same function, hence the same
    # insert, the "deferred" event and the NOTIFY that wakes workers when the transaction commits.
    "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW("
    "CAST(:queue_name AS varchar), CAST(:task_name AS varchar), CAST(:priority AS integer), "
    "CAST(:lock AS text), CAST(:queueing_lock AS text), CAST(:args AS jsonb), "
    "CAST(:scheduled_at AS timestamptz))::procrastinate_job_to_defer_v1])) AS id"
)


async def enqueue(
    session: AsyncSession,
    task_name: str,
    *,
    queue: str | None = None,
    lock: str | None = None,
    queueing_lock: str | None = None,
    priority: int | None = None,
    scheduled_at: datetime | None = None,
    **kwargs: Any,
) -> int:
    """Add a job to the queue in `session`'s transaction; returns the job id.

    queue, lock and priority default to the task's. `queueing_lock`: at most one waiting job
    holds it; another raises AlreadyEnqueued and leaves the transaction usable.
    `scheduled_at` (timezone-aware): not run before. Unknown tasks (TaskNotFound), arguments
    the task does not take and non-JSON arguments (TypeError) are refused here, not in a worker."""
    task = _task(task_name)
    _check_arguments(task, kwargs)
    params = {
        "queue_name": queue or task.queue,
        "task_name": task_name,
        "priority": task.priority if priority is None else priority,
        "lock": task.lock if lock is None else lock,
        "queueing_lock": task.queueing_lock if queueing_lock is None else queueing_lock,
        "args": _json(task_name, kwargs),
        "scheduled_at": scheduled_at,
    }
    if params["queueing_lock"] is None:
        return int((await session.execute(_DEFER, params)).scalar_one())
    try:
        async with session.begin_nested():  # a refusal must not abort the request's transaction
            return int((await session.execute(_DEFER, params)).scalar_one())
    except IntegrityError as exc:
        if QUEUEING_LOCK_CONSTRAINT not in str(exc.orig):
            raise
        raise AlreadyEnqueued(
            f"a job with queueing lock {params['queueing_lock']!r} is already waiting"
        ) from exc


_STATUS = sa.text("SELECT status FROM procrastinate_jobs WHERE id = :id")


async def job_status(session: AsyncSession, job_id: int) -> Status | None:
    """The job's status, or None when there is no such job (finished jobs are pruned in time)."""
    value = await session.scalar(_STATUS, {"id": job_id})
    return None if value is None else Status(value)


def _task(task_name: str) -> Task[Any, Any, Any]:
    app.perform_import_paths()  # type: ignore[no-untyped-call]
    try:
        return app.tasks[task_name]
    except KeyError:
        raise TaskNotFound(f"no task named {task_name!r}") from None


def _check_arguments(task: Task[Any, Any, Any], kwargs: dict[str, Any]) -> None:
    context = (None,) if task.pass_context else ()
    try:
        inspect.signature(task.func).bind(*context, **kwargs)
    except TypeError as exc:
        raise TypeError(f"task {task.name!r}: {exc}") from None


def _json(task_name: str, kwargs: dict[str, Any]) -> str:
    try:
        return json.dumps(kwargs, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"task {task_name!r}: arguments must be JSON values (ids as strings): {exc}"
        ) from None


@asynccontextmanager
async def task_session() -> AsyncIterator[AsyncSession]:
    """A session for a task: committed when the block ends, rolled back on error (as a request)."""
    async with db.sessionmaker()() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# ---------------------------------------------------------------------------------------------
# Connecting and working the queue


# libpq's own names; the rest of an asyncpg URL's query (command_timeout, ...) is asyncpg's.
_LIBPQ_KEYS = frozenset(
    option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults() if option.keyword
)


def psycopg_conninfo(url: str | URL) -> str:
    """The libpq connection string of a SQLAlchemy URL (postgresql+asyncpg://..., embedded or not)."""
    parsed = make_url(url) if isinstance(url, str) else url
    params: dict[str, Any] = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "password": parsed.password,
        "dbname": parsed.database,
        "application_name": "gongjian-jobs",
    }
    for key, value in parsed.query.items():
        value = value[-1] if isinstance(value, tuple) else value
        if key == "ssl":  # asyncpg's spelling
            key, value = "sslmode", {"true": "require", "false": "disable"}.get(value.lower(), value)
        if key in _LIBPQ_KEYS:
            params[key] = value
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})


def _pool_size(concurrency: int, workers: int = 1) -> int:
    # Per worker: its running jobs finishing, one fetching, heartbeat and abort polling.
    return workers * (concurrency + 3)


@asynccontextmanager
async def connected(url: str | URL, *, pool_size: int = 4) -> AsyncIterator[procrastinate.App]:
    """The queue app connected to the database at `url` for the block (one block at a time)."""
    if app.connector is not _IDLE:
        raise RuntimeError("the job queue is already connected in this process")
    connector = procrastinate.PsycopgConnector(
        conninfo=psycopg_conninfo(url), min_size=1, max_size=pool_size, name="gongjian-jobs"
    )
    with app.replace_connector(connector):
        async with app.open_async():
            yield app


def _options(settings: Settings, concurrency: int | None, queues: Iterable[str] | None) -> dict[str, Any]:
    return {
        "concurrency": concurrency or settings.worker_concurrency,
        "queues": list(queues) if queues else None,
        "shutdown_graceful_timeout": settings.worker_shutdown_timeout_seconds,
    }


async def work(
    url: str | URL, *, concurrency: int | None = None, queues: Iterable[str] | None = None
) -> None:
    """Work the queue until SIGINT/SIGTERM, then let running jobs finish (`gongjian worker`)."""
    settings = get_settings()
    options = _options(settings, concurrency, queues)
    owns_engine = _ensure_engine(url, settings)
    try:
        async with connected(url, pool_size=_pool_size(options["concurrency"])) as queue:
            await queue.run_worker_async(name="worker", **options)
    finally:
        if owns_engine:
            await db.dispose_engine()


def _ensure_engine(url: str | URL, settings: Settings) -> bool:
    """Tasks use the app's engine (`task_session`); a worker process creates it."""
    try:
        db.get_engine()
        return False
    except RuntimeError:
        db.init_engine(
            url if isinstance(url, str) else url.render_as_string(hide_password=False),
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout_seconds,
            pool_recycle=settings.db_pool_recycle_seconds,
        )
        return True


@asynccontextmanager
async def background_worker(url: str | URL) -> AsyncIterator[None]:
    """Work the queue in this process while the block runs (the API's lifespan), if RUN_WORKER.

    Started in the background so that a database hiccup delays jobs, not the API's start; a
    worker that fails is restarted. On exit running jobs get WORKER_SHUTDOWN_TIMEOUT_SECONDS."""
    settings = get_settings()
    if not settings.run_worker:
        yield
        return
    supervisor = asyncio.create_task(_supervise(url, settings), name="gongjian-jobs-worker")
    try:
        yield
    finally:
        supervisor.cancel()
        await asyncio.wait([supervisor])


async def _supervise(url: str | URL, settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    options = _options(settings, None, None)
    delay = 1.0
    while True:
        started = loop.time()
        try:
            async with connected(url, pool_size=_pool_size(options["concurrency"])) as queue:
                await queue.run_worker_async(name="api-worker", install_signal_handlers=False, **options)
            log.error("the job worker stopped; restarting it")
        except Exception:
            log.exception("the job worker failed; restarting it in %.0f s", delay)
        delay = 1.0 if loop.time() - started > 60 else min(delay * 2, 60.0)
        await asyncio.sleep(delay)


_DUE = (
    "SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE status = 'todo' "
    "AND (scheduled_at IS NULL OR scheduled_at <= now()) "
    "AND (%(queues)s::varchar[] IS NULL OR queue_name = ANY(%(queues)s::varchar[]))) AS due"
)


async def run_until_empty(
    url: str | URL,
    *,
    workers: int = 1,
    concurrency: int = 1,
    queues: Iterable[str] | None = None,
    max_rounds: int = 20,
) -> None:
    """Run `workers` workers until no job is due (jobs retried later or locked out remain).

    For tests and one-off runs: deterministic, nothing left running afterwards, and only the jobs
    enqueued: no periodic task is deferred (a worker would defer one whose time passed minutes ago)."""
    queue_list = list(queues) if queues else None
    options: dict[str, Any] = {"concurrency": concurrency, "queues": queue_list}
    async with connected(url, pool_size=_pool_size(concurrency, workers)) as queue:
        schedule, queue.periodic_registry = queue.periodic_registry, PeriodicRegistry()  # type: ignore[no-untyped-call]
        try:
            await _drain(queue, workers, options, max_rounds)
        finally:
            queue.periodic_registry = schedule


async def _drain(queue: procrastinate.App, workers: int, options: dict[str, Any], max_rounds: int) -> None:
    for _ in range(max_rounds):
        await asyncio.gather(*(
            queue.run_worker_async(
                name=f"drain-{n}", wait=False, listen_notify=False, install_signal_handlers=False,
                **options,
            )
            for n in range(workers)
        ))
        # A worker stops at the first empty fetch: a job retried meanwhile, or one waiting
        # for a lock another job held, may still be due.
        due = await queue.connector.execute_query_one_async(_DUE, queues=options["queues"])
        if not due["due"]:
            return
    raise RuntimeError(f"jobs still due after {max_rounds} rounds")


@app.periodic(cron="41 3 * * *", periodic_id="prune")
@job("jobs.prune", retry=False)
async def prune(timestamp: int) -> None:
    """Nightly: delete jobs finished long ago, so the queue's tables stay small."""
    await app.job_manager.delete_old_jobs(nb_hours=KEEP_FINISHED_HOURS, include_cancelled=True)
