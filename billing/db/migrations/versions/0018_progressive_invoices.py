"""Progressive invoices: an invoice of a subscription's usage so far, issued during its period when the usage
charges reach an amount of the plan's ``progressive_billing`` (scope ``progressive``, billing key
``progressive:<subscription id>:<period label>:<amount>``, unique like every billing key).

PostgreSQL replaces the scope check. SQLite cannot alter a constraint, and rebuilding ``invoices`` would delete
every invoice line through their cascading foreign key; the check lives in the table's stored definition, so
the definition is edited in place (``PRAGMA writable_schema``, as SQLite documents for changes that leave the
stored rows valid: every row satisfies the new, wider check) and the schema version is bumped so that every
connection reads it again.

Revision ID: 0018
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0015"
branch_labels = None
depends_on = None

BEFORE = "scope IN ('period', 'opening', 'credit')"
AFTER = "scope IN ('period', 'opening', 'credit', 'progressive')"


def upgrade() -> None:
    _replace_check(BEFORE, AFTER)


def downgrade() -> None:
    found = op.get_bind().execute(sa.text("SELECT billing_key FROM invoices WHERE scope = 'progressive' LIMIT 1"))
    if found.first() is not None:
        raise RuntimeError("progressive invoices exist: their scope would be lost")
    _replace_check(AFTER, BEFORE)


def _replace_check(old: str, new: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.drop_constraint("ck_invoices_scope", "invoices", type_="check")
        op.create_check_constraint("ck_invoices_scope", "invoices", new)
        return
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.execute(
        sa.text("UPDATE sqlite_master SET sql = replace(sql, :old, :new) WHERE type = 'table' AND name = 'invoices'"),
        {"old": old, "new": new},
    )
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    stored = bind.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'invoices'")
    if new not in stored.scalar_one():
        raise RuntimeError(f"the invoices table's scope check was not replaced: expected {new!r} in its definition")
