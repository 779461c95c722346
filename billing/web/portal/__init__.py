"""The customer portal: what one customer sees of its account, reached by a signed, expiring link."""

from __future__ import annotations

from fastapi import FastAPI

__all__ = ["install"]


def install(app: FastAPI) -> None:
    """Serve the portal's pages on ``app`` (under ``/portal``)."""
