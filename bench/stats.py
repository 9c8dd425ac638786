"""Order statistics over samples (latencies in ms)."""

from __future__ import annotations


def percentile(sorted_values: list[float], p: float) -> float | None:
    """The nearest-rank percentile of already sorted values; None for no values."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return round(sorted_values[rank], 3)
