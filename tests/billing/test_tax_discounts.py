"""Discounts and credit notes over several tax rates, hand-checked (the credit note through the database, SQLite
and PostgreSQL): a 100 % coupon over a rate with a negative line (a fee paid in advance, adjusted) leaves every
rate at zero; a fixed coupon written in whole units (10, or 100.00 yen) is shared in the currency's minor units; a
credit note of a whole invoice with a negative rate gives back each rate as billed."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from billing.config import Settings
from billing.core.compose import Section, compose_period_invoice
from billing.core.coupons import AppliedCoupon, Coupon, Duration, discount_lines
from billing.core.domain import Customer, Subscription, SubscriptionStatus
from billing.core.periods import month
from billing.core.tax import CountryRates, PlanTax, Treatment, invoice_taxes
from billing.coupons import parse_coupon
from billing.db import session_scope
from invoices import store
from invoices.model import DraftInvoice, InvoiceLine, LineKind, Party, TaxLine, compute_totals
from pricing_plans.charge_models import MeterUsage
from pricing_plans.loader import loads_catalog

D = Decimal
MARCH = month(2026, 3)
RULES = Settings(
    seller={"name": "Vendeur SAS", "country": "FR", "tax_id": "FR40303265045"},
    tax={"rates": {"DE": {"standard": 19, "reduced": 7}}},
).tax_rules()
CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.advance]
name = "Advance"
currency = "EUR"
subscription = { fee = 100.00, billing = "in_advance" }
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.01 }]

[plans.books]
name = "E-books"
currency = "EUR"
tax_category = "reduced"
subscription = { fee = 50.00, billing = "in_arrears" }
"""


def _customer() -> Customer:
    return Customer(id=1, external_id="kunde", name="Kunde", email=None, currency="EUR", timezone="UTC",
                    locale="de_DE", address=(), webhook_url=None, tax_rate=D(0), country="DE")


def _subscription(id_: int, plan: str, end: dt.date | None = None) -> Subscription:
    return Subscription(id=id_, customer_id=1, customer_external_id="kunde", plan_code=plan, plan_version=1,
                        start_date=dt.date(2026, 1, 1), end_date=end, status=SubscriptionStatus.ACTIVE,
                        cancel_reason=None, previous_subscription_id=None)


def test_a_100_percent_coupon_never_leaves_a_negative_tax():
    """Advance (19 %) ends on 16 March: usage 100.00 and the March fee paid in advance adjusted, −51.61; E-books
    (7 %) 50.00. 100 % off everything takes 98.39 = the whole invoice, shared by what each rate nets (48.39 :
    50.00, not 100 : 50): 19 % on 48.39 − 48.39 = 0.00, 7 % on 50.00 − 50.00 = 0.00 → tax 0.00, total 0.00."""
    catalog, problems = loads_catalog(CATALOG, "t.toml")
    assert not problems
    sections = [
        Section(_subscription(1, "advance", dt.date(2026, 3, 16)), catalog.plan("advance"),
                {"api_calls": MeterUsage(quantity=D(10000), events=10000)}, billed_fee=D("100.00")),
        Section(_subscription(2, "books"), catalog.plan("books"), {}),
    ]
    free = AppliedCoupon(Coupon("FREE", Duration.FOREVER, percent_off=D(100)), dt.date(2026, 1, 1), 0)
    draft = compose_period_invoice(_customer(), MARCH, sections, [], catalog, coupons=[free], tax_rules=RULES)
    assert [str(line.amount) for line in draft.lines] == ["100.00", "-51.61", "50.00", "-98.39"]
    assert [(str(t.rate), str(t.taxable), str(t.amount)) for t in draft.taxes] == [
        ("19", "0.00", "0.00"), ("7", "0.00", "0.00")]
    assert str(draft.totals.total) == "0.00"


RATE = Treatment(rates=CountryRates(standard=D(19), categories={"reduced": D(7)}), name="VAT", country="DE")
PLANS = {("std", 1): PlanTax(False, "standard"), ("books", 1): PlanTax(False, "reduced")}


def _line(amount: str, plan: str) -> InvoiceLine:
    return InvoiceLine(kind=LineKind.SUBSCRIPTION, description=plan, amount=D(amount), plan_code=plan, plan_version=1)


def test_a_fixed_coupon_given_in_whole_units_is_shared_to_the_cent():
    """`billing coupons create TEN --amount 10 --currency EUR` (or "amount_off": 10 over HTTP): the discount is
    10.00, shared 6.67 : 3.33 as for "10.00" (not 7 : 3 in whole euros): 93.33 × 19 % = 17.73, 46.67 × 7 % = 3.27,
    tax 21.00, total 150.00 − 10.00 + 21.00 = 161.00."""
    coupon = parse_coupon("TEN", percent=None, amount="10", currency="eur", duration="forever",
                          today=dt.date(2026, 1, 1))
    lines = [_line("100.00", "std"), _line("50.00", "books")]
    lines += discount_lines(lines, [AppliedCoupon(coupon, dt.date(2026, 1, 1))], MARCH.start, "EUR")
    taxes = invoice_taxes(lines, RATE, PLANS, "EUR")
    assert [(str(t.rate), str(t.taxable), str(t.amount)) for t in taxes] == [
        ("19", "93.33", "17.73"), ("7", "46.67", "3.27")]
    assert str(compute_totals(lines, "EUR", taxes=taxes).total) == "161.00"


def test_a_fixed_yen_coupon_given_with_decimals_never_makes_fractional_yen():
    """100.00 JPY is accepted (whole minor units) and is 100 yen: shared 1000 : 500 between 10 % and 8 %, 66.67
    → 67 and 33, the taxable amounts are 933 and 467 yen (never 933.33 and 466.67)."""
    rate = Treatment(rates=CountryRates(standard=D(10), categories={"reduced": D(8)}), name="JCT", country="JP")
    coupon = parse_coupon("YEN", percent=None, amount="100.00", currency="JPY", duration="forever",
                          today=dt.date(2026, 1, 1))
    lines = [_line("1000", "std"), _line("500", "books")]
    lines += discount_lines(lines, [AppliedCoupon(coupon, dt.date(2026, 1, 1))], MARCH.start, "JPY")
    taxes = invoice_taxes(lines, rate, PLANS, "JPY")
    assert [str(t.taxable) for t in taxes] == ["933", "467"]


@pytest.mark.db
def test_credit_notes_crediting_the_whole_invoice_give_back_each_rates_tax_as_billed(engine):
    """An invoice of 200.00 at 19 % (tax 38.00) and −50.00 at 7 % (a refund on the e-books plan, tax −3.50):
    total 184.50, tax 34.50. Crediting all 184.50 must give back each rate's net and tax as billed (README):
    19 %: 200.00 + 38.00, 7 %: −50.00 − 3.50 → tax 34.50 (not 155.04 + 29.46 at 19 % and nothing at 7 %)."""
    lines = (_line("200.00", "std"), _line("-50.00", "books"))
    taxes = (TaxLine(rate=D(19), taxable=D("200.00"), amount=D("38.00")),
             TaxLine(rate=D(7), taxable=D("-50.00"), amount=D("-3.50")))
    assert invoice_taxes(lines, RATE, PLANS, "EUR") == tuple(
        TaxLine(rate=t.rate, taxable=t.taxable, amount=t.amount, included=D("0.00"), name="VAT", country="DE")
        for t in taxes)
    draft = DraftInvoice(billing_key="period:acme:2026-03", customer=Party(name="Acme", external_id="acme"),
                         currency="EUR", locale="en_US", period_start=MARCH.start, period_end=MARCH.end,
                         lines=lines, tax_rate=D(19), taxes=taxes)
    settings = store.FinalizeSettings()
    with session_scope(engine) as session:
        invoice_id = store.upsert_draft(session, draft).invoice_id
        [number] = store.finalize_many(session, [invoice_id], settings, dt.date(2026, 4, 2))
    with session_scope(engine) as session:
        note = store.create_credit_note(session, number, D("184.50"), "all of it", settings, dt.date(2026, 4, 3))
    assert str(note.tax) == "34.50"
    assert [(str(t.rate), str(t.taxable), str(t.amount)) for t in note.taxes] == [
        ("19", "200.00", "38.00"), ("7", "-50.00", "-3.50")]
