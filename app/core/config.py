import ipaddress
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_IP_HASH_SALT = "dev-only-ip-salt-change-me"
DEFAULT_PSEUDONYM_KEY = "dev-only-pseudonym-key-change-me"
DEFAULT_EMAIL_SECRET = "dev-only-email-secret-change-me"
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
    # Keys the HMAC that stands in for an erased customer's id (app.customers.redaction).
    pseudonym_key: str = DEFAULT_PSEUDONYM_KEY
    # Proxies (addresses or networks, none by default) whose X-Forwarded-For is believed: the
    # client is the right-most address that is not one of them (uvicorn's ProxyHeadersMiddleware).
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # GET /metrics wants `Authorization: Bearer <token>` when set; production refuses to start
    # without one unless metrics_public says the endpoint is reachable only by Prometheus.
    metrics_token: SecretStr | None = None
    metrics_public: bool = False

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

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _proxy_list(cls, value: Any) -> Any:
        """A comma-separated list in the environment: `10.0.0.0/8,192.0.2.7`."""
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxy_addresses(cls, value: list[str]) -> list[str]:
        """Each an address or a network, written as uvicorn reads them; never "*"."""
        normalised = []
        for item in value:
            try:
                if "/" in item:
                    normalised.append(str(ipaddress.ip_network(item, strict=False)))
                else:
                    normalised.append(str(ipaddress.ip_address(item)))
            except ValueError:
                # "*" too: trusting every sender means taking the left-most value, which the
                # client writes itself.
                raise ValueError(
                    f"REFERRAL_FORWARDED_ALLOW_IPS: {item!r} is not an IP address or network"
                ) from None
        return normalised

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("metrics_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError(
                "REFERRAL_METRICS_TOKEN needs 16 characters or more (openssl rand -hex 32)"
            )
        return value

    # Referrer sessions (/v1/me…): how long a minted token lives unless the merchant asks for
    # another lifetime (ttl_seconds, up to the maximum); a portal link's token lives longer,
    # since it waits in an email.
    referrer_session_ttl_seconds: int = Field(default=3600, ge=60, le=30 * 86400)
    referrer_session_max_ttl_seconds: int = Field(default=7 * 86400, ge=60, le=30 * 86400)
    referrer_portal_link_ttl_seconds: int = Field(default=86400, ge=60, le=30 * 86400)
    rate_limit_me_per_session: str = "120/minute"
    rate_limit_me_per_ip: str = "600/minute"
    # Fulfilment (app.fulfilment.dispatcher): how often each replica looks for due jobs (0 turns
    # it off in this process), how many per round, the timeout of each provider request.
    fulfilment_dispatch_interval_seconds: float = Field(default=1.0, ge=0)
    fulfilment_dispatch_batch_size: int = Field(default=20, ge=1, le=500)
    fulfilment_timeout_seconds: float = Field(default=15.0, gt=0, le=60)
    fulfilment_retry_base_seconds: float = Field(default=30.0, ge=0)
    fulfilment_retry_max_delay_seconds: float = Field(default=3600.0, ge=0)
    fulfilment_retry_window_hours: float = Field(default=24.0, gt=0)
    # Where the providers' APIs are; unset Shopify means https://{shop_domain} (tests: a fake).
    shopify_admin_base_url: str | None = None
    stripe_api_base_url: str = "https://api.stripe.com"
    # Lifecycle emails (app.emails): while smtp_url is unset nothing is queued or sent.
    # smtp://user:pass@host:587 (STARTTLS as smtp_starttls says) or smtps://…:465 (TLS).
    smtp_url: SecretStr | None = None
    smtp_starttls: Literal["auto", "required", "off"] = "auto"
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    email_from: str | None = None  # "Shop referrals <referrals@shop.example>"
    # Signs unsubscribe links: changing it breaks the links in emails already sent.
    email_secret: SecretStr = SecretStr(DEFAULT_EMAIL_SECRET)
    # Also offered in List-Unsubscribe; the service does not read that mailbox.
    email_unsubscribe_mailto: str | None = None
    email_dispatch_interval_seconds: float = Field(default=5.0, ge=0)
    email_dispatch_batch_size: int = Field(default=20, ge=1, le=500)
    email_retry_base_seconds: float = Field(default=60.0, ge=0)
    email_retry_max_delay_seconds: float = Field(default=3600.0, ge=0)
    email_retry_window_hours: float = Field(default=24.0, gt=0)

    @property
    def emails_enabled(self) -> bool:
        return self.smtp_url is not None

    @model_validator(mode="after")
    def _email_settings_complete(self) -> Self:
        if self.smtp_url is None:
            return self
        parts = urlsplit(self.smtp_url.get_secret_value())
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(
                "REFERRAL_SMTP_URL must look like smtp://user:pass@host:587 or smtps://…"
            )
        if not self.email_from or "@" not in self.email_from:
            raise ValueError(
                "REFERRAL_EMAIL_FROM (the sender address) is needed with REFERRAL_SMTP_URL"
            )
        for name in ("email_from", "email_unsubscribe_mailto"):
            value = getattr(self, name)
            if value is not None and ("\r" in value or "\n" in value):
                raise ValueError(f"REFERRAL_{name.upper()} may not contain line breaks")
        return self

    @model_validator(mode="after")
    def _safe_in_production(self) -> Self:
        if self.environment == "production":
            if self.ip_hash_salt == DEFAULT_IP_HASH_SALT:
                raise ValueError("set REFERRAL_IP_HASH_SALT to a secret value in production")
            if self.pseudonym_key == DEFAULT_PSEUDONYM_KEY:
                raise ValueError("set REFERRAL_PSEUDONYM_KEY to a secret value in production")
            if self.database_url.startswith("sqlite"):
                raise ValueError("production needs PostgreSQL, not SQLite (REFERRAL_DATABASE_URL)")
            if (
                self.smtp_url is not None
                and self.email_secret.get_secret_value() == DEFAULT_EMAIL_SECRET
            ):
                raise ValueError("set REFERRAL_EMAIL_SECRET to a secret value to send emails")
            for name in ("shopify_admin_base_url", "stripe_api_base_url"):
                url = getattr(self, name)
                if url is not None and not url.startswith("https://"):
                    raise ValueError(f"REFERRAL_{name.upper()} must be https in production")
        return self

    @model_validator(mode="after")
    def _session_lifetimes_within_the_maximum(self) -> Self:
        longest = self.referrer_session_max_ttl_seconds
        if max(self.referrer_session_ttl_seconds, self.referrer_portal_link_ttl_seconds) > longest:
            raise ValueError(
                "the referrer session and portal link lifetimes may not exceed "
                "REFERRAL_REFERRER_SESSION_MAX_TTL_SECONDS"
            )
        return self
