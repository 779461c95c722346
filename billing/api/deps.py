"""What the API's routes take from FastAPI: the settings, the database engine and the catalog.

The settings are those ``create_app(settings)`` was given (kept in ``app.state.settings``), or else the configured
ones; the engine is that of their ``database_url``. Both are cheap coroutines, run on the event loop: no thread
hop, no dependency resolved again on each request.

The catalog is loaded from the ``catalog`` setting and kept until its file changes (modification time and size),
so editing the catalog takes effect on the next request without a restart; a catalog with problems is answered
500 ``catalog_invalid`` with the first problems, and logged.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from billing.api.errors import ApiError
from billing.config import Settings, get_settings
from billing.db.engines import engine_for_url
from pricing_plans.errors import CatalogError
from pricing_plans.loader import load_catalog_or_raise
from pricing_plans.models import Catalog

__all__ = ["api_engine", "get_api_settings", "get_catalog"]

log = logging.getLogger(__name__)


async def get_api_settings(request: Request) -> Settings:
    """The settings the API runs with: those given to ``create_app``, or else the configured ones."""
    fixed: Settings | None = getattr(request.app.state, "settings", None)
    return fixed if fixed is not None else get_settings()


async def api_engine(settings: Annotated[Settings, Depends(get_api_settings)]) -> Engine:
    """The engine of the settings' database (one per database URL, made on first use)."""
    return engine_for_url(settings.database_url)


@lru_cache(maxsize=4)
def _catalog(path: str, stamp: tuple[int, int]) -> Catalog:
    return load_catalog_or_raise(path)


async def get_catalog(settings: Annotated[Settings, Depends(get_api_settings)]) -> Catalog:
    """The catalog named by the settings, reloaded when its file changes."""
    path = settings.catalog
    try:
        status = os.stat(path)
    except OSError as exc:
        log.error("cannot read the catalog %s: %s", path, exc)
        raise ApiError(500, "catalog_invalid", f"the server cannot read its catalog ({exc.strerror})") from None
    try:
        return _catalog(path, (status.st_mtime_ns, status.st_size))
    except CatalogError as exc:
        log.error("the catalog %s has problems:\n%s", path, exc)
        first = "; ".join(str(problem) for problem in exc.problems[:3])
        raise ApiError(500, "catalog_invalid", f"the server's catalog has problems: {first}") from None
