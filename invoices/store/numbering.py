"""Gap-free number sequences: finalizing takes the next value of the year's sequence row (``UPDATE … RETURNING``,
which locks the row until the transaction ends) in the same transaction as the status change, so a rolled-back
finalization gives its number back and two processes never get the same one: no gaps, no duplicates.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from dbkit import insert_ignoring
from invoices.model import InvoiceKind
from invoices.tables import NumberSequenceRow

__all__ = ["next_numbers", "sequence_name"]


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
        insert_ignoring(session, NumberSequenceRow.__table__, {"name": sequence, "last_value": 0})
        last = session.execute(statement).scalar_one()
    return range(last - count + 1, last + 1)


def sequence_name(kind: InvoiceKind, number_format: str, year: int) -> str:
    """The sequence a document of ``kind`` numbered with ``number_format`` takes its number from in ``year``: a
    format without ``{year}`` numbers on forever; with it, each year starts again at 1."""
    return f"{kind.value}:{year}" if "{year" in number_format else kind.value
