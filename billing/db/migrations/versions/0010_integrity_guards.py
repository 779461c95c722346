"""Integrity guards in the database: an invoice's status moves only as the lifecycle allows, an invoice's id never
changes, an issued invoice or line cannot be replaced, and a usage event an issued invoice counted cannot be
deleted or changed.

- **Status.** ``draft → finalized → paid | void | uncollectible``, ``uncollectible → paid | void``, nothing else
  (migration 0003 only kept an issued invoice from going back to draft or leaving paid and void, so
  uncollectible → finalized got through). A new row is a draft (a credit note: finalized).
- **Id.** An invoice's ``id`` never changes: lines and credit notes refer to it, and on SQLite with foreign keys
  off nothing else would stop it. The number was already frozen once issued.
- **Replace.** SQLite's ``INSERT OR REPLACE`` / ``UPDATE OR REPLACE`` delete the row in the way without firing its
  delete triggers; inserts and updates that would replace an issued invoice or a line of one, and updates that
  would replace a counted usage event, are refused. (Inserts into ``usage_events`` are not checked: ingestion's
  speed is worth more than stopping a hand-written ``REPLACE INTO usage_events``; on SQLite, whoever can write the
  file can drop any trigger anyway, so there the guards stop mistakes and the file's permissions stop people.)
- **Counted usage events.** An event is counted when an issued (not draft) period invoice of its customer covers
  its instant. Invoices store their period as local dates in the customer's timezone, which SQLite cannot convert,
  so the rule widens the period by 14 hours on both sides (UTC offsets run from −12 to +14 hours): it never lets a
  counted event go, and may keep an event up to 14 hours outside a period. One index lookup per deleted event
  (``ix_invoices_customer_period``). Such an event is never deleted or changed, nor is another moved onto it: the
  late-usage re-rating of an issued period counts all of its events again, so a deleted one would be given back
  silently on a later invoice.
- PostgreSQL's trigger functions that read other tables run with ``search_path`` pinned to this schema (then
  ``pg_temp``), so a temporary table of the same name cannot stand in for ``invoices``.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# What an issued invoice can never change, as migration 0008 froze it (the id is now frozen on every invoice).
FROZEN_COLUMNS = (
    "billing_key", "kind", "number", "customer_external_id", "customer", "seller", "currency", "locale", "timezone",
    "period_start", "period_end", "subtotal", "discount", "tax_rate", "tax", "total", "issue_date", "due_date",
    "refers_to_id", "reason", "finalized_at", "usage_as_of", "content_hash", "scope", "subscription_id",
)
MESSAGE = "invoice is issued: its number, amounts and lines cannot change"
ID_MESSAGE = "invoice id cannot change: its lines and credit notes refer to it"
TRANSITION_MESSAGE = (
    "invoice status cannot change that way: draft → finalized → paid | void | uncollectible, "
    "uncollectible → paid | void"
)
INSERT_MESSAGE = "a new invoice is a draft (a credit note: finalized); its status moves on from there"
EVENT_MESSAGE = "usage event is counted by an issued invoice: it cannot be deleted or changed"

# (OLD.status, NEW.status) pairs the lifecycle allows besides staying put.
ALLOWED = "(OLD.status = 'draft' AND NEW.status = 'finalized') OR (OLD.status = 'finalized' AND NEW.status IN " \
    "('paid', 'void', 'uncollectible')) OR (OLD.status = 'uncollectible' AND NEW.status IN ('paid', 'void'))"
# 14 hours in microseconds, and a day: usage_events.occurred_at is microseconds since 1970-01-01T00:00:00Z.
WIDEN = 14 * 3600 * 1_000_000
DAY = 86400 * 1_000_000


def _counted_sqlite(row: str) -> str:
    """Whether the usage event ``row`` (NEW, OLD or an alias) lies in an issued period invoice of its customer."""
    return (
        f"EXISTS (SELECT 1 FROM invoices i WHERE i.customer_external_id = {row}.customer AND i.scope = 'period' "
        "AND i.status <> 'draft' "
        f"AND i.period_start <= date(({row}.occurred_at + {WIDEN}) / 1000000.0, 'unixepoch') "
        f"AND i.period_end > date(({row}.occurred_at - {WIDEN}) / 1000000.0, 'unixepoch'))"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_upgrade()
    else:
        _sqlite_upgrade()


# -- SQLite ----------------------------------------------------------------------------------------------------

_SQLITE_TRIGGERS = (
    "invoices_id_immutable",
    "invoices_status_transition",
    "invoices_insert_status",
    "invoices_issued_no_replace",
    "invoices_issued_no_replace_update",
    "invoice_lines_issued_no_replace",
    "invoice_lines_issued_no_replace_update",
    "usage_events_counted_no_delete",
    "usage_events_counted_no_update",
)


def _raise(message: str) -> str:
    return f"BEGIN SELECT RAISE(ABORT, '{message}'); END"


def _sqlite_upgrade() -> None:
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in FROZEN_COLUMNS)
    # the status rule moves to a trigger of its own, with its own message
    op.execute("DROP TRIGGER invoices_issued_immutable")
    op.execute(
        f"""CREATE TRIGGER invoices_issued_immutable BEFORE UPDATE ON invoices
        WHEN OLD.status <> 'draft' AND ({changed}) {_raise(MESSAGE)}"""
    )
    op.execute(
        f"""CREATE TRIGGER invoices_id_immutable BEFORE UPDATE OF id ON invoices
        WHEN NEW.id IS NOT OLD.id {_raise(ID_MESSAGE)}"""
    )
    op.execute(
        f"""CREATE TRIGGER invoices_status_transition BEFORE UPDATE OF status ON invoices
        WHEN NEW.status IS NOT OLD.status AND NOT ({ALLOWED}) {_raise(TRANSITION_MESSAGE)}"""
    )
    op.execute(
        f"""CREATE TRIGGER invoices_insert_status BEFORE INSERT ON invoices
        WHEN NEW.status NOT IN ('draft', 'finalized') {_raise(INSERT_MESSAGE)}"""
    )
    # OR REPLACE deletes the row whose id, number or billing key the new one takes, without its delete trigger
    issued_in_the_way = (
        "EXISTS (SELECT 1 FROM invoices o WHERE o.status <> 'draft' AND {other} "
        "AND (o.id = NEW.id OR o.number = NEW.number OR o.billing_key = NEW.billing_key))"
    )
    op.execute(
        f"""CREATE TRIGGER invoices_issued_no_replace BEFORE INSERT ON invoices
        WHEN {issued_in_the_way.format(other="1")} {_raise(MESSAGE)}"""
    )
    op.execute(
        f"""CREATE TRIGGER invoices_issued_no_replace_update BEFORE UPDATE ON invoices
        WHEN {issued_in_the_way.format(other="o.id <> OLD.id")} {_raise(MESSAGE)}"""
    )
    issued_line_in_the_way = (
        "EXISTS (SELECT 1 FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id "
        "WHERE l.id = NEW.id AND {other} AND i.status <> 'draft')"
    )
    op.execute(
        f"""CREATE TRIGGER invoice_lines_issued_no_replace BEFORE INSERT ON invoice_lines
        WHEN {issued_line_in_the_way.format(other="1")} {_raise(MESSAGE)}"""
    )
    op.execute(
        f"""CREATE TRIGGER invoice_lines_issued_no_replace_update BEFORE UPDATE OF id ON invoice_lines
        WHEN NEW.id IS NOT OLD.id AND {issued_line_in_the_way.format(other="l.id <> OLD.id")} {_raise(MESSAGE)}"""
    )
    op.execute(
        f"""CREATE TRIGGER usage_events_counted_no_delete BEFORE DELETE ON usage_events
        WHEN {_counted_sqlite("OLD")} {_raise(EVENT_MESSAGE)}"""
    )
    event_in_the_way = (
        "EXISTS (SELECT 1 FROM usage_events e WHERE (e.event_id = NEW.event_id OR e.id = NEW.id) AND {other} "
        f"AND {_counted_sqlite('e')})"
    )
    op.execute(
        f"""CREATE TRIGGER usage_events_counted_no_update BEFORE UPDATE ON usage_events
        WHEN {_counted_sqlite("OLD")} OR {_counted_sqlite("NEW")}
             OR {event_in_the_way.format(other="e.id <> OLD.id")} {_raise(EVENT_MESSAGE)}"""
    )
    # (No insert trigger on usage_events: ingestion inserts millions of rows, and a trigger on each costs it a
    # noticeable share of its speed to stop only a hand-written REPLACE INTO.)


def _sqlite_downgrade() -> None:
    for name in _SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER {name}")
    op.execute("DROP TRIGGER invoices_issued_immutable")
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in FROZEN_COLUMNS)
    op.execute(
        f"""CREATE TRIGGER invoices_issued_immutable BEFORE UPDATE ON invoices
        WHEN OLD.status <> 'draft' AND ({changed} OR NEW.status = 'draft'
             OR (OLD.status IN ('paid', 'void') AND NEW.status <> OLD.status))
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"""
    )


# -- PostgreSQL ------------------------------------------------------------------------------------------------


def _pinned() -> str:
    """``SET search_path`` for a function that reads tables: this schema, then pg_temp (searched last, so a
    temporary ``invoices`` cannot shadow the real one)."""
    schema = op.get_bind().execute(sa.text("SELECT quote_ident(current_schema())")).scalar_one()
    return f"SET search_path = {schema}, pg_temp"


def _postgresql_upgrade() -> None:
    changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in FROZEN_COLUMNS)
    op.execute(
        f"""CREATE OR REPLACE FUNCTION invoices_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP = 'DELETE' THEN
            IF OLD.status <> 'draft' THEN RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'check_violation'; END IF;
            RETURN OLD;
          END IF;
          IF TG_OP = 'INSERT' THEN
            IF NEW.status NOT IN ('draft', 'finalized') THEN
              RAISE EXCEPTION '{INSERT_MESSAGE}' USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
          END IF;
          IF NEW.id IS DISTINCT FROM OLD.id THEN
            RAISE EXCEPTION '{ID_MESSAGE}' USING ERRCODE = 'check_violation';
          END IF;
          IF OLD.status <> 'draft' AND ({changed}) THEN
            RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'check_violation';
          END IF;
          IF NEW.status IS DISTINCT FROM OLD.status AND NOT ({ALLOWED}) THEN
            RAISE EXCEPTION '{TRANSITION_MESSAGE}' USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$"""
    )
    op.execute("DROP TRIGGER invoices_guard ON invoices")
    op.execute(
        "CREATE TRIGGER invoices_guard BEFORE INSERT OR UPDATE OR DELETE ON invoices "
        "FOR EACH ROW EXECUTE FUNCTION invoices_guard()"
    )
    pinned = _pinned()
    op.execute(f"ALTER FUNCTION invoice_lines_guard() {pinned}")
    op.execute(
        f"""CREATE FUNCTION usage_event_counted(p_customer text, p_occurred_at bigint) RETURNS boolean
        LANGUAGE sql STABLE {pinned} AS $$
          SELECT EXISTS (
            SELECT 1 FROM invoices i
            WHERE i.customer_external_id = p_customer AND i.scope = 'period' AND i.status <> 'draft'
              AND i.period_start <= DATE '1970-01-01' + floor((p_occurred_at + {WIDEN}) / {DAY}.0)::int
              AND i.period_end > DATE '1970-01-01' + floor((p_occurred_at - {WIDEN}) / {DAY}.0)::int)
        $$"""
    )
    op.execute(
        f"""CREATE FUNCTION usage_events_guard() RETURNS trigger LANGUAGE plpgsql {pinned} AS $$
        BEGIN
          IF usage_event_counted(OLD.customer, OLD.occurred_at)
             OR (TG_OP = 'UPDATE' AND usage_event_counted(NEW.customer, NEW.occurred_at)) THEN
            RAISE EXCEPTION '{EVENT_MESSAGE}' USING ERRCODE = 'check_violation';
          END IF;
          IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
          RETURN NEW;
        END $$"""
    )
    op.execute(
        "CREATE TRIGGER usage_events_guard BEFORE UPDATE OR DELETE ON usage_events "
        "FOR EACH ROW EXECUTE FUNCTION usage_events_guard()"
    )


def _postgresql_downgrade() -> None:
    op.execute("DROP TRIGGER usage_events_guard ON usage_events")
    op.execute("DROP FUNCTION usage_events_guard()")
    op.execute("DROP FUNCTION usage_event_counted(text, bigint)")
    op.execute("ALTER FUNCTION invoice_lines_guard() RESET search_path")
    op.execute("DROP TRIGGER invoices_guard ON invoices")
    op.execute(
        "CREATE TRIGGER invoices_guard BEFORE UPDATE OR DELETE ON invoices "
        "FOR EACH ROW EXECUTE FUNCTION invoices_guard()"
    )
    changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in FROZEN_COLUMNS)
    op.execute(
        f"""CREATE OR REPLACE FUNCTION invoices_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP = 'DELETE' THEN
            IF OLD.status <> 'draft' THEN RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'check_violation'; END IF;
            RETURN OLD;
          END IF;
          IF OLD.status <> 'draft' AND ({changed} OR NEW.status = 'draft'
             OR (OLD.status IN ('paid', 'void') AND NEW.status <> OLD.status)) THEN
            RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$"""
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_downgrade()
    else:
        _sqlite_downgrade()
