from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_IP_HASH_SALT = "dev-only-ip-salt-change-me"
# Hosts that mean "this machine" when served on: links say localhost instead.
LOCAL_HOSTS = frozenset({"", "0.0.0.0", "::", "127.0.0.1", "::1", "localhost"})


def served_base_url(host: str, port: int) -> str:
    """The public base URL when REFERRAL_PUBLIC_BASE_URL is not set: the address served."""
    if host in LOCAL_HOSTS:
        host = "localhost"
    elif ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"http://{host}:{port}"


class Settings(BaseSettings):
    """Every setting of the service, read from `REFERRAL_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="REFERRAL_", env_file=".env", extra="ignore")

    environment: Literal["development", "production", "test"] = "development"
    database_url: str = "sqlite+aiosqlite:///./referrals.db"
    database_read_url: str | None = None
    redis_url: str | None = None
    database_pool_size: int = Field(default=20, ge=1, le=200)
    # A statement running longer is cancelled (503): a frozen database must not hang requests.
    database_command_timeout_seconds: float = Field(default=10.0, gt=0)
    # How long a request waits for a free connection before it is answered 503.
    database_pool_timeout_seconds: float = Field(default=3.0, gt=0)
    max_in_flight_requests: int = Field(default=512, ge=1)
    # PgBouncer in transaction mode cannot keep prepared statements per connection.
    database_statement_cache_size: int = Field(default=100, ge=0)

    # Not set: `referral-service serve` sets it to the address it serves (served_base_url).
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
    # Stripe and Shopify send whole orders: a larger limit for their webhooks only.
    max_webhook_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    idempotency_ttl_hours: int = Field(default=24, ge=1)

    rate_limits_enabled: bool = True
    # "N/second|minute|hour" (the `limits` package's notation).
    rate_limit_public_per_ip: str = "300/minute"
    rate_limit_public_per_key: str = "20000/minute"
    rate_limit_code_lookup_per_ip: str = "60/minute"
    rate_limit_failed_auth_per_ip: str = "30/minute"
    cors_cache_seconds: float = Field(default=30.0, ge=0)
    # Short in-process caches on the hot paths; 0 turns them off.
    auth_cache_seconds: float = Field(default=5.0, ge=0)
    code_cache_seconds: float = Field(default=5.0, ge=0)

    # Outbound webhooks: the dispatcher polls this often (0 turns it off in this process).
    webhook_dispatch_interval_seconds: float = Field(default=1.0, ge=0)
    webhook_dispatch_batch_size: int = Field(default=50, ge=1, le=1000)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhook_retry_base_seconds: float = Field(default=30.0, ge=0)
    webhook_retry_max_delay_seconds: float = Field(default=6 * 3600.0, ge=0)
    webhook_retry_window_hours: float = Field(default=72.0, gt=0)
    # Private, loopback and link-local targets are refused (SSRF) unless this allows them.
    webhook_allow_private_targets: bool = False
    # Inbound Stripe events: how far the signed timestamp may be from now.
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1)

    @model_validator(mode="after")
    def _safe_in_production(self) -> Self:
        if self.environment == "production":
            if self.ip_hash_salt == DEFAULT_IP_HASH_SALT:
                raise ValueError("set REFERRAL_IP_HASH_SALT to a secret value in production")
            if self.database_url.startswith("sqlite"):
                raise ValueError("production needs PostgreSQL, not SQLite (REFERRAL_DATABASE_URL)")
        return self
