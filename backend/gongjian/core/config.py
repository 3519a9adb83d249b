"""Settings from the environment, in one place."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: str = Field(default="development", description="development | production | test")
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path(".data")

    # With no DATABASE_URL the program runs its own embedded PostgreSQL under data_dir.
    database_url: str | None = None
    # A fixed pool per process: requests beyond it wait briefly for a connection rather than
    # open and close overflow connections under load (each new one re-plans its statements).
    db_pool_size: int = 20
    db_max_overflow: int = 0
    db_pool_timeout_seconds: float = 10.0
    db_pool_recycle_seconds: int = 1800

    # Background jobs (core/jobs.py). Each API process also works the queue, so the one-command
    # setup needs no second process; turn it off where `gongjian worker` processes do the work.
    run_worker: bool = True
    worker_concurrency: int = Field(default=2, ge=1, description="jobs one process runs at once")
    # On shutdown, running jobs get this long to finish before they are aborted (and retried).
    worker_shutdown_timeout_seconds: float = Field(default=20.0, ge=0)

    # Signing key for access tokens and key for personal data at rest. In the embedded
    # default they are generated once and kept in data_dir; production must set them.
    secret_key: str | None = None
    pii_key: str | None = None

    jwt_issuer: str = "gongjian"
    jwt_audience: str = "gongjian-api"
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 14 * 24 * 3600

    login_max_failures: int = 5
    login_lockout_seconds: int = 15 * 60

    page_size_default: int = 20
    page_size_max: int = 100

    # How long paired units (共建 partners of the community) have a proposed project to themselves
    # before it opens to every unit in the street (领办大厅).
    project_claim_window_hours: int = Field(default=72, ge=0)

    load_demo: bool | None = Field(
        default=None, description="Load demo data at start; defaults to on for the embedded database only"
    )
    serve_spa_dir: Path | None = None

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    def _local_secret(self, name: str) -> str:
        path = self.data_dir / name
        if path.exists():
            return path.read_text().strip()
        if self.environment == "production":
            raise RuntimeError(f"{name.upper()} must be set in production")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(48)
        path.write_text(value)
        path.chmod(0o600)
        return value

    @property
    def signing_key(self) -> str:
        return self.secret_key or self._local_secret("secret_key")

    @property
    def pii_encryption_key(self) -> str:
        return self.pii_key or self._local_secret("pii_key")


@lru_cache
def get_settings() -> Settings:
    return Settings()
