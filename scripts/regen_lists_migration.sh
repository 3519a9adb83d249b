#!/usr/bin/env bash
# While the three-lists revision (0002) has not shipped, it is regenerated from the models.
# Usage: scripts/regen_lists_migration.sh  (needs the machine's PostgreSQL at 127.0.0.1:5432)
set -euo pipefail
cd "$(dirname "$0")/.."
exec 9>/tmp/gongjian-regen.lock
flock 9
db="gj_regen_$$"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" >/dev/null
trap 'psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null' EXIT
export DATABASE_URL="postgresql://postgres@127.0.0.1:5432/$db"
rm -f migrations/versions/0002_three_lists.py
.venv/bin/alembic -c alembic.ini upgrade 0001
.venv/bin/alembic -c alembic.ini revision --autogenerate --rev-id 0002 -m three_lists
.venv/bin/ruff format -q migrations/versions/0002_three_lists.py
.venv/bin/ruff check -q --fix migrations/versions/0002_three_lists.py || true
