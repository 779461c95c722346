"""Invoices as immutable records: an invoice (or credit note), its lines, its totals.

Totals follow one rule: each line is already rounded to the currency's minor units; the subtotal is their sum;
tax is computed on (subtotal − discounts), per rate, each rate's tax rounded once (``billing.core.tax`` makes the
invoice's ``taxes``; without them, at the one rate ``tax_rate``); total = subtotal − discounts + tax − the tax
already included in tax-inclusive prices. So an invoice always adds up to the cent, and total = Σ (taxable +
tax) over its taxes.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pricing_plans.charge_models import BreakdownRow, unit_amount_kind
from pricing_plans.money import ZERO, Rounding, check_amount, round_money

__all__ = [
    "COUPON_TERMS",
    "DISCOUNT_SECTION",
    "LINE_TAX_INCLUSIVE",
    "LINE_TAX_RATE",
    "AppliedCredit",
    "DraftInvoice",
    "Invoice",
    "InvoiceKind",
    "InvoiceLine",
    "InvoiceScope",
    "InvoiceStatus",
    "LineDetails",
    "LineKind",
    "Party",
    "PaymentInstructions",
    "TaxLine",
    "Totals",
    "compute_totals",
    "taxes_from_json",
    "taxes_to_json",
]


class InvoiceStatus(StrEnum):
    """``draft → finalized → paid | void | uncollectible``; only a draft can change its lines."""

    DRAFT = "draft"
    FINALIZED = "finalized"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


ALLOWED_TRANSITIONS: dict[InvoiceStatus, frozenset[InvoiceStatus]] = {
    InvoiceStatus.DRAFT: frozenset({InvoiceStatus.FINALIZED}),
    InvoiceStatus.FINALIZED: frozenset({InvoiceStatus.PAID, InvoiceStatus.VOID, InvoiceStatus.UNCOLLECTIBLE}),
    InvoiceStatus.UNCOLLECTIBLE: frozenset({InvoiceStatus.PAID, InvoiceStatus.VOID}),
    InvoiceStatus.PAID: frozenset(),
    InvoiceStatus.VOID: frozenset(),
}


class InvoiceKind(StrEnum):
    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"


class InvoiceScope(StrEnum):
    """What an invoice bills, which also decides its billing key:

    - ``period``: a customer's billing period (``period:<customer>:<period label>``);
    - ``opening``: a new subscription's first in-advance fee, at its start (``start:<subscription id>``);
    - ``credit``: a credit note against an issued invoice (``credit:<invoice number>:<n>``), or an invoice selling
      prepaid credit (a top-up, ``topup:<credit grant id>``);
    - ``progressive``: a subscription's usage so far in its period, issued before the period ends when its usage
      charges reach an amount (``progressive:<subscription id>:<period label>:<amount>``).
    """

    PERIOD = "period"
    OPENING = "opening"
    CREDIT = "credit"
    PROGRESSIVE = "progressive"


@dataclass(frozen=True, slots=True)
class Party:
    """A seller or a customer as printed on the invoice (a snapshot: later edits don't change issued invoices)."""

    name: str
    address: tuple[str, ...] = ()
    email: str | None = None
    tax_id: str | None = None
    external_id: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2

    def as_dict(self) -> dict[str, Any]:
        data = {
            "name": self.name,
            "address": list(self.address),
            "email": self.email,
            "tax_id": self.tax_id,
            "external_id": self.external_id,
        }
        if self.country is not None:  # (a snapshot taken before parties had a country reads as it was written)
            data["country"] = self.country
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Party:
        return cls(
            name=data["name"],
            address=tuple(data.get("address") or ()),
            email=data.get("email"),
            tax_id=data.get("tax_id"),
            external_id=data.get("external_id"),
            country=data.get("country"),
        )


@dataclass(frozen=True, slots=True)
class PaymentInstructions:
    """How the customer pays an invoice, as printed under its totals: the seller's bank account (any of its
    fields may be missing; a block without bank fields prints none), the reference to quote with the
    transfer, and the page where the invoice can be paid online (Stripe's hosted invoice page) when there is
    one. Not stored with the invoice: the billing service gives it at printing time (the configuration's
    ``[payment_instructions]``, the Stripe push's record).
    """

    bank_name: str | None = None
    account_holder: str | None = None
    iban: str | None = None
    bic: str | None = None
    reference: str | None = None
    pay_online_url: str | None = None

    @property
    def has_bank_account(self) -> bool:
        return bool(self.iban or self.bank_name)


class LineKind(StrEnum):
    """What an invoice line bills. Stored, hashed and given out as its plain string value."""

    SUBSCRIPTION = "subscription"  # a subscription fee (or its adjustment to the days a subscription ran)
    USAGE = "usage"  # a charge's usage in the billing period
    COMMITMENT = "commitment"  # the minimum-commitment true-up
    LATE_USAGE = "late_usage"  # usage of an already invoiced period: what it rates to now minus what was billed
    CREDIT = "credit"  # a credit note's line
    DISCOUNT = "discount"  # a coupon's reduction (negative), before tax; counted in ``discount``, not the subtotal


# The section of the discount lines: stored in English, as every section, and shown in the document's language.
DISCOUNT_SECTION = "Discounts"
# A discount line's ``details.extra`` key: its coupon's terms, for the invoice to word in its language.
COUPON_TERMS = "terms"
# A line's ``details.extra`` keys on an invoice of more than one tax rate or kind of price: the rate its amount is
# taxed at (a string, "19") and, for a price with the tax inside, ``true``. Written when the draft is composed, as
# the tax was computed then; read to pay a part of the invoice with its own tax (an expiring credit). Not hashed:
# the invoice's taxes say the same.
LINE_TAX_RATE = "tax_rate"
LINE_TAX_INCLUSIVE = "tax_inclusive"


# One encoder for every line: ``json.dumps`` with options builds a new one per call.
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(frozen=True, slots=True)
class LineDetails:
    """How a line was computed, for the customer who asks: an explanation and, for a charge, its tier breakdown.

    The breakdown stays typed (each row knows whether its unit amount is a price or a percent) until the line
    is stored or given out as JSON, where it becomes the rows' ``as_dict``.

    Attributes:
      explanation: one readable sentence; None when the line has none.
      breakdown: one row per tier or step; None when the line has no breakdown at all (``()``: an empty one).
      extra: everything else, JSON-ready, in the order it is given out: the service period, the fee's billing,
        the number of events, a commitment's minimum, an adjustment or late-usage account.
    """

    explanation: str | None = None
    breakdown: tuple[BreakdownRow, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The details as JSON-ready values: explanation, breakdown (rows as strings), then the rest."""
        data: dict[str, Any] = {}
        if self.explanation is not None:
            data["explanation"] = self.explanation
        if self.breakdown is not None:
            data["breakdown"] = [row.as_dict() for row in self.breakdown]
        data.update(self.extra)
        return data

    def to_json(self) -> str:
        """The details as stored: compact JSON of ``as_dict``."""
        return _compact_json(self.as_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], model: str | None) -> LineDetails:
        """Details given by ``as_dict`` for a line of charge model ``model``, whose kind of unit amount (price
        or percent) the stored rows do not repeat."""
        extra = dict(data)
        explanation = extra.pop("explanation", None)
        rows = extra.pop("breakdown", None)
        breakdown = None
        if rows is not None:
            kind = unit_amount_kind(model)
            breakdown = tuple(BreakdownRow.from_dict(row, kind) for row in rows)
        return cls(None if explanation is None else str(explanation), breakdown, extra)

    @classmethod
    def from_json(cls, text: str, model: str | None) -> LineDetails:
        """Details as stored by ``to_json``, for a line of charge model ``model``."""
        return cls.from_dict(json.loads(text), model)


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One line of an invoice, as rating makes it and composition places it.

    Rating gives a line its kind, amount, quantity, service period, meter, model and details; composing an
    invoice puts it in a section and records the subscription and plan version it came from.

    Attributes:
      section: the group the line belongs to (one per subscription: "Growth (v1), 1–14 March").
      kind: what the line bills.
      description: what the customer reads.
      quantity, unit: what was rated (days for a prorated fee line: 1 for a whole period).
      amount: rounded once to the currency's minor units.
      service_start, service_end: the period the line pays for, ``[start, end)`` (late usage names its own).
      meter, model: the charge's meter and model (usage lines).
      details: the explanation and the typed tier breakdown.
      subscription_id, plan_code, plan_version: where the line came from.
      dimension: for a charge priced by event dimension, the part of its events the line bills (its filter's
        properties and its group's values, as canonical JSON); None otherwise.
    """

    kind: LineKind
    description: str
    amount: Decimal
    quantity: Decimal = Decimal(1)
    unit: str | None = None
    section: str = ""
    service_start: dt.date | None = None
    service_end: dt.date | None = None
    meter: str | None = None
    model: str | None = None
    details: LineDetails = field(default_factory=LineDetails)
    subscription_id: int | None = None
    plan_code: str | None = None
    plan_version: int | None = None
    dimension: str | None = None


@dataclass(frozen=True, slots=True)
class TaxLine:
    """One rate's tax on an invoice (its ``taxes``: one per rate), as printed and exported.

    Attributes:
      rate: percent (19 for 19 %); 0 for a reverse charge or an exemption.
      taxable: the net amount taxed at ``rate``, after discounts (for tax-inclusive prices: gross − tax).
      amount: the tax, rounded once per rate and kind of price (``billing.core.tax``).
      included: the part of ``amount`` already inside tax-inclusive prices (not added to the total).
      name: what the tax is called on the invoice ("VAT", "Sales tax").
      country, region: where the rate comes from (the buyer's country, ISO 3166-1; a region of it), if known.
      reverse_charge: an EU business-to-business sale the buyer accounts the VAT for; ``note`` holds the wording.
      exempt_reason: why the buyer pays no tax, for an exempt buyer.
      note: the legal wording printed with the tax, if any.
    """

    rate: Decimal
    taxable: Decimal
    amount: Decimal
    included: Decimal = ZERO
    name: str = "Tax"
    country: str | None = None
    region: str | None = None
    reverse_charge: bool = False
    exempt_reason: str | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """As stored (amounts as strings)."""
        return {
            "name": self.name,
            "country": self.country,
            "region": self.region,
            "rate": f"{self.rate.normalize():f}",
            "taxable_amount": str(self.taxable),
            "tax_amount": str(self.amount),
            "tax_included": str(self.included),
            "reverse_charge": self.reverse_charge,
            "exempt_reason": self.exempt_reason,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaxLine:
        return cls(
            rate=Decimal(data["rate"]),
            taxable=Decimal(data["taxable_amount"]),
            amount=Decimal(data["tax_amount"]),
            included=Decimal(data.get("tax_included") or "0"),
            name=str(data.get("name") or "Tax"),
            country=data.get("country"),
            region=data.get("region"),
            reverse_charge=bool(data.get("reverse_charge")),
            exempt_reason=data.get("exempt_reason"),
            note=data.get("note"),
        )


def taxes_to_json(taxes: tuple[TaxLine, ...]) -> str:
    return _compact_json([tax.as_dict() for tax in taxes])


def taxes_from_json(text: str | None) -> tuple[TaxLine, ...] | None:
    """The stored taxes; None for an invoice stored before invoices kept them."""
    if not text:
        return None
    return tuple(TaxLine.from_dict(item) for item in json.loads(text))


@dataclass(frozen=True, slots=True)
class Totals:
    """``total = subtotal − discount + tax − tax_included``: ``tax_included`` is the tax already inside
    tax-inclusive prices."""

    subtotal: Decimal
    discount: Decimal
    tax: Decimal
    total: Decimal
    tax_included: Decimal = ZERO


def compute_totals(
    lines: tuple[InvoiceLine, ...] | list[InvoiceLine],
    currency: str,
    tax_rate: Decimal = ZERO,
    discount: Decimal = ZERO,
    rounding: Rounding = Rounding.HALF_UP,
    taxes: tuple[TaxLine, ...] | None = None,
) -> Totals:
    """Subtotal = Σ rounded lines but the discount lines; discount = ``discount`` + −Σ discount lines; tax = Σ
    the ``taxes`` (each rounded already), or without them round((subtotal − discount) × rate %); total = subtotal −
    discount + tax − the tax included in prices."""
    subtotal = check_amount(sum((line.amount for line in lines if line.kind is not LineKind.DISCOUNT), ZERO), currency)
    discount -= sum((line.amount for line in lines if line.kind is LineKind.DISCOUNT), ZERO)
    taxable = subtotal - discount
    if taxes is None:
        tax = round_money(taxable * tax_rate / 100, currency, rounding)
        included = ZERO
    else:
        tax = sum((t.amount for t in taxes), ZERO)
        included = sum((t.included for t in taxes), ZERO)
    total = check_amount(taxable + tax - included, currency)
    return Totals(subtotal=subtotal, discount=discount, tax=tax, total=total, tax_included=included)


@dataclass(frozen=True, slots=True)
class AppliedCredit:
    """Prepaid credit or the customer's balance paying part of an issued invoice, after its total (a row below it).

    ``kind``: ``free``, ``paid`` (prepaid credit) or ``balance`` (the customer's cash balance); ``grant_id``: the
    credit grant it came from."""

    kind: str
    description: str
    amount: Decimal
    grant_id: int


@dataclass(frozen=True, slots=True)
class DraftInvoice:
    """What a billing run hands to the invoice store: everything but the number, status and dates.

    ``billing_key`` makes the draft unique (a re-run rewrites the same invoice); ``scope`` says what it bills and
    is stored beside it, with ``subscription_id`` for an opening invoice, so that no one reads the key's parts.
    """

    billing_key: str
    customer: Party
    currency: str
    locale: str
    period_start: dt.date
    period_end: dt.date
    lines: tuple[InvoiceLine, ...]
    tax_rate: Decimal = ZERO
    discount: Decimal = ZERO
    rounding: Rounding = Rounding.HALF_UP
    timezone: str = "UTC"
    usage_as_of: dt.datetime | None = None
    scope: InvoiceScope = field(default=InvoiceScope.PERIOD, kw_only=True)
    subscription_id: int | None = field(default=None, kw_only=True)
    # The tax per rate (``billing.core.tax``); None: the one rate ``tax_rate`` on everything.
    taxes: tuple[TaxLine, ...] | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        # Only an opening or a progressive invoice belongs to one subscription; a period invoice covers all of a
        # customer's.
        own = self.scope in (InvoiceScope.OPENING, InvoiceScope.PROGRESSIVE)
        if own != (self.subscription_id is not None):
            raise ValueError(
                f"{self.billing_key}: an opening or progressive invoice names its subscription, and only they do"
            )

    @property
    def totals(self) -> Totals:
        return compute_totals(self.lines, self.currency, self.tax_rate, self.discount, self.rounding, self.taxes)

    @property
    def tax_lines(self) -> tuple[TaxLine, ...]:
        """The taxes as stored: ``taxes``, else one line at ``tax_rate``."""
        if self.taxes is not None:
            return self.taxes
        totals = self.totals
        return (TaxLine(rate=self.tax_rate, taxable=totals.subtotal - totals.discount, amount=totals.tax),)


@dataclass(frozen=True, slots=True)
class Invoice:
    """An invoice or credit note as stored.

    Attributes:
      id: internal id. number: the gap-free number (None while draft).
      kind: invoice or credit note; ``refers_to`` is the credited invoice's number.
      billing_key: what makes it unique ("period:acme:2026-03", "start:42", "credit:INV-2026-000001:1").
      scope: what it bills (a period, a subscription's opening fee, a credit); ``subscription_id`` is the
        subscription of an opening invoice (None for the others).
      customer, seller: snapshots as printed (the buyer as it was when the draft was last written: an issued
        invoice keeps it whatever later happens to the customer).
      tax_rate: the invoice's main rate (its only one, usually); ``taxes`` lists every rate.
      taxes: the tax per rate; ``tax`` is their sum, ``tax_included`` the part already inside the prices.
      period_start, period_end: the billing period ``[start, end)``.
      issue_date, due_date: set on finalization.
      credits_applied, amount_paid: what credits and payments paid of it (attached by the billing services, which
        own them; the invoice rows do not store them).
      payment: how to pay it, given by the billing service when it prints the invoice (None: not given).
    """

    id: int
    number: str | None
    kind: InvoiceKind
    status: InvoiceStatus
    billing_key: str
    customer: Party
    seller: Party
    currency: str
    locale: str
    period_start: dt.date
    period_end: dt.date
    lines: tuple[InvoiceLine, ...]
    subtotal: Decimal
    discount: Decimal
    tax_rate: Decimal
    tax: Decimal
    total: Decimal
    issue_date: dt.date | None = None
    due_date: dt.date | None = None
    finalized_at: dt.datetime | None = None
    refers_to: str | None = None
    reason: str | None = None
    scope: InvoiceScope = InvoiceScope.PERIOD
    subscription_id: int | None = None
    credits_applied: tuple[AppliedCredit, ...] = ()
    amount_paid: Decimal = ZERO
    payment: PaymentInstructions | None = None
    taxes: tuple[TaxLine, ...] = ()

    def __post_init__(self) -> None:
        if not self.taxes:  # an invoice that names no taxes has one rate: its tax_rate on subtotal − discount
            line = TaxLine(rate=self.tax_rate, taxable=self.subtotal - self.discount, amount=self.tax)
            object.__setattr__(self, "taxes", (line,))

    @property
    def tax_included(self) -> Decimal:
        """The part of ``tax`` already inside tax-inclusive prices: total = subtotal − discount + tax − it."""
        return sum((tax.included for tax in self.taxes), ZERO)

    @property
    def reverse_charge(self) -> bool:
        """Whether the buyer accounts for the VAT (an EU reverse charge); the wording is the tax line's note."""
        return any(tax.reverse_charge for tax in self.taxes)

    @property
    def amount_due(self) -> Decimal:
        """What is left to pay: the total less the credits and balance applied, less the payments received
        (``amount_paid``: what payments gave the invoice, never more than it was owed), never below zero (a negative
        total's amount goes to the customer's balance). Zero for a credit note, and for a paid or void invoice
        (nothing is owed on it, whatever was recorded against it)."""
        if self.kind is InvoiceKind.CREDIT_NOTE or self.status in (InvoiceStatus.PAID, InvoiceStatus.VOID):
            return round_money(ZERO, self.currency)
        due = self.total - sum((c.amount for c in self.credits_applied), ZERO) - self.amount_paid
        return round_money(max(due, ZERO), self.currency)

    @property
    def customer_id(self) -> str | None:
        return self.customer.external_id

    @property
    def period_label(self) -> str:
        if self.period_start.day == 1 and (self.period_end - self.period_start).days in (28, 29, 30, 31):
            return f"{self.period_start:%Y-%m}"
        # its first and last days (a week, an anniversary month, a fee year)
        return f"{self.period_start.isoformat()} – {(self.period_end - dt.timedelta(days=1)).isoformat()}"

    def sections(self) -> list[tuple[str, list[InvoiceLine]]]:
        """Lines grouped by section, in order."""
        groups: dict[str, list[InvoiceLine]] = {}
        for line in self.lines:
            groups.setdefault(line.section, []).append(line)
        return list(groups.items())
