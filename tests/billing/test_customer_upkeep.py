"""Customer upkeep and taxes through the database, on every backend: updating and archiving customers, tax ids
checked offline, issued invoices keeping the buyer as it was, taxes per rate stored, read back and frozen."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text

from billing import customers as service
from billing import invoicing
from billing.config import get_settings
from billing.core.periods import month
from billing.errors import BillingInputError, ConflictError
from billing.run import finalize_period, run_billing
from invoices import invoice_json
from invoices.store import FinalizeSettings
from pricing_plans.loader import loads_catalog

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.standard]
name = "Standard"
currency = "EUR"
subscription = { fee = 100, billing = "in_arrears" }

[plans.books]
name = "E-books"
currency = "EUR"
tax_category = "reduced"
subscription = { fee = 50, billing = "in_arrears" }

[plans.gross]
name = "Gross"
currency = "EUR"
tax_inclusive = true
subscription = { fee = 119, billing = "in_arrears" }
"""

CONFIG = """
[seller]
name = "Vendeur SAS"
country = "FR"
tax_id = "FR40303265045"

[tax]
rates = { DE = { standard = 19, reduced = 7 }, FR = 20 }
"""

MARCH = month(2026, 3)
D = dt.date
VALID_DE_VAT = "DE136695976"


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "test.toml")
    assert problems == []
    return loaded


@pytest.fixture
def tax_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The configuration of a seller established in France, with German and French rates."""
    path = tmp_path / "config.toml"
    path.write_text(CONFIG, encoding="utf-8")
    monkeypatch.setenv("BILLING_CONFIG", str(path))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def add(engine, external_id: str, **fields):
    fields.setdefault("name", external_id.title())
    return service.create_customer(engine, external_id, email=None, currency="EUR", timezone="UTC", **fields)


def bill_march(engine, catalog) -> list[str]:
    run_billing(engine, catalog, MARCH)
    return finalize_period(engine, MARCH, FinalizeSettings(), MARCH.end + dt.timedelta(days=2))


def taxes(invoice) -> list[tuple[str, str, str, str]]:
    return [(f"{t.rate:f}", str(t.taxable), str(t.amount), str(t.included)) for t in invoice.taxes]


# -- updating --------------------------------------------------------------------------------------------------


@pytest.mark.db
def test_the_timezone_is_fixed_once_a_period_is_invoiced(engine, catalog):
    """March issued in UTC, then acme moved to Pacific/Kiritimati (UTC+14): April began at 1 April 00:00 there,
    31 March 10:00 UTC, and the usage of those 14 hours was billed in March and again in April (moving west, to
    Honolulu, the 10 hours after 1 April 00:00 UTC were billed in neither). A draft is re-rated: it may change; so
    may a timezone whose midnight of 1 April is the same instant."""
    add(engine, "acme")
    service.subscribe(engine, catalog, "acme", "standard", D(2026, 3, 1))
    run_billing(engine, catalog, MARCH)
    assert service.update_customer(engine, "acme", {"timezone": "Europe/Paris"}).timezone == "Europe/Paris"
    service.update_customer(engine, "acme", {"timezone": "UTC"})
    assert len(bill_march(engine, catalog)) == 1
    for timezone in ("Pacific/Kiritimati", "Pacific/Honolulu"):
        with pytest.raises(ConflictError) as refused:
            service.update_customer(engine, "acme", {"timezone": timezone, "name": "Acme Ltd"})
        assert str(refused.value) == (
            "customer 'acme': timezone: acme is invoiced through 2026-03-31 in UTC; midnight of 2026-04-01 in "
            f"{timezone} is another instant, so the next period would not begin where that one ended, and the usage "
            "between would be billed twice or never"
        )
    assert (service.get_customer(engine, "acme").timezone, service.get_customer(engine, "acme").name) == ("UTC", "Acme")
    # the same midnight: a change from there on (another name of UTC; London keeps UTC until 29 March, not 1 April)
    assert service.update_customer(engine, "acme", {"timezone": "Etc/UTC", "name": "Acme Ltd"}).name == "Acme Ltd"
    with pytest.raises(ConflictError):
        service.update_customer(engine, "acme", {"timezone": "Europe/London"})  # BST from 29 March: 23:00 UTC


@pytest.mark.db
def test_an_update_changes_the_fields_given_and_checks_them_together(engine):
    add(engine, "cus_1", address=("Old Street 1",))
    updated = service.update_customer(
        engine, "cus_1", {"name": "Kunde GmbH", "country": "de", "tax_id": "DE 136 695 976", "address": ["A", "B"]}
    )
    assert (updated.name, updated.country, updated.tax_id, updated.address) == (
        "Kunde GmbH", "DE", VALID_DE_VAT, ("A", "B")
    )
    assert updated.currency == "EUR" and updated.email is None  # untouched
    assert service.get_customer(engine, "cus_1") == updated
    # a tax id is checked against the country the customer now has
    with pytest.raises(BillingInputError) as refused:
        service.update_customer(engine, "cus_1", {"country": "FR"})
    assert str(refused.value) == "customer 'cus_1': tax_id: 'DE136695976': a number starting DE is not one of France (FR)"
    # clearing an optional field
    assert service.update_customer(engine, "cus_1", {"tax_id": None}).tax_id is None


@pytest.mark.db
def test_an_invalid_vat_id_is_refused_with_its_field_and_reason(engine):
    add(engine, "cus_1", country="DE")
    with pytest.raises(BillingInputError) as refused:
        service.update_customer(engine, "cus_1", {"tax_id": "DE123"})
    assert str(refused.value) == "customer 'cus_1': tax_id: 'DE123': not a valid VAT number of Germany (wrong length)"
    assert refused.value.problems == ("tax_id: 'DE123': not a valid VAT number of Germany (wrong length)",)
    with pytest.raises(BillingInputError, match=r"tax_id: 'DE136695977': .* \(wrong check digit\)"):
        add(engine, "cus_2", country="DE", tax_id="DE136695977")
    with pytest.raises(BillingInputError, match=r"currency: cannot be changed"):
        service.update_customer(engine, "cus_1", {"currency": "USD"})
    assert service.get_customer(engine, "cus_1").tax_id is None


@pytest.mark.db
def test_an_archived_customer_takes_no_new_subscription_and_keeps_its_history(engine, catalog):
    add(engine, "cus_1")
    subscription = service.subscribe(engine, catalog, "cus_1", "standard", dt.date(2026, 3, 1))
    with pytest.raises(ConflictError, match=r"subscription still running: subscription .* cancel it"):
        service.archive_customer(engine, "cus_1", today=dt.date(2026, 3, 15))
    service.cancel_subscription(engine, subscription.id, dt.date(2026, 4, 1))
    archived = service.archive_customer(engine, "cus_1", today=dt.date(2026, 4, 2))
    assert archived.archived_at is not None
    with pytest.raises(ConflictError, match=r"customer 'cus_1' is archived .* unarchive it first"):
        service.subscribe(engine, catalog, "cus_1", "standard", dt.date(2026, 5, 1))
    assert [s.id for s in service.list_subscriptions(engine, customer="cus_1")] == [subscription.id]
    assert service.unarchive_customer(engine, "cus_1").archived_at is None
    assert service.subscribe(engine, catalog, "cus_1", "standard", dt.date(2026, 5, 1)).plan_code == "standard"


# -- taxes through a billing run -------------------------------------------------------------------------------


@pytest.mark.db
def test_a_billing_run_taxes_each_buyer_by_the_rules_and_stores_the_taxes(engine, catalog, tax_config):
    add(engine, "b2b", country="DE", tax_id=VALID_DE_VAT)
    add(engine, "consumer", country="DE")
    add(engine, "charity", country="DE", tax_exempt_reason="Charity (§ 5 KStG)")
    for customer in ("b2b", "consumer", "charity"):
        service.subscribe(engine, catalog, customer, "standard", MARCH.start)
    service.subscribe(engine, catalog, "consumer", "books", MARCH.start)
    service.subscribe(engine, catalog, "charity", "gross", MARCH.start)
    assert len(bill_march(engine, catalog)) == 3
    b2b, consumer, charity = (invoicing.get_invoice(engine, f"period:{c}:2026-03") for c in ("b2b", "consumer", "charity"))

    # reverse charge: 0 % of 100.00, the legal wording on the invoice
    assert taxes(b2b) == [("0", "100.00", "0.00", "0.00")] and b2b.reverse_charge
    shown = invoice_json(b2b)
    assert shown["tax_notes"] == [
        "Reverse charge: VAT to be accounted for by the recipient (Article 196, Council Directive 2006/112/EC)"
    ]
    assert shown["customer"]["tax_id"] == VALID_DE_VAT and shown["customer"]["country"] == "DE"
    assert shown["total"] == "100.00"
    # a consumer: 19 % of 100.00 = 19.00 and 7 % of 50.00 = 3.50; 150.00 + 22.50 = 172.50
    assert taxes(consumer) == [("19", "100.00", "19.00", "0.00"), ("7", "50.00", "3.50", "0.00")]
    assert (str(consumer.tax), str(consumer.total)) == ("22.50", "172.50")
    assert [t["tax_amount"] for t in invoice_json(consumer)["taxes"]] == ["19.00", "3.50"]
    # exempt, with a tax-inclusive price too: nothing is taken out of 119.00 either
    assert taxes(charity) == [("0", "219.00", "0.00", "0.00")]
    assert charity.taxes[0].exempt_reason == "Charity (§ 5 KStG)" and str(charity.total) == "219.00"

    # the taxes of an issued invoice are frozen like its amounts
    with pytest.raises(Exception, match="invoice is issued"), engine.begin() as connection:
        connection.execute(text("UPDATE invoices SET taxes = '[]' WHERE id = :id"), {"id": consumer.id})


@pytest.mark.db
def test_a_tax_inclusive_price_of_119_is_100_net_and_19_tax_on_the_stored_invoice(engine, catalog, tax_config):
    add(engine, "consumer", country="DE")
    service.subscribe(engine, catalog, "consumer", "gross", MARCH.start)
    bill_march(engine, catalog)
    invoice = invoicing.get_invoice(engine, "period:consumer:2026-03")
    assert taxes(invoice) == [("19", "100.00", "19.00", "19.00")]
    assert (str(invoice.subtotal), str(invoice.tax), str(invoice.tax_included), str(invoice.total)) == (
        "119.00", "19.00", "19.00", "119.00"
    )
    # revenue is net of tax: 100.00 billed, not the 119.00 the customer pays
    from billing.metrics_store import figures_from_database

    (figures,) = figures_from_database(engine, catalog, [MARCH])
    assert str(figures.billed_revenue) == "100.00"


@pytest.mark.db
def test_issued_invoices_keep_the_buyer_as_it_was(engine, catalog, tax_config):
    add(engine, "consumer", name="Kunde", country="DE", address=("Hauptstr. 1",))
    service.subscribe(engine, catalog, "consumer", "standard", MARCH.start)
    (number,) = bill_march(engine, catalog)
    service.update_customer(
        engine, "consumer", {"name": "Kunde GmbH", "address": ["Neue Str. 2"], "tax_id": VALID_DE_VAT}
    )
    issued = invoicing.get_invoice(engine, number)
    assert (issued.customer.name, issued.customer.address, issued.customer.tax_id) == ("Kunde", ("Hauptstr. 1",), None)
    assert taxes(issued) == [("19", "100.00", "19.00", "0.00")]
    # the next period's invoice has the buyer as it is now: a business with a VAT id, reverse-charged
    april = month(2026, 4)
    run_billing(engine, catalog, april)
    draft = invoicing.get_invoice(engine, "period:consumer:2026-04")
    assert (draft.customer.name, draft.customer.tax_id) == ("Kunde GmbH", VALID_DE_VAT)
    assert draft.reverse_charge


@pytest.mark.db
def test_a_credit_note_splits_its_amount_over_the_invoices_rates(engine, catalog, tax_config):
    add(engine, "consumer", country="DE")
    service.subscribe(engine, catalog, "consumer", "standard", MARCH.start)
    service.subscribe(engine, catalog, "consumer", "books", MARCH.start)
    (number,) = bill_march(engine, catalog)
    note = invoicing.create_credit_note(
        engine, number, Decimal("86.25"), "half of it", FinalizeSettings(), dt.date(2026, 4, 10)
    )
    # half of 172.50: 119.00 : 53.50 of it → 59.50 and 26.75; 59.50 × 100/119 = 50.00 (+ 9.50 tax),
    # 26.75 × 100/107 = 25.00 (+ 1.75 tax)
    assert taxes(note) == [("19", "50.00", "9.50", "0.00"), ("7", "25.00", "1.75", "0.00")]
    assert (str(note.subtotal), str(note.tax), str(note.total)) == ("75.00", "11.25", "86.25")
    assert json.loads(json.dumps(invoice_json(note)))["taxes"][1]["rate"] == "7"


@pytest.mark.db
def test_a_vat_number_without_a_country_gives_the_customer_its_country(engine):
    assert add(engine, "cus_1", tax_id="FR40303265045").country == "FR"
    assert add(engine, "cus_2", tax_id="EL094259216").country == "GR"
    with pytest.raises(BillingInputError, match=r"tax_id: '12345': give the customer's country"):
        add(engine, "cus_3", tax_id="12345")


@pytest.mark.db
def test_a_full_credit_note_of_a_tax_inclusive_and_an_exclusive_rate_gives_back_each_rate_exactly(
    engine, catalog, tax_config
):
    add(engine, "consumer", country="DE")
    service.subscribe(engine, catalog, "consumer", "gross", MARCH.start)
    service.subscribe(engine, catalog, "consumer", "books", MARCH.start)
    (number,) = bill_march(engine, catalog)
    invoice = invoicing.get_invoice(engine, number)
    # 119.00 tax included at 19 % (100.00 + 19.00) and 50.00 at 7 % (+ 3.50): 172.50
    assert taxes(invoice) == [("19", "100.00", "19.00", "19.00"), ("7", "50.00", "3.50", "0.00")]
    assert str(invoice.total) == "172.50"
    note = invoicing.create_credit_note(
        engine, number, Decimal("172.50"), "all of it", FinalizeSettings(), dt.date(2026, 4, 10)
    )
    # each rate weighs what it adds to the total (119.00 and 53.50), so all of it gives back each rate as billed
    assert taxes(note) == [("19", "100.00", "19.00", "0.00"), ("7", "50.00", "3.50", "0.00")]
    assert (str(note.subtotal), str(note.tax), str(note.total)) == ("150.00", "22.50", "172.50")


@pytest.mark.db
def test_credit_notes_that_credit_an_invoice_in_thirds_give_back_each_rate_exactly(engine, catalog, tax_config):
    add(engine, "consumer", country="DE")
    service.subscribe(engine, catalog, "consumer", "standard", MARCH.start)
    service.subscribe(engine, catalog, "consumer", "books", MARCH.start)
    (number,) = bill_march(engine, catalog)  # 119.00 at 19 % (100.00 + 19.00) and 53.50 at 7 % (50.00 + 3.50)
    notes = [
        invoicing.create_credit_note(
            engine, number, Decimal("57.50"), f"a third ({n})", FinalizeSettings(), dt.date(2026, 4, 10 + n)
        )
        for n in range(3)
    ]
    # 1st: 57.50 × 119.00/172.50 = 39.6667 → 39.67 (net 33.34, tax 6.33); 7 %: 17.83 (net 16.66, tax 1.17)
    assert taxes(notes[0]) == [("19", "33.34", "6.33", "0.00"), ("7", "16.66", "1.17", "0.00")]
    # 2nd, of what is left (79.33 and 35.67 of 115.00): 57.50 × 79.33/115.00 = 39.665 → 39.67; 17.83
    assert taxes(notes[1]) == [("19", "33.34", "6.33", "0.00"), ("7", "16.66", "1.17", "0.00")]
    # 3rd: all that is left of each rate, 39.66 (33.32 + 6.34) and 17.84 (16.68 + 1.16), so that the three
    # give back 100.00 + 19.00 and 50.00 + 3.50 as billed (not 100.02 + 18.99 and 49.98 + 3.51)
    assert taxes(notes[2]) == [("19", "33.32", "6.34", "0.00"), ("7", "16.68", "1.16", "0.00")]
    assert [str(note.total) for note in notes] == ["57.50", "57.50", "57.50"]


@pytest.mark.db
def test_a_customers_country_is_a_country(engine):
    """Babel also names groups (EU), placeholders (ZZ) and pseudo-locales (XA, XB); EL and UK are not ISO codes (Greece is GR, the United
    Kingdom GB): each is refused with what to write instead."""
    add(engine, "cus_1")
    for code, problem in [
        ("EL", "country: 'EL' is not an ISO 3166-1 country code: Greece is GR (EL is only the prefix of its VAT "
               "numbers)"),
        ("uk", "country: 'UK' is not an ISO 3166-1 country code: the United Kingdom is GB"),
        ("EU", "country: expected an ISO 3166-1 alpha-2 country code such as DE, got 'EU'"),
        ("ZZ", "country: expected an ISO 3166-1 alpha-2 country code such as DE, got 'ZZ'"),
        ("XA", "country: expected an ISO 3166-1 alpha-2 country code such as DE, got 'XA'"),  # Babel's pseudo-locale
    ]:
        with pytest.raises(BillingInputError) as refused:
            service.update_customer(engine, "cus_1", {"country": code})
        assert refused.value.problems == (problem,)
    assert service.update_customer(engine, "cus_1", {"country": "gr", "tax_id": "094259216"}).tax_id == "EL094259216"


@pytest.mark.db
def test_a_tax_rate_has_at_most_four_decimal_places_and_is_stored_plainly(engine):
    """1E-20000 is between 0 and 100, but PostgreSQL's NUMERIC cannot hold it (a 500 before); 1E+1 was stored as
    written on SQLite and as 10 on PostgreSQL."""
    with pytest.raises(BillingInputError) as refused:
        add(engine, "cus_1", tax_rate="1E-20000")
    assert refused.value.problems == ("tax_rate: at most 4 decimal places (8.875 for 8.875 %), got 1E-20000",)
    assert str(add(engine, "cus_2", tax_rate="8.875").tax_rate) == "8.875"
    assert str(service.get_customer(engine, "cus_2").tax_rate) == "8.875"
    assert str(add(engine, "cus_3", tax_rate="1E+1").tax_rate) == "10"
    assert str(service.get_customer(engine, "cus_3").tax_rate) == "10"
    assert str(service.update_customer(engine, "cus_3", {"tax_rate": "-0"}).tax_rate) == "0"


@pytest.mark.db
def test_a_top_up_invoice_names_the_buyer_with_its_tax_id_and_country(engine):
    from billing import credits

    add(engine, "b2b", country="DE", tax_id=VALID_DE_VAT)
    grant = credits.grant_credit(engine, "b2b", Decimal("50.00"), "EUR", paid=True,
                                 now=dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC))
    (invoice,) = [i for i in invoicing.list_invoices(engine, customer="b2b") if i.id == grant.invoice_id]
    assert (invoice.customer.tax_id, invoice.customer.country, str(invoice.total)) == (VALID_DE_VAT, "DE", "50.00")



AHEAD = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.ahead]
name = "Ahead"
currency = "EUR"
subscription = { fee = 100, billing = "in_advance" }

[plans.books]
name = "E-books"
currency = "EUR"
tax_category = "reduced"
"""


@pytest.mark.db
@pytest.mark.parametrize(("books", "included"), [("fee = 50", "0.00"), ("fee = 53.50", "3.50")])
def test_an_expiring_credit_pays_the_lines_before_its_expiry_with_their_own_tax(engine, tax_config, books, included):
    """March's invoice of a German consumer: the e-books of March at 7 % and, in advance, April's fee at 19 %. A
    credit that expired as April began pays the e-books with their tax, 53.50, not their share of the net (50.00
    of 150.00) of the whole invoice's 172.50, 57.50, which paid 4.00 of April's fee. With the e-books' price
    tax-inclusive (53.50, of which 3.50 tax) it pays the same 53.50 (not 172.50 × 53.50 / 153.50 = 60.12)."""
    from billing import credits

    inclusive = "tax_inclusive = true\n" if included != "0.00" else ""
    catalog, problems = loads_catalog(
        AHEAD + inclusive + f'subscription = {{ {books}, billing = "in_arrears" }}\n', "test.toml"
    )
    assert problems == []
    add(engine, "consumer", country="DE")
    february = month(2026, 2)
    service.subscribe(engine, catalog, "consumer", "ahead", february.start)
    service.subscribe(engine, catalog, "consumer", "books", MARCH.start)
    run_billing(engine, catalog, february)
    finalize_period(engine, february, FinalizeSettings(), february.end)
    credits.grant_credit(engine, "consumer", Decimal("500.00"), "EUR", expires=dt.date(2026, 4, 1),
                         now=dt.datetime(2026, 3, 10, tzinfo=dt.UTC))
    (number,) = bill_march(engine, catalog)
    invoice = invoicing.get_invoice(engine, number)
    assert [(line.plan_code, str(line.amount), str(line.service_start)) for line in invoice.lines] == [
        ("ahead", "100.00", "2026-04-01"),
        ("books", books.removeprefix("fee = ") if included != "0.00" else "50.00", "2026-03-01"),
    ]
    assert taxes(invoice) == [("19", "100.00", "19.00", "0.00"), ("7", "50.00", "3.50", included)]
    assert str(invoice.total) == "172.50"
    assert [str(c.amount) for c in invoice.credits_applied] == ["53.50"]
    assert str(invoice.amount_due) == "119.00"
    # each line says its rate, as the invoice's taxes do; the rate is not part of what a re-run compares
    assert [line.details.extra.get("tax_rate") for line in invoice.lines] == ["19", "7"]
