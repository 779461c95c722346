"""Subscriptions at the edges of what is issued (SQLite and PostgreSQL): one cancelled or changed on its start day
after its opening invoice was issued gets that fee back; one cancelled the next day pays that day; a start inside
a period the customer is already invoiced for is refused (its days there would never be billed); a quarterly
subscription cancelled while its opening invoice is still a draft is adjusted against that invoice as it will be
issued."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from billing import customers as service
from billing.core.periods import month
from billing.db import session_scope
from billing.errors import BillingInputError, ConflictError
from billing.invoicing import create_credit_note, finalize_opening_invoices
from billing.preview import customer_usage
from billing.run import finalize_period, run_billing
from invoices import store
from pricing_plans.loader import loads_catalog

pytestmark = pytest.mark.db

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.adv]
name = "Adv"
currency = "USD"
subscription = { fee = 31.00, billing = "in_advance" }

[plans.inc]
name = "Inc"
currency = "USD"
tax_inclusive = true
subscription = { fee = 31.00, billing = "in_advance" }

[plans.arr]
name = "Arr"
currency = "USD"
subscription = { fee = 31.00, billing = "in_arrears" }

[plans.addon]
name = "Addon"
currency = "USD"
subscription = { fee = 30.00, billing = "in_advance" }

[plans.wk]
name = "Weekly"
currency = "USD"
interval = "week"
subscription = { fee = 7.00, billing = "in_advance" }

[plans.anniv]
name = "Anniversary"
currency = "USD"
billing_anchor = "subscription_start"
subscription = { fee = 31.00, billing = "in_advance" }

[plans.aarr]
name = "AnnArr"
currency = "USD"
billing_anchor = "subscription_start"
subscription = { fee = 31.00, billing = "in_arrears" }

[plans.qadv]
name = "QAdv"
currency = "USD"
interval = "quarter"
subscription = { fee = 300.00, billing = "in_advance" }

[plans.qarr]
name = "QArr"
currency = "USD"
interval = "quarter"
subscription = { fee = 30.00, billing = "in_arrears", seats = true }

[plans.yarr]
name = "YArr"
currency = "USD"
interval = "year"
subscription = { fee = 1200.00, billing = "in_arrears" }
"""

D = dt.date
SETTINGS = store.FinalizeSettings()


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "edges.toml")
    assert not problems, problems
    return loaded


def at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), dt.UTC)


def fee_lines(engine, sub_id: int) -> list[tuple[str, str]]:
    """(billing key, amount) of the subscription's fee lines, on every invoice."""
    with session_scope(engine) as session:
        return [
            (invoice.billing_key, str(line.amount))
            for listed in store.list_invoices(session)
            for invoice in [store.get_invoice(session, listed.billing_key)]
            for line in invoice.lines
            if line.subscription_id == sub_id and line.kind == "subscription"
        ]


def credit(engine, catalog, number: str, amount: Decimal, day: dt.date):
    """A credit note as the CLI, the API and the console issue one (with the catalog)."""
    return create_credit_note(engine, number, amount, "goodwill", SETTINGS, day, catalog=catalog)


def bill(engine, catalog, year: int, month_: int) -> None:
    period = month(year, month_)
    day = period.end + dt.timedelta(days=1)
    run_billing(engine, catalog, period, now=at(day))
    finalize_period(engine, period, SETTINGS, day, now=at(day))


def test_a_subscription_cancelled_on_its_start_day_gets_its_issued_opening_fee_back(engine, catalog):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", "adv", D(2026, 3, 17))
    # issued once it has started: 31.00 × 15 / 31 days (17–31 March) = 15.00
    finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 3, 17), 9))
    service.cancel_subscription(engine, sub.id, D(2026, 3, 17))  # later that day: it covers no day
    bill(engine, catalog, 2026, 3)
    bill(engine, catalog, 2026, 4)
    # March's invoice gives the 15.00 back (0 days due − 15.00 billed in advance); April bills nothing
    assert fee_lines(engine, sub.id) == [(f"start:{sub.id}", "15.00"), ("period:acme:2026-03", "-15.00")]


def test_a_plan_changed_on_its_start_day_bills_the_new_plan_only(engine, catalog):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", "adv", D(2026, 3, 17))
    finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 3, 17), 1))  # 15.00 issued
    new = service.change_plan(engine, catalog, sub.id, "addon", D(2026, 3, 17))
    finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 3, 17), 2))  # 30.00 × 15 / 31 = 14.52
    bill(engine, catalog, 2026, 3)
    bill(engine, catalog, 2026, 4)
    assert fee_lines(engine, sub.id) == [(f"start:{sub.id}", "15.00"), ("period:acme:2026-03", "-15.00")]
    # 14.52 for 17–31 March, April's 30.00 in advance on March's invoice, May's on April's: 74.52
    assert sum(Decimal(amount) for _, amount in fee_lines(engine, new.id)) == Decimal("74.52")


def test_a_subscription_cancelled_the_day_after_its_start_pays_that_day(engine, catalog):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", "adv", D(2026, 3, 17))
    finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 3, 17), 9))
    service.cancel_subscription(engine, sub.id, D(2026, 3, 18))
    bill(engine, catalog, 2026, 3)
    # 31.00 × 1 / 31 = 1.00 due: 15.00 billed, 14.00 back
    assert fee_lines(engine, sub.id) == [(f"start:{sub.id}", "15.00"), ("period:acme:2026-03", "-14.00")]


@pytest.mark.parametrize("plan", ["adv", "inc"])
@pytest.mark.parametrize(("credited", "refund"), [(None, "-15.00"), ("15.50", "-7.50"), ("31.00", None)])
def test_a_fee_credited_by_a_note_and_then_stopped_early_gives_back_only_what_the_note_left(
    engine, catalog, credited, refund, plan
):
    # without tax, or with 10 % inside the price (a note of 15.50 is 14.09 + 1.41: half of the fee all the same)
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC", tax_rate=10 if plan == "inc" else 0)
    sub = service.subscribe(engine, catalog, "acme", plan, D(2026, 3, 1))
    finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 3, 1), 9))  # March's 31.00
    if credited is not None:
        with session_scope(engine) as session:
            number = store.get_invoice(session, f"start:{sub.id}").number
        credit(engine, catalog, number, Decimal(credited), D(2026, 3, 5))
    service.cancel_subscription(engine, sub.id, D(2026, 3, 17))
    # 16 of March's 31 days ran: 16.00 due of the 31.00 billed, −15.00; a note of 15.50 left half of the fee paid,
    # so half of that comes back (−7.50: 15.50 + 7.50 = 23.00 back of 31.00, 8.00 paid for 16 days at half the
    # price); a note of all of it left nothing to give back (before, −15.00 each time: up to 46.00 back of 31.00)
    preview = customer_usage(engine, catalog, "acme", month(2026, 3), now=at(D(2026, 3, 20)))
    assert [str(line.amount) for line in preview.preview.lines] == ([refund] if refund else [])
    bill(engine, catalog, 2026, 3)
    assert fee_lines(engine, sub.id) == [(f"start:{sub.id}", "31.00")] + (
        [("period:acme:2026-03", refund)] if refund else []
    )


@pytest.mark.parametrize(("tax_rate", "total", "left", "given_back"), [
    (0, "31.00", "16.00", "15.00"),
    (10, "34.10", "17.60", "16.50"),  # 31.00 + 3.10 billed; −15.00 − 1.50 given back
])
def test_a_credit_note_after_a_fee_was_given_back_credits_only_what_is_left(
    engine, catalog, tax_rate, total, left, given_back
):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC", tax_rate=tax_rate)
    sub = service.subscribe(engine, catalog, "acme", "adv", D(2026, 3, 1))
    finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 3, 1), 9))  # March's 31.00
    service.cancel_subscription(engine, sub.id, D(2026, 3, 17))
    bill(engine, catalog, 2026, 3)  # −15.00 on March's invoice: 16.00 of the 31.00 stays paid
    with session_scope(engine) as session:
        opening = store.get_invoice(session, f"start:{sub.id}")
        assert str(store.get_invoice(session, "period:acme:2026-03").total) == f"-{given_back}"
    assert str(opening.total) == total
    with pytest.raises(BillingInputError, match=rf"has {left} USD left to credit \({given_back} of it given back on "
                       rf"later invoices\); {total} is too much"):
        credit(engine, catalog, opening.number, Decimal(total), D(2026, 4, 3))
    note = credit(engine, catalog, opening.number, Decimal(left), D(2026, 4, 3))
    assert str(note.total) == left
    number = opening.number
    with pytest.raises(BillingInputError, match=r"has 0\.00 USD left to credit"):
        credit(engine, catalog, number, Decimal("0.01"), D(2026, 4, 3))


def test_a_credit_note_waits_while_a_draft_gives_back_part_of_a_fee_the_invoice_billed(engine, catalog):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", "adv", D(2026, 3, 1))
    finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 3, 1), 9))
    service.cancel_subscription(engine, sub.id, D(2026, 3, 17))
    run_billing(engine, catalog, month(2026, 3), now=at(D(2026, 4, 1)))  # a draft giving back 15.00
    with session_scope(engine) as session:
        number = store.get_invoice(session, f"start:{sub.id}").number
    # issued as it stands after a note, it would give back 15.00 more than the note left; written again, less than
    # the limit the note was held to: the note waits for it
    with pytest.raises(ConflictError, match=r"the draft period:acme:2026-03 gives back part of a fee it billed"):
        credit(engine, catalog, number, Decimal("16.00"), D(2026, 4, 1))
    finalize_period(engine, month(2026, 3), SETTINGS, D(2026, 4, 1), now=at(D(2026, 4, 1)))
    assert str(credit(engine, catalog, number, Decimal("16.00"), D(2026, 4, 1)).total) == "16.00"


def test_a_credit_note_counts_a_fee_given_back_with_the_tax_of_the_invoice_that_gave_it_back(engine, catalog):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC", tax_rate=10)
    adv = service.subscribe(engine, catalog, "acme", "adv", D(2026, 2, 1))
    service.subscribe(engine, catalog, "acme", "inc", D(2026, 2, 1))
    finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 2, 1), 9))
    bill(engine, catalog, 2026, 2)  # March in advance: 31.00 + 3.10 and 31.00 with its tax inside, 65.10
    service.cancel_subscription(engine, adv.id, D(2026, 3, 17))
    bill(engine, catalog, 2026, 3)  # −15.00 − 1.50 given back
    with session_scope(engine) as session:
        february = store.get_invoice(session, "period:acme:2026-02")
    assert str(february.total) == "65.10"
    # 65.10 − 16.50 = 48.60 left (the February invoice's own mix of prices, 1.05 on average, would say 49.35)
    with pytest.raises(BillingInputError, match=r"has 48\.60 USD left to credit \(16\.50 of it given back"):
        credit(engine, catalog, february.number, Decimal("49.35"), D(2026, 4, 3))


def test_a_start_inside_an_invoiced_period_is_refused(engine, catalog):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "arr", D(2026, 3, 1))
    bill(engine, catalog, 2026, 3)  # March issued
    with pytest.raises(BillingInputError, match=r"start: cannot start a subscription of customer 'acme' on "
                       r"2026-03-17: it is invoiced through 2026-03-31; start it on 2026-04-01 or later"):
        service.subscribe(engine, catalog, "acme", "addon", D(2026, 3, 17))
    assert service.subscribe(engine, catalog, "acme", "addon", D(2026, 4, 1)).start_date == D(2026, 4, 1)


@pytest.mark.parametrize("issue", ["scheduler", "finalize"])
def test_a_cancellation_writes_the_opening_draft_again_for_the_days_covered(engine, catalog, issue):
    from billing import invoicing

    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", "qadv", D(2026, 2, 10))  # drafted: 300 × 50 / 90 = 166.67
    service.cancel_subscription(engine, sub.id, D(2026, 3, 15), catalog=catalog)
    bill(engine, catalog, 2026, 3)  # February was never run: the opening is still a draft
    if issue == "scheduler":
        finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 4, 2)))
    else:  # billing invoices finalize: the draft as it is stored
        invoicing.finalize_invoice(engine, f"start:{sub.id}", SETTINGS, D(2026, 4, 2), now=at(D(2026, 4, 2)))
    bill(engine, catalog, 2026, 4)
    # 10 February – 14 March: 19 + 14 = 33 of Q1's 90 days: 300 × 33 / 90 = 110.00, all on the opening invoice
    # however it is issued (not 110.00 − 56.67 against the 166.67 drafted before the cancellation)
    assert fee_lines(engine, sub.id) == [(f"start:{sub.id}", "110.00")]


def test_a_start_inside_a_week_already_invoiced_is_taken_for_a_plan_billed_on_months(engine, catalog):
    from billing.core.periods import Period

    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "wk", D(2026, 3, 2))
    week = Period(D(2026, 3, 16), D(2026, 3, 23))
    run_billing(engine, catalog, month(2026, 3), now=at(D(2026, 3, 23)), only=[week])
    finalize_period(engine, week, SETTINGS, D(2026, 3, 23), now=at(D(2026, 3, 23)))
    # the week of 16–22 March is issued, March's calendar invoice is not: a monthly plan from 20 March is billed
    # on it in full
    assert service.subscribe(engine, catalog, "acme", "adv", D(2026, 3, 20)).start_date == D(2026, 3, 20)


@pytest.mark.parametrize(("plan", "opening", "period_key"), [("wk", "6.00", "period:acme:2026-W12"),
                                                            ("anniv", "31.00", "period:acme:2026-03-17..2026-04-17")])
def test_a_weekly_or_anniversary_subscription_cancelled_on_its_start_day_gets_its_fee_back(
    engine, catalog, plan, opening, period_key
):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", plan, D(2026, 3, 17))
    # weekly: 7.00 × 6 / 7 days (Tuesday 17 – Sunday 22 March) = 6.00; anniversary: a whole month from the 17th
    finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 3, 17), 9))
    service.cancel_subscription(engine, sub.id, D(2026, 3, 17), catalog=catalog)
    bill(engine, catalog, 2026, 3)
    bill(engine, catalog, 2026, 4)
    # the invoice of its first billing period gives the fee back
    assert fee_lines(engine, sub.id) == [(f"start:{sub.id}", opening), (period_key, f"-{opening}")]


def test_an_in_arrears_fee_left_on_the_first_of_a_month_already_invoiced_is_billed_on_the_next_invoice(
    engine, catalog
):
    """A quarterly fee in arrears (30.00 a seat, 3 seats) from 24 April; May is issued, then the subscription is
    cancelled from 1 June: the quarter's fee for 24 April–31 May, 30 × 3 × 38/91 = 37.58, was due on May's invoice,
    which expected the quarter to run on; June's invoice bills it (no invoice ever did). A yearly fee in arrears
    from 17 September left on 1 March for another plan once February is issued: 1,200 × 59/365 = 193.97 for
    1 January–28 February, on March's invoice. Left on 2 March instead, March bills it as before (60 days:
    197.26). Had the cancellation come before May's run, May would have billed it, and June nothing."""
    for who in ("a", "b", "c", "e"):
        service.create_customer(engine, who, who.upper(), None, "USD", timezone="UTC")
    quarterly = service.subscribe(engine, catalog, "a", "qarr", D(2025, 4, 24), quantity=3)
    yearly = service.subscribe(engine, catalog, "b", "yarr", D(2025, 9, 17))
    control = service.subscribe(engine, catalog, "c", "yarr", D(2025, 9, 17))
    early = service.subscribe(engine, catalog, "e", "qarr", D(2025, 4, 24), quantity=3)
    service.cancel_subscription(engine, early.id, D(2025, 6, 1))  # known before May's run
    for month_ in (4, 5):
        bill(engine, catalog, 2025, month_)
    service.cancel_subscription(engine, quarterly.id, D(2025, 6, 1))
    for month_ in range(6, 13):
        bill(engine, catalog, 2025, month_)
    for month_ in (1, 2):
        bill(engine, catalog, 2026, month_)
    service.change_plan(engine, catalog, yearly.id, "qadv", D(2026, 3, 1))
    service.change_plan(engine, catalog, control.id, "qadv", D(2026, 3, 2))
    for month_ in (3, 4):
        bill(engine, catalog, 2026, month_)
    assert fee_lines(engine, quarterly.id) == [("period:a:2025-06", "37.58")]
    assert fee_lines(engine, early.id) == [("period:e:2025-05", "37.58")]
    # 2025: 17 September – 31 December, 106 days: 1,200 × 106/365 = 348.49
    assert fee_lines(engine, yearly.id) == [("period:b:2025-12", "348.49"), ("period:b:2026-03", "193.97")]
    assert fee_lines(engine, control.id) == [("period:c:2025-12", "348.49"), ("period:c:2026-03", "197.26")]


def test_a_subscription_ends_inside_its_own_period_not_yet_invoiced_whatever_another_plan_has_issued(engine, catalog):
    """An anniversary subscription from 15 January beside a calendar one: once March is billed, the calendar
    invoice runs through 31 March but the anniversary one only through 14 March. Cancelling the anniversary
    subscription on 20 March was refused ("invoiced through 2026-03-31"), as if the calendar invoice billed its
    days; the calendar subscription's own March is issued, and its end there is still refused."""
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    anniversary = service.subscribe(engine, catalog, "acme", "aarr", D(2026, 1, 15))
    calendar = service.subscribe(engine, catalog, "acme", "arr", D(2026, 1, 1))
    for number in (1, 2, 3):
        bill(engine, catalog, 2026, number)
    with pytest.raises(BillingInputError, match="it is invoiced through 2026-03-31; end it on 2026-04-01 or later"):
        service.cancel_subscription(engine, calendar.id, D(2026, 3, 20), catalog=catalog)
    with pytest.raises(BillingInputError, match="it is invoiced through 2026-03-14; end it on 2026-03-15 or later"):
        service.change_plan(engine, catalog, anniversary.id, "adv", D(2026, 3, 10))
    # a change to a calendar plan on 20 March would start it inside the issued March: refused, as a subscribe is
    with pytest.raises(BillingInputError, match="start: cannot start a subscription of customer 'acme' on 2026-03-20"):
        service.change_plan(engine, catalog, anniversary.id, "adv", D(2026, 3, 20))
    service.cancel_subscription(engine, anniversary.id, D(2026, 3, 20), catalog=catalog)
    bill(engine, catalog, 2026, 4)
    # 15–19 March: 5 of the 31 days of 15 March – 14 April, 31.00 × 5 / 31 = 5.00
    assert fee_lines(engine, anniversary.id)[-1] == ("period:acme:2026-03-15..2026-04-15", "5.00")


@pytest.mark.parametrize("typed", ["10", "1E+1", "10.000"])
def test_a_credit_note_is_stored_in_the_currencys_minor_units_however_its_amount_was_typed(engine, catalog, typed):
    """``--amount 10`` or ``1e1`` was stored as typed: the note's total and its ledger legs read "10" and "1E+1"
    in JSON, where money has exactly the currency's minor digits."""
    from billing import credits

    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "arr", D(2026, 3, 1))
    bill(engine, catalog, 2026, 3)
    (march,) = [i for i in store_invoices(engine) if i.number]
    note = create_credit_note(engine, march.number, Decimal(typed), "goodwill", SETTINGS, D(2026, 4, 3), to_balance=True)
    assert (str(note.total), str(note.subtotal), str(note.tax)) == ("10.00", "10.00", "0.00")
    assert {str(abs(entry.amount)) for entry in credits.ledger(engine, "acme")} == {"10.00"}


def store_invoices(engine):
    with session_scope(engine) as session:
        return store.list_invoices(session)


def test_a_credit_note_cannot_be_voided(engine, catalog):
    """Voiding a note only changed its status: it still counted against what was left to credit and its journal
    entries stayed, while the export's revenue no longer took it off. It stays as issued; voiding the invoice it
    credits undoes both."""
    from billing.invoicing import set_invoice_status
    from invoices.model import InvoiceStatus

    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "arr", D(2026, 3, 1))
    bill(engine, catalog, 2026, 3)
    (march,) = [i for i in store_invoices(engine) if i.number]
    note = credit(engine, catalog, march.number, Decimal("5.00"), D(2026, 4, 3))
    with pytest.raises(ConflictError, match=rf"^{note.number} is a credit note: it stays as issued \(it cannot be void"):
        set_invoice_status(engine, note.number, InvoiceStatus.VOID)
    assert set_invoice_status(engine, march.number, InvoiceStatus.VOID).status is InvoiceStatus.VOID


def test_the_preview_settles_the_fees_of_a_subscription_that_ended_as_the_period_began(engine, catalog):
    """The usage preview agrees with the invoice on a subscription that ended on the period's first day. Adv
    (31.00 in advance) from 1 March, March's invoice issued with April's fee; changed to Addon (30.00 in
    advance) on 1 April: April's invoice bills May's 30.00 and gives back Adv's April 31.00: −1.00. QArr (30.00 a
    seat a quarter, in arrears) from 1 April, April and May issued, cancelled with an end on 1 June: June's invoice
    bills the 61 days it ran, 30 × 61/91 = 20.109… → 20.11 (the preview showed nothing of either)."""
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    adv = service.subscribe(engine, catalog, "acme", "adv", D(2026, 3, 1))
    finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 3, 1)))
    bill(engine, catalog, 2026, 3)
    service.change_plan(engine, catalog, adv.id, "addon", D(2026, 4, 1))
    preview = customer_usage(engine, catalog, "acme", month(2026, 4), now=at(D(2026, 4, 20)))
    assert [str(line.amount) for line in preview.preview.lines] == ["30.00", "-31.00"]
    assert str(preview.preview.totals.total) == "-1.00"
    bill(engine, catalog, 2026, 4)
    with session_scope(engine) as session:
        assert str(store.get_invoice(session, "period:acme:2026-04").total) == "-1.00"

    service.create_customer(engine, "bee", "Bee", None, "USD", timezone="UTC")
    quarterly = service.subscribe(engine, catalog, "bee", "qarr", D(2026, 4, 1))
    for number in (4, 5):
        period = month(2026, number)
        day = period.end + dt.timedelta(days=1)
        run_billing(engine, catalog, period, customer="bee", now=at(day))
        finalize_period(engine, period, SETTINGS, day, customer="bee", now=at(day))
    service.cancel_subscription(engine, quarterly.id, D(2026, 6, 1), catalog=catalog)
    june = customer_usage(engine, catalog, "bee", month(2026, 6), now=at(D(2026, 6, 20)))
    assert [str(line.amount) for line in june.preview.lines] == ["20.11"]
    run_billing(engine, catalog, month(2026, 6), customer="bee", now=at(D(2026, 7, 1)))
    with session_scope(engine) as session:
        assert str(store.get_invoice(session, "period:bee:2026-06").total) == "20.11"
