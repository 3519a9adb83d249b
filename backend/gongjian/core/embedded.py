"""The embedded PostgreSQL (pgserver) used when no DATABASE_URL is given."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("gongjian.embedded")

_servers: dict[Path, Any] = {}


def start_embedded(data_dir: Path, database: str = "gongjian") -> str:
    """Start (or reuse) a PostgreSQL under data_dir/pg and return an asyncpg URL for `database`."""
    pgdata = (data_dir / "pg").resolve()
    # pgserver keeps its runtime files under XDG_RUNTIME_DIR; give it a private one when unset.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = (data_dir / "run").resolve()
        runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    import pgserver  # imported here: only the embedded mode needs it

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = _servers.get(pgdata)
    if server is None:
        log.info("starting embedded PostgreSQL in %s", pgdata)
        server = pgserver.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
        _servers[pgdata] = server
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "1 row" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    socket_dir = pgdata
    return f"postgresql+asyncpg://postgres@/{database}?host={socket_dir}"
