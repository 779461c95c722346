"""Invoice operations the CLI and the HTTP API share: each its own transaction, errors as BillingInputError."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import Engine

from billing.config import Settings, get_settings
from billing.db import session_scope
from billing.errors import BillingInputError, NotFoundError
from billing.notifications import queue_invoice_finalized
from invoices import store
from invoices.errors import InvoiceNotFoundError, InvoiceStateError
from invoices.model import Invoice, InvoiceStatus, Party

__all__ = [
    "create_credit_note",
    "finalize_invoice",
    "finalize_settings",
    "get_invoice",
    "list_invoices",
    "set_invoice_status",
]


def finalize_settings(settings: Settings | None = None) -> store.FinalizeSettings:
    """How issued documents are numbered and dated, from the configuration: formats, terms and the seller."""
    settings = settings or get_settings()
    seller = settings.seller
    return store.FinalizeSettings(
        invoice_number_format=settings.invoice_number_format,
        credit_note_number_format=settings.credit_note_number_format,
        payment_terms_days=settings.payment_terms_days,
        seller=Party(name=seller.name, address=tuple(seller.address), email=seller.email, tax_id=seller.tax_id),
    )


def get_invoice(engine: Engine, key: str | int) -> Invoice:
    """An invoice by id, number or billing key."""
    with session_scope(engine) as session:
        try:
            return store.get_invoice(session, key)
        except InvoiceNotFoundError as error:
            raise NotFoundError(str(error)) from None


def list_invoices(engine: Engine, **filters: object) -> list[Invoice]:
    with session_scope(engine) as session:
        return store.list_invoices(session, **filters)  # type: ignore[arg-type]


def finalize_invoice(engine: Engine, key: str | int, settings: store.FinalizeSettings, today: dt.date) -> Invoice:
    with session_scope(engine) as session:
        try:
            invoice = store.get_invoice(session, key)
            issued = store.finalize(session, invoice.id, settings, today)
            queue_invoice_finalized(session, issued)
            return issued
        except InvoiceNotFoundError as error:
            raise NotFoundError(str(error)) from None
        except InvoiceStateError as error:
            raise BillingInputError(str(error)) from None


def set_invoice_status(engine: Engine, key: str | int, status: InvoiceStatus) -> Invoice:
    with session_scope(engine) as session:
        try:
            invoice = store.get_invoice(session, key)
            return store.set_status(session, invoice.id, status)
        except InvoiceNotFoundError as error:
            raise NotFoundError(str(error)) from None
        except InvoiceStateError as error:
            raise BillingInputError(str(error)) from None


def create_credit_note(
    engine: Engine, number: str, amount: Decimal, reason: str, settings: store.FinalizeSettings, today: dt.date
) -> Invoice:
    with session_scope(engine) as session:
        try:
            return store.create_credit_note(session, number, amount, reason, settings, today)
        except InvoiceNotFoundError as error:
            raise NotFoundError(str(error)) from None
        except (InvoiceStateError, ValueError) as error:
            raise BillingInputError(str(error)) from None
