"""Settings from the environment, in one place."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
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

    # Agreement reminders (agreements/reminders.py): signers of a side that has not signed are
    # reminded once this long after sending, then once a day; both sides hear of the end of an
    # active agreement this many days before its last day.
    signature_reminder_after_hours: int = Field(default=24, ge=1)
    agreement_expiry_notice_days: int = Field(default=30, ge=1)

    load_demo: bool | None = Field(
        default=None, description="Load demo data at start; defaults to on for the embedded database only"
    )
    serve_spa_dir: Path | None = None

    # Files (signed agreement PDFs, signature images): a local folder, or an S3-compatible bucket.
    storage_backend: Literal["local", "s3"] = "local"
    storage_dir: Path | None = Field(default=None, description="the local folder; default DATA_DIR/storage")
    s3_endpoint_url: str | None = Field(default=None, description="e.g. http://minio:9000; unset: AWS")
    s3_bucket: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str | None = None
    # Where the public reaches this service: the verification link in a signed PDF's QR code.
    public_base_url: str = "http://127.0.0.1:8000"
    # A TrueType CJK font (.ttf, or .ttc: its first face) to embed in signed PDFs instead of the
    # packaged WenQuanYi Micro Hei, e.g. a licensed 宋体 for official documents.
    pdf_font_path: Path | None = None

    @model_validator(mode="after")
    def _storage_configured(self) -> Settings:
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ValueError("STORAGE_BACKEND=s3 needs S3_BUCKET")
        return self

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
