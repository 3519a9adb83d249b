# syntax=docker/dockerfile:1
# Gongjian API: multi-stage build, slim non-root runtime.
#
#   docker build -t gongjian .
#   docker run --rm -e DATABASE_URL=... -e SECRET_KEY=... -e PII_KEY=... gongjian python -m gongjian.cli migrate
#   docker run -d -p 8000:8000 -e DATABASE_URL=... -e SECRET_KEY=... -e PII_KEY=... gongjian

ARG PYTHON_VERSION=3.11

# --- builder: the dependencies in a virtual environment -----------------------------------------
FROM python:${PYTHON_VERSION}-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml ./
COPY backend ./backend
# Install the project with its runtime dependencies, then drop the project itself: the runtime
# image runs it from its source tree (/app), where alembic.ini and migrations/ sit beside it.
RUN pip install --upgrade pip \
 && pip install ".[s3]" \
 && pip uninstall --yes gongjian

# --- runtime ---------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app/backend \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ENVIRONMENT=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    WORKERS=4 \
    FORWARDED_ALLOW_IPS=*

RUN groupadd --system --gid 10001 gongjian \
 && useradd --system --uid 10001 --gid gongjian --home-dir /app --no-create-home --shell /usr/sbin/nologin gongjian

WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY alembic.ini ./
COPY migrations ./migrations
COPY openapi ./openapi
COPY backend ./backend
RUN python -m compileall -q backend /opt/venv/lib \
 && mkdir -p /app/.data && chown gongjian:gongjian /app/.data

USER gongjian:gongjian
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

# Several workers behind a reverse proxy; migrations run as a separate step (`gongjian migrate`).
# `exec` makes uvicorn PID 1's direct replacement, so `docker stop` (SIGTERM) shuts it down gracefully.
CMD ["sh", "-c", "exec uvicorn gongjian.main:app --host \"$HOST\" --port \"$PORT\" --workers \"$WORKERS\" --proxy-headers --forwarded-allow-ips \"$FORWARDED_ALLOW_IPS\" --no-server-header"]
