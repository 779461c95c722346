"""Drafts: the invoices billing runs write and refresh until they are finalized. A draft is stored under its
billing key (a re-run finds it and rewrites it only when its content changed); an issued invoice under that key is
never touched. Every function works inside the caller's transaction (a Session), except ``DraftWriter``, which
commits each draft on a connection of its own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, bindparam, delete, insert, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from dbkit import for_update, is_sqlite, utcnow, writelock
from invoices.model import (
    COUPON_TERMS,
    LINE_TAX_INCLUSIVE,
    LINE_TAX_RATE,
    DraftInvoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceScope,
    InvoiceStatus,
    LineKind,
    TaxLine,
    taxes_to_json,
)
from invoices.tables import InvoiceLineRow, InvoiceRow

__all__ = [
    "LINE_FIELDS",
    "DraftOutcome",
    "DraftRow",
    "DraftWriter",
    "StoredDraft",
    "delete_opening_draft",
    "draft_row",
    "remove_stale_drafts",
    "stored_drafts",
    "touch_drafts",
    "upsert_draft",
]


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


# The tables themselves: the draft statements are Core statements, compiled once (see ``_Prepared``).
_INVOICES = cast(Table, InvoiceRow.__table__)
_LINES = cast(Table, InvoiceLineRow.__table__)


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
    "service_end", "details", "subscription_id", "plan_code", "plan_version", "dimension",
)
# Columns a draft writes on its invoice row.
_DRAFT_COLUMNS = (
    "customer_external_id", "customer", "currency", "locale", "timezone", "period_start", "period_end", "subtotal",
    "discount", "tax_rate", "tax", "total", "taxes", "content_hash", "usage_as_of", "updated_at",
)
_INSERT_COLUMNS = ("billing_key", "kind", "status", "seller", "created_at", "scope", "subscription_id", *_DRAFT_COLUMNS)


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
    cursor = _open(connection.connection.dbapi_connection).cursor()
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
        # SQLite's transactions begin IMMEDIATE, retried while the database stays locked (dbkit.writelock);
        # psycopg begins one with the first statement.
        self._sqlite = is_sqlite(engine)
        self._database = engine.url.database

    def write(self, billing_key: str, row: DraftRow, *, known_absent: bool = False) -> DraftOutcome:
        """Store ``row`` (``draft_row`` of a draft) under ``billing_key``, as ``upsert_draft`` does."""
        dbapi = _open(self._connection.driver_connection)
        cursor = dbapi.cursor()
        try:
            if self._sqlite:
                writelock.begin(cursor.execute, database=self._database)
            outcome = _write_draft(cursor, self._statements, billing_key, row, known_absent)
            dbapi.commit()
        except BaseException:
            with suppress(Exception):  # (a broken connection cannot roll back: the error that broke it is raised)
                dbapi.rollback()
            raise
        finally:
            cursor.close()
            if self._sqlite:
                writelock.ended()
        return outcome

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> DraftWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _open(dbapi_connection: Any) -> Any:
    """The driver's connection, which a closed pooled connection no longer has."""
    if dbapi_connection is None:
        raise RuntimeError("the connection is closed")
    return dbapi_connection


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
        created = values["updated_at"]
        fixed = (billing_key, "invoice", "draft", "{}", created, values["scope"], values["subscription_id"])
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
        key = (type(dialect), dialect.driver, dialect.paramstyle)
        statements = _PREPARED.get(key)
        if statements is None:
            by_id = _INVOICES.c.id == bindparam("invoice_id")
            stored = select(_INVOICES.c.id, _INVOICES.c.status, _INVOICES.c.content_hash).where(
                _INVOICES.c.billing_key == bindparam("billing_key")
            )
            stored = for_update(dialect, stored)  # (SQLite has no row locks; its write transaction locks the file)
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


_PREPARED: dict[tuple[type[Dialect], str, str], _DraftStatements] = {}


def draft_row(draft: DraftInvoice) -> DraftRow:
    """The invoice row's values (with ``content_hash``, a hash of everything a customer would see) and its lines
    as tuples in ``LINE_FIELDS`` order."""
    totals = draft.totals
    lines = [
        (
            position,
            line.section,
            str(line.kind),
            line.description,
            line.meter,
            line.model,
            line.quantity,
            line.unit,
            line.amount,
            line.service_start,
            line.service_end,
            line.details.to_json(),
            line.subscription_id,
            line.plan_code,
            line.plan_version,
            line.dimension,
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
    # Taxes that say no more than the one rate (the buyer's rate on everything, nothing reverse-charged, exempt or
    # included in prices) are not stored: such an invoice reads back the same, and hashes as before taxes were kept.
    taxes = draft.tax_lines
    one_rate = (TaxLine(rate=draft.tax_rate, taxable=totals.subtotal - totals.discount, amount=totals.tax),)
    if taxes != one_rate:
        values["taxes"] = taxes_to_json(taxes)
    # The hash reads every stored value once; the lines' details are JSON already, so nothing is encoded twice.
    digest = hashlib.sha256(repr(sorted(values.items())).encode())
    # (a line's dimension is hashed only when it has one: a draft stored before lines had one hashes as before;
    # a discount line's coupon terms are not hashed, as before they were kept: its description says them)
    hashed = [_hashed_line(line, row) for line, row in zip(draft.lines, lines, strict=True)]
    digest.update(repr([row if row[-1] is not None else row[:-1] for row in hashed]).encode())
    values["content_hash"] = digest.hexdigest()
    values.setdefault("taxes", None)
    values["usage_as_of"] = draft.usage_as_of
    values["updated_at"] = utcnow()
    # What the billing key says, in its own columns: not hashed (the key, which says it, is not hashed either).
    values["scope"] = draft.scope.value
    values["subscription_id"] = draft.subscription_id
    return values, lines


def _hashed_line(line: InvoiceLine, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A line's stored values as its draft's hash reads them: its details without its tax rate (the invoice's
    taxes are hashed) and, for a discount line, without its coupon's ``terms`` (kept for the invoice to word them in
    its language; the description says the same). A draft stored before lines kept either hashes as before."""
    unhashed = _UNHASHED_DISCOUNT if line.kind == LineKind.DISCOUNT else _UNHASHED
    if unhashed.isdisjoint(line.details.extra):
        return row
    extra = {key: value for key, value in line.details.extra.items() if key not in unhashed}
    return (*row[:11], replace(line.details, extra=extra).to_json(), *row[12:])


_UNHASHED = frozenset({LINE_TAX_RATE, LINE_TAX_INCLUSIVE})
_UNHASHED_DISCOUNT = _UNHASHED | {COUPON_TERMS}


def remove_stale_drafts(
    session: Session,
    period_start: dt.date,
    keep: Iterable[str],
    customer: str | None = None,
    *,
    period_end: dt.date | None = None,
    owned: Callable[[str], bool] | None = None,
) -> list[str]:
    """Delete the period drafts (scope ``period``) of the period starting ``period_start`` (and ending on
    ``period_end``, if given) whose key is
    not in ``keep`` (what a billing run of that period just wrote, found unchanged or could not rate): a customer
    whose subscription was ended before the period, or who has nothing left to invoice in it, must not keep a
    draft that finalization would issue. Only drafts, and only those: the others are neither deleted nor locked
    (a concurrent finalization claims them as usual); its lines go with it. ``owned``: only the drafts of the
    customers it accepts (a billing run of one shard of the customers leaves the others' alone). Returns the keys
    deleted."""
    statement = select(InvoiceRow.id, InvoiceRow.billing_key, InvoiceRow.customer_external_id).where(
        InvoiceRow.kind == InvoiceKind.INVOICE.value,
        InvoiceRow.status == InvoiceStatus.DRAFT.value,
        InvoiceRow.period_start == period_start,
        InvoiceRow.scope == InvoiceScope.PERIOD.value,
    )
    if customer is not None:
        statement = statement.where(InvoiceRow.customer_external_id == customer)
    if period_end is not None:  # (a week and a month may start on the same day)
        statement = statement.where(InvoiceRow.period_end == period_end)
    kept = set(keep)
    stale = sorted(
        invoice_id
        for invoice_id, key, owner in session.execute(statement)
        if key not in kept and (owned is None or owned(owner))
    )
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


def delete_opening_draft(session: Session, subscription_id: int) -> bool:
    """Delete the subscription's opening invoice if it is still a draft (one without a number: nothing is lost),
    with its lines; whether there was one."""
    statement = select(InvoiceRow.id).where(
        InvoiceRow.scope == InvoiceScope.OPENING.value,
        InvoiceRow.subscription_id == subscription_id,
        InvoiceRow.status == InvoiceStatus.DRAFT.value,
    )
    invoice_id = session.execute(statement).scalar_one_or_none()
    if invoice_id is None:
        return False
    session.execute(delete(InvoiceLineRow).where(InvoiceLineRow.invoice_id == invoice_id))
    session.execute(
        delete(InvoiceRow).where(InvoiceRow.id == invoice_id, InvoiceRow.status == InvoiceStatus.DRAFT.value)
    )
    return True
