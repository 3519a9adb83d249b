"""`make bench`: build a 100k-organization county in a fresh database, then measure

1. subtree listing and counting (the app's materialized-path range against LIKE, a recursive CTE
   and a closure table, with EXPLAIN), see tests/bench/subtree.py;
2. full-stack throughput of GET one organization and a filtered list of 50 at concurrency 32,
   against a bare Starlette + asyncpg app running the same SQL (the JWT check and every statement
   our request sends, in one transaction like ours), see tests/bench/throughput.py.

    python -m tests.bench.run --output bench/results/latest.json [--duration 10] [--profile]

The database is the embedded PostgreSQL under .data/bench, or a fresh database on the server of
BENCH_DATABASE_URL when set; it is dropped at the end (--keep-db keeps it). DATABASE_URL is ignored:
a benchmark never touches the configured database. The verdict against the throughput target is in
the results; --strict also makes a miss exit with status 1.
"""

from __future__ import annotations

import os
import secrets

# Keys for the bench and the servers it starts, before anything reads the settings.
os.environ.setdefault("SECRET_KEY", "bench-" + secrets.token_urlsafe(48))
os.environ.setdefault("PII_KEY", "bench-" + secrets.token_urlsafe(48))
os.environ.pop("DATABASE_URL", None)

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tests.bench import dataset, subtree, throughput

ROOT = dataset.ROOT


def log(msg: str) -> None:
    print(msg, flush=True)


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    cpu = ""
    mem_gib = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {}
    for pkg in (
        "fastapi",
        "starlette",
        "pydantic",
        "sqlalchemy",
        "asyncpg",
        "uvicorn",
        "uvloop",
        "httptools",
        "httpx",
        "python-jose",
        "pgserver",
    ):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=False
            ).stdout.strip()
        )
    except OSError:
        commit, dirty = "", False
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": mem_gib,
        "loadavg_at_start": _loadavg(),
        "packages": versions,
        "git_commit": commit + ("+dirty" if dirty else ""),
    }


def _database_label(db: dataset.Database) -> str:
    if db.embedded:
        return "embedded PostgreSQL (pgserver) under .data/bench"
    parts = urlparse(db.server_dsn)
    return f"BENCH_DATABASE_URL server {parts.hostname or 'socket'}:{parts.port or 5432}, database {db.name}"


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "gongjian issue 2: organization subtree at 100k nodes; full-stack throughput vs bare",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
    }
    log("bench: creating a fresh database and loading 100k organizations ...")
    db = await dataset.create_database()
    try:
        conn = await dataset.connect(db)
        try:
            result["machine"]["postgres"] = await conn.fetchval("SHOW server_version")
            settings_rows = await conn.fetch(
                "SELECT name, current_setting(name) AS value FROM pg_settings WHERE name IN "
                "('shared_buffers', 'work_mem', 'effective_cache_size', 'random_page_cost', 'jit',"
                " 'max_connections')"
            )
            result["machine"]["postgres_settings"] = {r["name"]: r["value"] for r in settings_rows}
        finally:
            await conn.close()
        result["database"] = _database_label(db)
        tree = await dataset.load_tree(db)
        actors = await dataset.load_actors(db, tree)
        conn = await dataset.connect(db)
        try:
            await conn.execute("VACUUM ANALYZE")
            # Statistics are fresh and nothing is written from here on: keep autovacuum workers from
            # starting in the middle of a measurement.
            for schema, table in await conn.fetch(
                "SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN ('public', 'bench')"
            ):
                await conn.execute(f'ALTER TABLE "{schema}"."{table}" SET (autovacuum_enabled = false)')
        finally:
            await conn.close()
        result["dataset"] = {
            "organizations": len(tree.nodes),
            "levels": {dataset.KINDS[d]: len(v) for d, v in tree.by_depth.items()},
            "fanout": dataset.FANOUT,
            "closure_rows": tree.closure_rows,
            "resident_units": actors.units,
            "created_at_order": "depth-first (a county importing its tree street by street)",
            "load_seconds": tree.load_seconds,
            "maintenance": "VACUUM ANALYZE after loading, then autovacuum off for these tables",
            "notes": actors.notes,
        }
        log(f"bench: {len(tree.nodes)} organizations loaded in {sum(tree.load_seconds.values()):.1f}s")
        if not args.skip_subtree:
            log("bench: subtree listing and counting ...")
            result["subtree"] = await subtree.run(db, tree, actors, budget_s=args.subtree_budget, log=log)
            result["machine"]["loadavg_after_subtree"] = _loadavg()
        if not args.skip_http:
            log(
                f"bench: full-stack throughput, concurrency {throughput.CONCURRENCY}, "
                f"{args.duration:g}s per run ..."
            )
            result["throughput"] = await throughput.run(
                db,
                actors,
                tree,
                duration_s=args.duration,
                warmup_s=args.warmup,
                log_dir=ROOT / ".data" / "bench" / "logs",
                log=log,
                profile=args.profile,
                client=args.client,
                workers=args.workers,
            )
            result["machine"]["loadavg_after_throughput"] = _loadavg()
    finally:
        if not args.keep_db:
            await dataset.drop_database(db)
        if db.stop_embedded is not None:
            db.stop_embedded()
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    result["headline"] = headline(result)
    return result


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue asks for, in one place."""
    out: dict[str, Any] = {}
    st = result.get("subtree")
    if st:
        out["subtree_ms"] = {
            f"{c['op']} {c['size']}": {"p50": c["p50_ms"], "p95": c["p95_ms"]}
            for c in st["cases"]
            if c["strategy"] == "path_range"
        }
    tp = result.get("throughput")
    if tp:
        out["throughput_compares"] = (
            "ratio = gongjian / bare_same_sql (a bare Starlette + asyncpg endpoint running the same SQL as"
            " ours: JWT check, then BEGIN, the principal statement, the scoped query, COMMIT); the target"
            " applies to it. ratio_vs_query_only = gongjian / bare_query_only (the scoped query alone, no"
            " token, no transaction), for reference"
        )
        out["uvicorn_workers"] = tp["workers"]
        out["throughput_req_per_s"] = {
            s["scenario"]: {
                "gongjian": s["results"]["gongjian"]["requests_per_s"],
                "bare_same_sql": s["results"]["bare_same_sql"]["requests_per_s"],
                "ratio": s["ratio"],
                "bare_query_only": s["results"]["bare_query_only"]["requests_per_s"],
                "ratio_vs_query_only": s["ratio_vs_query_only"],
            }
            for s in tp["scenarios"]
        }
        out["target_ratio"] = tp["target_ratio"]
        out["min_ratio"] = tp["min_ratio"]
        out["pass"] = tp["pass"]
    return out


def _trip(sql: str) -> str:
    """A round trip in a few words: BEGIN, COMMIT, or the table a SELECT reads first."""
    if sql in ("BEGIN", "COMMIT", "ROLLBACK"):
        return sql
    words = sql.split()
    table = words[words.index("FROM") + 1] if "FROM" in words else "?"
    return f"{words[0]} {table}"


def _cpu(run: dict[str, Any]) -> str:
    c = run.get("cpu_ms_per_request") or {}
    if c.get("app") is None:
        return "n/a"
    return f"{c['app']:.2f}+{c['db']:.2f}" if c.get("db") is not None else f"{c['app']:.2f}"


def summary(result: dict[str, Any]) -> str:
    lines = [
        f"Gongjian benchmarks — {result['timestamp']} — {result['machine']['cpu_model']} "
        f"x{result['machine']['cpus_usable']}, PostgreSQL {result['machine'].get('postgres')}",
        f"database: {result.get('database')}; elapsed {result.get('elapsed_s')}s; "
        f"load average at start {result['machine']['loadavg_at_start']}",
    ]
    ds = result.get("dataset")
    if ds:
        lines.append(f"dataset: {ds['organizations']} organizations {ds['levels']}")
    st = result.get("subtree")
    if st:
        lines.append("")
        lines.append("Subtree (latency per call, ms; 10 subtrees of each size in rotation)")
        lines.append(
            f"  {'size':10} {'op':6} {'strategy':18} {'p50':>8} {'p95':>8}"
            "  access path (last-created subtree)"
        )
        for c in st["cases"]:
            paths = (
                "; ".join(dict.fromkeys(c.get("access_paths", [])))
                if c.get("access_paths")
                else "(SQLAlchemy)"
            )
            lines.append(
                f"  {c['size']:10} {c['op']:6} {c['strategy']:18} {c['p50_ms']:8.3f} {c['p95_ms']:8.3f}  "
                f"{paths[:90]}"
            )
        lines.append('  why materialized path + "C" btree:')
        lines.extend(f"    {j}" for j in st["justification"])
        bad = {k: v for k, v in st["consistency"].items() if not v.startswith("same")}
        lines.append(f"  every strategy returned the app's rows: {bad or 'yes'}")
    tp = result.get("throughput")
    if tp:
        lines.append("")
        ceil = tp["client_ceiling"]
        workers = tp["workers"]
        lines.append(
            f"Throughput (concurrency {tp['concurrency']}, {tp['duration_s']:g}s after {tp['warmup_s']:g}s "
            f"warm-up, uvicorn workers: gongjian {workers['gongjian']}, bare {workers['bare']};"
            f" load generator: {tp['load_generator']})"
        )
        lines.append(
            "  same SQL = bare Starlette + asyncpg doing what our request does: JWT check, BEGIN, principal"
            " statement, query, COMMIT (the target's baseline);"
        )
        lines.append("  query only = the scoped query alone, no token, no transaction (reference)")
        lines.append(
            "  load generator ceiling on a no-database endpoint: "
            + ", ".join(f"{k} {v['requests_per_s']} req/s" for k, v in ceil.items() if isinstance(v, dict))
        )
        lines.append(
            f"  {'scenario':15} {'gongjian':>9} {'same SQL':>9} {'RATIO':>6} {'query only':>10} {'ratio':>6}"
            f"  {'p50/p95 ms ours | same SQL':>26}  {'CPU ms/req ours | same SQL (app+db)':>35}  shape"
        )
        for s in tp["scenarios"]:
            r = s["results"]
            g, b, q = r["gongjian"], r["bare_same_sql"], r["bare_query_only"]
            lat = (
                f"{g['latency']['p50_ms']:.1f}/{g['latency']['p95_ms']:.1f} | "
                f"{b['latency']['p50_ms']:.1f}/{b['latency']['p95_ms']:.1f}"
            )
            lines.append(
                f"  {s['scenario']:15} {g['requests_per_s']:9.1f} {b['requests_per_s']:9.1f} "
                f"{s['ratio']:6.2f} "
                f"{q['requests_per_s']:10.1f} {s['ratio_vs_query_only']:6.2f}  {lat:>26}  "
                f"{_cpu(g):>16} | {_cpu(b):<16}  "
                f"{'same' if tp['shape_check'][s['scenario']]['same'] else 'DIFFERENT'}"
                + (f"  errors {g['errors']}" if g["errors"] else "")
            )
        verdict = "PASS" if tp["pass"] else "FAIL"
        lines.append(
            f"  target ours / bare same SQL >= {tp['target_ratio']}: {verdict} (lowest {tp['min_ratio']});"
            f" ours / bare query only: lowest {min(s['ratio_vs_query_only'] for s in tp['scenarios'])}"
        )
        cpu = [s["cpu_ratio"]["app_plus_db"] for s in tp["scenarios"] if s["cpu_ratio"].get("app_plus_db")]
        if cpu:
            lines.append(
                "  CPU per request, same SQL / ours (app + PostgreSQL backends): "
                + ", ".join(f"{s['scenario']} {s['cpu_ratio']['app_plus_db']}" for s in tp["scenarios"])
            )
            lines.append(
                "  CPU per request, query only / ours (app + PostgreSQL backends): "
                + ", ".join(
                    f"{s['scenario']} {s['cpu_ratio_vs_query_only']['app_plus_db']}" for s in tp["scenarios"]
                )
            )
        lines.append(
            "  new PostgreSQL connections opened per run (pool churn): "
            + ", ".join(
                f"{s['scenario']} {s['results']['gongjian'].get('db_connections_opened')}"
                f" vs same SQL {s['results']['bare_same_sql'].get('db_connections_opened')}"
                for s in tp["scenarios"]
            )
        )
        lines.append(
            "  round trips per request (ours, replayed by same SQL): "
            + ", ".join(f"{k} {' / '.join(_trip(t) for t in v['round_trips'])}" for k, v in tp["sql"].items())
        )
        fl = tp.get("framework_floor")
        if fl:
            lines.append(
                "  framework floor, GET /healthz (no auth, no database): gongjian "
                f"{fl['gongjian']['requests_per_s']}, bare {fl['bare']['requests_per_s']} req/s,"
                f" ratio {fl['ratio']}"
            )
        hx = tp.get("httpx_cross_check")
        if hx:
            lines.append(
                f"  same {hx['scenario']} with httpx.AsyncClient as load generator: gongjian "
                f"{hx['gongjian']['requests_per_s']}, bare same SQL {hx['bare_same_sql']['requests_per_s']}"
                f" req/s, ratio {hx['ratio']}"
            )
        for prof in (tp.get("profile") or {}).values():
            if "hotspots" not in prof:
                lines.append(f"  profile: {json.dumps(prof, ensure_ascii=False)}")
                continue
            lines.append(
                f"  profile of the app serving {prof['scenario']} (py-spy, {prof['samples']} samples):"
            )
            lines.append(
                "    self time by library: " + ", ".join(f"{k} {v}%" for k, v in prof["by_area"].items())
            )
            lines.extend(f"    {v:5.1f}%  {k}" for k, v in prof["hotspots"].items())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per throughput run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each run")
    parser.add_argument(
        "--subtree-budget", type=float, default=1.0, help="seconds per subtree case (≥30 calls)"
    )
    parser.add_argument("--skip-subtree", action="store_true")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator (see tests/bench/loadgen.py)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=throughput.UVICORN_WORKERS,
        help="uvicorn worker processes of each server (the same for both; default 1)",
    )
    parser.add_argument("--profile", action="store_true", help="sample the app with py-spy (if installed)")
    parser.add_argument("--keep-db", action="store_true", help="keep the benchmark database")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when the target is missed")
    args = parser.parse_args(argv)

    try:
        import uvloop  # the load generator is a Python client: give it the fast loop uvicorn uses too
    except ImportError:
        result = asyncio.run(bench(args))
    else:
        result = uvloop.run(bench(args))
    first = ("benchmark", "timestamp", "headline")
    result = {
        **{k: result[k] for k in first if k in result},
        **{k: v for k, v in result.items() if k not in first},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(args.output.suffix + ".tmp")
    tmp.write_text(json.dumps(result, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(args.output)
    print()
    print(summary(result))
    print(f"\nresults written to {args.output}")
    tp = result.get("throughput")
    return 1 if args.strict and tp is not None and not tp["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
