"""The billed revenue the database sums per customer and month (``billing.metrics_store.billed_customer_months``)
is what ``billing.core.metrics.billed_by_customer`` makes of every invoice, on SQLite and PostgreSQL: for
progressive, opening, uncollectible, void and tax-inclusive invoices, several credit notes, free credit, customers
with invoices in two currencies and customers in far timezones."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import Engine

from billing import credits
from billing import customers as service
from billing.core.metrics import billed_by_customer, compute_figures, figures_row
from billing.core.periods import month
from billing.db import session_scope
from billing.metrics_store import billed_customer_months, load_metric_inputs
from invoices import store
from invoices.model import DraftInvoice, InvoiceLine, InvoiceScope, InvoiceStatus, Party, TaxLine
from tests.billing.test_metrics_db import SETTINGS, catalog  # noqa: F401  (the fixture)

D = dt.date


def _issue(
    engine: Engine,
    key: str,
    customer: str,
    currency: str,
    start: dt.date,
    end: dt.date,
    lines: dict[str, str],
    **extra: object,
) -> str:
    draft = DraftInvoice(
        billing_key=key, customer=Party(name=customer.upper(), external_id=customer), currency=currency,
        locale="en_US", period_start=start, period_end=end,
        lines=tuple(InvoiceLine(kind=kind, description=kind, amount=Decimal(a)) for kind, a in lines.items()),
        **extra,  # type: ignore[arg-type]
    )  # fmt: skip
    with session_scope(engine) as session:
        invoice_id = store.upsert_draft(session, draft).invoice_id
        (number,) = store.finalize_many(session, [invoice_id], SETTINGS, end)
    return number


def _populate(engine: Engine, catalog) -> None:  # noqa: F811
    zones = {"a": "Pacific/Kiritimati", "b": "America/Adak", "c": "UTC", "d": "Asia/Kolkata"}
    for customer, zone in zones.items():
        service.create_customer(engine, customer, name=customer.upper(), email=None, currency="USD", timezone=zone)
    sub_a = service.subscribe(engine, catalog, "a", "basic", D(2026, 1, 1))
    sub_d = service.subscribe(engine, catalog, "d", "annual", D(2026, 3, 10))
    # a: February's invoice, a progressive invoice of March's period and March's invoice; in EUR too
    _issue(engine, "period:a:2026-02", "a", "USD", D(2026, 2, 1), D(2026, 3, 1), {"subscription": "10.00"})
    _issue(engine, "progressive:a:1", "a", "USD", D(2026, 3, 1), D(2026, 4, 1), {"usage": "7.25"},
           scope=InvoiceScope.PROGRESSIVE, subscription_id=sub_a.id)  # fmt: skip
    march_a = _issue(engine, "period:a:2026-03", "a", "USD", D(2026, 3, 1), D(2026, 4, 1),
                     {"subscription": "10.00", "usage": "2.5"})  # fmt: skip
    _issue(engine, "period:a:2026-03:eur", "a", "EUR", D(2026, 3, 1), D(2026, 4, 1), {"usage": "3.333"})
    # a week-long period ending on 1 April counts in March
    _issue(engine, "period:a:week", "a", "USD", D(2026, 3, 25), D(2026, 4, 1), {"usage": "1.00"})
    # b: uncollectible (counts), void (does not), tax inside the prices (not revenue), two credit notes
    bad = _issue(engine, "period:b:2026-02", "b", "USD", D(2026, 2, 1), D(2026, 3, 1), {"subscription": "30.00"})
    void = _issue(engine, "period:b:2026-03:v", "b", "USD", D(2026, 3, 1), D(2026, 4, 1), {"subscription": "99.00"})
    inclusive = (TaxLine(rate=Decimal(19), taxable=Decimal("100.00"), amount=Decimal("19.00"),
                         included=Decimal("19.00")),)  # fmt: skip
    b_march = _issue(engine, "period:b:2026-03", "b", "USD", D(2026, 3, 1), D(2026, 4, 1),
                     {"subscription": "119.00"}, taxes=inclusive)  # fmt: skip
    # c: free credit pays 4.00 of February's 10.00; a zero invoice in March
    credits.grant_credit(engine, "c", Decimal("4.00"), "USD", now=dt.datetime(2026, 2, 2, tzinfo=dt.UTC))
    draft = DraftInvoice(
        billing_key="period:c:2026-02", customer=Party(name="C", external_id="c"), currency="USD", locale="en_US",
        period_start=D(2026, 2, 1), period_end=D(2026, 3, 1),
        lines=(InvoiceLine(kind="subscription", description="fee", amount=Decimal("10.00")),),
    )  # fmt: skip
    with session_scope(engine) as session:
        invoice_id = store.upsert_draft(session, draft).invoice_id
        credits.finalize_with_credits(
            session, [invoice_id], SETTINGS, D(2026, 3, 1), now=dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
        )
    _issue(engine, "period:c:2026-03", "c", "USD", D(2026, 3, 1), D(2026, 4, 1), {"subscription": "0.00"})
    # d: an opening invoice of a yearly fee started on 03-10, billed with January's calendar period
    _issue(engine, "start:d", "d", "USD", D(2026, 1, 1), D(2027, 1, 1), {"subscription": "1200.00"},
           scope=InvoiceScope.OPENING, subscription_id=sub_d.id)  # fmt: skip
    with session_scope(engine) as session:
        store.set_status(session, store.get_invoice(session, bad).id, InvoiceStatus.UNCOLLECTIBLE)
        store.set_status(session, store.get_invoice(session, void).id, InvoiceStatus.VOID)
        for number, amount, day in ((b_march, "20.00", D(2026, 4, 2)), (b_march, "0.50", D(2026, 5, 3)),
                                    (march_a, "12.50", D(2026, 4, 9))):  # fmt: skip
            store.create_credit_note(session, number, Decimal(amount), "goodwill", SETTINGS, day)


def test_the_database_sums_what_the_invoices_add_up_to(engine, catalog):  # noqa: F811
    _populate(engine, catalog)
    periods = [month(2026, 2), month(2026, 3), month(2026, 4)]
    with session_scope(engine) as session:
        whole = load_metric_inputs(session, periods)
        summed = load_metric_inputs(session, periods, summed=True)
        rows = list(billed_customer_months(session, D(2024, 3, 1), D(2026, 4, 1)))
    from_invoices = {
        (currency, customer, day): amounts.total
        for (currency, day), per_customer in billed_by_customer(whole.invoices).items()
        for customer, amounts in per_customer.items()
    }
    assert {(r.currency, r.customer, r.month): r.total for r in rows} == from_invoices
    assert {(r.currency, r.customer, r.month): str(r.total) for r in rows} == {
        # 10.00; March: progressive 7.25 + 10.00 + 2.5 − credit note 12.50 + the week's 1.00
        ("USD", "a", D(2026, 2, 1)): "10.00", ("USD", "a", D(2026, 3, 1)): "8.25",
        ("EUR", "a", D(2026, 3, 1)): "3.333",
        # uncollectible 30.00; March 119.00 − 19.00 tax inside, less the notes' 20.00 and 0.50 net of their 19 %
        # tax, 16.81 and 0.42: 82.77 (the void 99.00 left out)
        ("USD", "b", D(2026, 2, 1)): "30.00", ("USD", "b", D(2026, 3, 1)): "82.77",
        # 10.00 − 4.00 of free credit; 0.00
        ("USD", "c", D(2026, 2, 1)): "6.00", ("USD", "c", D(2026, 3, 1)): "0.00",
        ("USD", "d", D(2026, 3, 1)): "1200.00",  # the opening invoice counts in the month its service starts
    }  # fmt: skip
    at_once = compute_figures(whole.customers, whole.subscriptions, catalog, whole.invoices, periods)
    folded = compute_figures(summed.customers, summed.subscriptions, catalog, summed.billed, periods)
    assert [figures_row(f) for f in folded] == [figures_row(f) for f in at_once]
