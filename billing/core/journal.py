"""The accounting journal, the pure rules: each movement of money or credit → one balanced journal entry, its legs
(one per account) summing to zero. No database, no clock.

Accounts (a leg's amount is positive on the debit side, negative on the credit side):

=============================  ===========================================================================
``accounts_receivable``        what customers owe: debited by an invoice's total, credited by what pays it
``revenue:subscription_fees``  subscription fees (and their adjustments)
``revenue:usage:<meter>``      usage and late usage, per meter
``revenue:commitment``         minimum-commitment true-ups
``revenue:discounts``          coupons' discounts (a contra-revenue account: debited)
``revenue:credit_notes``       what credit notes give back, net of tax (contra-revenue: debited)
``revenue:breakage``           paid credit or balance that expired unused
``revenue:tax_included``       the tax inside tax-inclusive prices, taken back out of revenue (debited)
``promotional_credits``        free (promotional) credit spent on invoices (debited: a cost of sales)
``tax_payable``                tax charged on invoices (credited), given back by credit notes (debited)
``deferred_revenue``           paid credit sold on top-up invoices and not used yet
``credit_liability``           money owed back to customers: their cash balance (refunds, negative invoices)
``cash``                       payments received
=============================  ===========================================================================

Entries:

- **an invoice issued**: Dr receivable (total); Cr revenue per line's account; Dr discounts; Cr tax payable. A
  top-up invoice (a paid grant's): Dr receivable, Cr deferred revenue.
- **a credit note**: Dr credit notes (net), Dr tax payable (its tax), Cr receivable (total). A top-up invoice's
  note: Dr deferred revenue, Cr receivable (it takes back prepaid credit sold, never revenue).
- **an invoice voided**: the invoice's entry reversed, on the day it was voided.
- **a payment**: Dr cash, Cr receivable (its whole amount: an overpayment's excess is moved on to the balance by
  the ledger's ``overpayment`` movement). A payment reversed: the same with a negative amount.
- **credit** (the ledger's movements): an ``application`` of credit to an invoice: Dr the grant's account (free:
  promotional credits; paid: deferred revenue; balance: credit liability), Cr receivable; a ``void`` (the credit
  given back from a voided invoice) reverses it; a ``refund`` (an amount put on the customer's balance by a
  negative invoice or a credit note), or an ``overpayment`` (the excess of a payment): Dr receivable, Cr credit
  liability, and a ``reversal`` (such an amount taken back): the reverse; an ``expiry`` of paid credit or balance:
  Dr its account, Cr breakage; a ``reinstatement`` reverses an expiry. A free grant, its expiry and its
  reinstatement move no money (nothing was booked for it): no entry. A paid grant made usable when its top-up
  invoice is paid: no entry either (the top-up invoice booked the deferred revenue, its payment the cash); nor
  prepaid credit taken back while its top-up invoice is owed again (a ``reversal`` on the ``topup`` account: the
  reversed payment's entry puts the invoice back in the receivable, and the credit sold stays deferred revenue),
  nor prepaid credit a note of its top-up invoice takes back (a ``void`` on the ``topup`` account: the note's
  entry books it).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from invoices.model import Invoice, InvoiceKind, InvoiceLine, InvoiceScope, LineKind, TaxLine

__all__ = [
    "RECEIVABLE",
    "CreditMovement",
    "JournalEntry",
    "Payment",
    "credit_entry",
    "document_entry",
    "line_account",
    "payment_entry",
    "taxes_of",
    "unbalanced",
    "void_entry",
]

ZERO = Decimal(0)
RECEIVABLE = "accounts_receivable"
CASH = "cash"
TAX = "tax_payable"
DEFERRED = "deferred_revenue"
LIABILITY = "credit_liability"
PROMOTIONAL = "promotional_credits"
BREAKAGE = "revenue:breakage"
DISCOUNTS = "revenue:discounts"
CREDIT_NOTES = "revenue:credit_notes"
TAX_INCLUDED = "revenue:tax_included"
GRANT_ACCOUNTS = {"free": PROMOTIONAL, "paid": DEFERRED, "balance": LIABILITY}
# Movements between the receivable and the customer's balance (the memo's words): a refund of a negative invoice or
# a credit note, the excess of an overpayment, and the reversal that takes such an amount back.
_TO_BALANCE = {
    "refund": "refund to the customer's balance of",
    "overpayment": "overpayment put on the customer's balance for",
    "reversal": "taken back from the customer's balance for",
}


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One movement as a journal entry: its legs ``(account, amount)``, debit positive, credit negative, one per
    account, summing to zero.

    Attributes:
      entry: what the entry records, unique in the journal (``invoice:INV-2026-000001``, ``payment:7``,
        ``credit:apply:12:3``).
      date: the day it is booked (in the customer's timezone).
      currency, customer, document: the document it concerns (an invoice or credit note number; "" for none).
      memo: a sentence for the bookkeeper.
    """

    entry: str
    date: dt.date
    currency: str
    customer: str
    document: str
    memo: str
    legs: tuple[tuple[str, Decimal], ...]

    @property
    def balance(self) -> Decimal:
        return sum((amount for _, amount in self.legs), ZERO)


@dataclass(frozen=True, slots=True)
class Payment:
    """Money received for an invoice (``method``: bank_transfer, card, cash, stripe, other)."""

    id: str
    date: dt.date
    invoice_number: str
    customer: str
    currency: str
    amount: Decimal
    method: str
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class CreditMovement:
    """A movement of the credit ledger as the journal sees it: its kind, the grant's kind, and what it did to
    the customer's credit (``amount``: the customer leg, positive when credit is given, negative when spent or
    written off)."""

    movement: str
    kind: str
    grant_kind: str
    date: dt.date
    customer: str
    currency: str
    amount: Decimal
    document: str = ""
    account: str = ""  # the ledger's other account of the movement (``invoice``, ``topup``, ``refund``…)


def _entry(entry: str, date: dt.date, currency: str, customer: str, document: str, memo: str,
           postings: Iterable[tuple[str, Decimal]]) -> JournalEntry:
    """The postings summed per account, receivable and cash first, then the accounts by name; zero legs left out."""
    summed: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for account, amount in postings:
        summed[account] += amount
    first = {RECEIVABLE: 0, CASH: 1}
    legs = tuple(
        (account, amount)
        for account, amount in sorted(summed.items(), key=lambda item: (first.get(item[0], 2), item[0]))
        if amount != 0
    )
    return JournalEntry(entry, date, currency, customer, document, memo, legs)


def line_account(line: InvoiceLine, document: Invoice | None = None) -> str:
    """The account a line's amount is credited to (debited, for a negative amount)."""
    if document is not None and document.kind is InvoiceKind.CREDIT_NOTE:
        return CREDIT_NOTES
    if document is not None and document.scope is InvoiceScope.CREDIT:  # a top-up: prepaid credit sold
        return DEFERRED
    if line.kind is LineKind.SUBSCRIPTION:
        return "revenue:subscription_fees"
    if line.kind in (LineKind.USAGE, LineKind.LATE_USAGE):
        return f"revenue:usage:{line.meter}" if line.meter else "revenue:usage"
    if line.kind is LineKind.COMMITMENT:
        return "revenue:commitment"
    if line.kind is LineKind.DISCOUNT:
        return DISCOUNTS
    return "revenue:other"


def taxes_of(document: Invoice) -> list[TaxLine]:
    """The document's taxes, one per rate (``Invoice.taxes``: an invoice that records none has one at its
    ``tax_rate``); a rate of 0 without tax is left out unless it is a reverse charge or an exemption, which tax
    reports list."""
    return [
        tax for tax in document.taxes if tax.amount != 0 or tax.rate != 0 or tax.reverse_charge or tax.exempt_reason
    ]


def document_entry(document: Invoice, *, of_topup: bool = False) -> JournalEntry:
    """An issued invoice or credit note's entry, on its issue date; ``of_topup``: the credit note is of a top-up
    invoice (it takes back prepaid credit sold: deferred revenue, not revenue)."""
    assert document.number is not None and document.issue_date is not None, "only issued documents are booked"
    customer = document.customer_id or ""
    if document.kind is InvoiceKind.CREDIT_NOTE:
        given_back = DEFERRED if of_topup else CREDIT_NOTES
        postings = [(RECEIVABLE, -document.total), (given_back, document.subtotal)]
        postings += [(TAX, tax.amount) for tax in taxes_of(document)]
        memo = f"credit note {document.number} for {document.refers_to}"
        return _entry(f"credit_note:{document.number}", document.issue_date, document.currency, customer,
                      document.number, memo, postings)
    postings = [(RECEIVABLE, document.total)]
    postings += [(line_account(line, document), -line.amount) for line in document.lines
                 if line.kind is not LineKind.DISCOUNT]
    postings.append((DISCOUNTS, document.discount))
    for tax in taxes_of(document):
        # tax inside tax-inclusive prices is credited to the lines' revenue with them: moved out to tax payable
        postings += [(TAX, -tax.amount), (TAX_INCLUDED, tax.included)]
    what = "top-up invoice" if document.scope is InvoiceScope.CREDIT else "invoice"
    return _entry(f"invoice:{document.number}", document.issue_date, document.currency, customer, document.number,
                  f"{what} {document.number} issued", postings)


def void_entry(document: Invoice, date: dt.date, notes: Sequence[Invoice] = ()) -> JournalEntry:
    """An issued invoice voided on ``date``: its entry reversed, less what its credit ``notes`` took off it (their
    entries reversed with it: the void undoes what the notes left of the invoice, and nothing of it stays booked)."""
    issued = document_entry(document)
    topup = document.scope is InvoiceScope.CREDIT
    noted = [document_entry(note, of_topup=topup) for note in notes]
    postings = [(account, -amount) for e in (issued, *noted) for account, amount in e.legs]
    return _entry(f"void:{document.number}", date, issued.currency, issued.customer, issued.document,
                  f"invoice {document.number} voided", postings)


def payment_entry(payment: Payment) -> JournalEntry:
    return _entry(
        f"payment:{payment.id}", payment.date, payment.currency, payment.customer, payment.invoice_number,
        f"payment for {payment.invoice_number} ({payment.method})",
        [(CASH, payment.amount), (RECEIVABLE, -payment.amount)],
    )


def credit_entry(movement: CreditMovement) -> JournalEntry | None:
    """The entry of a movement of the credit ledger; None for one that moves no money (free credit granted,
    expired or reinstated; a paid grant made usable, or its credit held back while its top-up invoice is owed
    again) or that a document's entry books (prepaid credit a note of its top-up invoice takes back)."""
    account = GRANT_ACCOUNTS[movement.grant_kind]
    amount = movement.amount
    if movement.account == "topup" and movement.kind in ("reversal", "void"):
        return None  # prepaid credit held back or taken back by a note: booked by the payment's or note's entry
    if movement.kind in ("application", "void"):  # customer leg: −spent / +given back
        postings = [(account, -amount), (RECEIVABLE, amount)]
        what = "applied to" if movement.kind == "application" else "given back from voided"
        memo = f"{movement.grant_kind} credit {what} {movement.document}"
    elif movement.kind in _TO_BALANCE:  # customer leg: +put on the balance / −taken back from it
        postings = [(RECEIVABLE, amount), (LIABILITY, -amount)]
        memo = f"{_TO_BALANCE[movement.kind]} {movement.document or movement.movement}"
    elif movement.kind in ("expiry", "reinstatement"):
        if movement.grant_kind == "free":
            return None
        postings = [(account, -amount), (BREAKAGE, amount)]
        memo = f"{movement.grant_kind} credit {'expired' if movement.kind == 'expiry' else 'reinstated'}"
    elif movement.kind == "grant":
        return None
    else:  # a kind of movement this journal does not know: refused, never left out silently
        raise ValueError(f"{movement.movement}: no journal entry for a credit movement of kind {movement.kind!r}")
    return _entry(f"credit:{movement.movement}", movement.date, movement.currency, movement.customer,
                  movement.document, memo, postings)


def unbalanced(entries: Sequence[JournalEntry]) -> list[str]:
    """Every entry whose legs do not sum to zero, and every currency whose debits and credits differ: [] when the
    journal balances."""
    problems = [f"{e.entry}: its legs sum to {e.balance}" for e in entries if e.balance != 0]
    totals: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for e in entries:
        totals[e.currency] += e.balance
    problems += [f"{currency}: debits and credits differ by {total}" for currency, total in sorted(totals.items())
                 if total != 0]
    return problems
