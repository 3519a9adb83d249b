"""A fresh benchmark database and a 100k-node organization tree, loaded with COPY.

The tree has six levels, kinds by depth as in the glossary:

    county_committee (1) → working_committee (10 streets) → committee (10 communities each)
    → general_branch (10 each) → branch (9 each) → group (10 each)        = 100,111 organizations

so a street holds ~1/10 of the tree (10,011 nodes), a community ~1/100 (1,001), a branch 11.
Rows are created in depth-first order, as a county importing its tree street by street would
create them: `created_at` grows along that order (so it is correlated with `path`, the
unfavourable case for an ORDER BY created_at ... LIMIT over a path range).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse, urlunparse

import asyncpg

ROOT = Path(__file__).resolve().parents[2]

FANOUT = (10, 10, 10, 9, 10)
KINDS = ("county_committee", "working_committee", "committee", "general_branch", "branch", "group")
LEVELS = ("county", "street", "community", "other", "other", "other")
T0 = datetime(2024, 3, 1, tzinfo=UTC)
STEP = timedelta(seconds=317)  # ~1 year over the whole import

ORG_COLUMNS = (
    "id",
    "seq",
    "parent_id",
    "path",
    "depth",
    "kind",
    "level",
    "name",
    "short_name",
    "code",
    "created_at",
    "updated_at",
    "version",
)


# --- the database ------------------------------------------------------------------------


@dataclass
class Database:
    url: str  # SQLAlchemy asyncpg URL (what the app takes as DATABASE_URL)
    dsn: str  # plain asyncpg DSN
    name: str
    server_dsn: str  # DSN of the maintenance database, to drop ours at the end
    embedded: bool
    stop_embedded: Any = None  # callable stopping the embedded server we started, or None
    notes: list[str] = field(default_factory=list)


def _asyncpg_dsn(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgres://", "postgresql+psycopg://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def _with_database(dsn: str, name: str) -> str:
    parts = urlparse(dsn)
    return urlunparse(parts._replace(path="/" + name))


def _embedded_running(pgdata: Path) -> bool:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (ValueError, ProcessLookupError, PermissionError):
        return False
    return True


async def create_database() -> Database:
    """A fresh database: on BENCH_DATABASE_URL's server when set, else on the embedded PostgreSQL
    under .data/bench. Migrated with Alembic like every other database of ours."""
    explicit = os.environ.get("BENCH_DATABASE_URL")
    stop = None
    if explicit:
        server_dsn = _asyncpg_dsn(explicit)
        name = f"gongjian_bench_{os.getpid()}"
        embedded = False
    else:
        from gongjian.core.embedded import start_embedded

        data_dir = Path(os.environ.get("BENCH_DATA_DIR", ROOT / ".data" / "bench"))
        pgdata = (data_dir / "pg").resolve()
        was_running = _embedded_running(pgdata)
        server_dsn = _asyncpg_dsn(start_embedded(data_dir, database="postgres"))
        name = "gongjian_bench"
        embedded = True
        if not was_running:
            stop = _stopper(pgdata)
    conn = await _connect(server_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn = _with_database(server_dsn, name)
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    from gongjian.core.migrations import upgrade

    # Alembic's env runs its own event loop: give it a thread of its own.
    await asyncio.to_thread(upgrade, url)
    return Database(url=url, dsn=dsn, name=name, server_dsn=server_dsn, embedded=embedded, stop_embedded=stop)


def _stopper(pgdata: Path) -> Any:
    def stop() -> None:
        import pgserver

        # The handle gongjian.core.embedded opened keeps the server running after exit
        # (cleanup_mode=None); we started it for this run, so stop it when we leave.
        server = pgserver.get_server(pgdata)  # type: ignore[attr-defined]
        server.cleanup_mode = "stop"

    return stop


async def _connect(dsn: str) -> asyncpg.Connection:
    parts = urlparse(dsn)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return await asyncpg.connect(
        host=query.get("host") or parts.hostname,
        port=parts.port,
        user=parts.username or "postgres",
        password=parts.password,
        database=parts.path.lstrip("/") or "postgres",
    )


async def connect(db: Database) -> asyncpg.Connection:
    return await _connect(db.dsn)


async def drop_database(db: Database) -> None:
    conn = await _connect(db.server_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')
    finally:
        await conn.close()


# --- the tree ------------------------------------------------------------------------------


@dataclass
class Node:
    id: uuid.UUID
    seq: int
    parent_id: uuid.UUID | None
    path: str
    depth: int
    size: int = 1  # the node and everything under it


@dataclass
class Tree:
    nodes: list[Node]
    by_depth: dict[int, list[Node]]
    closure_rows: int = 0
    load_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def root(self) -> Node:
        return self.by_depth[0][0]

    def sample(self, depth: int, n: int, seed: int) -> list[Node]:
        """n nodes of a depth, spread over the whole tree (first and last included)."""
        pool = self.by_depth[depth]
        if len(pool) <= n:
            return list(pool)
        rnd = random.Random(seed)
        picked = [pool[0], pool[-1], *rnd.sample(pool[1:-1], n - 2)]
        return sorted(picked, key=lambda x: x.seq)


def build_tree() -> tuple[Tree, list[tuple[Any, ...]]]:
    """The nodes (depth-first) and the organization rows to COPY."""
    nodes: list[Node] = []
    rows: list[tuple[Any, ...]] = []
    by_depth: dict[int, list[Node]] = {d: [] for d in range(len(KINDS))}
    stack: list[tuple[Node | None, int, int]] = [(None, 0, 1)]  # (parent, depth, ordinal among siblings)
    ancestors: list[Node] = []
    seq = 0
    while stack:
        parent, depth, ordinal = stack.pop()
        while ancestors and ancestors[-1] is not parent:
            ancestors.pop()
        seq += 1
        node = Node(
            id=uuid.uuid4(),
            seq=seq,
            parent_id=parent.id if parent else None,
            path=(parent.path if parent else "/") + f"{seq}/",
            depth=depth,
        )
        for a in ancestors:
            a.size += 1
        nodes.append(node)
        by_depth[depth].append(node)
        created = T0 + STEP * seq
        rows.append(
            (
                node.id,
                seq,
                node.parent_id,
                node.path,
                depth,
                KINDS[depth],
                LEVELS[depth],
                _name(depth, ordinal, parent),
                None,
                f"B{seq:07d}" if depth <= 2 else None,
                created,
                created,
                1,
            )
        )
        if depth + 1 < len(KINDS):
            ancestors.append(node)
            # push children in reverse so they pop (and get seq numbers) in order
            stack.extend((node, depth + 1, i) for i in range(FANOUT[depth], 0, -1))
    return Tree(nodes=nodes, by_depth=by_depth), rows


_CN = "零一二三四五六七八九十"


def _name(depth: int, ordinal: int, parent: Node | None) -> str:
    n = _CN[ordinal] if ordinal <= 10 else str(ordinal)
    if depth == 0:
        return "共建县委"
    if depth == 1:
        return f"第{n}街道党工委"
    if depth == 2:
        return f"{parent.seq if parent else 0}号{n}社区党委"
    return f"第{n}" + ("党总支", "党支部", "党小组")[depth - 3]


async def load_tree(db: Database) -> Tree:
    t = time.perf_counter()
    tree, rows = build_tree()
    gen = time.perf_counter() - t
    conn = await connect(db)
    try:
        t = time.perf_counter()
        await conn.copy_records_to_table("organizations", records=rows, columns=list(ORG_COLUMNS))
        copy_orgs = time.perf_counter() - t
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('organizations', 'seq'),"
            " (SELECT max(seq) FROM organizations))"
        )
        t = time.perf_counter()
        tree.closure_rows = await _load_closure(conn, tree)
        copy_closure = time.perf_counter() - t
        t = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")
        vacuum = time.perf_counter() - t
    finally:
        await conn.close()
    tree.load_seconds = {
        "generate": round(gen, 2),
        "copy_organizations": round(copy_orgs, 2),
        "closure_table": round(copy_closure, 2),
        "vacuum_analyze": round(vacuum, 2),
    }
    return tree


async def _load_closure(conn: asyncpg.Connection, tree: Tree) -> int:
    """An (ancestor, descendant, distance) closure table, only to compare with the materialized path."""
    by_id = {n.id: n for n in tree.nodes}
    rows: list[tuple[uuid.UUID, uuid.UUID, int]] = []
    for node in tree.nodes:
        cur: Node | None = node
        while cur is not None:
            rows.append((cur.id, node.id, node.depth - cur.depth))
            cur = by_id[cur.parent_id] if cur.parent_id else None
    await conn.execute(
        """CREATE SCHEMA bench;
           CREATE TABLE bench.org_closure (ancestor_id uuid NOT NULL, descendant_id uuid NOT NULL,
                                           distance int NOT NULL)"""
    )
    await conn.copy_records_to_table("org_closure", schema_name="bench", records=rows)
    await conn.execute(
        """ALTER TABLE bench.org_closure ADD PRIMARY KEY (ancestor_id, descendant_id);
           CREATE INDEX ON bench.org_closure (descendant_id)"""
    )
    return len(rows)


# --- people and units ----------------------------------------------------------------------


@dataclass
class Actors:
    admin_id: uuid.UUID
    org_admin_id: uuid.UUID
    org_admin_street: Node
    units: int
    notes: list[str] = field(default_factory=list)


async def load_actors(db: Database, tree: Tree) -> Actors:
    """A platform admin, an org_admin of one street, and a few resident units per community,
    written through the app's models (so the rows are what the app itself would write)."""
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from gongjian.auth.models import RoleAssignment, User
    from gongjian.core.access import Role
    from gongjian.core.security import hash_password

    engine = create_async_engine(db.url)
    street = tree.by_depth[1][len(tree.by_depth[1]) // 2]
    notes: list[str] = []
    units = 0
    try:
        async with async_sessionmaker(engine)() as session:
            pw = hash_password("Bench@2026x")
            admin = User(username="bench_admin", display_name="压测管理员", password_hash=pw)
            org_admin = User(username="bench_street", display_name="街道管理员", password_hash=pw)
            session.add_all([admin, org_admin])
            await session.flush()
            admin_id, org_admin_id = admin.id, org_admin.id
            session.add_all(
                [
                    RoleAssignment(user_id=admin.id, role=Role.platform_admin, org_id=None),
                    RoleAssignment(user_id=org_admin.id, role=Role.org_admin, org_id=street.id),
                ]
            )
            await session.commit()
        try:
            units = await _load_units(engine, tree)
        except Exception as exc:  # the counts still run, without units
            notes.append(f"resident units not loaded ({type(exc).__name__}: {exc}); counts ran without them")
    finally:
        await engine.dispose()
    return Actors(
        admin_id=admin_id, org_admin_id=org_admin_id, org_admin_street=street, units=units, notes=notes
    )


async def _load_units(engine: Any, tree: Tree) -> int:
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from gongjian.core.validators import credit_code_check_char
    from gongjian.resident_units.models import ResidentUnit, UnitType

    types = list(UnitType)
    n = 0
    async with async_sessionmaker(engine)() as session:
        for community in tree.by_depth[2]:
            for _ in range(4):
                n += 1
                body = f"91330100{n:09d}"
                session.add(
                    ResidentUnit(
                        name=f"驻区单位{n}",
                        type=types[n % len(types)],
                        credit_code=body + credit_code_check_char(body),
                        community_id=community.id,
                    )
                )
        await session.commit()
    return n
