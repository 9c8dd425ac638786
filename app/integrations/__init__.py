"""Inbound purchase events from Stripe and Shopify: verified by signature, mapped to conversions."""
