"""Recognized revenue: a fee over the days it covers, cumulatively rounded, and the deferred revenue's movement,
worked by hand (pure), and `billing metrics revenue --json` through the database (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from decimal import Decimal
from itertools import pairwise

from typer.testing import CliRunner

from billing.cli import app
from billing.cli.metrics import recognition_row
from billing.core.periods import month
from billing.core.recognition import RecognizedLine, credit_note_lines, net_of_discount_lines, recognize

D = dt.date
runner = CliRunner()

# A yearly fee of 365.00 opened on 2026-03-10 for the rest of its calendar year: [03-10, 2027-01-01), 297 days.
# April: usage 50.00 of [04-01, 05-01) and a discount of −5.00 (no service period; its invoice's period is April).
LINES = [
    RecognizedLine("USD", Decimal("365.00"), D(2026, 3, 10), D(2027, 1, 1), D(2026, 1, 1)),
    RecognizedLine("USD", Decimal("50.00"), D(2026, 4, 1), D(2026, 5, 1), D(2026, 4, 1)),
    RecognizedLine("USD", Decimal("-5.00"), None, None, D(2026, 4, 1)),
]


def test_a_fee_is_revenue_of_the_days_it_covers_and_deferred_revenue_adds_up():
    march, april, december = recognize(LINES, [month(2026, 3), month(2026, 4), month(2026, 12)])
    # March: billed 365.00 (its service begins 03-10); recognized 365 × 22 / 297 = 27.037… → 27.04;
    # deferred 0 + 365 − 27.04 = 337.96
    assert recognition_row(march) | {} == {
        "period": "2026-03", "currency": "USD", "billed": "365.00", "recognized": "27.04",
        "deferred_opening": "0.00", "deferred_added": "365.00", "deferred_closing": "337.96",
    }  # fmt: skip
    # April: to date 365 × 52 / 297 = 63.905… → 63.91, April's part 63.91 − 27.04 = 36.87; + usage 50 − discount 5:
    # recognized 81.87, billed 45.00; deferred 337.96 + 45 − 81.87 = 301.09
    assert recognition_row(april) == {
        "period": "2026-04", "currency": "USD", "billed": "45.00", "recognized": "81.87",
        "deferred_opening": "337.96", "deferred_added": "45.00", "deferred_closing": "301.09",
    }  # fmt: skip
    # December, the fee's last month: to date 365.00 exactly; December's part 365 − 365 × 266 / 297 (= 326.90)
    # = 38.10; deferred at its end: 0
    assert (december.recognized, december.deferred_closing) == (Decimal("38.10"), Decimal("0.00"))


def test_every_month_adds_up_and_the_fee_is_recognized_whole():
    months = [month(2026, m) for m in range(3, 13)]
    found = recognize(LINES, months)
    for before, after in pairwise(found):
        assert after.deferred_opening == before.deferred_closing
    for r in found:
        assert r.deferred_opening + r.deferred_added - r.recognized == r.deferred_closing
    assert sum((r.recognized for r in found), Decimal(0)) == Decimal("410.00")  # 365 + 50 − 5, to the cent


def test_revenue_command_through_the_database(cli_env, engine, catalog_for_revenue=None):
    from billing import customers as service
    from tests.billing.test_metrics_db import _invoice

    service.create_customer(engine, "a", name="A", email=None, currency="USD", timezone="UTC")
    _invoice(engine, "a", "USD", D(2026, 3, 1), {"subscription": "31.00"})
    result = runner.invoke(app, ["metrics", "revenue", "--period", "2026-03", "--json"], env=cli_env)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["data"]
    # a line without a service period, billed and recognized in its invoice's month
    assert (row["billed"], row["recognized"], row["deferred_closing"]) == ("31.00", "31.00", "0.00")


# A yearly fee of 1,200.00 for 2026, billed in advance on January's invoice: [2026-01-01, 2027-01-01), 365 days;
# a credit note of 600.00 (net) against it issued on 2026-07-15.
FEE = RecognizedLine("USD", Decimal("1200.00"), D(2026, 1, 1), D(2027, 1, 1), D(2026, 1, 1))
NOTE = credit_note_lines(Decimal("600.00"), D(2026, 7, 15), [FEE])


def test_a_credit_note_takes_back_recognized_and_deferred_revenue_in_the_month_it_is_issued():
    june, july, august, december = recognize([FEE, *NOTE], [month(2026, m) for m in (6, 7, 8, 12)])
    # June, before the note: the fee's part 1200 × 181 / 365 − 1200 × 151 / 365 = 595.07 − 496.44 = 98.63;
    # deferred 1200 − 595.07 = 604.93 at June's end
    assert (june.billed, june.recognized, june.deferred_closing) == (
        Decimal("0"),
        Decimal("98.63"),
        Decimal("604.93"),
    )
    # July: the fee's part 1200 × 212 / 365 = 696.99 − 595.07 = 101.92; the note is billed −600.00 and takes back
    # at once what of it is past at July's end: −600 × 212 / 365 = −348.49 (January to July);
    # recognized 101.92 − 348.49 = −246.57; deferred 604.93 − 600.00 + 246.57 = 251.50
    # (= the fee's 1200 − 696.99 = 503.01 still to come, less the note's 600 − 348.49 = 251.51)
    assert recognition_row(july) == {
        "period": "2026-07", "currency": "USD", "billed": "-600.00", "recognized": "-246.57",
        "deferred_opening": "604.93", "deferred_added": "-600.00", "deferred_closing": "251.50",
    }  # fmt: skip
    # August: the fee's 1200 × 243 / 365 = 798.90 − 696.99 = 101.91, the note's −600 × 243 / 365 = −399.45
    # + 348.49 = −50.96: recognized 50.95, deferred 251.50 − 50.95 = 200.55
    assert (august.recognized, august.deferred_closing) == (Decimal("50.95"), Decimal("200.55"))
    # December: nothing left deferred
    assert december.deferred_closing == Decimal("0.00")


def test_with_a_credit_note_every_month_adds_up_and_the_year_recognizes_the_fee_less_the_note():
    found = recognize([FEE, *NOTE], [month(2026, m) for m in range(1, 13)])
    for before, after in pairwise(found):
        assert after.deferred_opening == before.deferred_closing
    for r in found:
        assert r.deferred_opening + r.deferred_added - r.recognized == r.deferred_closing
    assert sum((r.recognized for r in found), Decimal(0)) == Decimal("600.00")  # 1,200 − 600, to the cent


def test_a_credit_note_is_shared_over_the_credited_lines_by_amount():
    usage = RecognizedLine("USD", Decimal("300.00"), D(2026, 1, 1), D(2026, 2, 1), D(2026, 1, 1))
    fee, use = credit_note_lines(Decimal("100.00"), D(2026, 3, 2), [FEE, usage])
    # 100 × 1200 / 1500 = 80.00 over the fee's year, the rest 20.00 over January's usage
    assert (fee.amount, fee.service_start, use.amount, use.service_end) == (
        Decimal("-80.00"),
        D(2026, 1, 1),
        Decimal("-20.00"),
        D(2026, 2, 1),
    )
    (march,) = recognize([usage, use], [month(2026, 3)])
    # March: the usage (all of January) was recognized in January; the note takes back its 20.00 at once
    assert (march.billed, march.recognized, march.deferred_closing) == (
        Decimal("-20.00"),
        Decimal("-20.00"),
        Decimal("0.00"),
    )


def test_a_credit_note_reduces_recognized_revenue_through_the_database(engine):
    from billing import customers as service
    from billing.db import session_scope
    from billing.metrics_store import recognition_from_database
    from invoices import store
    from invoices.model import DraftInvoice, InvoiceLine, Party
    from tests.billing.test_metrics_db import SETTINGS

    service.create_customer(engine, "a", name="A", email=None, currency="USD", timezone="UTC")
    fee = InvoiceLine(
        kind="subscription", description="2026", amount=Decimal("1200.00"), service_start=D(2026, 1, 1),
        service_end=D(2027, 1, 1),
    )  # fmt: skip
    draft = DraftInvoice(
        billing_key="period:a:2026-01", customer=Party(name="A", external_id="a"), currency="USD", locale="en_US",
        period_start=D(2026, 1, 1), period_end=D(2026, 2, 1), lines=(fee,), tax_rate=Decimal(0),
    )  # fmt: skip
    with session_scope(engine) as session:
        invoice_id = store.upsert_draft(session, draft).invoice_id
        (number,) = store.finalize_many(session, [invoice_id], SETTINGS, D(2026, 1, 1))
        store.create_credit_note(session, number, Decimal("600.00"), "goodwill", SETTINGS, D(2026, 7, 15))
    june, july = recognition_from_database(engine, [month(2026, 6), month(2026, 7)])
    # as worked above: June 98.63 recognized; July billed −600.00, recognized −246.57, deferred 251.50
    assert (june.recognized, july.billed, july.recognized, july.deferred_closing) == (
        Decimal("98.63"),
        Decimal("-600.00"),
        Decimal("-246.57"),
        Decimal("251.50"),
    )


def test_a_full_credit_and_two_partial_credits_leave_nothing_of_the_fee_and_every_currency_adds_up():
    eur_fee = RecognizedLine("EUR", Decimal("90.00"), D(2026, 3, 1), D(2026, 6, 1), D(2026, 3, 1))
    full = credit_note_lines(Decimal("1200.00"), D(2026, 2, 10), [FEE])  # all of the year, in February
    # two partial credits of 30.00 and 60.00 against the EUR fee of March to May, in April and in August (after it)
    parts = [*credit_note_lines(Decimal("30.00"), D(2026, 4, 30), [eur_fee]),
             *credit_note_lines(Decimal("60.00"), D(2026, 8, 1), [eur_fee])]  # fmt: skip
    months = [month(2026, m) for m in range(1, 13)]
    found = recognize(iter([FEE, *full, eur_fee, *parts]), months)  # streamed: read once
    for currency in ("EUR", "USD"):
        mine = [r for r in found if r.currency == currency]
        for before, after in pairwise(mine):
            assert after.deferred_opening == before.deferred_closing
        for r in mine:
            assert r.deferred_opening + r.deferred_added - r.recognized == r.deferred_closing
        assert sum((r.recognized for r in mine), Decimal(0)) == Decimal("0.00")  # fee − credits, to the cent
        assert mine[-1].deferred_closing == Decimal("0.00")
    usd = {r.period.label: r for r in found if r.currency == "USD"}
    # January recognizes 1200 × 31 / 365 = 101.92; February: the fee's 1200 × 59 / 365 = 193.97 − 101.92 = 92.05,
    # the full credit takes back the 193.97 of January and February at once: −101.92; deferred 0.00 from then on
    assert (usd["2026-01"].recognized, usd["2026-02"].recognized) == (Decimal("101.92"), Decimal("-101.92"))
    assert usd["2026-02"].deferred_closing == Decimal("0.00")
    eur = {r.period.label: r for r in found if r.currency == "EUR"}
    # April: the fee's part 90 × 61 / 92 = 59.67 − 90 × 31 / 92 = 30.33 → 29.34, and the credit of 30.00
    # takes back 30 × 61 / 92 = 19.89 at once: 29.34 − 19.89 = 9.45; August: the 60.00 credit all at once
    assert eur["2026-04"].recognized == Decimal("9.45")
    assert (eur["2026-08"].billed, eur["2026-08"].recognized) == (Decimal("-60.00"), Decimal("-60.00"))


def test_tax_inside_prices_is_not_revenue_and_a_full_credit_takes_all_of_it_back(engine):
    from billing import customers as service
    from billing.db import session_scope
    from billing.metrics_store import recognition_from_database
    from invoices import store
    from invoices.model import DraftInvoice, InvoiceLine, Party, TaxLine
    from tests.billing.test_metrics_db import SETTINGS

    service.create_customer(engine, "a", name="A", email=None, currency="USD", timezone="UTC")
    # a fee of 119.00 with 19 % tax inside it (19.00), for January 2026, and a usage line of 11.90 (1.90 inside):
    # revenue 100.00 + 10.00; the tax, 20.90 in all, is shared over the lines by amount: 19.00 and 1.90
    lines = (
        InvoiceLine(kind="subscription", description="January", amount=Decimal("119.00"),
                    service_start=D(2026, 1, 1), service_end=D(2026, 2, 1)),
        InvoiceLine(kind="usage", description="calls", amount=Decimal("11.90")),
    )  # fmt: skip
    taxes = (TaxLine(rate=Decimal(19), taxable=Decimal("110.00"), amount=Decimal("20.90"), included=Decimal("20.90")),)
    draft = DraftInvoice(
        billing_key="period:a:2026-01", customer=Party(name="A", external_id="a"), currency="USD", locale="en_US",
        period_start=D(2026, 1, 1), period_end=D(2026, 2, 1), lines=lines, taxes=taxes,
    )  # fmt: skip
    with session_scope(engine) as session:
        invoice_id = store.upsert_draft(session, draft).invoice_id
        (number,) = store.finalize_many(session, [invoice_id], SETTINGS, D(2026, 2, 1))
        # the whole invoice credited on 5 March: the note's net is 110.00 (130.90 less its 20.90 of tax)
        note = store.create_credit_note(session, number, Decimal("130.90"), "refund", SETTINGS, D(2026, 3, 5))
    assert note.subtotal == Decimal("110.00")
    january, _, march = recognition_from_database(engine, [month(2026, m) for m in (1, 2, 3)])
    assert (january.billed, january.recognized, january.deferred_closing) == (
        Decimal("110.00"),
        Decimal("110.00"),
        Decimal("0.00"),
    )
    # March: the note takes back the 110.00, all of it past: nothing of the invoice is left as revenue
    assert (march.billed, march.recognized, march.deferred_closing) == (
        Decimal("-110.00"),
        Decimal("-110.00"),
        Decimal("0.00"),
    )


SERVED = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.yearly]
name = "Yearly"
currency = "USD"
interval = "year"
subscription = { fee = 365.00, billing = "in_advance" }

[plans.quarterly]
name = "Quarterly"
currency = "USD"
interval = "quarter"
subscription = { fee = 300.00, billing = "in_advance" }
"""


def test_a_prorated_fee_is_revenue_of_the_days_its_subscription_runs_only(engine):
    """A yearly fee (365.00 in advance) from 10 March 2026: the opening invoice bills 365 × 297 / 365 = 297.00 for
    10 March – 31 December, yet 25.22 was recognized in January (297 × 31 / 365, over the whole year). Served
    days only: March 297 × 22 / 297 = 22.00, April 297 × 52 / 297 − 22.00 = 30.00. And a quarter (300.00 in
    advance, billed on March's invoice) given back to the 10 days before an end on 11 April (300 × 10 / 91 =
    32.97, a line of −267.03): April recognizes all 32.97, May and June nothing (10.87, 11.23 and 10.87 before)."""
    from billing import customers as service
    from billing.invoicing import finalize_invoice
    from billing.metrics_store import recognition_from_database
    from billing.run import finalize_period, run_billing
    from invoices.store import FinalizeSettings
    from pricing_plans.loader import loads_catalog

    catalog, problems = loads_catalog(SERVED, "served.toml")
    assert not problems, problems
    for who in ("y", "q"):
        service.create_customer(engine, who, who.upper(), None, "USD", "UTC")
    yearly = service.subscribe(engine, catalog, "y", "yearly", D(2026, 3, 10))
    at = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
    assert str(finalize_invoice(engine, f"start:{yearly.id}", FinalizeSettings(), D(2026, 3, 10), now=at).total) == (
        "297.00")  # fmt: skip
    year = [(r.period.label, str(r.billed), str(r.recognized)) for r in recognition_from_database(
        engine, [month(2026, m) for m in (1, 2, 3, 4)])]  # fmt: skip
    assert year == [("2026-01", "0", "0.00"), ("2026-02", "0", "0.00"), ("2026-03", "297.00", "22.00"),
                    ("2026-04", "0", "30.00")]  # fmt: skip

    quarterly = service.subscribe(engine, catalog, "q", "quarterly", D(2026, 1, 1))
    for number in (1, 2, 3, 4):
        if number == 4:
            service.cancel_subscription(engine, quarterly.id, D(2026, 4, 11), catalog=catalog)
        day = month(2026, number).end + dt.timedelta(days=2)
        run_billing(engine, catalog, month(2026, number), customer="q", now=dt.datetime.combine(day, dt.time(1), dt.UTC))
        finalize_period(engine, month(2026, number), FinalizeSettings(), day, customer="q")
    q2 = [(r.period.label, str(r.billed), str(r.recognized), str(r.deferred_closing))
          for r in recognition_from_database(engine, [month(2026, m) for m in (4, 5, 6)]) if r.currency == "USD"]
    # (the yearly fee goes on: 297 × 30 / 297 in April, 31 in May, 30 in June, beside the quarter)
    # deferred: the yearly 297.00 less 22.00 + 30.00 = 245.00 after April, then 214.00, then 184.00
    assert q2 == [("2026-04", "32.97", "62.97", "245.00"), ("2026-05", "0", "31.00", "214.00"),
                  ("2026-06", "0", "30.00", "184.00")]  # fmt: skip


def test_a_cancellation_scheduled_ahead_restates_nothing_until_its_fee_is_given_back(engine):
    """Q2's 300.00 in advance (billed on March's invoice); on 10 April the subscription is cancelled from 15 May.
    April stays 300 × 30 / 91 = 98.90 (it was 204.55 for as long as the give-back was not issued: the fee squeezed
    into 1 April – 14 May). May's invoice gives back 300 − 300 × 44 / 91 = −154.95 for the 47 days from 15 May:
    May 300 × 61 / 91 − 98.90 = 102.20, less −154.95 × 17 / 47 = 56.05: 46.15; June nothing."""
    from billing import customers as service
    from billing.metrics_store import recognition_from_database
    from billing.run import finalize_period, run_billing
    from invoices.store import FinalizeSettings
    from pricing_plans.loader import loads_catalog

    catalog, problems = loads_catalog(SERVED, "served.toml")
    assert not problems, problems
    service.create_customer(engine, "q", "Q", None, "USD", "UTC")
    quarterly = service.subscribe(engine, catalog, "q", "quarterly", D(2026, 1, 1))

    def bill(number: int) -> None:
        day = month(2026, number).end + dt.timedelta(days=2)
        run_billing(engine, catalog, month(2026, number), now=dt.datetime.combine(day, dt.time(1), dt.UTC))
        finalize_period(engine, month(2026, number), FinalizeSettings(), day)

    def recognized() -> list[str]:
        return [str(r.recognized) for r in recognition_from_database(engine, [month(2026, m) for m in (4, 5, 6)])]

    for number in (1, 2, 3):
        bill(number)
    assert recognized() == ["98.90", "102.20", "98.90"]
    service.cancel_subscription(engine, quarterly.id, D(2026, 5, 15), catalog=catalog)
    assert recognized() == ["98.90", "102.20", "98.90"]
    for number in (4, 5, 6):
        bill(number)
    assert recognized() == ["98.90", "46.15", "0.00"]


def test_a_discount_is_taken_from_the_lines_it_reduces():
    """A 100 % coupon (−100.00, no service period) on an invoice of April's period that bills May's fee in advance
    (100.00 over May): the fee is billed net of it, so April and May are both nothing — not −100.00 in April and
    +100.00 in May."""
    may_fee = RecognizedLine("USD", Decimal("100.00"), D(2026, 5, 1), D(2026, 6, 1), D(2026, 4, 1))
    coupon = RecognizedLine("USD", Decimal("-100.00"), None, None, D(2026, 4, 1))
    netted = net_of_discount_lines([(may_fee, "adv")], [(coupon, ())])
    assert netted == [replace(may_fee, amount=Decimal("0.00"))]
    april, may = recognize(netted, [month(2026, 4), month(2026, 5)])
    assert [(str(r.billed), str(r.recognized)) for r in (april, may)] == [("0", "0.00"), ("0.00", "0.00")]


def test_a_coupon_of_some_plans_is_taken_from_their_positive_lines_never_from_a_refund():
    """Usage 200.00 and a refund of −150.00 of plan "qa", a fee 60.00 of plan "mb"; a coupon of qa −25.00 comes off
    qa's usage alone (200 → 175.00): the refund and mb's fee stay as they are. A coupon of every plan, −52.00,
    off the positive lines by amount: 200 × 52/260 = 40.00 and the rest, 12.00, from the fee. One that no positive
    line can take stays a line of its own."""
    usage = RecognizedLine("USD", Decimal("200.00"), D(2026, 2, 1), D(2026, 3, 1), D(2026, 2, 1))
    refund = RecognizedLine("USD", Decimal("-150.00"), D(2026, 2, 15), D(2026, 4, 1), D(2026, 2, 1))
    fee = RecognizedLine("USD", Decimal("60.00"), D(2026, 2, 1), D(2026, 3, 1), D(2026, 2, 1))
    lines = [(usage, "qa"), (refund, "qa"), (fee, "mb")]
    coupon = RecognizedLine("USD", Decimal("-25.00"), None, None, D(2026, 2, 1))
    assert [str(line.amount) for line in net_of_discount_lines(lines, [(coupon, ["qa"])])] == [
        "175.00", "-150.00", "60.00"
    ]  # fmt: skip
    every = replace(coupon, amount=Decimal("-52.00"))
    assert [str(line.amount) for line in net_of_discount_lines(lines, [(every, ())])] == ["160.00", "-150.00", "48.00"]
    assert net_of_discount_lines([(refund, "qa")], [(coupon, ())]) == [refund, coupon]


def test_a_credit_note_with_nothing_to_share_over_is_taken_back_the_day_it_is_issued():
    nothing = RecognizedLine("USD", Decimal("0.00"), D(2026, 4, 1), D(2026, 7, 1), D(2026, 3, 1))
    [back] = credit_note_lines(Decimal("10.00"), D(2026, 4, 2), [nothing])
    assert (str(back.amount), back.service_start, back.billed_on) == ("-10.00", None, D(2026, 4, 2))


def test_a_coupon_on_a_fee_billed_in_advance_is_revenue_of_the_fees_month_through_the_database(engine):
    """100.00 a month in advance from 1 March; a 100 % coupon for once applied on 15 March reduces the billing period
    of April, whose invoice bills May's fee: 100.00 − 100.00. Revenue: March 100.00 (the opening invoice), April
    100.00 (billed on March's invoice), May nothing — the coupon is May's, not April's."""
    from billing import coupons
    from billing import customers as service
    from billing.core.coupons import Coupon, Duration
    from billing.invoicing import finalize_opening_invoices
    from billing.metrics_store import recognition_from_database
    from billing.run import finalize_period, run_billing
    from invoices.store import FinalizeSettings
    from pricing_plans.loader import loads_catalog

    catalog, problems = loads_catalog(ADVANCE, "advance.toml")
    assert not problems, problems
    service.create_customer(engine, "acme", "Acme", None, "USD", "UTC")
    service.subscribe(engine, catalog, "acme", "adv", D(2026, 3, 1))
    finalize_opening_invoices(engine, catalog, FinalizeSettings(), now=dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC))
    coupons.create_coupon(engine, catalog, Coupon(code="FREE", duration=Duration.ONCE, percent_off=Decimal(100)))
    coupons.apply_coupon(engine, "FREE", "acme", now=dt.datetime(2026, 3, 15, 12, tzinfo=dt.UTC))
    for number in (3, 4):
        day = month(2026, number).end + dt.timedelta(days=1)
        run_billing(engine, catalog, month(2026, number), now=dt.datetime.combine(day, dt.time(1), dt.UTC))
        finalize_period(engine, month(2026, number), FinalizeSettings(), day)
    found = [(r.period.label, str(r.billed), str(r.recognized), str(r.deferred_closing))
             for r in recognition_from_database(engine, [month(2026, m) for m in (3, 4, 5)])]  # fmt: skip
    assert found == [("2026-03", "100.00", "100.00", "0.00"), ("2026-04", "100.00", "100.00", "0.00"),
                     ("2026-05", "0.00", "0.00", "0.00")]  # fmt: skip


ADVANCE = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.adv]
name = "Advance"
currency = "USD"
subscription = { fee = 100.00, billing = "in_advance" }
"""
