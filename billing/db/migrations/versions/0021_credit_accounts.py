"""Credit alerts and automatic top-ups: ``credit_accounts`` (a customer's credit in one currency: its low-balance
level, its automatic top-up, where its alerts stand), and the notification kinds ``credit.balance_low`` and
``credit.balance_depleted``.

PostgreSQL replaces the notifications' kind check. SQLite cannot alter a constraint, and rebuilding
``notifications`` would delete every delivery attempt through their cascading foreign key; the check lives in the
table's stored definition, so the definition is edited in place, as migration 0018 does for the invoices' scope
(every stored row satisfies the new, wider check).

Revision ID: 0021
Revises: 0023
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dbkit.types import ExactDecimal

revision = "0021"
down_revision = "0023"
branch_labels = None
depends_on = None

BEFORE = "kind IN ('usage.threshold_crossed', 'spend.threshold_crossed', 'invoice.finalized')"
AFTER = (
    "kind IN ('usage.threshold_crossed', 'spend.threshold_crossed', 'invoice.finalized',"
    " 'credit.balance_low', 'credit.balance_depleted')"
)


def upgrade() -> None:
    op.create_table(
        "credit_accounts",
        sa.Column("customer_external_id", sa.String(255), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("low_balance", ExactDecimal(), nullable=True),
        sa.Column("topup_below", ExactDecimal(), nullable=True),
        sa.Column("topup_amount", ExactDecimal(), nullable=True),
        sa.Column("topup_grant_id", sa.BigInteger(), nullable=True),
        sa.Column("below_low", sa.Boolean(), nullable=False),
        sa.Column("depleted", sa.Boolean(), nullable=False),
        sa.Column("low_alerts", sa.Integer(), nullable=False),
        sa.Column("depleted_alerts", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("CAST(low_balance AS NUMERIC) > 0", name="ck_credit_accounts_low_balance_positive"),
        sa.CheckConstraint("CAST(topup_below AS NUMERIC) > 0", name="ck_credit_accounts_topup_below_positive"),
        sa.CheckConstraint("CAST(topup_amount AS NUMERIC) > 0", name="ck_credit_accounts_topup_amount_positive"),
        sa.CheckConstraint("(topup_below IS NULL) = (topup_amount IS NULL)", name="ck_credit_accounts_topup_whole"),
        sa.ForeignKeyConstraint(
            ["customer_external_id"],
            ["customers.external_id"],
            name="fk_credit_accounts_customer_external_id_customers",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("customer_external_id", "currency", name="pk_credit_accounts"),
    )
    _replace_check(BEFORE, AFTER)


def downgrade() -> None:
    kinds = "('credit.balance_low', 'credit.balance_depleted')"
    found = op.get_bind().execute(sa.text(f"SELECT id FROM notifications WHERE kind IN {kinds} LIMIT 1"))
    if found.first() is not None:
        raise RuntimeError("credit alerts exist among the notifications: their kind would be refused")
    _replace_check(AFTER, BEFORE)
    op.drop_table("credit_accounts")


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
