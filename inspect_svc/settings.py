"""Service settings: one validated class, read from `INSPECT_*` environment variables (or a `.env`).

`create_app(settings)` takes an explicit instance; `get_settings()` is the cached instance the CLI uses.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

KNOWN_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)


class Settings(BaseSettings):
    """Everything the service can be told, validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix="INSPECT_", env_file=".env", extra="ignore")

    # Storage
    database_url: str = Field(
        "sqlite:///./var/inspect.db", description="SQLAlchemy URL (SQLite or PostgreSQL)"
    )
    data_dir: Path = Field(
        Path("./var"), description="blob store, outage spool and extracted bundles live here"
    )
    auto_migrate: bool | None = Field(
        None, description="run `alembic upgrade head` at start-up; default: on for SQLite, off for PostgreSQL"
    )
    spool_max: int = Field(
        100_000, gt=0, description="results held while the database is down; /readyz fails beyond"
    )
    idempotency_window_s: float = Field(
        86_400.0,
        gt=0,
        description="while the database is down, a frame repeated within this many seconds still"
        " gets its first result (from a local index beside the spool)",
    )
    idempotency_max_frames: int = Field(
        200_000, gt=0, description="the local index keeps at most this many frames"
    )
    spool_dir: Path | None = Field(
        None,
        description="this replica's own durable outage spool; default DATA_DIR. Never share it between replicas",
    )

    # Blob store: images, maps, masks and model bundles
    blob_store: Literal["file", "s3"] = Field(
        "file", description="file: under DATA_DIR/blobs; s3: an S3 bucket"
    )
    s3_endpoint: str | None = Field(
        None, description="S3 endpoint URL (SeaweedFS, MinIO…); none: the AWS default"
    )
    s3_bucket: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="bucket for blobs; required with blob_store=s3",
    )
    s3_prefix: str = Field(
        "", pattern=r"^([A-Za-z0-9._-]+/)*$", description="key prefix inside the bucket, e.g. 'inspect/'"
    )
    s3_region: str = "us-east-1"
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_timeout_s: float = Field(10.0, gt=0, description="connect and read timeout of one S3 call")

    # Replicas
    replica_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=128,
        description="names this replica in /readyz and /models; default the host name (the pod name in k8s)",
    )
    model_poll_s: float = Field(
        2.0, ge=0, description="how often the active model version is re-read from the database; 0: never"
    )

    # Model
    model: Path | None = Field(None, description="model bundle (directory or .zip) to activate at start-up")
    models_dir: Path | None = Field(
        None, description="where .zip bundles are extracted; default DATA_DIR/models"
    )
    # NoDecode: the environment gives "CUDAExecutionProvider,CPUExecutionProvider", not JSON.
    providers: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads; 0 lets ORT decide")

    # Batching and limits
    max_batch: int = Field(8, gt=0)
    max_wait_ms: float = Field(5.0, ge=0)
    max_queue: int = Field(256, gt=0, description="tiles waiting for the engine before /inspect answers 503")
    max_queue_per_camera: int | None = Field(
        None,
        gt=0,
        description="tiles one camera may have waiting (default MAX_QUEUE); batches serve the least-served camera first",
    )
    request_timeout_s: float = Field(10.0, gt=0, description="per-request deadline inside the engine")
    max_body_bytes: int = Field(32 * 1024 * 1024, gt=0, description="larger request bodies get 413")
    max_pixels: int = Field(
        50_000_000,
        gt=0,
        description="pixel budget per request (width x height, each side counted at least one model tile); "
        "a larger frame gets 413 from its header, before decoding; also what one camera may have in flight",
    )
    max_pixels_in_flight: int | None = Field(
        None,
        gt=0,
        description="pixels decoded or in the engine at once over all cameras (bounds memory); "
        "default 2 x MAX_PIXELS; beyond it /inspect answers 503",
    )
    damaged_frames: Literal["refuse", "flag"] = Field(
        "refuse",
        description="a corrupt or truncated frame: refuse answers 422; flag stores it as received and answers "
        "200 with verdict invalid_image (never scored)",
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="a request body must arrive completely within this many seconds, else 408"
    )

    # Access
    require_api_key: bool = Field(True, description="/inspect needs a camera's X-API-Key")
    admin_token: SecretStr | None = Field(None, description="Bearer token for the admin endpoints")
    dashboard_secure_cookies: bool = Field(
        True, description="mark dashboard cookies Secure (HTTPS only); turn off only for plain-HTTP local use"
    )
    dashboard_session_hours: float = Field(12.0, gt=0, description="a dashboard login lasts this long")
    signing_key: SecretStr | None = Field(
        None,
        description="signs image links and login forms; default: derived from ADMIN_TOKEN, else random per "
        "process (then set it when running several replicas)",
    )
    signed_link_ttl_s: float = Field(
        900.0, gt=0, le=7 * 24 * 3600, description="how long the signed image links of an answer stay valid"
    )
    login_max_failures: int = Field(
        5, gt=0, description="failed logins per account before each further try must wait (per address: 4x)"
    )
    login_lockout_max_s: float = Field(
        900.0, gt=0, description="the longest wait after repeated failed logins"
    )

    # Notifications
    webhook_url: str | None = None
    mqtt_url: str | None = Field(
        None, description="mqtt://host[:port]; results go to inspect/<line>/<camera>"
    )
    notify_retries: int = Field(3, ge=0)

    # Serving
    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)
    log_format: Literal["text", "json"] = Field(
        "text", description="json: one object per line, each inspection with its ids and timings as fields"
    )

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in KNOWN_PROVIDERS]
        if unknown or not value:
            raise ValueError(
                f"providers must be a non-empty subset of {', '.join(KNOWN_PROVIDERS)}; got {value}"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if value.startswith(("postgresql://", "postgres://")):
            # One driver for PostgreSQL everywhere: psycopg 3.
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        if not value.startswith(("sqlite", "postgresql+psycopg")):
            raise ValueError(f"database_url must be sqlite:/// or postgresql+psycopg://, got {value!r}")
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("mqtt://"):
            raise ValueError(f"mqtt_url must look like mqtt://host[:port], got {value!r}")
        return value

    @model_validator(mode="after")
    def _pixel_budgets(self) -> Settings:
        if self.max_pixels_in_flight is not None and self.max_pixels_in_flight < self.max_pixels:
            raise ValueError(
                f"max_pixels_in_flight ({self.max_pixels_in_flight}) must be at least max_pixels ({self.max_pixels})"
            )
        return self

    @property
    def pixels_in_flight_limit(self) -> int:
        return self.max_pixels_in_flight or 2 * self.max_pixels

    @model_validator(mode="after")
    def _default_migration_policy(self) -> Settings:
        if self.auto_migrate is None:
            self.auto_migrate = self.is_sqlite
        return self

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> Settings:
        if self.blob_store == "s3" and not self.s3_bucket:
            raise ValueError("blob_store=s3 needs s3_bucket (INSPECT_S3_BUCKET)")
        if (self.s3_access_key is None) != (self.s3_secret_key is None):
            raise ValueError("give both s3_access_key and s3_secret_key, or neither (the AWS default chain)")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def spool_path(self) -> Path:
        return (self.spool_dir or self.data_dir) / "spool.sqlite3"

    @property
    def frame_index_path(self) -> Path:
        return self.spool_path.parent / "acknowledged.sqlite3"

    @property
    def camera_keys_path(self) -> Path:
        return self.spool_path.parent / "camera_keys.sqlite3"

    @property
    def bundle_extract_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
