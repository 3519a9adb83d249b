"""Subtree listing and counting at 100k organizations.

For subtrees of three sizes (a street ~1/10 of the tree, a community ~1/100, a branch of 11) we time:

- `api_orm`: the app's own code, through SQLAlchemy, as `GET /organizations?under=` runs it:
  `paginate_by_key(service.list_query(admin, under=org), Organization.path)` (the `in_subtree`
  range on `path`, in tree order: ORDER BY path LIMIT 51) and `service.counts(org)`;
- `path_range`: the very statements the app sent (captured), replayed with asyncpg prepared statements;
- alternatives on the same data, in the same run: `LIKE 'prefix%'` with the prefix inlined
  (custom plan) and bound as a parameter (what a prepared statement does), a recursive CTE on
  `parent_id`, and a closure table (ancestor, descendant, distance);
- `path_created_order` (listing only): the same range ordered by (created_at, id) instead, the
  order the list had before it moved to tree order, to show what that order costs on a large subtree.

Each case rotates over 10 subtrees of its size. EXPLAIN (ANALYZE, BUFFERS) of every case is kept,
for the last-created subtree of each size, plus the generic plans of the app's statements.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from tests.bench.common import capture_sql, latency_summary, plan_scans, timed_loop
from tests.bench.dataset import Actors, Database, Node, Tree, connect

SIZES = (("street", 1), ("community", 2), ("branch", 4))
SAMPLES = 10
PAGE = 50

SqlArgs = tuple[str, tuple[Any, ...]]


@dataclass
class Strategy:
    name: str
    op: str  # list | count
    build: Callable[[Node], SqlArgs]
    note: str


def _upper(path: str) -> str:
    return path[:-1] + "0"


def strategies(columns: str, captured: dict[tuple[str, uuid.UUID], SqlArgs]) -> list[Strategy]:
    order = f"ORDER BY organizations.path LIMIT {PAGE + 1}"  # the app's tree order
    cte = (
        "WITH RECURSIVE sub(id, kind) AS ("
        " SELECT id, kind FROM organizations WHERE parent_id = $1"
        " UNION ALL SELECT o.id, o.kind FROM organizations o JOIN sub ON o.parent_id = sub.id) "
    )
    return [
        Strategy(
            "path_range",
            "list",
            lambda n: captured[("list", n.id)],
            'the app\'s statement: path >= $1 AND path < $2 ("C" collation btree), ORDER BY path, prepared',
        ),
        Strategy(
            "path_created_order",
            "list",
            lambda n: (
                f"SELECT {columns} FROM organizations WHERE organizations.path >= $1"
                f" AND organizations.path < $2 AND organizations.id != $3"
                f" ORDER BY organizations.created_at, organizations.id LIMIT {PAGE + 1}",
                (n.path, _upper(n.path), n.id),
            ),
            "same range, ordered by (created_at, id) instead of path (the list's former order)",
        ),
        Strategy(
            "like_literal",
            "list",
            lambda n: (
                f"SELECT {columns} FROM organizations WHERE organizations.path LIKE '{n.path}%'"
                f" AND organizations.id != '{n.id}' {order}",
                (),
            ),
            "path LIKE 'prefix%' with the prefix inlined (planned for that prefix)",
        ),
        Strategy(
            "like_param",
            "list",
            lambda n: (
                f"SELECT {columns} FROM organizations WHERE organizations.path LIKE $1"
                f" AND organizations.id != $2 {order}",
                (n.path + "%", n.id),
            ),
            "path LIKE $1 as a prepared statement binds it",
        ),
        Strategy(
            "recursive_cte",
            "list",
            lambda n: (
                f"{cte}SELECT {columns} FROM organizations"
                f" WHERE organizations.id IN (SELECT id FROM sub) {order}",
                (n.id,),
            ),
            "WITH RECURSIVE over parent_id (btree on parent_id)",
        ),
        Strategy(
            "closure_table",
            "list",
            lambda n: (
                f"SELECT {columns} FROM organizations JOIN bench.org_closure c"
                f" ON c.descendant_id = organizations.id"
                f" WHERE c.ancestor_id = $1 AND c.distance > 0 {order}",
                (n.id,),
            ),
            "closure table (ancestor_id, descendant_id) primary key, joined to organizations",
        ),
        Strategy(
            "path_range",
            "count",
            lambda n: captured[("count", n.id)],
            "the app's statement from service.counts: kind, count(*) over the path range",
        ),
        Strategy(
            "like_literal",
            "count",
            lambda n: (
                "SELECT organizations.kind, count(*) AS count_1 FROM organizations"
                f" WHERE organizations.path LIKE '{n.path}%' AND organizations.id != '{n.id}'"
                " GROUP BY organizations.kind",
                (),
            ),
            "path LIKE 'prefix%' inlined",
        ),
        Strategy(
            "like_param",
            "count",
            lambda n: (
                "SELECT organizations.kind, count(*) AS count_1 FROM organizations"
                " WHERE organizations.path LIKE $1 AND organizations.id != $2"
                " GROUP BY organizations.kind",
                (n.path + "%", n.id),
            ),
            "path LIKE $1 bound",
        ),
        Strategy(
            "recursive_cte",
            "count",
            lambda n: (f"{cte}SELECT kind, count(*) FROM sub GROUP BY kind", (n.id,)),
            "WITH RECURSIVE over parent_id",
        ),
        Strategy(
            "closure_table",
            "count",
            lambda n: (
                "SELECT o.kind, count(*) FROM bench.org_closure c JOIN organizations o"
                " ON o.id = c.descendant_id WHERE c.ancestor_id = $1 AND c.distance > 0"
                " GROUP BY o.kind",
                (n.id,),
            ),
            "closure table",
        ),
    ]


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool | int):
        return str(value)
    if isinstance(value, uuid.UUID):
        return f"'{value}'::uuid"
    text = str(value).replace("'", "''")
    return f"'{text}'"


async def _explain(conn: asyncpg.Connection, sql: str, args: tuple[Any, ...]) -> list[str]:
    rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
    return [r[0] for r in rows]


async def _explain_generic(conn: asyncpg.Connection, sql: str, args: tuple[Any, ...]) -> list[str]:
    """The plan a prepared statement gets once PostgreSQL switches it to a generic plan."""
    async with conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE bench_generic AS {sql}")
        try:
            call = "EXECUTE bench_generic" + (f"({', '.join(_literal(a) for a in args)})" if args else "")
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + call)
        finally:
            await conn.execute("DEALLOCATE bench_generic")
    return [r[0] for r in rows]


def _normalise_count(rows: list[Any]) -> dict[str, int]:
    return {str(r[0]): int(r[1]) for r in rows}


async def run(
    db: Database, tree: Tree, actors: Actors, *, budget_s: float, log: Callable[[str], None]
) -> dict[str, Any]:
    from gongjian.auth.service import load_grants
    from gongjian.core import db as core_db
    from gongjian.core.access import Principal
    from gongjian.core.pagination import PageParams, paginate_by_key
    from gongjian.organizations import service
    from gongjian.organizations.models import Organization

    engine = core_db.init_engine(db.url, pool_size=2, max_overflow=0)
    sm = core_db.sessionmaker()
    conn = await connect(db)
    out: dict[str, Any] = {"sizes": {}, "cases": [], "explain": {}, "generic_plans": {}, "consistency": {}}
    try:
        async with sm() as s:
            admin = Principal(
                kind="user",
                id=actors.admin_id,
                name="bench_admin",
                grants=await load_grants(s, actors.admin_id),
            )
        samples = {label: tree.sample(depth, SAMPLES, seed=depth) for label, depth in SIZES}
        orgs: dict[uuid.UUID, Organization] = {}
        captured: dict[tuple[str, uuid.UUID], SqlArgs] = {}
        app_results: dict[tuple[str, uuid.UUID], Any] = {}
        async with sm() as s:
            for nodes in samples.values():
                for node in nodes:
                    org = await service.get(s, admin, node.id)
                    orgs[node.id] = org
                    with capture_sql(engine) as cap:
                        rows, _ = await paginate_by_key(
                            s, service.list_query(admin, under=org), Organization.path, PageParams(limit=PAGE)
                        )
                    captured[("list", node.id)] = cap[-1]
                    app_results[("list", node.id)] = [r.id for r in rows]
                    with capture_sql(engine) as cap:
                        counts = await service.counts(s, org)
                    grouped = [c for c in cap if "GROUP BY" in c[0]]
                    captured[("count", node.id)] = grouped[0]
                    app_results[("count", node.id)] = {**counts["by_kind"]}
        columns = captured[("list", samples["branch"][0].id)][0].split("FROM organizations")[0]
        columns = columns.removeprefix("SELECT").strip()
        for label, nodes in samples.items():
            sizes = sorted(n.size - 1 for n in nodes)
            out["sizes"][label] = {
                "subtrees": len(nodes),
                "descendants_min": sizes[0],
                "descendants_max": sizes[-1],
            }

        async def api_list(node: Node) -> None:
            async with sm() as s:
                await paginate_by_key(
                    s,
                    service.list_query(admin, under=orgs[node.id]),
                    Organization.path,
                    PageParams(limit=PAGE),
                )

        async def api_count(node: Node) -> None:
            async with sm() as s:
                await service.counts(s, orgs[node.id])

        for label, nodes in samples.items():
            rep = max(nodes, key=lambda n: n.seq)  # the last created: worst case for ORDER BY created_at
            for op, fn in (("list", api_list), ("count", api_count)):
                for node in nodes:  # warm-up
                    await fn(node)
                secs = await timed_loop(
                    lambda i, fn=fn, nodes=nodes: fn(nodes[i % len(nodes)]),
                    min_iter=30,
                    max_iter=400,
                    budget_s=budget_s,
                )
                out["cases"].append(
                    {
                        "size": label,
                        "op": op,
                        "strategy": "api_orm",
                        "note": "the app's service code through SQLAlchemy (session per call)",
                        **latency_summary(secs),
                    }
                )
            for strat in strategies(columns, captured):
                prepared: dict[str, Any] = {}
                per_node: list[tuple[Node, Any, tuple[Any, ...]]] = []
                mismatches = 0
                for node in nodes:
                    sql, args = strat.build(node)
                    if sql not in prepared:
                        prepared[sql] = await conn.prepare(sql)
                    stmt = prepared[sql]
                    per_node.append((node, stmt, args))
                    rows = await stmt.fetch(*args)  # warm-up, and the answer must be the app's
                    got: Any = (
                        [r["id"] for r in rows][:PAGE] if strat.op == "list" else _normalise_count(rows)
                    )
                    if got != app_results[(strat.op, node.id)]:
                        mismatches += 1
                if strat.name != "path_created_order":  # a different order by design
                    out["consistency"][f"{label}.{strat.op}.{strat.name}"] = (
                        "same rows as the app"
                        if not mismatches
                        else f"{mismatches} of {len(nodes)} subtrees differ"
                    )

                async def call(i: int, per_node: list[tuple[Node, Any, tuple[Any, ...]]] = per_node) -> None:
                    _, stmt, args = per_node[i % len(per_node)]
                    await stmt.fetch(*args)

                secs = await timed_loop(call, min_iter=30, max_iter=400, budget_s=budget_s)
                cache = await conn.fetch(
                    "SELECT sum(generic_plans) AS g, sum(custom_plans) AS c FROM pg_prepared_statements"
                    " WHERE name = ANY($1::text[])",
                    [p.get_name() for p in prepared.values()],
                )
                sql, args = strat.build(rep)
                plan = await _explain(conn, sql, args)
                key = f"{label}.{strat.op}.{strat.name}"
                out["explain"][key] = {"subtree_path": rep.path, "descendants": rep.size - 1, "plan": plan}
                out["cases"].append(
                    {
                        "size": label,
                        "op": strat.op,
                        "strategy": strat.name,
                        "note": strat.note,
                        **latency_summary(secs),
                        "access_paths": plan_scans(plan),
                        "plan_cache": {"generic_plans": cache[0]["g"], "custom_plans": cache[0]["c"]},
                    }
                )
            log(f"  subtree {label}: done")
        # The generic plans (what a prepared statement may settle on) of the app's range form and of LIKE $1.
        street = max(samples["street"], key=lambda n: n.seq)
        for strat in strategies(columns, captured):
            if strat.name in ("path_range", "like_param"):
                sql, args = strat.build(street)
                plan = await _explain_generic(conn, sql, args)
                out["generic_plans"][f"street.{strat.op}.{strat.name}"] = {
                    "plan": plan,
                    "access_paths": plan_scans(plan),
                }
        out["storage"] = dict(
            await conn.fetchrow(
                """SELECT pg_relation_size('organizations') AS organizations_heap_bytes,
                      pg_relation_size('uq_organizations_path') AS path_index_bytes,
                      pg_relation_size('ix_organizations_parent_id') AS parent_id_index_bytes,
                      pg_total_relation_size('bench.org_closure') AS closure_table_total_bytes,
                      (SELECT count(*) FROM bench.org_closure) AS closure_rows,
                      (SELECT count(*) FROM organizations) AS organizations"""
            )
        )
    finally:
        await conn.close()
        await core_db.dispose_engine()
    out["justification"] = justify(out)
    return out


def _case(out: dict[str, Any], size: str, op: str, strategy: str) -> dict[str, Any] | None:
    for c in out["cases"]:
        if (c["size"], c["op"], c["strategy"]) == (size, op, strategy):
            return dict(c)
    return None


def justify(out: dict[str, Any]) -> list[str]:
    """Plain sentences drawn from this run's figures."""
    lines: list[str] = []
    for op in ("count", "list"):
        for size, _ in SIZES:
            base = _case(out, size, op, "path_range")
            if base is None:
                continue
            parts = []
            for other in ("like_literal", "like_param", "recursive_cte", "closure_table"):
                c = _case(out, size, op, other)
                if c is not None and base["p50_ms"] > 0:
                    parts.append(f"{other} {c['p50_ms']:.2f} ms ({c['p50_ms'] / base['p50_ms']:.1f}x)")
            lines.append(f"{op} {size}: path range p50 {base['p50_ms']:.2f} ms; " + ", ".join(parts))
    st = out.get("storage", {})
    if st:
        lines.append(
            f"storage: path btree {st['path_index_bytes'] / 2**20:.1f} MiB vs closure table "
            f"{st['closure_table_total_bytes'] / 2**20:.1f} MiB ({st['closure_rows']} rows for "
            f"{st['organizations']} organizations), and a move rewrites one row per descendant with a path, "
            "(depth x descendants) rows with a closure table"
        )
    gen = out.get("generic_plans", {})
    like = gen.get("street.count.like_param", {}).get("access_paths", [])
    rng = gen.get("street.count.path_range", {}).get("access_paths", [])
    if like or rng:
        lines.append(
            f"generic plans (what a prepared statement may switch to): path range -> {rng}; LIKE $1 -> {like}"
        )
    lines.extend(_order_by_note(out))
    return lines


def _order_by_note(out: dict[str, Any]) -> list[str]:
    """Tree order against the former (created_at, id) order on a large subtree: which index each
    plan walks, and at what cost."""
    base = _case(out, "street", "list", "path_range")
    created = _case(out, "street", "list", "path_created_order")
    plan = out.get("explain", {}).get("street.list.path_created_order")
    if base is None:
        return []
    line = (
        f"list street: the app pages in tree order (ORDER BY path), one walk of the path index that stops"
        f" after {PAGE + 1} rows: p50 {base['p50_ms']:.2f} ms, p95 {base['p95_ms']:.2f} ms"
    )
    if created is not None:
        line += (
            f"; the same range ordered by (created_at, id) takes p50 {created['p50_ms']:.2f} ms,"
            f" p95 {created['p95_ms']:.2f} ms"
        )
        if plan is not None:
            text = "\n".join(plan["plan"])
            removed = re.findall(r"Rows Removed by Filter: (\d+)", text)
            if "ix_organizations_created_at" in text:
                line += (
                    f" (the planner walks ix_organizations_created_at and filters on path,"
                    f" {removed[0] if removed else '?'} rows skipped for the last-created street)"
                )
            else:
                line += " (a path range scan + top-N sort)"
    return [line]
