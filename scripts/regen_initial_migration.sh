#!/usr/bin/env bash
# While nothing has shipped, the schema is one initial revision regenerated from the models.
# Usage: scripts/regen_initial_migration.sh  (needs the machine's PostgreSQL at 127.0.0.1:5432)
set -euo pipefail
cd "$(dirname "$0")/.."
db="gj_regen_$$"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" >/dev/null
trap 'psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null' EXIT
rm -f migrations/versions/0001_initial.py
DATABASE_URL="postgresql://postgres@127.0.0.1:5432/$db" .venv/bin/alembic -c alembic.ini \
  revision --autogenerate --rev-id 0001 -m initial
.venv/bin/ruff format -q migrations/versions/0001_initial.py
.venv/bin/ruff check -q --fix migrations/versions/0001_initial.py || true
