"""Accounting exports: a month's invoices, their lines, credit notes, payments, taxes and credit movements as
files an accounting system imports, and the journal of the month — one balanced entry per movement of money or
credit (``billing.core.journal``).

What belongs to month P (dated in each customer's timezone, as its invoices are): the invoices and credit notes
issued in P (``issue_date``), the invoices voided in P, the payments received in P, the credit ledger's movements
of P (each on the date of the document or payment that made it, else its instant's day: ``_dated``). Money is a
decimal string with the currency's digits ("12.50", "1500" for JPY), never a float;
every file lists its rows in a fixed order, so two exports of the same data are identical.

collect (``collect_export``: documents → voided → payments → credit movements → journal) → write
(``write_export``: CSV with a header, or JSON). The columns of each file are ``COLUMNS``.

Payments come from the payments ledger (``billing.payments``): each payment received in P (its whole amount:
the ledger's ``overpayment`` movement moves its excess on to the balance) and each reversal made in P.

``revenue`` holds the month's recognized revenue per currency (``billing.core.recognition``, as ``billing metrics
revenue`` prints it): billed, recognized, and the deferred revenue's opening, added and closing balances, which add
up exactly (credit notes issued in the month take revenue back).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, and_, or_, select
from sqlalchemy.orm import Session

from billing import credits, payments
from billing.core.journal import (
    CreditMovement,
    JournalEntry,
    Payment,
    credit_entry,
    document_entry,
    line_account,
    payment_entry,
    taxes_of,
    unbalanced,
    void_entry,
)
from billing.core.periods import Period
from billing.core.recognition import Recognition
from billing.db import repository, session_scope
from billing.db.approval_tables import InvoiceApprovalRow
from billing.db.credit_tables import CreditEntryRow, CreditGrantRow
from billing.db.payment_tables import PaymentRow
from billing.errors import BillingInputError
from billing.metrics_store import recognition_from_database
from dbkit import as_utc, read_only
from invoices import store
from invoices.model import Invoice, InvoiceKind, InvoiceScope, InvoiceStatus
from pricing_plans.money import format_amount

__all__ = ["COLUMNS", "FORMATS", "AccountingExport", "collect_export", "export_period", "write_export"]

FORMATS = ("csv", "json")

COLUMNS: dict[str, tuple[str, ...]] = {
    "invoices": (
        "number", "status", "scope", "customer", "customer_name", "currency", "issue_date", "due_date",
        "period_start", "period_end", "subtotal", "discount", "tax_rate", "tax", "total", "credits_applied",
        "amount_paid", "amount_due", "approved_by", "approved_at",
    ),
    "invoice_lines": (
        "document", "position", "section", "kind", "description", "meter", "quantity", "unit", "amount",
        "service_start", "service_end", "plan_code", "plan_version", "account",
    ),
    "credit_notes": (
        "number", "refers_to", "status", "customer", "customer_name", "currency", "issue_date", "net", "tax_rate",
        "tax", "total", "reason",
    ),
    "payments": (
        "payment", "kind", "date", "invoice_number", "customer", "currency", "amount", "applied", "to_balance",
        "method", "reference",
    ),
    "taxes": (
        "document", "kind", "customer", "currency", "issue_date", "tax_name", "country", "region", "tax_rate",
        "taxable", "tax", "tax_included", "reverse_charge", "exempt_reason",
    ),
    "credit_movements": (
        "movement", "kind", "date", "effective_at", "grant_id", "grant_kind", "customer", "currency", "account",
        "amount", "document",
    ),
    "journal": ("entry", "line", "date", "account", "debit", "credit", "currency", "customer", "document", "memo"),
    "revenue": (
        "period",
        "currency",
        "billed",
        "recognized",
        "deferred_opening",
        "deferred_added",
        "deferred_closing",
    ),
}

# Instants are dated in the customer's timezone; offsets run from −12 to +14 hours.
_WIDEN = dt.timedelta(hours=14)
# Credit movements are booked on the date of the document or payment that made them (``_dated``), which can be a
# day or two from their instant (a payment recorded on the 2nd as received on the 31st): read a few days around.
_WIDEN_MOVEMENTS = dt.timedelta(days=7)

Row = dict[str, str | None]


@dataclass
class AccountingExport:
    """A month's export: each file's rows (``COLUMNS`` order), the journal's entries, and the files written."""

    period: Period
    tables: dict[str, list[Row]] = field(default_factory=dict)
    entries: list[JournalEntry] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def totals(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Per currency: the journal's debits and credits (equal when it balances)."""
        sums: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
        for entry in self.entries:
            for _, amount in entry.legs:
                sums[entry.currency][0 if amount > 0 else 1] += abs(amount)
        return {currency: (debit, credit) for currency, (debit, credit) in sorted(sums.items())}

    def problems(self) -> list[str]:
        return unbalanced(self.entries)


def export_period(engine: Engine, period: Period, folder: Path, output_format: str = "csv") -> AccountingExport:
    """Collect month ``period``'s export and write its files into ``folder`` (made if missing)."""
    if output_format not in FORMATS:
        raise BillingInputError(f"--format: expected csv or json, got {output_format!r}")
    export = collect_export(engine, period)
    write_export(export, folder, output_format)
    return export


def collect_export(engine: Engine, period: Period) -> AccountingExport:
    """The rows of every file and the journal of ``period``, read in one read-only transaction."""
    export = AccountingExport(period)
    with session_scope(read_only(engine)) as session:
        documents = credits.with_credits(
            session, store.issued_between(session, period.start, period.end - dt.timedelta(days=1))
        )
        customers = {d.customer_id or "" for d in documents}
        changes = store.status_changes_between(
            session, _instant(period.start) - _WIDEN, _instant(period.end) + _WIDEN, [InvoiceStatus.VOID]
        )
        movements = _movements(session, period)
        zones = _zones(session, customers | {c.customer_external_id for c in changes} | {m.customer for m in movements})
        movements = [m for m in _dated(session, movements, zones) if m.date is not None and period.contains(m.date)]
        topups = store.scopes_by_number(session, {d.refers_to for d in documents if d.refers_to is not None})
        changed = {d.id: d for d in credits.with_credits(session, store.get_invoices(session, [c.invoice_id
                                                                                                 for c in changes]))}
        dated = [(c, _local(c.changed_at, zones, c.customer_external_id)) for c in changes]
        dated = [(c, day) for c, day in dated if period.contains(day)]
        notes = _notes_of(session, list(changed))
        voided = [(changed[c.invoice_id], day, notes.get(c.invoice_id, [])) for c, day in dated]
        approvals = _approvals(session, [d.id for d in documents])
    received = _payment_events(period, payments.payments_between(engine, period.start, period.end))
    of_topups = {d.id for d in documents if d.refers_to is not None and topups.get(d.refers_to) is InvoiceScope.CREDIT}
    export.entries = _journal(documents, of_topups, voided, [event.booked for event in received], movements)
    export.tables = {
        "invoices": [_invoice_row(d, approvals.get(d.id)) for d in documents if d.kind is InvoiceKind.INVOICE],
        "invoice_lines": [row for d in documents for row in _line_rows(d)],
        "credit_notes": [_credit_note_row(d) for d in documents if d.kind is InvoiceKind.CREDIT_NOTE],
        "payments": [_payment_row(event) for event in received],
        "taxes": [row for d in documents for row in _tax_rows(d)],
        "credit_movements": [row for m in movements for row in _movement_rows(m)],
        "journal": [row for entry in export.entries for row in _journal_rows(entry)],
        "revenue": [_revenue_row(r) for r in recognition_from_database(engine, [period])],
    }
    return export


def write_export(export: AccountingExport, folder: Path, output_format: str = "csv") -> list[Path]:
    """One file per table: ``<table>.csv`` (a header, then the rows) or ``<table>.json`` (an array of objects with
    the columns as keys, empty values as null)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, columns in COLUMNS.items():
        rows = export.tables.get(name, [])
        path = folder / f"{name}.{output_format}"
        if output_format == "csv":
            with path.open("w", newline="", encoding="utf-8") as file:
                writer = csv.writer(file, lineterminator="\n")
                writer.writerow(columns)
                writer.writerows([[row.get(c) or "" for c in columns] for row in rows])
        else:
            data = [{c: row.get(c) for c in columns} for row in rows]
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        export.files.append(path)
    return export.files


# -- reading -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Leg:
    movement: str
    kind: str
    account: str
    amount: Decimal
    grant_id: int
    effective_at: dt.datetime


@dataclass(frozen=True, slots=True)
class _Movement:
    """A movement of the credit ledger with its legs, its grant and the document it concerns."""

    movement: str
    kind: str
    grant_id: int
    grant_kind: str
    customer: str
    currency: str
    effective_at: dt.datetime
    document: str
    legs: tuple[_Leg, ...]
    invoice_id: int | None = None  # the document it concerns
    source: int | None = None  # the document the grant came from (a top-up invoice, a credit note…)
    date: dt.date | None = None  # the day it is booked (:func:`_dated`)

    @property
    def customer_amount(self) -> Decimal:
        return sum((leg.amount for leg in self.legs if leg.account == "customer"), Decimal(0))

    @property
    def account(self) -> str:
        """The ledger's other account of the movement (``invoice``, ``topup``, ``refund``…)."""
        return next((leg.account for leg in self.legs if leg.account != "customer"), "")


def _movements(session: Session, period: Period) -> list[_Movement]:
    """The ledger's movements effective around ``period`` (widened by the timezones' offsets), in
    (effective_at, movement) order."""
    rows = session.execute(
        select(
            CreditEntryRow, CreditGrantRow.kind, CreditGrantRow.customer_external_id, CreditGrantRow.currency,
            CreditGrantRow.invoice_id,
        )
        .join(CreditGrantRow, CreditGrantRow.id == CreditEntryRow.grant_id)
        .where(
            CreditEntryRow.effective_at >= _instant(period.start) - _WIDEN_MOVEMENTS,
            CreditEntryRow.effective_at < _instant(period.end) + _WIDEN_MOVEMENTS,
        )
        .order_by(CreditEntryRow.effective_at, CreditEntryRow.movement, CreditEntryRow.account)
    ).all()
    rows = [*rows, *_recorded_later(session, period, {r[0].movement for r in rows})]
    numbers = store.invoice_numbers(session, {r[0].invoice_id for r in rows if r[0].invoice_id is not None})
    grouped: dict[str, list[tuple[CreditEntryRow, str, str, str, int | None]]] = {}
    for entry, grant_kind, customer, currency, source in rows:
        grouped.setdefault(entry.movement, []).append((entry, grant_kind, customer, currency, source))
    found = []
    for movement, legs in grouped.items():
        entry, grant_kind, customer, currency, source = legs[0]
        document = numbers.get(entry.invoice_id) or "" if entry.invoice_id is not None else ""
        found.append(_Movement(
            movement, entry.kind, entry.grant_id, grant_kind, customer, currency, as_utc(entry.effective_at),
            document,
            tuple(_Leg(e.movement, e.kind, e.account, e.amount, e.grant_id, as_utc(e.effective_at)) for e, *_ in legs),
            entry.invoice_id, source,
        ))
    return sorted(found, key=lambda m: (m.effective_at, m.movement))


def _recorded_later(session: Session, period: Period, read: set[str]) -> list[Any]:
    """The movements of the payments received or reversed in ``period`` that were recorded long after (a
    payment's excess is booked on the day it was received, its taking back on the day it was reversed: any day
    before the one it was recorded on), which the window around the period did not read."""
    received = session.execute(
        select(PaymentRow.id, PaymentRow.received_on, PaymentRow.reversed_on).where(
            or_(
                and_(PaymentRow.received_on >= period.start, PaymentRow.received_on < period.end),
                and_(PaymentRow.reversed_on >= period.start, PaymentRow.reversed_on < period.end),
            )
        )
    ).all()
    names = [f"overpayment:{row.id}" for row in received if period.contains(row.received_on)]
    names += [f"reversal:{row.id}" for row in received if row.reversed_on and period.contains(row.reversed_on)]
    wanted = sorted(set(names) - read)
    found: list[Any] = []
    for start in range(0, len(wanted), 1000):
        found += session.execute(
            select(
                CreditEntryRow, CreditGrantRow.kind, CreditGrantRow.customer_external_id, CreditGrantRow.currency,
                CreditGrantRow.invoice_id,
            )
            .join(CreditGrantRow, CreditGrantRow.id == CreditEntryRow.grant_id)
            .where(CreditEntryRow.movement.in_(wanted[start : start + 1000]))
            .order_by(CreditEntryRow.movement, CreditEntryRow.account)
        ).all()
    return found


def _dated(session: Session, movements: Sequence[_Movement], zones: Mapping[str, ZoneInfo]) -> list[_Movement]:
    """Each movement with the day it is booked: the date of the document that made it, as that document's entry
    is booked and as aged receivables count it — credit applied when an invoice was issued (taken back from its
    write-off for it first, if it had expired; or a negative invoice's refund) on the invoice's issue date; what a
    credit note did (the amount due it took off, the money it put on the balance, the credit it gave back) on the
    note's; a payment's excess on the day the payment was received, taken back on the day it was reversed. Every
    other movement (a grant, an expiry, a void's credit given back) on its instant's day in the customer's
    timezone. (The scheduler dates a document in the customer's
    timezone, an action by hand in UTC: near midnight the instant's local day and the document's differ.)"""
    invoice_ids = {m.invoice_id for m in movements if m.invoice_id is not None}
    notes = {(note.id, note.invoice_id) for note in store.credit_notes_of(session, invoice_ids)}
    note_ids = {int(m.movement.split(":")[1]) for m in movements if m.movement.startswith("credit:")}
    issued = store.issue_dates(session, invoice_ids | note_ids)
    paid = _payment_days(session, {int(m.movement.split(":")[1]) for m in movements
                                   if m.kind in ("overpayment", "reversal") and m.account == "payment"
                                   and not m.movement.startswith("retake:")})
    written_off = _written_off_on(session, [m for m in movements if m.kind == "reinstatement"], zones)
    dated = []
    for m in movements:
        day: dt.date | None = None
        prefix, _, rest = m.movement.partition(":")
        if prefix in ("apply", "reinstate") and m.invoice_id is not None:
            # a credit note's amount off the invoice's amount due (its own grant, applied at once), or credit
            # applied when the invoice was issued (and taken back from its write-off for it, first)
            day = issued.get(m.source if (m.source, m.invoice_id) in notes else m.invoice_id)  # type: ignore[arg-type]
            if prefix == "reinstate" and day is not None and m.movement in written_off:
                day = max(day, written_off[m.movement])  # (never before the write-off it takes back from)
        elif prefix in ("refund", "reduce") and m.invoice_id is not None:
            day = issued.get(m.invoice_id)
        elif prefix == "credit":
            day = issued.get(int(rest.split(":")[0]))
        elif prefix in ("overpayment", "reversal") and m.account == "payment":
            received, reversed_on = paid.get(int(rest.split(":")[0]), (None, None))
            day = received if prefix == "overpayment" else reversed_on
        dated.append(replace(m, date=day or _local(m.effective_at, zones, m.customer)))
    return dated


def _written_off_on(
    session: Session, reinstatements: Sequence[_Movement], zones: Mapping[str, ZoneInfo]
) -> dict[str, dt.date]:
    """For each reinstatement, the day the write-off it takes back from was booked: its grant's last expiry
    before it, on that instant's day in the customer's timezone (an invoice issued by hand is dated by the UTC
    date, which can be a day before the write-off's day there)."""
    if not reinstatements:
        return {}
    rows = session.execute(
        select(CreditEntryRow.grant_id, CreditEntryRow.effective_at).where(
            CreditEntryRow.grant_id.in_(sorted({m.grant_id for m in reinstatements})),
            CreditEntryRow.kind == "expiry",
            CreditEntryRow.account == "customer",
        )
    ).all()
    found = {}
    for m in reinstatements:
        before = [as_utc(at) for grant_id, at in rows if grant_id == m.grant_id and as_utc(at) <= m.effective_at]
        if before:
            found[m.movement] = _local(max(before), zones, m.customer)
    return found


def _payment_days(session: Session, payment_ids: set[int]) -> dict[int, tuple[dt.date, dt.date | None]]:
    """The day each payment was received, and reversed (None: not reversed)."""
    if not payment_ids:
        return {}
    rows = session.execute(
        select(PaymentRow.id, PaymentRow.received_on, PaymentRow.reversed_on).where(
            PaymentRow.id.in_(sorted(payment_ids))
        )
    )
    return {row.id: (row.received_on, row.reversed_on) for row in rows}


@dataclass(frozen=True, slots=True)
class _PaymentEvent:
    """A payment received in the period, or one reversed in it (``kind``: ``received``, ``reversal``), as the
    journal books it (``booked``: a reversal with negative amounts) and as recorded."""

    kind: str
    booked: Payment
    recorded: payments.Payment


def _payment_events(period: Period, recorded: Sequence[payments.Payment]) -> list[_PaymentEvent]:
    """The payments received in ``period`` and the reversals made in it, by day, then payment."""
    events = []
    for p in recorded:
        if period.contains(p.received_on):
            booked = Payment(str(p.id), p.received_on, p.invoice_number, p.customer, p.currency, p.amount, p.method,
                             p.reference)
            events.append(_PaymentEvent("received", booked, p))
        if p.reversed_on is not None and period.contains(p.reversed_on):
            booked = Payment(f"{p.id}:reversal", p.reversed_on, p.invoice_number, p.customer, p.currency, -p.amount,
                             p.method, p.reference)
            events.append(_PaymentEvent("reversal", booked, p))
    return sorted(events, key=lambda e: (e.booked.date, e.recorded.id, e.kind))


def _notes_of(session: Session, invoice_ids: Sequence[int]) -> dict[int, list[Invoice]]:
    """The credit notes of each of these invoices (what a void of it leaves booked otherwise)."""
    issued = store.credit_notes_of(session, invoice_ids)
    documents = {note.id: note for note in store.get_invoices(session, [n.id for n in issued])}
    found: dict[int, list[Invoice]] = defaultdict(list)
    for note in issued:
        found[note.invoice_id].append(documents[note.id])
    return found


def _approvals(session: Session, invoice_ids: Sequence[int]) -> dict[int, InvoiceApprovalRow]:
    found: dict[int, InvoiceApprovalRow] = {}
    ids = sorted(set(invoice_ids))
    for offset in range(0, len(ids), 5000):
        statement = select(InvoiceApprovalRow).where(InvoiceApprovalRow.invoice_id.in_(ids[offset : offset + 5000]))
        found.update({row.invoice_id: row for row in session.execute(statement).scalars()})
    return found


def _zones(session: Session, customers: Iterable[str]) -> dict[str, ZoneInfo]:
    owners = repository.customers_by_external_id(session, set(customers))
    return {external_id: ZoneInfo(owner.timezone) for external_id, owner in owners.items()}


def _instant(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def _local(instant: dt.datetime, zones: Mapping[str, ZoneInfo], customer: str) -> dt.date:
    return instant.astimezone(zones.get(customer, ZoneInfo("UTC"))).date()


# -- the journal ---------------------------------------------------------------------------------------------------


def _journal(
    documents: Sequence[Invoice],
    of_topups: Collection[int],
    voided: Sequence[tuple[Invoice, dt.date, Sequence[Invoice]]],
    payments: Sequence[Payment],
    movements: Sequence[_Movement],
) -> list[JournalEntry]:
    """Every entry of the period, by date, then documents, voids, credit, payments, each by its id;
    ``of_topups``: the ids of the credit notes among ``documents`` that credit a top-up invoice."""
    entries = [(0, document_entry(d, of_topup=d.id in of_topups)) for d in documents]
    entries += [(1, void_entry(invoice, day, notes)) for invoice, day, notes in voided]
    for m in movements:
        assert m.date is not None
        booked = credit_entry(CreditMovement(
            m.movement, m.kind, m.grant_kind, m.date, m.customer, m.currency, m.customer_amount, m.document,
            m.account,
        ))
        if booked is not None:
            entries.append((2, booked))
    entries += [(3, payment_entry(p)) for p in payments]
    return [entry for _, entry in sorted(entries, key=lambda item: (item[1].date, item[0], item[1].entry))]


# -- rows ----------------------------------------------------------------------------------------------------------


def _money(amount: Decimal | None, currency: str) -> str | None:
    """``amount`` in the currency's minor units; a zero as 0.00, never -0.00 (a credit note's sign on nothing)."""
    return None if amount is None else format_amount(abs(amount) if amount == 0 else amount, currency)


def _day(day: dt.date | None) -> str | None:
    return None if day is None else day.isoformat()


def _invoice_row(invoice: Invoice, approval: InvoiceApprovalRow | None) -> Row:
    currency = invoice.currency
    applied = sum((c.amount for c in invoice.credits_applied), Decimal(0))
    return {
        "number": invoice.number, "status": invoice.status.value, "scope": invoice.scope.value,
        "customer": invoice.customer_id, "customer_name": invoice.customer.name, "currency": currency,
        "issue_date": _day(invoice.issue_date), "due_date": _day(invoice.due_date),
        "period_start": _day(invoice.period_start), "period_end": _day(invoice.period_end),
        "subtotal": _money(invoice.subtotal, currency), "discount": _money(invoice.discount, currency),
        "tax_rate": str(invoice.tax_rate), "tax": _money(invoice.tax, currency),
        "total": _money(invoice.total, currency), "credits_applied": _money(applied, currency),
        "amount_paid": _money(invoice.amount_paid, currency), "amount_due": _money(invoice.amount_due, currency),
        "approved_by": approval.approved_by if approval else None,
        "approved_at": as_utc(approval.approved_at).isoformat() if approval else None,
    }


def _line_rows(document: Invoice) -> list[Row]:
    return [
        {
            "document": document.number, "position": str(position), "section": line.section,
            "kind": line.kind.value, "description": line.description, "meter": line.meter,
            "quantity": str(line.quantity), "unit": line.unit, "amount": _money(line.amount, document.currency),
            "service_start": _day(line.service_start), "service_end": _day(line.service_end),
            "plan_code": line.plan_code, "plan_version": None if line.plan_version is None else str(line.plan_version),
            "account": line_account(line, document),
        }
        for position, line in enumerate(document.lines, start=1)
    ]


def _credit_note_row(note: Invoice) -> Row:
    currency = note.currency
    return {
        "number": note.number, "refers_to": note.refers_to, "status": note.status.value,
        "customer": note.customer_id, "customer_name": note.customer.name, "currency": currency,
        "issue_date": _day(note.issue_date), "net": _money(note.subtotal, currency), "tax_rate": str(note.tax_rate),
        "tax": _money(note.tax, currency), "total": _money(note.total, currency), "reason": note.reason,
    }


def _payment_row(event: _PaymentEvent) -> Row:
    """A payment received, or its reversal (amounts negative: what the invoice gave back, what came back off the
    balance)."""
    p, currency = event.recorded, event.recorded.currency
    sign = -1 if event.kind == "reversal" else 1
    to_balance = p.excess if event.kind == "received" else -(p.recovered or Decimal(0))
    return {
        "payment": str(p.id), "kind": event.kind, "date": event.booked.date.isoformat(),
        "invoice_number": p.invoice_number, "customer": p.customer, "currency": currency,
        "amount": _money(sign * p.amount, currency), "applied": _money(sign * p.applied, currency),
        "to_balance": _money(to_balance, currency), "method": p.method, "reference": p.reference,
    }


def _tax_rows(document: Invoice) -> list[Row]:
    """One row per rate; a credit note's taxable amount and tax are negative (it gives tax back)."""
    sign = -1 if document.kind is InvoiceKind.CREDIT_NOTE else 1
    currency = document.currency
    return [
        {
            "document": document.number, "kind": document.kind.value, "customer": document.customer_id,
            "currency": currency, "issue_date": _day(document.issue_date), "tax_name": tax.name,
            "country": tax.country, "region": tax.region, "tax_rate": str(tax.rate),
            "taxable": _money(sign * tax.taxable, currency), "tax": _money(sign * tax.amount, currency),
            "tax_included": _money(sign * tax.included, currency),
            "reverse_charge": "true" if tax.reverse_charge else "false", "exempt_reason": tax.exempt_reason,
        }
        for tax in taxes_of(document)
    ]


def _movement_rows(movement: _Movement) -> list[Row]:
    day = _day(movement.date)
    return [
        {
            "movement": movement.movement, "kind": movement.kind, "date": day,
            "effective_at": movement.effective_at.isoformat(), "grant_id": str(movement.grant_id),
            "grant_kind": movement.grant_kind, "customer": movement.customer, "currency": movement.currency,
            "account": leg.account, "amount": _money(leg.amount, movement.currency), "document": movement.document,
        }
        for leg in sorted(movement.legs, key=lambda leg: leg.account)
    ]


def _journal_rows(entry: JournalEntry) -> list[Row]:
    return [
        {
            "entry": entry.entry, "line": str(number), "date": entry.date.isoformat(), "account": account,
            "debit": _money(max(amount, Decimal(0)), entry.currency),
            "credit": _money(max(-amount, Decimal(0)), entry.currency), "currency": entry.currency,
            "customer": entry.customer, "document": entry.document, "memo": entry.memo,
        }
        for number, (account, amount) in enumerate(entry.legs, start=1)
    ]


def _revenue_row(r: Recognition) -> Row:
    """Billed, recognized and deferred revenue of the month in one currency (``billing metrics revenue``):
    deferred_opening + deferred_added − recognized = deferred_closing exactly."""
    return {
        "period": r.period.label,
        "currency": r.currency,
        "billed": _money(r.billed, r.currency),
        "recognized": _money(r.recognized, r.currency),
        "deferred_opening": _money(r.deferred_opening, r.currency),
        "deferred_added": _money(r.deferred_added, r.currency),
        "deferred_closing": _money(r.deferred_closing, r.currency),
    }
