"""Metrics: exact funnels, time series, leaderboards, channels and cohorts, with rollups."""
