"""The database kit the packages that own tables share (``meters``, ``invoices``, ``billing.db``): column types,
the naming convention, the handful of SQLite/PostgreSQL differences, SQLite's write lock (``writelock``), the
clock, one fork-worker pool (and bulk work without the cyclic collector), and keyset pagination.

It knows no table of anyone's: it is plumbing, and ``pricing_plans`` never needs it.
"""

from __future__ import annotations

from dbkit.clock import as_utc, iso_instant, utcnow
from dbkit.collection import cyclic_collection_paused
from dbkit.dialect import (
    BoundRows,
    among,
    bind_rows,
    dialect_of,
    for_update,
    insert_bound,
    insert_for,
    insert_ignoring,
    insert_many_ignoring,
    is_postgresql,
    is_sqlite,
    read_only,
)
from dbkit.forkpool import can_fork, fork_pool
from dbkit.pagination import keyset_page, page_of
from dbkit.types import ID_TYPE, NAMING, ExactDecimal, UTCDateTime, new_metadata

__all__ = [
    "ID_TYPE",
    "NAMING",
    "BoundRows",
    "ExactDecimal",
    "UTCDateTime",
    "among",
    "as_utc",
    "bind_rows",
    "can_fork",
    "cyclic_collection_paused",
    "dialect_of",
    "for_update",
    "fork_pool",
    "insert_bound",
    "insert_for",
    "insert_ignoring",
    "insert_many_ignoring",
    "is_postgresql",
    "is_sqlite",
    "iso_instant",
    "keyset_page",
    "new_metadata",
    "page_of",
    "read_only",
    "utcnow",
]
