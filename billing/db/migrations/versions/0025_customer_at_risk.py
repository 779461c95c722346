"""Churn-risk notifications: the notification kind ``customer.at_risk`` (``billing metrics risk``), created once per
customer and period (a unique index on customer and period over the rows of that kind).

PostgreSQL replaces the kind check. SQLite cannot alter a constraint, and rebuilding ``notifications`` would delete
every delivery attempt through their cascading foreign key; the check lives in the table's stored definition, so
the definition is edited in place (as migrations 0018 and 0020 do: every stored row satisfies the wider check) and
the schema version is bumped so that every connection reads it again.

Revision ID: 0025
Revises: 0021
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0021"
branch_labels = None
depends_on = None

KINDS = (
    "'usage.threshold_crossed', 'spend.threshold_crossed', 'invoice.finalized',"
    " 'credit.balance_low', 'credit.balance_depleted'"
)
BEFORE = f"kind IN ({KINDS})"
AFTER = f"kind IN ({KINDS}, 'customer.at_risk')"
AT_RISK = sa.text("kind = 'customer.at_risk'")


def upgrade() -> None:
    _replace_check(BEFORE, AFTER)
    op.create_index(
        "ux_notifications_at_risk",
        "notifications",
        ["customer_external_id", "period"],
        unique=True,
        sqlite_where=AT_RISK,
        postgresql_where=AT_RISK,
    )


def downgrade() -> None:
    found = op.get_bind().execute(sa.text("SELECT id FROM notifications WHERE kind = 'customer.at_risk' LIMIT 1"))
    if found.first() is not None:
        raise RuntimeError("customer.at_risk notifications exist: their kind would be refused")
    op.drop_index("ux_notifications_at_risk", "notifications")
    _replace_check(AFTER, BEFORE)


def _replace_check(old: str, new: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.drop_constraint("ck_notifications_kind", "notifications", type_="check")
        op.create_check_constraint("ck_notifications_kind", "notifications", new)
        return
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.execute(
        sa.text(
            "UPDATE sqlite_master SET sql = replace(sql, :old, :new) WHERE type = 'table' AND name = 'notifications'"
        ),
        {"old": old, "new": new},
    )
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    stored = bind.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'notifications'")
    if new not in stored.scalar_one():
        raise RuntimeError(f"the notifications table's kind check was not replaced: expected {new!r} in its definition")
