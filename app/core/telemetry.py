"""Prometheus series of writers, dispatchers and pools (HTTP ones: app.http.observability)."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS_INGESTED = Counter("referral_events_ingested_total", "Events stored, by kind", ["kind"])
WRITE_BATCH_SIZE = Histogram(
    "referral_write_batch_size",
    "Rows written per flushed batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
WRITE_FLUSH_SECONDS = Histogram("referral_write_flush_seconds", "Time to flush one batch of writes")
WEBHOOK_DELIVERIES = Counter(
    "referral_webhook_deliveries_total", "Outbound webhook delivery attempts", ["outcome"]
)
FULFILMENT_ATTEMPTS = Counter(
    "referral_fulfilment_attempts_total",
    "Provider calls of the fulfilment dispatcher, by provider and outcome",
    ["provider", "outcome"],
)
DB_POOL_CHECKED_OUT = Gauge("referral_db_pool_checked_out", "Database connections in use")
DB_POOL_SIZE = Gauge("referral_db_pool_size", "Database connections kept in the pool")
EMAIL_MESSAGES = Counter(
    "referral_email_messages_total",
    "Lifecycle emails by outcome (sent, retrying, failed, unknown, suppressed)",
    ["outcome"],
)
