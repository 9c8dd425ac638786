from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_IP_HASH_SALT = "dev-only-ip-salt-change-me"


class Settings(BaseSettings):
    """Every setting of the service, read from `REFERRAL_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="REFERRAL_", env_file=".env", extra="ignore")

    environment: Literal["development", "production", "test"] = "development"
    database_url: str = "sqlite+aiosqlite:///./referrals.db"
    database_read_url: str | None = None
    redis_url: str | None = None
    database_pool_size: int = Field(default=10, ge=1, le=200)
    # PgBouncer in transaction mode cannot keep prepared statements per connection.
    database_statement_cache_size: int = Field(default=100, ge=0)

    public_base_url: str = "http://localhost:8000"
    ip_hash_salt: str = DEFAULT_IP_HASH_SALT
    trust_forwarded_for: bool = False

    code_length: int = Field(default=10, ge=9, le=32)
    default_page_limit: int = Field(default=50, ge=1, le=500)
    max_page_limit: int = Field(default=200, ge=1, le=1000)
    duplicate_click_window_hours: int = Field(default=24, ge=1)
    housekeeping_interval_seconds: float = Field(default=60.0, ge=0)
    log_level: str = "INFO"
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    idempotency_ttl_hours: int = Field(default=24, ge=1)
