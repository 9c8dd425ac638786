"""Referral tracking service."""
