"""Guards on the two histories: an invoice's status changes and the billing runs are written once, never rewritten.

- **Status history** (``invoice_status_changes``): rows are only added. No update; no delete (an issued invoice,
  the only kind with a history, cannot be deleted either: migration 0010).
- **Billing runs** (``billing_runs``): a record is added when a run starts and ended once — its ``outcome``,
  ``finished_at``, ``error`` and ``report`` set while it is ``running``. Nothing else of it changes, an ended record
  not at all, and none is deleted. (A process killed mid-run leaves its record ``running``; ending it by hand is
  still possible.)
- On SQLite, ``INSERT OR REPLACE`` deletes the row in the way without firing its delete trigger: an insert onto
  an existing row's id is refused too (as migration 0010 does for issued invoices).

Revision ID: 0037
Revises: 0036
"""

from __future__ import annotations

from alembic import op

revision = "0037"
down_revision = "0036"
branch_labels = None
depends_on = None

STATUS_MESSAGE = "invoice status history: a status change is recorded once; it cannot be changed or deleted"
RUN_MESSAGE = "billing run record: it is ended once (outcome, finished_at, error, report); it cannot change after"
RUN_DELETE_MESSAGE = "billing run record: the history of runs is kept; a record cannot be deleted"
# What a record never changes (a running record may change only how it ended: outcome, finished_at, error, report).
FIXED = ("id", "period_start", "period_end", "customer_external_id", "shard", "finalize", "source", "actor",
         "started_at")  # fmt: skip


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_upgrade()
    else:
        _sqlite_upgrade()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER billing_runs_guard ON billing_runs")
        op.execute("DROP FUNCTION billing_runs_guard()")
        op.execute("DROP TRIGGER invoice_status_changes_guard ON invoice_status_changes")
        op.execute("DROP FUNCTION invoice_status_changes_guard()")
        return
    for name in _SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER {name}")


# -- SQLite ----------------------------------------------------------------------------------------------------

_SQLITE_TRIGGERS = (
    "invoice_status_changes_no_update",
    "invoice_status_changes_no_delete",
    "invoice_status_changes_no_replace",
    "billing_runs_no_update",
    "billing_runs_no_delete",
    "billing_runs_no_replace",
)


def _raise(message: str) -> str:
    return f"BEGIN SELECT RAISE(ABORT, '{message}'); END"


def _sqlite_upgrade() -> None:
    for event in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER invoice_status_changes_no_{event.lower()} BEFORE {event} ON invoice_status_changes "
            f"{_raise(STATUS_MESSAGE)}"
        )
    op.execute(
        f"""CREATE TRIGGER invoice_status_changes_no_replace BEFORE INSERT ON invoice_status_changes
        WHEN EXISTS (SELECT 1 FROM invoice_status_changes c WHERE c.id = NEW.id) {_raise(STATUS_MESSAGE)}"""
    )
    fixed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in FIXED)
    op.execute(
        f"""CREATE TRIGGER billing_runs_no_update BEFORE UPDATE ON billing_runs
        WHEN OLD.outcome <> 'running' OR {fixed} {_raise(RUN_MESSAGE)}"""
    )
    op.execute(f"CREATE TRIGGER billing_runs_no_delete BEFORE DELETE ON billing_runs {_raise(RUN_DELETE_MESSAGE)}")
    op.execute(
        f"""CREATE TRIGGER billing_runs_no_replace BEFORE INSERT ON billing_runs
        WHEN EXISTS (SELECT 1 FROM billing_runs r WHERE r.id = NEW.id) {_raise(RUN_DELETE_MESSAGE)}"""
    )


# -- PostgreSQL ------------------------------------------------------------------------------------------------


def _postgresql_upgrade() -> None:
    op.execute(
        f"""CREATE FUNCTION invoice_status_changes_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION '{STATUS_MESSAGE}' USING ERRCODE = 'check_violation';
        END $$"""
    )
    op.execute(
        "CREATE TRIGGER invoice_status_changes_guard BEFORE UPDATE OR DELETE ON invoice_status_changes "
        "FOR EACH ROW EXECUTE FUNCTION invoice_status_changes_guard()"
    )
    fixed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in FIXED)
    op.execute(
        f"""CREATE FUNCTION billing_runs_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP = 'DELETE' THEN
            RAISE EXCEPTION '{RUN_DELETE_MESSAGE}' USING ERRCODE = 'check_violation';
          END IF;
          IF OLD.outcome <> 'running' OR {fixed} THEN
            RAISE EXCEPTION '{RUN_MESSAGE}' USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$"""
    )
    op.execute(
        "CREATE TRIGGER billing_runs_guard BEFORE UPDATE OR DELETE ON billing_runs "
        "FOR EACH ROW EXECUTE FUNCTION billing_runs_guard()"
    )
