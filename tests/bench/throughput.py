"""Full-stack throughput: Gongjian (uvicorn + FastAPI + SQLAlchemy) against a bare Starlette + asyncpg app.

Both run as uvicorn subprocesses with the same options and worker count, against the same 100k-node
database. Before the runs, each request is sent once through the real app in-process and every
round trip its engine makes is recorded (transaction boundaries, statements and bound values); the
bare app replays exactly those (see bare_app.py) and answers the same JSON, ETag and next_cursor.
The load generator (tests/bench/loadgen.py) keeps 32 requests in flight, warms up, then counts for
a fixed duration; it also records the CPU time the server process and its PostgreSQL backends spent
per request.

Baselines, in the same run:
- `bare_same_sql`: the JWT verified, then the app's round trips replayed (BEGIN, the principal
  statement, the scoped query, COMMIT). "A bare endpoint that runs the same SQL": the issue's
  target (ours >= 0.5 of it) is measured against this one.
- `bare_query_only`: only the scoped organization query, no token, no transaction; a lower bound
  reported next to it.

Scenarios: GET one organization, and GET a list of 50 filtered by kind (tree order), each as a
platform admin (scope = everything) and as an org_admin of one street (scope = a path range).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.bench.common import capture_round_trips
from tests.bench.dataset import ROOT, Actors, Database, Tree, connect
from tests.bench.loadgen import run_load

CONCURRENCY = 32
TARGET_RATIO = 0.5
LIST_QUERY = "kind=branch&limit=50"
# Worker processes per server (`--workers`, same for both): 1 by default, so the ratio compares what one
# process of each serves; the machine's cores are shared with PostgreSQL and the load generator.
UVICORN_WORKERS = 1
UVICORN_OPTS = [
    "--no-access-log",
    "--log-level",
    "warning",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
]


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    base: str
    log_path: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    name: str, app_ref: str, env: dict[str, str], log_dir: Path, workers: int = UVICORN_WORKERS
) -> Server:
    port = _free_port()
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app_ref,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            *UVICORN_OPTS,
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return Server(name=name, proc=proc, base=f"http://127.0.0.1:{port}", log_path=log_path)


async def wait_ready(server: Server, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(base_url=server.base, timeout=2) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(
                    f"{server.name} exited: {server.log_path.read_text(errors='replace')[-2000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(
        f"{server.name} not ready after {within_s}s: {server.log_path.read_text(errors='replace')[-2000:]}"
    )


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGINT)
        try:
            server.proc.wait(15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(5)


class CpuMeter:
    """CPU seconds used by the server process, by the PostgreSQL backends of our database, and by
    this process (the load generator): figures that hold even when other work shares the machine.

    Backends that exit during a run (a pool closing connections) are counted through the
    postmaster's reaped-children times when the server is the embedded one, which serves only us."""

    def __init__(
        self, server_pid: int | None, postmaster_pid: int | None, db_name: str, *, count_reaped: bool
    ) -> None:
        try:
            import psutil  # a dependency of pgserver
        except ImportError:  # pragma: no cover - psutil ships with pgserver
            psutil = None
        self.psutil = psutil
        self.server_pid = server_pid
        self.postmaster_pid = postmaster_pid
        self.marker = f" {db_name} "
        self.count_reaped = count_reaped

    def _proc_cpu(self, pid: int) -> float:
        """The server process and its worker processes (uvicorn --workers N forks them)."""
        proc = self.psutil.Process(pid)
        total = 0.0
        for p in (proc, *proc.children(recursive=True)):
            with contextlib.suppress(Exception):
                t = p.cpu_times()
                total += float(t.user + t.system)
        return total

    def sample(self) -> dict[str, float | None]:
        import resource

        me = resource.getrusage(resource.RUSAGE_SELF)
        out: dict[str, float | None] = {"client": me.ru_utime + me.ru_stime, "app": None, "db": None}
        if self.psutil is None:
            return out
        with contextlib.suppress(Exception):
            if self.server_pid:
                out["app"] = self._proc_cpu(self.server_pid)
        with contextlib.suppress(Exception):
            if self.postmaster_pid:
                total = 0.0
                if self.count_reaped:
                    pm = self.psutil.Process(self.postmaster_pid).cpu_times()
                    total += pm.children_user + pm.children_system
                for child in self.psutil.Process(self.postmaster_pid).children():
                    with contextlib.suppress(Exception):
                        if self.marker in " ".join(child.cmdline()) + " ":
                            t = child.cpu_times()
                            total += t.user + t.system
                out["db"] = total
        return out


def _param_spec(params: tuple[Any, ...], req: dict[str, str]) -> list[dict[str, Any]]:
    """How each bound value comes from the request: {"req": name} when it is a value taken from
    the request (the token's subject, the path's id, the kind filter), else {"const": value}."""
    mapped: list[dict[str, Any]] = []
    for v in params:
        key = req.get(str(v))
        mapped.append({"req": key} if key else {"const": v if isinstance(v, int | float | str) else str(v)})
    return mapped


async def _capture(db: Database, actors: Actors, tree: Tree) -> dict[str, Any]:
    """What the real app sends to PostgreSQL for each principal and operation, and the tokens.

    The requests go through the app itself (gongjian.main:app, in-process over ASGI) and every
    round trip its engine drives is recorded: transaction boundaries and statements with their
    bound values, in order. The bare app replays exactly that list (see bare_app.py)."""
    from gongjian.core import db as core_db
    from gongjian.core.security import create_access_token
    from gongjian.main import app

    engine = core_db.init_engine(db.url, pool_size=1, max_overflow=0)
    street = actors.org_admin_street
    in_street = [n for n in tree.nodes if n.path.startswith(street.path)]
    rnd = random.Random(7)
    who = {
        "admin": (actors.admin_id, "platform_admin", rnd.sample(tree.nodes, 200)),
        "org_admin": (actors.org_admin_id, "org_admin", rnd.sample(in_street, 200)),
    }
    out: dict[str, Any] = {"routes": {}, "tokens": {}, "ids": {}, "bodies": {}}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://capture"
        ) as client:
            for name, (user_id, role, nodes) in who.items():
                token, _ = create_access_token(subject=str(user_id), kind="user", roles=[role], ttl=3600)
                headers = {"Authorization": f"Bearer {token}"}
                sample = nodes[0]
                routes: dict[str, Any] = {}
                for op, url, req in (
                    (
                        "get",
                        f"/api/v1/organizations/{sample.id}",
                        {str(user_id): "sub", str(sample.id): "org_id"},
                    ),
                    ("list", f"/api/v1/organizations?{LIST_QUERY}", {str(user_id): "sub", "branch": "kind"}),
                ):
                    await client.get(url, headers=headers)  # once, so nothing first-time is recorded
                    with capture_round_trips(engine) as cap:
                        resp = await client.get(url, headers=headers)
                    if resp.status_code != 200:
                        raise RuntimeError(f"capture {name} {op}: {resp.status_code} {resp.text[:300]}")
                    statements = [
                        (sql, prm) for sql, prm in cap if sql not in ("BEGIN", "COMMIT", "ROLLBACK")
                    ]
                    routes[op] = {
                        # Every round trip of the request, in order, as the app sent it.
                        "round_trips": [{"sql": sql, "params": _param_spec(prm, req)} for sql, prm in cap],
                        "statements": len(statements),
                        # The statement that reads the organization(s): the request's last.
                        "query": {"sql": statements[-1][0], "params": _param_spec(statements[-1][1], req)},
                    }
                    out["bodies"][f"{op}.{name}"] = resp.json()
                out["tokens"][name] = token
                out["ids"][name] = [str(n.id) for n in nodes]
                out["routes"][name] = routes
    finally:
        await core_db.dispose_engine()
    return out


async def _postmaster_pid(db: Database) -> int | None:
    """The PostgreSQL server process, when it runs on this machine and we may see it."""
    conn = await connect(db)
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        try:
            import psutil

            parent = psutil.Process(backend).parent()  # while our backend is still there
            return parent.pid if parent is not None else None
        except Exception:
            return None
    finally:
        await conn.close()


async def _db_counters(conn: Any) -> dict[str, int]:
    """Connections opened to our database so far (pg_stat_database; flushed within about a second)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    row = await conn.fetchrow("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
    return {k: int(v) for k, v in dict(row).items()}


def _cpu_ratio(bare: dict[str, Any], ours: dict[str, Any]) -> dict[str, float | None]:
    """Bare CPU per request / ours (app process, and app + PostgreSQL): the throughput ratio one
    would expect on a machine where the server is the only thing running."""
    b, o = bare.get("cpu_ms_per_request") or {}, ours.get("cpu_ms_per_request") or {}
    out: dict[str, float | None] = {"app": None, "app_plus_db": None}
    if b.get("app") and o.get("app"):
        out["app"] = round(b["app"] / o["app"], 3)
        if b.get("db") is not None and o.get("db") is not None:
            out["app_plus_db"] = round((b["app"] + b["db"]) / (o["app"] + o["db"]), 3)
    return out


def _same_body(a: httpx.Response, b: httpx.Response) -> tuple[bool, str]:
    ja, jb = a.json(), b.json()
    if ja == jb:
        etag_ok = a.headers.get("etag") == b.headers.get("etag")
        return etag_ok, "identical JSON" + ("" if etag_ok else " but ETag differs")
    if isinstance(ja, dict) and isinstance(jb, dict):
        diff = sorted(k for k in set(ja) | set(jb) if ja.get(k) != jb.get(k))
        return False, f"differs in {diff[:10]}"
    return False, "differs"


SCENARIOS = (("get", "admin"), ("list", "admin"), ("get", "org_admin"), ("list", "org_admin"))


def _paths(op: str, principal: str, ids: list[str]) -> dict[str, list[str]]:
    if op == "get":
        return {
            "gongjian": [f"/api/v1/organizations/{i}" for i in ids],
            "bare_same_sql": [f"/full/{principal}/organizations/{i}" for i in ids],
            "bare_query_only": [f"/bare/{principal}/organizations/{i}" for i in ids],
        }
    return {
        "gongjian": [f"/api/v1/organizations?{LIST_QUERY}"],
        "bare_same_sql": [f"/full/{principal}/organizations?{LIST_QUERY}"],
        "bare_query_only": [f"/bare/{principal}/organizations?{LIST_QUERY}"],
    }


async def run(
    db: Database,
    actors: Actors,
    tree: Tree,
    *,
    duration_s: float,
    warmup_s: float,
    log_dir: Path,
    log: Any,
    profile: bool,
    client: str,
    workers: int = UVICORN_WORKERS,
) -> dict[str, Any]:
    from gongjian.core.config import get_settings
    from gongjian.organizations.schemas import OrganizationOut

    settings = get_settings()
    cap = await _capture(db, actors, tree)
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    bare_config = {
        "dsn": db.dsn,
        "pool_min": settings.db_pool_size,
        "pool_max": settings.db_pool_size + settings.db_max_overflow,
        "fields": list(OrganizationOut.model_fields),
        "routes": cap["routes"],
        "auth": {
            "key": settings.signing_key,
            "audience": settings.jwt_audience,
            "issuer": settings.jwt_issuer,
        },
    }
    config_path = log_dir / "bare_config.json"
    config_path.write_text(
        json.dumps(bare_config, ensure_ascii=False, indent=1, default=str), encoding="utf-8"
    )
    config_path.chmod(0o600)

    base_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BENCH_DATABASE_URL")}
    base_env.update(
        {
            "SECRET_KEY": settings.signing_key,
            "PII_KEY": settings.pii_encryption_key,
            "ENVIRONMENT": "production",
            "LOAD_DEMO": "false",
            "DATA_DIR": str(log_dir / "app-data"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    real = start_server(
        "gongjian", "gongjian.main:app", {**base_env, "DATABASE_URL": db.url}, log_dir, workers
    )
    bare = start_server(
        "bare",
        "tests.bench.bare_app:app",
        {**base_env, "BENCH_BARE_CONFIG": str(config_path)},
        log_dir,
        workers,
    )
    servers = {"gongjian": real, "bare": bare, "bare_same_sql": bare, "bare_query_only": bare}
    out: dict[str, Any] = {
        "concurrency": CONCURRENCY,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "workers": {"gongjian": workers, "bare": workers},
        "uvicorn_options": UVICORN_OPTS,
        "load_generator": client,
        "wrk_installed": shutil.which("wrk") is not None,
        "db_pool": {
            "gongjian": f"SQLAlchemy pool_size={settings.db_pool_size}"
            f" max_overflow={settings.db_max_overflow} (no pre-ping), per worker",
            "bare": f"asyncpg pool min={bare_config['pool_min']} max={bare_config['pool_max']}, per worker;"
            " no reset query on release (SQLAlchemy's pool sends none either)",
        },
        "list_filter": LIST_QUERY,
        "cpu_note": "cpu_ms_per_request: CPU time of the server process (app), of PostgreSQL backends serving"
        " our database (db; with the embedded server also backends that exited during the run), and of the"
        " load generator (client), divided by the requests answered in the measured window",
        "what_each_server_does": {
            "gongjian": "the real app (uvicorn + FastAPI + SQLAlchemy): middleware, bearer JWT, the principal"
            " loaded in the request's transaction, the scoped query, pydantic response, ETag",
            "bare_same_sql": "bare Starlette + asyncpg running the same SQL: the JWT verified with"
            " python-jose and the app's options, then every round trip the app made for that request"
            " replayed in order (BEGIN, the principal statement, the scoped query, COMMIT), same JSON"
            " and ETag. The target is measured against this one",
            "bare_query_only": "bare Starlette + asyncpg running only the request's last statement (the"
            " scoped organization query) outside a transaction, no token: a lower bound, reported so"
            " nothing is hidden, not what the target compares with",
        },
        "headline_compares": "gongjian / bare_same_sql requests per second, each scenario; target >= "
        f"{TARGET_RATIO} for every scenario. ratio_vs_query_only is gongjian / bare_query_only",
        "scenarios": [],
        "shape_check": {},
        "sql": {},
    }

    def load(
        server: str,
        paths: list[str],
        headers: dict[str, str],
        *,
        using: str = client,
        duration: float = duration_s,
        warmup: float = warmup_s,
    ) -> Any:
        return run_load(
            servers[server].base,
            paths,
            headers,
            concurrency=CONCURRENCY,
            warmup_s=warmup,
            duration_s=duration,
            client=using,
            meter=meters[server],
        )

    stats = None
    try:
        await asyncio.gather(wait_ready(real), wait_ready(bare))
        postmaster = await _postmaster_pid(db)
        stats = await connect(db)
        meters = {
            "gongjian": CpuMeter(real.proc.pid, postmaster, db.name, count_reaped=db.embedded),
            "bare": CpuMeter(bare.proc.pid, postmaster, db.name, count_reaped=db.embedded),
        }
        meters["bare_same_sql"] = meters["bare_query_only"] = meters["bare"]
        # What the database spends with no load at all (background processes, idle connections).
        idle_start = meters["gongjian"].sample()
        await asyncio.sleep(3)
        idle_end = meters["gongjian"].sample()
        out["idle_cpu_cores"] = {
            k: round((idle_end[k] - idle_start[k]) / 3, 3)  # type: ignore[operator]
            for k in ("app", "db")
            if idle_start[k] is not None and idle_end[k] is not None
        }
        log(f"  idle CPU (cores): {out['idle_cpu_cores']}")
        out["client_ceiling"] = {"what": "each load generator against the bare app's /healthz (no database)"}
        for using in dict.fromkeys((client, "raw", "httpx")):
            ceiling = await load(
                "bare", ["/healthz"], {}, using=using, duration=min(5.0, duration_s), warmup=1
            )
            out["client_ceiling"][using] = ceiling
            log(f"  client ceiling ({using}): {ceiling['requests_per_s']} req/s")
        # The framework floor: /healthz of each server (no auth, no database). No endpoint of ours can
        # reach a better ratio than this one.
        floor = {
            name: await load(name, ["/healthz"], {}, duration=min(5.0, duration_s), warmup=1)
            for name in ("gongjian", "bare")
        }
        out["framework_floor"] = {
            "what": "GET /healthz on each server: middleware, routing and response, no auth, no database",
            **floor,
            "ratio": round(
                floor["gongjian"]["requests_per_s"] / max(floor["bare"]["requests_per_s"], 1e-9), 3
            ),
        }
        log(
            f"  /healthz: gongjian {floor['gongjian']['requests_per_s']},"
            f" bare {floor['bare']['requests_per_s']} req/s, ratio {out['framework_floor']['ratio']}"
        )
        for op, principal in SCENARIOS:
            key = f"{op}.{principal}"
            headers = {"Authorization": f"Bearer {cap['tokens'][principal]}"}
            paths = _paths(op, principal, cap["ids"][principal])
            route = cap["routes"][principal][op]
            out["sql"][key] = {
                "round_trips": [t["sql"] for t in route["round_trips"]],
                "statements": route["statements"],
                "query": route["query"]["sql"],
            }
            out["shape_check"][key] = await _shape_check(servers, paths, headers)
            if not out["shape_check"][key]["gongjian_status"] == 200:
                raise RuntimeError(f"{key}: the app answered {out['shape_check'][key]}")
            results = {}
            for label in ("gongjian", "bare_same_sql", "bare_query_only"):
                before = await _db_counters(stats)
                results[label] = await load(label, paths[label], headers)
                await asyncio.sleep(1.1)  # statistics reach the shared counters within a second
                after = await _db_counters(stats)
                results[label]["db_connections_opened"] = after["sessions"] - before["sessions"]
                results[label]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            ours = results["gongjian"]["requests_per_s"]
            ratio = ours / max(results["bare_same_sql"]["requests_per_s"], 1e-9)
            ratio_query_only = ours / max(results["bare_query_only"]["requests_per_s"], 1e-9)
            out["scenarios"].append(
                {
                    "scenario": key,
                    "results": results,
                    "ratio": round(ratio, 3),
                    "ratio_vs_query_only": round(ratio_query_only, 3),
                    "cpu_ratio": _cpu_ratio(results["bare_same_sql"], results["gongjian"]),
                    "cpu_ratio_vs_query_only": _cpu_ratio(results["bare_query_only"], results["gongjian"]),
                    "pass": ratio >= TARGET_RATIO,
                }
            )
            log(
                f"  {key}: gongjian {ours} req/s, bare same SQL "
                f"{results['bare_same_sql']['requests_per_s']} req/s (ratio {ratio:.2f}), bare query only "
                f"{results['bare_query_only']['requests_per_s']} req/s (ratio {ratio_query_only:.2f})"
            )
        if client != "httpx":
            # What the same comparison reads with httpx.AsyncClient as the load generator.
            key = "get.admin"
            headers = {"Authorization": f"Bearer {cap['tokens']['admin']}"}
            paths = _paths("get", "admin", cap["ids"]["admin"])
            g = await load("gongjian", paths["gongjian"], headers, using="httpx")
            b = await load("bare_same_sql", paths["bare_same_sql"], headers, using="httpx")
            out["httpx_cross_check"] = {
                "scenario": key,
                "gongjian": g,
                "bare_same_sql": b,
                "ratio": round(g["requests_per_s"] / max(b["requests_per_s"], 1e-9), 3),
            }
            log(
                f"  {key} with httpx as client: gongjian {g['requests_per_s']},"
                f" bare same SQL {b['requests_per_s']} req/s"
            )
        if profile:
            out["profile"] = {
                f"{op}.admin": await _profile(real, cap, op, duration_s, log_dir, log, client)
                for op in ("get", "list")
            }
    finally:
        if stats is not None:
            await stats.close()
        stop_server(real)
        stop_server(bare)
        with contextlib.suppress(OSError):
            config_path.unlink()
    ratios = [s["ratio"] for s in out["scenarios"]]
    out["target_ratio"] = TARGET_RATIO
    out["target_compares"] = "gongjian / bare_same_sql"
    out["min_ratio"] = min(ratios) if ratios else None
    out["pass"] = bool(ratios) and all(r >= TARGET_RATIO for r in ratios)
    out["server_logs"] = {
        k: str(v.log_path.relative_to(ROOT)) for k, v in (("gongjian", real), ("bare", bare))
    }
    return out


async def _shape_check(
    servers: dict[str, Server], paths: dict[str, list[str]], headers: dict[str, str]
) -> dict[str, Any]:
    """The bare answers must be the app's answers (same JSON, same ETag)."""
    async with httpx.AsyncClient(headers=headers, timeout=10) as c:
        got = {k: await c.get(servers[k].base + paths[k][0]) for k in paths}
    out: dict[str, Any] = {"gongjian_status": got["gongjian"].status_code}
    if got["gongjian"].status_code != 200:
        out["body"] = got["gongjian"].text[:500]
        return out
    same = True
    for label in paths:
        if label != "gongjian":
            ok, how = _same_body(got["gongjian"], got[label])
            same = same and ok
            out[label] = how
    out["same"] = same
    return out


async def _profile(
    real: Server, cap: dict[str, Any], op: str, duration_s: float, log_dir: Path, log: Any, client: str
) -> dict[str, Any]:
    """Sample the app's process with py-spy while it serves `op` for the platform admin."""
    spy = shutil.which("py-spy") or (
        str(Path(sys.executable).parent / "py-spy")
        if (Path(sys.executable).parent / "py-spy").exists()
        else None
    )
    if spy is None:
        return {"skipped": "py-spy is not installed (pip install py-spy into .venv to profile)"}
    raw = log_dir / f"profile-{uuid.uuid4().hex[:6]}.txt"
    proc = await asyncio.create_subprocess_exec(
        spy,
        "record",
        "-p",
        str(real.proc.pid),
        "-d",
        str(int(duration_s)),
        "-r",
        "200",
        "--format",
        "raw",
        "-o",
        str(raw),
        "--nonblocking",
        "--subprocesses",  # uvicorn's workers, when there are several
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    headers = {"Authorization": f"Bearer {cap['tokens']['admin']}"}
    paths = _paths(op, "admin", cap["ids"]["admin"])["gongjian"]
    result = await run_load(
        real.base,
        paths,
        headers,
        concurrency=CONCURRENCY,
        warmup_s=0.5,
        duration_s=duration_s + 1,
        client=client,
    )
    await asyncio.wait_for(proc.wait(), 60)
    if not raw.exists():
        return {"skipped": "py-spy produced no output (ptrace not permitted?)"}
    summary = summarise_profile(raw.read_text())
    log(f"  profile ({op}.admin): " + ", ".join(f"{k} {v}%" for k, v in list(summary["by_area"].items())[:6]))
    return {
        "scenario": f"{op}.admin",
        "requests_per_s_while_sampled": result["requests_per_s"],
        "raw_stacks": str(raw.relative_to(ROOT)),
        **summary,
    }


AREAS = (
    ("sqlalchemy", "sqlalchemy/"),
    ("asyncpg", "asyncpg/"),
    ("pydantic", "pydantic"),
    ("fastapi", "fastapi/"),
    ("starlette", "starlette/"),
    ("uvicorn/httptools", "uvicorn/"),
    ("jose/jwt", "jose/"),
    ("cryptography", "cryptography/"),
    ("gongjian", "gongjian/"),
    ("asyncio/uvloop", "asyncio/"),
)

# Where the time of a request goes, inclusive (a sample counts for every listed frame on its stack).
HOTSPOTS = (
    ("auth: current_principal (JWT + load_principal)", ("current_principal (",)),
    ("auth: load_principal (user and grants, one statement)", ("load_principal (",)),
    ("auth: decode_access_token (python-jose)", ("decode_access_token (",)),
    ("data: get_visible / paginate (the scoped query)", ("get_visible (", "paginate (", "paginate_by_key (")),
    ("session teardown: commit + close", ("get_session (",)),
    ("pool: pre-ping on checkout", ("_async_ping (", "_do_ping_w_event (")),
    ("pool: opening new connections", ("connect_utils.py", "_connect_addr", "on_connect (")),
    ("fastapi: solve_dependencies", ("solve_dependencies (",)),
    ("fastapi: serialize_response (pydantic)", ("serialize_response (",)),
    ("any SQLAlchemy frame", ("sqlalchemy/",)),
    ("any asyncpg frame", ("asyncpg/",)),
    ("any pydantic frame", ("pydantic",)),
)


def summarise_profile(text: str) -> dict[str, Any]:
    """Collapsed stacks -> share of samples by library of the innermost frame ("self" time), and
    inclusive shares of the hot spots above."""
    total = 0
    own: dict[str, int] = {}
    hot: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        n = int(count_s)
        total += n
        frames = stack.split(";")
        leaf = frames[-1]
        area = next((a for a, marker in AREAS if marker in leaf), "other")
        own[area] = own.get(area, 0) + n
        for label, markers in HOTSPOTS:
            if any(m in f for f in frames for m in markers):
                hot[label] = hot.get(label, 0) + n
    if not total:
        return {"samples": 0, "by_area": {}, "hotspots": {}}

    def pct(d: dict[str, int]) -> dict[str, float]:
        return dict(sorted(((k, round(100 * v / total, 1)) for k, v in d.items()), key=lambda kv: -kv[1]))

    return {"samples": total, "by_area": pct(own), "hotspots": pct(hot)}
