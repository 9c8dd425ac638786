"""Outbound webhooks: endpoints, an outbox written with each change, and a signed dispatcher."""
