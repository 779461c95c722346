"""The billing engine's errors.

Exception tree::

    BillingError                base of every error the engine raises on purpose
    ├── BillingInputError       bad input from a user (a CLI argument, a CSV cell, an API field); the message
    │   │                       names the field and what was expected. Also a ValueError.
    │   └── ConflictError       input that is well formed but clashes with what is stored: an id that exists
    │                           already, an overlapping subscription, an invoice not in a state that allows it.
    └── NotFoundError           a customer or subscription that does not exist. Also a LookupError.

The CLI prints any ``BillingError`` as one line on standard error and exits 1; the HTTP API maps
``BillingInputError`` to 422, ``ConflictError`` to 409 and ``NotFoundError`` to 404.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["BillingError", "BillingInputError", "ConflictError", "NotFoundError"]


class BillingError(Exception):
    """Base class of the engine's own errors; ``str(error)`` is a message for a person."""


class BillingInputError(BillingError, ValueError):
    """Raised when input from a user is invalid: an unknown currency, a bad date, an end before a start.

    ``problems`` lists each problem on its own (``"currency: unknown currency 'EUX' …"``), so that a caller can
    name every invalid field; the message joins them with "; ". One problem when the error was raised with a
    message only.
    """

    def __init__(self, message: str, problems: Sequence[str] = ()):
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) or (message,)

    @classmethod
    def of(cls, problems: Sequence[str]) -> BillingInputError:
        """An error listing ``problems`` (at least one), joined by "; " into its message."""
        return cls("; ".join(problems), problems)


class ConflictError(BillingInputError):
    """Raised when well-formed input clashes with what is stored: a customer id that exists already, a
    subscription overlapping another to the same plan, an invoice whose status does not allow the change."""


class NotFoundError(BillingError, LookupError):
    """Raised when a customer or subscription named by the caller does not exist."""
