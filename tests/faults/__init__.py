"""Fault tests: real uvicorn processes on loopback, killed, starved of their database, flooded."""
