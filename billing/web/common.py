"""What the web pages share: the stylesheet and files under ``/static``."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

__all__ = ["STATIC", "install"]

STATIC = Path(__file__).resolve().parent / "static"


def install(app: FastAPI) -> None:
    """Serve the shared static files under ``/static``."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
