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
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

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


_CATALOGS: dict[tuple[str, int, int], Catalog | CatalogError] = {}  # by path and file stamp: the last few


def _catalog(path: str, stamp: tuple[int, int]) -> Catalog | CatalogError:
    try:
        return load_catalog_or_raise(path)
    except CatalogError as exc:  # kept too: a broken catalog is not parsed again on every request
        return exc


async def get_catalog(settings: Annotated[Settings, Depends(get_api_settings)]) -> Catalog:
    """The catalog named by the settings, reloaded when its file changes (off the event loop)."""
    path = str(settings.catalog)
    try:
        status = os.stat(path)
    except OSError as exc:
        log.error("cannot read the catalog %s: %s", path, exc)
        raise ApiError(500, "catalog_invalid", f"the server cannot read its catalog ({exc.strerror})") from None
    key = (path, status.st_mtime_ns, status.st_size)
    found = _CATALOGS.get(key)
    if found is None:
        found = await run_in_threadpool(_catalog, path, (status.st_mtime_ns, status.st_size))
        if len(_CATALOGS) >= 4:
            _CATALOGS.clear()
        _CATALOGS[key] = found
        if isinstance(found, CatalogError):
            log.error("the catalog %s has problems:\n%s", path, found)
    if isinstance(found, CatalogError):
        first = "; ".join(str(problem) for problem in found.problems[:3])
        raise ApiError(500, "catalog_invalid", f"the server's catalog has problems: {first}")
    return found
