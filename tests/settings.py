"""The suite's database and settings, shared by fixtures and by tests that start their own apps."""

from app.core.config import Settings
from tests.database import choose_database_url

DATABASE_URL, DATABASE_REASON = choose_database_url()
ON_POSTGRES = DATABASE_URL.startswith("postgresql")


def settings_for_tests(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": DATABASE_URL,
        "environment": "test",
        "ip_hash_salt": "test-salt",
        "housekeeping_interval_seconds": 0,
        # Tests run dispatch rounds themselves, against receivers on loopback.
        "webhook_dispatch_interval_seconds": 0,
        "fulfilment_dispatch_interval_seconds": 0,
        "webhook_allow_private_targets": True,
        "database_pool_size": 30,
        # The suite sends thousands of requests from one address; tests/test_rate_limits.py
        # builds its own app with the limits on.
        "rate_limits_enabled": False,
        "cors_cache_seconds": 0,
        # Caches make changes visible after a few seconds; tests/test_hot_paths.py turns them on.
        "auth_cache_seconds": 0,
        "code_cache_seconds": 0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def mail_settings_for_tests(smtp_port: int, **overrides: object) -> Settings:
    """The suite's settings with lifecycle emails on, sent to the test SMTP server on loopback;
    tests run the dispatch rounds themselves."""
    values: dict[str, object] = {
        "smtp_url": f"smtp://127.0.0.1:{smtp_port}",
        "email_from": "Spring Shop <referrals@shop.example>",
        "email_secret": "test-email-secret",
        "email_dispatch_interval_seconds": 0,
        "smtp_timeout_seconds": 5,
        "public_base_url": "https://referrals.example.com",
    }
    values.update(overrides)
    return settings_for_tests(**values)
