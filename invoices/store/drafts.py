"""Storing invoices: drafts written and refreshed by billing runs, gap-free numbers on finalization, status
changes, credit notes. Every function works inside the caller's transaction (a Session); the caller commits.

Numbers: finalizing takes the next value of the year's sequence row (``UPDATE … RETURNING``, which locks the row
until the transaction ends) in the same transaction as the status change, so a rolled-back finalization gives
its number back and two processes never get the same one: no gaps, no duplicates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, Select, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from invoices.errors import InvoiceNotFoundError, InvoiceStateError
from invoices.model import (
    ALLOWED_TRANSITIONS,
    DraftInvoice,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceStatus,
    Party,
    compute_totals,
)
from invoices.tables import InvoiceLineRow, InvoiceRow, NumberSequenceRow
from pricing_plans.money import ZERO, Rounding, round_money

__all__ = [
    "LINE_FIELDS",
    "DraftOutcome",
    "DraftRow",
    "DraftWriter",
    "FinalizeSettings",
    "StoredDraft",
    "billed_by_period",
    "billed_fees",
    "claim_drafts",
    "create_credit_note",
    "draft_row",
    "finalize",
    "finalize_many",
    "get_invoice",
    "get_invoices",
    "list_invoices",
    "next_numbers",
    "remove_stale_drafts",
    "set_status",
    "stored_drafts",
    "touch_drafts",
    "upsert_draft",
]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _on_conflict_do_nothing(session: Session, table: Any, values: dict[str, Any]) -> None:
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    session.execute(module.insert(table).values(**values).on_conflict_do_nothing())


# --- numbers ---------------------------------------------------------------------------------------------


def next_numbers(session: Session, sequence: str, count: int = 1) -> range:
    """Take ``count`` consecutive numbers of ``sequence``; they are the caller's when its transaction commits."""
    statement = (
        update(NumberSequenceRow)
        .where(NumberSequenceRow.name == sequence)
        .values(last_value=NumberSequenceRow.last_value + count)
        .returning(NumberSequenceRow.last_value)
    )
    last = session.execute(statement).scalar_one_or_none()
    if last is None:
        _on_conflict_do_nothing(session, NumberSequenceRow.__table__, {"name": sequence, "last_value": 0})
        last = session.execute(statement).scalar_one()
    return range(last - count + 1, last + 1)


def _sequence_name(kind: InvoiceKind, number_format: str, year: int) -> str:
    # A format without {year} numbers on forever; with it, each year starts again at 1.
    return f"{kind.value}:{year}" if "{year" in number_format else kind.value


# --- drafts ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DraftOutcome:
    """What ``upsert_draft`` did: ``created``, ``updated``, ``unchanged`` or ``issued`` (left alone)."""

    invoice_id: int
    action: str


@dataclass(frozen=True, slots=True)
class StoredDraft:
    """What is already stored under a billing key: enough to tell whether a draft must be written."""

    invoice_id: int
    status: str
    content_hash: str | None


_INVOICES = InvoiceRow.__table__
_LINES = InvoiceLineRow.__table__


def stored_drafts(session: Session, billing_keys: Sequence[str]) -> dict[str, StoredDraft]:
    """The invoices already stored under these billing keys (read in chunks, one query each)."""
    found: dict[str, StoredDraft] = {}
    keys = list(billing_keys)
    for offset in range(0, len(keys), 5000):
        chunk = keys[offset : offset + 5000]
        statement = select(
            InvoiceRow.billing_key, InvoiceRow.id, InvoiceRow.status, InvoiceRow.content_hash
        ).where(InvoiceRow.billing_key.in_(chunk))
        for key, invoice_id, status, content_hash in session.execute(statement):
            found[key] = StoredDraft(invoice_id, status, content_hash)
    return found


# A draft as stored: the invoice row's values (by column) and its lines, each a tuple in ``LINE_FIELDS`` order.
DraftRow = tuple[dict[str, Any], list[tuple[Any, ...]]]

LINE_FIELDS = (
    "position", "section", "kind", "description", "meter", "model", "quantity", "unit", "amount", "service_start",
    "service_end", "details", "subscription_id", "plan_code", "plan_version",
)
# Columns a draft writes on its invoice row.
_DRAFT_COLUMNS = (
    "customer_external_id", "customer", "currency", "locale", "timezone", "period_start", "period_end", "subtotal",
    "discount", "tax_rate", "tax", "total", "content_hash", "usage_as_of", "updated_at",
)
_INSERT_COLUMNS = ("billing_key", "kind", "status", "seller", "created_at", *_DRAFT_COLUMNS)


def upsert_draft(
    session: Session | Connection, draft: DraftInvoice, *, known_absent: bool = False, row: DraftRow | None = None
) -> DraftOutcome:
    """Write the draft for ``draft.billing_key`` inside the caller's transaction, replacing the lines of an existing
    draft; an issued invoice with that key is never touched, and a draft whose content has not changed is not
    rewritten.

    What is stored under the key is read under a lock (a concurrent finalization wins), unless the caller has just
    seen that nothing is (``known_absent``; a concurrent insert then fails on the unique billing key). ``row`` is
    ``draft_row(draft)`` when the caller has it already.
    """
    connection = session.connection() if isinstance(session, Session) else session
    if not connection.in_transaction():
        raise RuntimeError("upsert_draft writes inside the caller's transaction; begin one first")
    statements = _DraftStatements.for_dialect(connection.dialect)
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        return _write_draft(cursor, statements, draft.billing_key, row or draft_row(draft), known_absent)
    finally:
        cursor.close()


class DraftWriter:
    """Writes a billing run's drafts on a connection of its own, each draft in its own transaction (committed when
    ``write`` returns, rolled back if it raises), with the statements of ``upsert_draft``."""

    def __init__(self, engine: Engine) -> None:
        self._connection = engine.raw_connection()
        self._statements = _DraftStatements.for_dialect(engine.dialect)
        # SQLite's transactions begin IMMEDIATE (see billing.db); psycopg begins one with the first statement.
        self._begin = "BEGIN IMMEDIATE" if engine.dialect.name == "sqlite" else None

    def write(self, billing_key: str, row: DraftRow, *, known_absent: bool = False) -> DraftOutcome:
        """Store ``row`` (``draft_row`` of a draft) under ``billing_key``, as ``upsert_draft`` does."""
        dbapi = self._connection.driver_connection
        cursor = dbapi.cursor()
        try:
            if self._begin:
                cursor.execute(self._begin)
            outcome = _write_draft(cursor, self._statements, billing_key, row, known_absent)
            dbapi.commit()
        except BaseException:
            with suppress(Exception):  # (a broken connection cannot roll back: the error that broke it is raised)
                dbapi.rollback()
            raise
        finally:
            cursor.close()
        return outcome

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> DraftWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _write_draft(
    cursor: Any, statements: _DraftStatements, billing_key: str, row: DraftRow, known_absent: bool
) -> DraftOutcome:
    values, lines = row
    stored = None
    if not known_absent:
        statements.stored.execute(cursor, (billing_key,))
        found = cursor.fetchone()
        stored = None if found is None else StoredDraft(*found)
    if stored is not None:
        if stored.status != InvoiceStatus.DRAFT.value:
            return DraftOutcome(stored.invoice_id, "issued")
        if stored.content_hash == values["content_hash"]:
            statements.touch.execute(cursor, (stored.invoice_id, values["usage_as_of"]))
            return DraftOutcome(stored.invoice_id, "unchanged")
        statements.delete_lines.execute(cursor, (stored.invoice_id,))
        statements.update.execute(cursor, (stored.invoice_id, *(values[c] for c in _DRAFT_COLUMNS)))
        invoice_id, action = stored.invoice_id, "updated"
    else:
        fixed = (billing_key, "invoice", "draft", "{}", values["updated_at"])
        statements.insert.execute(cursor, (*fixed, *(values[c] for c in _DRAFT_COLUMNS)))
        invoice_id, action = cursor.fetchone()[0], "created"
    if lines:
        statements.insert_lines.execute_many(cursor, [(invoice_id, *line) for line in lines])
    return DraftOutcome(invoice_id, action)


class _Prepared:
    """A statement compiled once for a dialect and executed on the DBAPI cursor, each parameter converted by its
    column type's own bind processor: the values a Core ``execute`` would send, without its per-call work (which
    was most of the time a billing run spent writing its invoices). Parameters come as a tuple in ``keys`` order.
    """

    def __init__(self, statement: Any, dialect: Dialect, keys: Sequence[str], *, insert: bool = False) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys) if insert else None)
        self.sql = compiled.string
        self.positional = compiled.positional
        self.names = list(compiled.positiontup) if compiled.positional else list(compiled.binds)
        self.order = [list(keys).index(name) for name in self.names]
        self.in_order = self.order == list(range(len(keys)))
        self.processors = [
            (i, processor)
            for i, name in enumerate(self.names)
            if (processor := compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None
        ]

    def params(self, row: Sequence[Any]) -> Any:
        values = list(row) if self.in_order else [row[i] for i in self.order]
        for i, processor in self.processors:
            values[i] = processor(values[i])
        return values if self.positional else dict(zip(self.names, values, strict=True))

    def execute(self, cursor: Any, row: Sequence[Any]) -> None:
        cursor.execute(self.sql, self.params(row))

    def execute_many(self, cursor: Any, rows: list[Sequence[Any]]) -> None:
        cursor.executemany(self.sql, [self.params(row) for row in rows])


@dataclass(frozen=True)
class _DraftStatements:
    stored: _Prepared
    insert: _Prepared
    update: _Prepared
    touch: _Prepared
    delete_lines: _Prepared
    insert_lines: _Prepared

    @staticmethod
    def for_dialect(dialect: Dialect) -> _DraftStatements:
        key = (dialect.name, dialect.driver, dialect.paramstyle)
        statements = _PREPARED.get(key)
        if statements is None:
            by_id = _INVOICES.c.id == bindparam("invoice_id")
            stored = select(_INVOICES.c.id, _INVOICES.c.status, _INVOICES.c.content_hash).where(
                _INVOICES.c.billing_key == bindparam("billing_key")
            )
            if dialect.name == "postgresql":  # (SQLite has no row locks; its write transaction locks the file)
                stored = stored.with_for_update()
            statements = _PREPARED[key] = _DraftStatements(
                stored=_Prepared(stored, dialect, ("billing_key",)),
                insert=_Prepared(
                    insert(_INVOICES).returning(_INVOICES.c.id), dialect, _INSERT_COLUMNS, insert=True
                ),
                update=_Prepared(
                    update(_INVOICES).where(by_id).values({c: bindparam(c) for c in _DRAFT_COLUMNS}),
                    dialect,
                    ("invoice_id", *_DRAFT_COLUMNS),
                ),
                touch=_Prepared(
                    update(_INVOICES).where(by_id).values(usage_as_of=bindparam("usage_as_of")),
                    dialect,
                    ("invoice_id", "usage_as_of"),
                ),
                delete_lines=_Prepared(
                    delete(_LINES).where(_LINES.c.invoice_id == bindparam("invoice_id")), dialect, ("invoice_id",)
                ),
                insert_lines=_Prepared(insert(_LINES), dialect, ("invoice_id", *LINE_FIELDS), insert=True),
            )
        return statements


_PREPARED: dict[tuple[str, str, str], _DraftStatements] = {}

# One encoder for every line: ``json.dumps`` with options builds a new one per call.
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def draft_row(draft: DraftInvoice) -> DraftRow:
    """The invoice row's values (with ``content_hash``, a hash of everything a customer would see) and its lines
    as tuples in ``LINE_FIELDS`` order."""
    totals = draft.totals
    lines = [
        (
            position,
            line.section,
            line.kind,
            line.description,
            line.meter,
            line.model,
            line.quantity,
            line.unit,
            line.amount,
            line.service_start,
            line.service_end,
            _compact_json(line.details),
            line.subscription_id,
            line.plan_code,
            line.plan_version,
        )
        for position, line in enumerate(draft.lines, start=1)
    ]
    values: dict[str, Any] = {
        "customer_external_id": draft.customer.external_id or "",
        "customer": json.dumps(draft.customer.as_dict(), sort_keys=True),
        "currency": draft.currency,
        "locale": draft.locale,
        "timezone": draft.timezone,
        "period_start": draft.period_start,
        "period_end": draft.period_end,
        "subtotal": totals.subtotal,
        "discount": totals.discount,
        "tax_rate": draft.tax_rate,
        "tax": totals.tax,
        "total": totals.total,
    }
    # The hash reads every stored value once; the lines' details are JSON already, so nothing is encoded twice.
    digest = hashlib.sha256(repr(sorted(values.items())).encode())
    digest.update(repr(lines).encode())
    values["content_hash"] = digest.hexdigest()
    values["usage_as_of"] = draft.usage_as_of
    values["updated_at"] = _now()
    return values, lines


def remove_stale_drafts(
    session: Session, period_start: dt.date, keep: Iterable[str], customer: str | None = None
) -> list[str]:
    """Delete the period drafts (billing keys ``period:…``) of the period starting ``period_start`` whose key is
    not in ``keep`` (what a billing run of that period just wrote, found unchanged or could not rate): a customer
    whose subscription was ended before the period, or who has nothing left to invoice in it, must not keep a
    draft that finalization would issue. Only drafts, and only those: the others are neither deleted nor locked
    (a concurrent finalization claims them as usual); its lines go with it. Returns the keys deleted."""
    statement = select(InvoiceRow.id, InvoiceRow.billing_key).where(
        InvoiceRow.kind == InvoiceKind.INVOICE.value,
        InvoiceRow.status == InvoiceStatus.DRAFT.value,
        InvoiceRow.period_start == period_start,
        InvoiceRow.billing_key.like("period:%"),
    )
    if customer is not None:
        statement = statement.where(InvoiceRow.customer_external_id == customer)
    kept = set(keep)
    stale = sorted(invoice_id for invoice_id, key in session.execute(statement) if key not in kept)
    removed: list[str] = []
    for offset in range(0, len(stale), 5000):
        # still a draft when its row is locked for the delete (one finalized meanwhile stays)
        deleted = session.execute(
            delete(_INVOICES)
            .where(_INVOICES.c.id.in_(stale[offset : offset + 5000]), _INVOICES.c.status == "draft")
            .returning(_INVOICES.c.billing_key)
        )
        removed += deleted.scalars().all()
    return sorted(removed)


def touch_drafts(session: Session, invoice_ids: Sequence[int], usage_as_of: dt.datetime | None) -> None:
    """Record that unchanged drafts were checked against the usage aggregated at ``usage_as_of`` (an invoice
    finalized meanwhile is left alone)."""
    ids = list(invoice_ids)
    for offset in range(0, len(ids), 5000):
        session.execute(
            update(_INVOICES)
            .where(_INVOICES.c.id.in_(ids[offset : offset + 5000]), _INVOICES.c.status == "draft")
            .values(usage_as_of=usage_as_of)
        )


# --- finalization and status ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FinalizeSettings:
    """How issued documents are numbered and dated."""

    invoice_number_format: str = "INV-{year}-{seq:06d}"
    credit_note_number_format: str = "CN-{year}-{seq:06d}"
    payment_terms_days: int = 14
    seller: Party = field(default_factory=lambda: Party(name=""))


def finalize(session: Session, invoice_id: int, settings: FinalizeSettings, today: dt.date) -> Invoice:
    """Finalize one draft: the next gap-free number, issue and due dates, the seller's snapshot."""
    finalize_many(session, [invoice_id], settings, today)
    return get_invoice(session, invoice_id)


def claim_drafts(session: Session, invoice_ids: Sequence[int]) -> list[int]:
    """The ids among ``invoice_ids`` that are still drafts, locked for this transaction and in the order given;
    on PostgreSQL drafts another process is finalizing right now are skipped, not waited for."""
    if not invoice_ids:
        return []
    statement = select(InvoiceRow.id).where(
        InvoiceRow.id.in_(list(invoice_ids)), InvoiceRow.status == InvoiceStatus.DRAFT.value
    )
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update(skip_locked=True)
    drafts = set(session.execute(statement).scalars())
    return [invoice_id for invoice_id in invoice_ids if invoice_id in drafts]


def finalize_many(
    session: Session, invoice_ids: Sequence[int], settings: FinalizeSettings, today: dt.date
) -> list[str]:
    """Finalize drafts in one transaction, numbered consecutively in the order given; returns their numbers."""
    if not invoice_ids:
        return []
    rows = session.execute(
        _for_update(session, select(InvoiceRow.id, InvoiceRow.status).where(InvoiceRow.id.in_(invoice_ids)))
    ).all()
    status_by_id = {row.id: row.status for row in rows}
    for invoice_id in invoice_ids:
        if invoice_id not in status_by_id:
            raise InvoiceNotFoundError(f"no invoice with id {invoice_id}")
        if status_by_id[invoice_id] != InvoiceStatus.DRAFT:
            raise InvoiceStateError(f"invoice {invoice_id} is {status_by_id[invoice_id]}, not a draft")
    kind = InvoiceKind.INVOICE
    number_format = settings.invoice_number_format
    numbers = next_numbers(session, _sequence_name(kind, number_format, today.year), len(invoice_ids))
    now = _now()
    assigned = [number_format.format(year=today.year, seq=seq) for seq in numbers]
    session.execute(
        update(InvoiceRow),
        [
            {
                "id": invoice_id,
                "number": number,
                "status": InvoiceStatus.FINALIZED.value,
                "issue_date": today,
                "due_date": today + dt.timedelta(days=settings.payment_terms_days),
                "seller": json.dumps(settings.seller.as_dict(), sort_keys=True),
                "finalized_at": now,
                "status_changed_at": now,
                "updated_at": now,
            }
            for invoice_id, number in zip(invoice_ids, assigned, strict=True)
        ],
    )
    return assigned


def set_status(session: Session, invoice_id: int, status: InvoiceStatus) -> Invoice:
    """Move an issued invoice on (finalized → paid | void | uncollectible); anything else is refused."""
    statement = _for_update(session, select(InvoiceRow).where(InvoiceRow.id == invoice_id))
    row = session.execute(statement).scalar_one_or_none()
    if row is None:
        raise InvoiceNotFoundError(f"no invoice with id {invoice_id}")
    current = InvoiceStatus(row.status)
    if status == current:
        return _to_invoice(row, _lines_of(session, [row.id]).get(row.id, ()))
    if status not in ALLOWED_TRANSITIONS[current]:
        raise InvoiceStateError(f"invoice {row.number or row.id} is {current}; it cannot become {status}")
    now = _now()
    session.execute(
        update(InvoiceRow)
        .where(InvoiceRow.id == invoice_id)
        .values(status=status.value, status_changed_at=now, updated_at=now)
    )
    return get_invoice(session, invoice_id)


def create_credit_note(
    session: Session,
    invoice_number: str,
    amount: Decimal,
    reason: str,
    settings: FinalizeSettings,
    today: dt.date,
    rounding: Rounding = Rounding.HALF_UP,
) -> Invoice:
    """Issue a credit note for part or all of an issued invoice (its own gap-free ``CN-`` sequence).

    ``amount`` is what the customer gets back, tax included; it cannot exceed what is left to credit.
    """
    invoice = get_invoice(session, invoice_number)
    if invoice.kind is not InvoiceKind.INVOICE or invoice.status in (InvoiceStatus.DRAFT, InvoiceStatus.VOID):
        raise InvoiceStateError(
            f"{invoice_number} is a {invoice.status} {invoice.kind}: only issued invoices take credit notes"
        )
    if round_money(amount, invoice.currency, rounding) != amount or amount <= 0:
        raise ValueError(f"--amount must be positive and in whole minor units of {invoice.currency} (got {amount})")
    if not reason.strip():
        raise ValueError("a credit note needs a reason")
    credited = session.execute(
        select(InvoiceRow.total).where(InvoiceRow.refers_to_id == invoice.id, InvoiceRow.kind == "credit_note")
    ).scalars().all()
    left = invoice.total - sum(credited, ZERO)
    if amount > left:
        raise ValueError(f"{invoice_number} has {left} {invoice.currency} left to credit; {amount} is too much")
    # Split the credited total back into net and tax at the invoice's rate, so tax reports stay right.
    net = round_money(amount * 100 / (100 + invoice.tax_rate), invoice.currency, rounding)
    line = InvoiceLine(
        kind="credit",
        description=f"Credit for invoice {invoice_number}: {reason}",
        amount=net,
        service_start=invoice.period_start,
        service_end=invoice.period_end,
    )
    totals = compute_totals([line], invoice.currency, invoice.tax_rate, ZERO, rounding)
    tax = amount - net  # what makes net + tax exactly the credited amount
    number_format = settings.credit_note_number_format
    seq = next_numbers(session, _sequence_name(InvoiceKind.CREDIT_NOTE, number_format, today.year))[0]
    now = _now()
    credit_id = session.execute(
        insert(InvoiceRow)
        .values(
            billing_key=f"credit:{invoice_number}:{len(credited) + 1}",
            kind=InvoiceKind.CREDIT_NOTE.value,
            number=number_format.format(year=today.year, seq=seq),
            status=InvoiceStatus.FINALIZED.value,
            customer_external_id=invoice.customer.external_id or "",
            customer=json.dumps(invoice.customer.as_dict(), sort_keys=True),
            seller=json.dumps(settings.seller.as_dict(), sort_keys=True),
            currency=invoice.currency,
            locale=invoice.locale,
            timezone="UTC",
            period_start=invoice.period_start,
            period_end=invoice.period_end,
            subtotal=totals.subtotal,
            discount=ZERO,
            tax_rate=invoice.tax_rate,
            tax=tax,
            total=amount,
            issue_date=today,
            due_date=today,
            refers_to_id=invoice.id,
            reason=reason,
            created_at=now,
            updated_at=now,
            finalized_at=now,
            status_changed_at=now,
        )
        .returning(InvoiceRow.id)
    ).scalar_one()
    return get_invoice(session, credit_id)


# --- reading ---------------------------------------------------------------------------------------------


def get_invoice(session: Session, key: int | str) -> Invoice:
    """An invoice by id, number or billing key."""
    statement = select(InvoiceRow)
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
        statement = statement.where(InvoiceRow.id == int(key))
    else:
        statement = statement.where((InvoiceRow.number == key) | (InvoiceRow.billing_key == key))
    row = session.execute(statement).scalar_one_or_none()
    if row is None:
        raise InvoiceNotFoundError(f"no invoice {key!r}")
    return _to_invoice(row, _lines_of(session, [row.id]).get(row.id, ()), _refers_to(session, row))


def get_invoices(session: Session, invoice_ids: Sequence[int]) -> list[Invoice]:
    """Invoices by id, with their lines (two queries per chunk of ids), in the order of the ids."""
    found: dict[int, Invoice] = {}
    ids = list(invoice_ids)
    for offset in range(0, len(ids), 5000):
        chunk = ids[offset : offset + 5000]
        rows = session.execute(select(InvoiceRow).where(InvoiceRow.id.in_(chunk))).scalars().all()
        lines = _lines_of(session, [row.id for row in rows])
        found.update({row.id: _to_invoice(row, lines.get(row.id, ())) for row in rows})
    return [found[invoice_id] for invoice_id in ids if invoice_id in found]


def list_invoices(
    session: Session,
    *,
    period_start: dt.date | None = None,
    status: InvoiceStatus | str | None = None,
    customer: str | None = None,
    kind: InvoiceKind | None = None,
    with_lines: bool = False,
) -> list[Invoice]:
    """Invoices, oldest first, filtered; lines are loaded (in one query) only when asked for."""
    statement = select(InvoiceRow).order_by(InvoiceRow.period_start, InvoiceRow.customer_external_id, InvoiceRow.id)
    if period_start is not None:
        statement = statement.where(InvoiceRow.period_start == period_start)
    if status is not None:
        statement = statement.where(InvoiceRow.status == str(status))
    if customer is not None:
        statement = statement.where(InvoiceRow.customer_external_id == customer)
    if kind is not None:
        statement = statement.where(InvoiceRow.kind == kind.value)
    rows = session.execute(statement).scalars().all()
    lines = _lines_of(session, [row.id for row in rows]) if with_lines else {}
    return [_to_invoice(row, lines.get(row.id, ())) for row in rows]


_BILLED = ("draft", "finalized", "paid", "uncollectible")  # not void: a void invoice billed nothing


def billed_by_period(
    session: Session, customers: Iterable[str], period_start: dt.date, *, exclude: Iterable[str] = ()
) -> dict[tuple[str, int | None, str | None], Decimal]:
    """What invoices already bill for usage of the period starting ``period_start``: the sum of usage, late-usage
    and true-up lines per (customer, subscription, meter; None for the true-up), on every invoice that is not void
    — drafts too, so usage billed late on one open invoice is not billed again on the next — except the
    invoices being written now (their billing keys in ``exclude``). Late usage is priced against it."""
    statement = (
        select(
            InvoiceRow.customer_external_id, InvoiceLineRow.subscription_id, InvoiceLineRow.meter, InvoiceLineRow.amount
        )
        .join(InvoiceRow, InvoiceRow.id == InvoiceLineRow.invoice_id)
        .where(
            InvoiceRow.status.in_(_BILLED),
            InvoiceRow.kind == "invoice",
            InvoiceLineRow.kind.in_(("usage", "late_usage", "commitment")),
            InvoiceLineRow.service_start == period_start,
            InvoiceRow.customer_external_id.in_(list(customers)),
        )
    )
    excluded = list(exclude)
    if excluded:
        statement = statement.where(InvoiceRow.billing_key.not_in(excluded))
    billed: dict[tuple[str, int | None, str | None], Decimal] = {}
    for customer, subscription_id, meter, amount in session.execute(statement):
        key = (customer, subscription_id, meter)
        billed[key] = billed.get(key, ZERO) + amount
    return billed


def billed_fees(
    session: Session, fees: Iterable[tuple[int, dt.date]], *, exclude: Iterable[str] = ()
) -> dict[tuple[int, dt.date], Decimal]:
    """What invoices that are not void bill as the subscription fee of each (subscription, fee period start),
    except the invoices being written now (billing keys in ``exclude``)."""
    wanted = set(fees)
    if not wanted:
        return {}
    statement = (
        select(InvoiceLineRow.subscription_id, InvoiceLineRow.service_start, InvoiceLineRow.amount)
        .join(InvoiceRow, InvoiceRow.id == InvoiceLineRow.invoice_id)
        .where(
            InvoiceRow.status.in_(_BILLED),
            InvoiceRow.kind == "invoice",
            InvoiceLineRow.kind == "subscription",
            InvoiceLineRow.subscription_id.in_(sorted({subscription for subscription, _ in wanted})),
        )
    )
    excluded = list(exclude)
    if excluded:
        statement = statement.where(InvoiceRow.billing_key.not_in(excluded))
    billed: dict[tuple[int, dt.date], Decimal] = dict.fromkeys(wanted, ZERO)
    for subscription_id, service_start, amount in session.execute(statement):
        key = (subscription_id, service_start)
        if key in billed:
            billed[key] += amount
    return billed


def _for_update(session: Session | Connection, statement: Select[Any]) -> Select[Any]:
    # SQLite has no row locks; its transactions begin IMMEDIATE and so already hold the write lock.
    dialect = session.dialect if isinstance(session, Connection) else session.get_bind().dialect
    return statement.with_for_update() if dialect.name == "postgresql" else statement


def _lines_of(session: Session, invoice_ids: list[int]) -> dict[int, tuple[InvoiceLine, ...]]:
    if not invoice_ids:
        return {}
    grouped: dict[int, list[InvoiceLine]] = {}
    statement = (
        select(InvoiceLineRow)
        .where(InvoiceLineRow.invoice_id.in_(invoice_ids))
        .order_by(InvoiceLineRow.invoice_id, InvoiceLineRow.position)
    )
    for row in session.execute(statement).scalars():
        grouped.setdefault(row.invoice_id, []).append(
            InvoiceLine(
                kind=row.kind,
                description=row.description,
                amount=row.amount,
                quantity=row.quantity,
                unit=row.unit,
                section=row.section,
                service_start=row.service_start,
                service_end=row.service_end,
                meter=row.meter,
                model=row.model,
                details=json.loads(row.details),
                subscription_id=row.subscription_id,
                plan_code=row.plan_code,
                plan_version=row.plan_version,
            )
        )
    return {key: tuple(value) for key, value in grouped.items()}


def _refers_to(session: Session, row: InvoiceRow) -> str | None:
    if row.refers_to_id is None:
        return None
    return session.execute(select(InvoiceRow.number).where(InvoiceRow.id == row.refers_to_id)).scalar_one_or_none()


def _to_invoice(row: InvoiceRow, lines: Sequence[InvoiceLine], refers_to: str | None = None) -> Invoice:
    seller = json.loads(row.seller or "{}")
    return Invoice(
        id=row.id,
        number=row.number,
        kind=InvoiceKind(row.kind),
        status=InvoiceStatus(row.status),
        billing_key=row.billing_key,
        customer=Party.from_dict(json.loads(row.customer)),
        seller=Party.from_dict(seller) if seller else Party(name=""),
        currency=row.currency,
        locale=row.locale,
        period_start=row.period_start,
        period_end=row.period_end,
        lines=tuple(lines),
        subtotal=row.subtotal,
        discount=row.discount,
        tax_rate=row.tax_rate,
        tax=row.tax,
        total=row.total,
        issue_date=row.issue_date,
        due_date=row.due_date,
        finalized_at=row.finalized_at,
        refers_to=refers_to,
        reason=row.reason,
    )
