#!/usr/bin/env bash
# While the agreements revision (0003) has not shipped, it is regenerated from the models.
# Usage: scripts/regen_agreements_migration.sh  (needs the machine's PostgreSQL at 127.0.0.1:5432)
set -euo pipefail
cd "$(dirname "$0")/.."
exec 9>/tmp/gongjian-regen.lock
flock 9
db="gj_regen_$$"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" >/dev/null
trap 'psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null' EXIT
export DATABASE_URL="postgresql://postgres@127.0.0.1:5432/$db"
rm -f migrations/versions/0003_agreements.py
.venv/bin/alembic -c alembic.ini upgrade 0002
.venv/bin/alembic -c alembic.ini revision --autogenerate --rev-id 0003 -m agreements
.venv/bin/ruff format -q migrations/versions/0003_agreements.py
.venv/bin/ruff check -q --fix migrations/versions/0003_agreements.py || true
