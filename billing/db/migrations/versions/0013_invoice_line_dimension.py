"""Invoice lines name the part of a charge priced by event dimension they bill (``dimension``: the filter's
properties and the group's values as canonical JSON; NULL for every other line, and so for every line stored
before): late usage is measured against what was billed for each part.

Adding a nullable column rewrites no row, so no line of an issued invoice changes.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("invoice_lines", sa.Column("dimension", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("invoice_lines", "dimension")
