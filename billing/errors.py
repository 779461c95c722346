"""The billing engine's errors.

Exception tree::

    BillingError                base of every error the engine raises on purpose
    ├── BillingInputError       bad input from a user (a CLI argument, a CSV cell, an API field); the message
    │                           names the field and what was expected. Also a ValueError.
    └── NotFoundError           a customer or subscription that does not exist. Also a LookupError.

The CLI prints any ``BillingError`` as one line on standard error and exits 1; the HTTP API maps
``BillingInputError`` to 422 and ``NotFoundError`` to 404.
"""

from __future__ import annotations

__all__ = ["BillingError", "BillingInputError", "NotFoundError"]


class BillingError(Exception):
    """Base class of the engine's own errors; ``str(error)`` is a message for a person."""


class BillingInputError(BillingError, ValueError):
    """Raised when input from a user is invalid: an unknown currency, a bad date, an end before a start."""


class NotFoundError(BillingError, LookupError):
    """Raised when a customer or subscription named by the caller does not exist."""
