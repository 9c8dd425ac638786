"""The metrics data set: generated rows (rows.py) loaded into the bench database (load.py)."""

from bench.dataset.load import (
    ensure_dataset,
    ensure_marker_tables,
    purge_programs,
    restore_dropped_indexes,
)
from bench.dataset.rows import FULL, QUICK, Params, zipf_cumulative

__all__ = [
    "FULL",
    "QUICK",
    "Params",
    "ensure_dataset",
    "ensure_marker_tables",
    "purge_programs",
    "restore_dropped_indexes",
    "zipf_cumulative",
]
