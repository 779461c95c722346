"""Invoice billing keys up to 512 characters: a period invoice's key is ``period:<customer>:<period label>``, and
a customer's external id alone may take 255 characters (its column's length), so the key outgrew its 255.

PostgreSQL alters the column. SQLite does not enforce a ``VARCHAR`` length, and rebuilding ``invoices`` would
delete every invoice line through their cascading foreign key, so the stored definition is edited in place, as
migration 0018 does (every stored row is valid under the new definition).

Revision ID: 0020
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _resize(255, 512)


def downgrade() -> None:
    _resize(512, 255)


def _resize(old: int, new: int) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.alter_column("invoices", "billing_key", type_=sa.String(new), existing_type=sa.String(old))
        return
    before, after = f"billing_key VARCHAR({old})", f"billing_key VARCHAR({new})"
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.execute(
        sa.text("UPDATE sqlite_master SET sql = replace(sql, :old, :new) WHERE type = 'table' AND name = 'invoices'"),
        {"old": before, "new": after},
    )
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    stored = bind.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'invoices'")
    if after not in stored.scalar_one():
        raise RuntimeError(f"the invoices table's billing key was not resized: expected {after!r} in its definition")
