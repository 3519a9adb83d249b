"""The embedded PostgreSQL (pgserver) used when no DATABASE_URL is given."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("gongjian.embedded")

_servers: dict[Path, Any] = {}


def start_embedded(data_dir: Path, database: str = "gongjian") -> str:
    """Start (or reuse) a PostgreSQL under data_dir/pg and return an asyncpg URL for `database`."""
    pgdata = (data_dir / "pg").resolve()
    # pgserver keeps its runtime files under XDG_RUNTIME_DIR; give it a private one when unset.
    # It is also where the socket goes when pgdata's path is too long for a Unix socket (~100
    # bytes), so keep it short: a private folder in the temp dir, not under data_dir.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = Path(tempfile.gettempdir()) / f"gongjian-{os.getuid()}"
        runtime.mkdir(exist_ok=True, mode=0o700)
        if runtime.is_symlink() or runtime.stat().st_uid != os.getuid():  # not ours: do not use it
            runtime = (data_dir / "run").resolve()
            runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        runtime.chmod(0o700)  # what XDG (and platformdirs) expect of a runtime dir
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    import pgserver  # imported here: only the embedded mode needs it

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = _servers.get(pgdata)
    if server is None:
        log.info("starting embedded PostgreSQL in %s", pgdata)
        server = pgserver.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
        _servers[pgdata] = server
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")  # noqa: S608 - our name
    if "1 row" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    # pgserver puts the socket elsewhere when the path under pgdata is too long for a Unix socket.
    socket_dir = server.get_postmaster_info().socket_dir or pgdata
    return f"postgresql+asyncpg://postgres@/{database}?host={socket_dir}"
