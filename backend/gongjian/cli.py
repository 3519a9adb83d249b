"""The `gongjian` command: serve, migrate, load the demo county, dump the contract, create an admin.

    gongjian serve [--host H] [--port P] [--workers N]  # embedded PostgreSQL unless DATABASE_URL is set
    gongjian migrate                                    # alembic upgrade head on the configured database
    gongjian worker [--concurrency N] [--queue Q]...    # work the background job queue (scale-out)
    gongjian demo                                       # load the demo county (once; never in production)
    gongjian openapi --output openapi/openapi.json      # write the OpenAPI contract
    gongjian create-admin --username NAME               # a platform admin (password: prompt or env)
    gongjian import-lists FILE --parent-org-id ID [--create-missing] [--partial]
                                                        # import the lists (JSON or XLSX) under an org
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from gongjian.core.config import Settings

log = logging.getLogger("gongjian.cli")


class CliError(Exception):
    """A refusal or a usage problem, reported on stderr with exit status 2."""


def _settings() -> Settings:
    from gongjian.core.config import get_settings

    return get_settings()


def _resolve_url() -> tuple[str, bool]:
    """The asyncpg URL of the database to use, and whether it is the embedded one.

    With no DATABASE_URL the embedded PostgreSQL under DATA_DIR is started; when this process
    is the one that started it, it is stopped again when this process exits."""
    from gongjian.main import resolve_database_url

    settings = _settings()
    if not settings.embedded:
        return resolve_database_url(), False
    if _is_production():
        log.warning("ENVIRONMENT=production without DATABASE_URL: using the embedded PostgreSQL in %s",
                    settings.data_dir)
    was_running = _embedded_running(settings.data_dir)
    url = resolve_database_url()
    if not was_running:
        _stop_embedded_at_exit()
    return url, True


def _migrate(url: str) -> None:
    from alembic import command

    from gongjian.core.migrations import alembic_config

    log.info("applying migrations")
    cfg = alembic_config(url)
    cfg.set_main_option("configure_logging", "false")  # keep this command's log format
    command.upgrade(cfg, "head")


def _is_production() -> bool:
    return str(_settings().environment).strip().lower() in {"production", "prod"}


@asynccontextmanager
async def _session(url: str) -> AsyncIterator[AsyncSession]:
    """A session on its own short-lived engine (the app's engine is not touched)."""
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    engine = create_async_engine(url, pool_size=1, max_overflow=0)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            yield session
    finally:
        await engine.dispose()


async def load_demo(url: str, *, only_if_empty: bool = False) -> str:
    """Load the demo county through the services in one transaction; returns what happened."""
    from gongjian.demo import loader

    async with _session(url) as session:
        if only_if_empty and await loader.has_organizations(session):
            return "demo data skipped: the database already holds organizations"
        if await loader.is_loaded(session):
            return "demo data already present: nothing to do"
        summary = await loader.load(session)
        await session.commit()
        return "demo data loaded: " + ", ".join(f"{k}={v}" for k, v in summary.items())


def _stop_embedded_at_exit() -> None:
    """Stop the embedded server when this process exits (this process started it)."""
    from gongjian.core import embedded

    for server in embedded._servers.values():
        server.cleanup_mode = "stop"
    # SIGTERM (`kill`, a service manager) must end in a normal exit too, so the exit handlers run.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings()
    host = args.host or settings.host
    port = args.port or settings.port
    url, embedded = _resolve_url()
    _migrate(url)

    want_demo = settings.load_demo
    if want_demo and _is_production():
        raise CliError("LOAD_DEMO is set but ENVIRONMENT=production: refusing to load demo data")
    if want_demo is None:
        # Default: the embedded database only, and only while it is empty.
        if embedded and not _is_production():
            log.info(asyncio.run(load_demo(url, only_if_empty=True)))
    elif want_demo:
        log.info(asyncio.run(load_demo(url, only_if_empty=False)))

    # The app (and every worker process) connects to exactly this database.
    os.environ["DATABASE_URL"] = url
    _settings_cache_clear()
    log.info("serving on http://%s:%s (docs at /docs)", host, port)
    uvicorn.run(
        "gongjian.main:app",
        host=host,
        port=port,
        workers=args.workers,
        proxy_headers=True,
        forwarded_allow_ips=args.forwarded_allow_ips,
        log_level=args.log_level,
    )
    return 0


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: it lands here.
    raise SystemExit(0)


def _embedded_running(data_dir: Path) -> bool:
    pid_file = (data_dir / "pg" / "postmaster.pid").resolve()
    if not pid_file.exists():
        return False
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError, PermissionError):
        return False
    return True


def _settings_cache_clear() -> None:
    from gongjian.core.config import get_settings

    get_settings.cache_clear()


def cmd_migrate(args: argparse.Namespace) -> int:
    url, _ = _resolve_url()
    _migrate(url)
    print("migrations at head")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from gongjian.core import jobs

    url, _ = _resolve_url()
    _migrate(url)
    # Which job started, ended, failed or is retried: a worker's log is its record.
    logging.getLogger("procrastinate").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    log.info("working the job queue (stop with Ctrl-C or SIGTERM: running jobs are let finish)")
    asyncio.run(jobs.work(url, concurrency=args.concurrency, queues=args.queue))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if _is_production():
        raise CliError("ENVIRONMENT=production: refusing to load demo data")
    url, _ = _resolve_url()
    _migrate(url)
    print(asyncio.run(load_demo(url, only_if_empty=False)))
    return 0


def openapi_document() -> str:
    """The contract as committed: pretty, sorted keys, UTF-8 kept, trailing newline."""
    from gongjian.main import create_app

    schema = create_app().openapi()
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def cmd_openapi(args: argparse.Namespace) -> int:
    text = openapi_document()
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


async def _create_admin(url: str, username: str, display_name: str, password: str, phone: str | None) -> str:
    from gongjian.core.access import Role
    from gongjian.demo.loader import SYSTEM
    from gongjian.users import service as users_service
    from gongjian.users.schemas import RoleAssignmentIn, UserCreate

    data = UserCreate(
        username=username,
        display_name=display_name,
        password=password,
        phone=phone,
        role_assignments=[RoleAssignmentIn(role=Role.platform_admin)],
    )
    async with _session(url) as session:
        user = await users_service.create(session, SYSTEM, data)
        await session.commit()
        return str(user.id)


def cmd_create_admin(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from gongjian.core.errors import ERRORS, ProblemError

    password = os.environ.get("GONGJIAN_ADMIN_PASSWORD") or args.password
    if not password:
        if not sys.stdin.isatty():
            raise CliError("no password: set GONGJIAN_ADMIN_PASSWORD or run in a terminal")
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise CliError("the passwords differ")
    url, _ = _resolve_url()
    _migrate(url)
    try:
        user_id = asyncio.run(
            _create_admin(url, args.username, args.display_name or args.username, password, args.phone)
        )
    except ProblemError as exc:
        raise CliError(ERRORS[exc.code].en.format_map(_Blank(exc.params))) from exc
    except ValidationError as exc:
        messages = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise CliError("; ".join(messages)) from exc
    print(f"created platform admin {args.username} ({user_id})")
    return 0


async def _import_lists(
    url: str, data: bytes, filename: str, parent_org_id: str, create_missing: bool, partial: bool
) -> tuple[bool, list[str]]:
    import uuid

    from gongjian.core import db
    from gongjian.core.errors import ERRORS, ProblemError
    from gongjian.demo.loader import system_principal
    from gongjian.lists.imports import service as imports
    from gongjian.lists.imports.models import ImportStatus

    try:
        parent_id = uuid.UUID(parent_org_id)
    except ValueError:
        raise CliError(f"--parent-org-id: not an id: {parent_org_id}") from None
    # The import runs its data and its progress on two connections.
    db.init_engine(url, pool_size=3, max_overflow=0)
    try:
        imp = await imports.import_now(
            system_principal("cli"), parent_id, data, filename=filename, create_missing=create_missing,
            partial=partial,
        )
    except ProblemError as exc:
        raise CliError(ERRORS[exc.code].en.format_map(_Blank(exc.params))) from exc
    finally:
        await db.dispose_engine()
    return imp.status == ImportStatus.completed, imports.report_lines(imp)


def cmd_import_lists(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    url, _ = _resolve_url()
    _migrate(url)
    ok, lines = asyncio.run(
        _import_lists(url, data, path.name, args.parent_org_id, args.create_missing, args.partial)
    )
    print("\n".join(lines))
    return 0 if ok else 1


class _Blank(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return key


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gongjian", description="Gongjian 共建 — regional party building API"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="migrate, load demo data when embedded, serve the API")
    serve.add_argument("--host", default=None, help="bind address (HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (PORT, default 8000)")
    serve.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1")),
                       help="uvicorn worker processes (WORKERS, default 1)")
    serve.add_argument("--forwarded-allow-ips", default=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
                       help="proxies whose X-Forwarded-* headers are trusted")
    serve.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info"))
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply the Alembic migrations (upgrade head)")
    migrate.set_defaults(func=cmd_migrate)

    worker = sub.add_parser(
        "worker", help="work the background job queue (API processes do too unless RUN_WORKER=false)"
    )
    worker.add_argument("--concurrency", type=_positive_int, default=None,
                        help="jobs run at once (WORKER_CONCURRENCY, default 2)")
    worker.add_argument("--queue", action="append", default=None,
                        help="only this queue (repeatable; default: every queue)")
    worker.set_defaults(func=cmd_worker)

    demo = sub.add_parser("demo", help="load the demo county into the configured database (idempotent)")
    demo.set_defaults(func=cmd_demo)

    openapi = sub.add_parser("openapi", help="write the OpenAPI contract")
    openapi.add_argument(
        "--output", "-o", default="openapi/openapi.json", help="file to write, or - for stdout"
    )
    openapi.set_defaults(func=cmd_openapi)

    admin = sub.add_parser("create-admin", help="create a platform admin account")
    admin.add_argument("--username", required=True)
    admin.add_argument("--display-name", default=None)
    admin.add_argument("--phone", default=None)
    admin.add_argument("--password", default=None,
                       help="prefer GONGJIAN_ADMIN_PASSWORD or the prompt: arguments show in `ps`")
    admin.set_defaults(func=cmd_create_admin)

    lists = sub.add_parser(
        "import-lists", help="import communities, grids, resources and needs (JSON or XLSX) under an org"
    )
    lists.add_argument("file", help="the lists JSON (as shared/data/matching/public.json) or XLSX template")
    lists.add_argument("--parent-org-id", required=True, help="the street or community to import under")
    lists.add_argument("--create-missing", action="store_true",
                       help="create the communities and grid cells that do not exist yet")
    lists.add_argument("--partial", action="store_true",
                       help="import the valid rows and report the others (default: all or nothing)")
    lists.set_defaults(func=cmd_import_lists)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("gongjian").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"gongjian: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
