"""The invoices' exceptions::

    InvoiceError               base
    ├── InvoiceNotFoundError   no invoice with that id, number or billing key
    └── InvoiceStateError      the invoice's status does not allow it (finalizing a paid invoice, ...)
"""

from __future__ import annotations

__all__ = ["InvoiceError", "InvoiceNotFoundError", "InvoiceStateError"]


class InvoiceError(Exception):
    """Base of the invoices' exceptions."""


class InvoiceNotFoundError(InvoiceError, LookupError):
    """Raised when no invoice has the id, number or billing key asked for."""


class InvoiceStateError(InvoiceError):
    """Raised when an invoice's status does not allow the operation."""
