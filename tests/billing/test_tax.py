"""Hand-checked taxes from the pure composition (``billing.core.tax``): rates by buyer country and region, EU
reverse charge, exempt buyers, tax-inclusive plans, two rates on one invoice, the rounding rule. No database."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal

import pytest

from billing.config import Settings
from billing.core.compose import Section, compose_opening_invoice, compose_period_invoice
from billing.core.coupons import AppliedCoupon, Coupon, Duration, discount_lines
from billing.core.domain import Customer, Subscription, SubscriptionStatus
from billing.core.periods import month
from billing.core.tax import REVERSE_CHARGE_NOTE, Buyer, TaxRules, check_tax_id, customer_taxes, treatment
from invoices.model import InvoiceLine, LineDetails, LineKind, TaxLine
from pricing_plans.loader import loads_catalog
from pricing_plans.money import Rounding

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.standard]
name = "Standard"
currency = "EUR"
[plans.standard.subscription]
fee = 100.00
billing = "in_arrears"

[plans.books]
name = "E-books"
currency = "EUR"
tax_category = "reduced"
[plans.books.subscription]
fee = 50.00
billing = "in_arrears"

[plans.magazines]
name = "Magazines"
currency = "EUR"
tax_category = "reduced"
[plans.magazines.subscription]
fee = 30.00
billing = "in_arrears"

[plans.gross]
name = "Gross"
currency = "EUR"
tax_inclusive = true
[plans.gross.subscription]
fee = 119.00
billing = "in_advance"

[plans.cents]
name = "Cents"
currency = "EUR"
[plans.cents.subscription]
fee = 0.50
billing = "in_arrears"
"""

# The configuration of a seller established in France, as config.toml states it.
SETTINGS = Settings(
    seller={"name": "Vendeur SAS", "country": "FR", "tax_id": "FR40303265045"},
    tax={"rates": {"DE": {"standard": 19, "reduced": 7}, "FR": 20, "US-NY": "8.875", "CA-QC": "14.975"}},
)
RULES = SETTINGS.tax_rules()
MARCH = month(2026, 3)
VALID_DE_VAT = "DE136695976"  # a well-known valid test number (check digit 6)


@pytest.fixture(scope="module")
def catalog():
    loaded, problems = loads_catalog(CATALOG, "test.toml")
    assert problems == []
    return loaded


def customer(**fields) -> Customer:
    base = dict(
        id=1, external_id="kunde", name="Kunde GmbH", email=None, currency="EUR", timezone="UTC", locale="de_DE",
        address=("Hauptstr. 1", "10115 Berlin"), webhook_url=None, tax_rate=Decimal(0),
    )
    return Customer(**(base | fields))


def subscription(id_: int, plan: str) -> Subscription:
    return Subscription(
        id=id_, customer_id=1, customer_external_id="kunde", plan_code=plan, plan_version=1,
        start_date=dt.date(2026, 1, 1), end_date=None, status=SubscriptionStatus.ACTIVE, cancel_reason=None,
        previous_subscription_id=None,
    )


def invoice(catalog, buyer: Customer, *plans: str, rules: TaxRules | None = RULES, coupons=()):
    sections = [Section(subscription(i, plan), catalog.plan(plan), {}) for i, plan in enumerate(plans, start=1)]
    return compose_period_invoice(buyer, MARCH, sections, [], catalog, coupons=coupons, tax_rules=rules)


def taxes(draft) -> list[tuple[str, str, str, str]]:
    """(rate, taxable, tax, included) per tax line."""
    return [(f"{t.rate:f}", str(t.taxable), str(t.amount), str(t.included)) for t in draft.taxes]


# -- which rate ------------------------------------------------------------------------------------------------


def test_a_german_consumer_pays_germanys_19_percent(catalog):
    draft = invoice(catalog, customer(country="DE"), "standard")
    # 100.00 × 19 % = 19.00; total 119.00
    assert taxes(draft) == [("19", "100.00", "19.00", "0.00")]
    assert draft.taxes[0].name == "VAT" and draft.taxes[0].country == "DE" and not draft.taxes[0].reverse_charge
    assert (str(draft.totals.tax), str(draft.totals.total)) == ("19.00", "119.00")
    assert draft.tax_rate == 19


def test_a_german_business_with_a_valid_vat_id_is_reverse_charged_by_a_french_seller(catalog):
    draft = invoice(catalog, customer(country="DE", tax_id=VALID_DE_VAT), "standard")
    assert taxes(draft) == [("0", "100.00", "0.00", "0.00")]
    tax = draft.taxes[0]
    assert tax.reverse_charge and tax.note == REVERSE_CHARGE_NOTE
    assert tax.note == (
        "Reverse charge: VAT to be accounted for by the recipient (Article 196, Council Directive 2006/112/EC)"
    )
    assert str(draft.totals.total) == "100.00"
    # the buyer's tax id and country are on the invoice's snapshot of the buyer
    assert (draft.customer.tax_id, draft.customer.country) == (VALID_DE_VAT, "DE")


def test_a_french_business_buying_from_a_french_seller_pays_french_vat(catalog):
    draft = invoice(catalog, customer(country="FR", tax_id="FR40303265045"), "standard")
    assert taxes(draft) == [("20", "100.00", "20.00", "0.00")]
    assert not draft.taxes[0].reverse_charge


def test_no_reverse_charge_outside_the_eu_nor_from_a_seller_outside_it():
    assert not treatment(TaxRules(seller_country="FR"), Buyer(country="GB", tax_id="GB980780684")).reverse_charge
    uk_seller = TaxRules(seller_country="GB")
    assert not treatment(uk_seller, Buyer(country="DE", tax_id=VALID_DE_VAT)).reverse_charge


def test_an_exempt_customer_pays_nothing_and_the_reason_is_printed(catalog):
    reason = "Charity registered under § 5 KStG"
    draft = invoice(catalog, customer(country="DE", tax_exempt_reason=reason), "standard")
    assert taxes(draft) == [("0", "100.00", "0.00", "0.00")]
    assert draft.taxes[0].exempt_reason == reason
    assert draft.taxes[0].note == f"Exempt from tax: {reason}"


def test_a_region_has_its_own_rate(catalog):
    buyer = customer(country="US", region="NY", currency="EUR")
    draft = invoice(catalog, buyer, "standard")
    # 100.00 × 8.875 % = 8.875 → 8.88 (half up)
    assert taxes(draft) == [("8.875", "100.00", "8.88", "0.00")]
    assert (draft.taxes[0].country, draft.taxes[0].region) == ("US", "NY")
    # a region without a rate of its own takes nothing of another region; a country without a rate pays 0 %
    assert taxes(invoice(catalog, customer(country="US", region="CA"), "standard")) == [("0", "100.00", "0.00", "0.00")]


def test_the_customers_own_rate_still_works_without_rules(catalog):
    """The one rate per customer of old: 10 % of 100.00 = 10.00, with or without configured rules."""
    for rules in (None, TaxRules()):
        draft = invoice(catalog, customer(tax_rate=Decimal(10)), "standard", rules=rules)
        assert taxes(draft) == [("10", "100.00", "10.00", "0.00")]
        assert draft.taxes[0].name == "Tax"


# -- how much --------------------------------------------------------------------------------------------------


def test_a_tax_inclusive_price_of_119_at_19_percent_is_100_net_and_19_tax(catalog):
    sub = subscription(1, "gross")
    draft = compose_opening_invoice(customer(country="DE"), sub, catalog.plan("gross"), catalog, RULES)
    assert draft is not None
    # tax = 119.00 × 19 / 119 = 19.00; net = 119.00 − 19.00 = 100.00; the customer pays the price, 119.00
    assert [str(line.amount) for line in draft.lines] == ["119.00"]
    assert taxes(draft) == [("19", "100.00", "19.00", "19.00")]
    totals = draft.totals
    assert (str(totals.subtotal), str(totals.tax), str(totals.tax_included), str(totals.total)) == (
        "119.00", "19.00", "19.00", "119.00"
    )


def test_a_tax_inclusive_price_for_a_reverse_charged_buyer_is_all_net(catalog):
    sub = subscription(1, "gross")
    buyer = customer(country="DE", tax_id=VALID_DE_VAT)
    draft = compose_opening_invoice(buyer, sub, catalog.plan("gross"), catalog, RULES)
    assert draft is not None
    assert taxes(draft) == [("0", "119.00", "0.00", "0.00")]
    assert str(draft.totals.total) == "119.00"


def test_two_rates_on_one_invoice(catalog):
    draft = invoice(catalog, customer(country="DE"), "standard", "books")
    # standard: 100.00 × 19 % = 19.00; e-books (reduced): 50.00 × 7 % = 3.50; total 150.00 + 22.50 = 172.50
    assert taxes(draft) == [("19", "100.00", "19.00", "0.00"), ("7", "50.00", "3.50", "0.00")]
    assert (str(draft.totals.tax), str(draft.totals.total)) == ("22.50", "172.50")
    assert draft.tax_rate == 19  # the rate of the largest taxable amount
    # France names no reduced rate: both plans at its standard 20 %, one tax line of 150.00
    assert taxes(invoice(catalog, customer(country="FR"), "standard", "books")) == [("20", "150.00", "30.00", "0.00")]


def test_a_discount_is_shared_among_the_rates_of_the_lines_it_reduces(catalog):
    coupon = AppliedCoupon(Coupon("TEN", Duration.FOREVER, percent_off=Decimal(10)), dt.date(2026, 1, 1), 0)
    draft = invoice(catalog, customer(country="DE"), "standard", "books", coupons=[coupon])
    # 10 % of 150.00 = 15.00, shared 100 : 50 → 10.00 and 5.00; 90.00 × 19 % = 17.10; 45.00 × 7 % = 3.15
    assert taxes(draft) == [("19", "90.00", "17.10", "0.00"), ("7", "45.00", "3.15", "0.00")]
    assert (str(draft.totals.discount), str(draft.totals.total)) == ("15.00", "155.25")


def test_a_second_coupon_is_shared_among_what_the_first_left_of_each_rate(catalog):
    """100 % off the e-books (7 %), then 10.00 off everything: the 10.00 comes off what is left, the 100.00 at
    19 % — not 6.67 and 3.33 by the lines' amounts before the first coupon, which would leave −3.33 taxed at 7 %."""
    books = AppliedCoupon(Coupon("BOOKS", Duration.FOREVER, percent_off=Decimal(100), plans=("books",)),
                          dt.date(2026, 1, 1), 0)
    ten = AppliedCoupon(Coupon("TEN", Duration.FOREVER, amount_off=Decimal("10.00"), currency="EUR"),
                        dt.date(2026, 1, 1), 0)
    draft = invoice(catalog, customer(country="DE"), "standard", "books", coupons=[books, ten])
    # 19 %: 100.00 − 10.00 = 90.00 → 17.10; 7 %: 50.00 − 50.00 = 0.00 → 0.00
    assert taxes(draft) == [("19", "90.00", "17.10", "0.00"), ("7", "0.00", "0.00", "0.00")]
    assert (str(draft.totals.discount), str(draft.totals.tax), str(draft.totals.total)) == ("60.00", "17.10", "107.10")


def test_a_coupon_never_takes_a_rate_below_zero(catalog):
    """40.00 off everything, then 100 % off the e-books (7 %): the first takes 26.67 of the 100.00 at 19 % and
    13.33 of the e-books' 50.00 (100 : 50), and the second all that is left of the e-books, 36.67. A period's last
    invoice can carry more off the e-books than its own lines have left (its earlier invoices took less): 50.00
    then, whose 13.33 more comes off the 19 % rate, not below zero at 7 %."""
    forty = AppliedCoupon(Coupon("FORTY", Duration.FOREVER, amount_off=Decimal("40.00"), currency="EUR"),
                          dt.date(2026, 1, 1), 0)
    books = AppliedCoupon(Coupon("BOOKS", Duration.FOREVER, percent_off=Decimal(100), plans=("books",)),
                          dt.date(2026, 1, 1), 0)
    draft = invoice(catalog, customer(country="DE"), "standard", "books", coupons=[forty, books])
    assert [str(line.amount) for line in draft.lines if line.kind == "discount"] == ["-40.00", "-36.67"]
    # 19 %: 100.00 − 26.67 = 73.33 → 13.93; 7 %: 50.00 − 13.33 − 36.67 = 0.00
    assert taxes(draft) == [("19", "73.33", "13.93", "0.00"), ("7", "0.00", "0.00", "0.00")]
    assert (str(draft.totals.discount), str(draft.totals.total)) == ("76.67", "87.26")
    lines = [line if line.amount != Decimal("-36.67") else replace(line, amount=Decimal("-50.00")) for line in draft.lines]
    plans = [catalog.plan("standard"), catalog.plan("books")]
    _, more, _ = customer_taxes(customer(country="DE"), RULES, lines, plans)
    # 19 %: 100.00 − 26.67 − 13.33 = 60.00 → 11.40; 7 %: 50.00 − 13.33 − 36.67 = 0.00
    assert [(f"{t.rate:f}", str(t.taxable), str(t.amount)) for t in more] == [("19", "60.00", "11.40"), ("7", "0.00", "0.00")]


def test_each_line_says_its_rate_only_when_an_invoices_lines_are_not_all_taxed_alike(catalog):
    """A German consumer's Standard (19 %) and E-books (7 %), 40.00 off everything: each priced line records its
    rate, the shared discount line none; for a French consumer both plans are at 20 %, and nothing is recorded."""
    forty = AppliedCoupon(Coupon("FORTY", Duration.FOREVER, amount_off=Decimal("40.00"), currency="EUR"),
                          dt.date(2026, 1, 1), 0)
    draft = invoice(catalog, customer(country="DE"), "standard", "books", coupons=[forty])
    assert [(str(line.kind), line.details.extra.get("tax_rate")) for line in draft.lines] == [
        ("subscription", "19"), ("subscription", "7"), ("discount", None)
    ]
    alike = invoice(catalog, customer(country="FR"), "standard", "books", coupons=[forty])
    assert [line.details.extra.get("tax_rate") for line in alike.lines] == [None, None, None]


def test_what_discounts_leave_of_a_rate_is_exact(catalog):
    """E-books of 6.15 and 29.01 (7 %), 10 % off everything (−3.52), then 100 % off them (−31.64): one 7 % line
    with nothing taxable. Each line's remainder kept in 28 digits added up to 31.6399…, and the 0.01 beyond it
    made a line of −0.01 at 19 %, a rate of no line."""
    books = catalog.plan("books")
    lines = [
        InvoiceLine(kind=LineKind.USAGE, description="e-books", amount=Decimal(amount), plan_code="books",
                    plan_version=books.version)
        for amount in ("6.15", "29.01")
    ]  # fmt: skip
    coupons = [
        AppliedCoupon(Coupon(code, Duration.FOREVER, percent_off=Decimal(percent)), dt.date(2026, 1, 1), 0)
        for code, percent in (("ALL10", 10), ("ALL100", 100))
    ]
    discounts = discount_lines(lines, coupons, MARCH.start, "EUR")
    assert [str(line.amount) for line in discounts] == ["-3.52", "-31.64"]
    _, found, _ = customer_taxes(customer(country="DE"), RULES, [*lines, *discounts], [books])
    assert [(f"{t.rate:f}", str(t.taxable), str(t.amount)) for t in found] == [("7", "0.00", "0.00")]


def test_a_discount_placed_in_full_on_other_lines_adds_no_line_at_the_standard_rate(catalog):
    """E-books 50.00 and magazines 30.00, both at 7 %, and a period's last invoice carrying 60.00 off the e-books
    (more than their 50.00: its earlier invoices took less). The 10.00 beyond them comes off the magazines, so all
    of it is placed at 7 %: 50.00 + 30.00 − 60.00 = 20.00 → 1.40, and no tax line of nothing at 19 %, a rate of
    no line of the invoice."""
    books, magazines = catalog.plan("books"), catalog.plan("magazines")
    lines = [
        InvoiceLine(kind=LineKind.USAGE, description=plan.name, amount=Decimal(amount), plan_code=plan.code,
                    plan_version=plan.version)
        for plan, amount in ((books, "50.00"), (magazines, "30.00"))
    ]  # fmt: skip
    off = InvoiceLine(kind=LineKind.DISCOUNT, description="Coupon BOOKS", amount=Decimal("-60.00"),
                      details=LineDetails(extra={"coupon": "BOOKS", "plans": ["books"]}))  # fmt: skip
    _, found, _ = customer_taxes(customer(country="DE"), RULES, [*lines, off], [books, magazines])
    assert [(f"{t.rate:f}", str(t.taxable), str(t.amount)) for t in found] == [("7", "20.00", "1.40")]


def test_tax_is_rounded_once_per_rate_on_the_sum_not_per_line(catalog):
    """Three lines of 0.50 at 5 %: rounded per line each would be 0.025 → 0.03, 0.09 in all; the rule rounds the
    sum once: 1.50 × 5 % = 0.075 → 0.08 (half up)."""
    rules = TaxRules(rates={"DE": RULES.rates["DE"].__class__(standard=Decimal(5))})
    sections = [Section(subscription(i, "cents"), catalog.plan("cents"), {}) for i in (1, 2, 3)]
    draft = compose_period_invoice(customer(country="DE"), MARCH, sections, [], catalog, tax_rules=rules)
    assert [str(line.amount) for line in draft.lines] == ["0.50", "0.50", "0.50"]
    assert taxes(draft) == [("5", "1.50", "0.08", "0.00")]


def test_the_catalogs_half_even_rounding_rounds_tax_too():
    catalog, problems = loads_catalog('[catalog]\nrounding = "half_even"\n' + CATALOG, "test.toml")
    assert problems == []
    rules = TaxRules(rates={"DE": RULES.rates["DE"].__class__(standard=Decimal(5))})
    draft = invoice(catalog, customer(country="DE"), "cents", rules=rules)
    # 0.50 × 5 % = 0.025 → 0.02 half even (0.03 half up)
    assert taxes(draft) == [("5", "0.50", "0.02", "0.00")]
    assert draft.rounding is Rounding.HALF_EVEN


def test_tax_lines_keep_their_terms_through_storage():
    line = TaxLine(
        rate=Decimal("0"), taxable=Decimal("100.00"), amount=Decimal("0.00"), name="VAT", country="DE",
        reverse_charge=True, note=REVERSE_CHARGE_NOTE,
    )
    assert TaxLine.from_dict(line.as_dict()) == line


# -- tax ids ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "country", "stored"),
    [
        ("DE 136 695 976", "DE", "DE136695976"),
        ("136695976", "DE", "DE136695976"),  # the prefix added
        ("FR40303265045", None, "FR40303265045"),  # the prefix says the country
        ("EL094259216", "GR", "EL094259216"),  # Greece's VAT numbers start with EL
        ("GB980780684", "GB", "GB980780684"),
        ("51 824 753 556", "AU", "51824753556"),  # an Australian ABN
        ("12-3456789", "US", "123456789"),  # no scheme known: kept as given (compact)
    ],
)
def test_valid_tax_ids_are_stored_compact(given, country, stored):
    assert check_tax_id(given, country) == (stored, None)


@pytest.mark.parametrize(
    ("given", "country", "problem"),
    [
        ("DE123", "DE", "not a valid VAT number of Germany (wrong length)"),
        ("DE136695977", "DE", "not a valid VAT number of Germany (wrong check digit)"),
        ("FR40303265045", "DE", "a number starting FR is not one of Germany (DE)"),
        ("GB980780685", "GB", "not a valid VAT number of United Kingdom (wrong check digit)"),
        ("12345", None, "give the customer's country (ISO 3166 code such as DE) so that the number can be checked"),
        # Greece is GR, but its VAT numbers start with EL: say so rather than "a number starting GR is not one of
        # Greece (GR)"
        ("GR094259216", "GR", "VAT numbers of Greece start with EL, not GR"),
        ("GR094259216", None, "VAT numbers of Greece start with EL, not GR"),
    ],
)
def test_invalid_tax_ids_are_refused_with_the_reason(given, country, problem):
    assert check_tax_id(given, country)[1] == problem


def test_the_configurations_rates_are_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as raised:
        Settings(seller={"country": "France"}, tax={"rates": {"DEU": 19, "FR": {"reduced": 5.5}, "IT": "x"}})
    text = str(raised.value)
    assert "expected an ISO 3166-1 alpha-2 country code such as IE, got 'France'" in text
    assert "DEU: expected a country code (DE) or a country and region (US-NY)" in text
    assert "FR: a table of rates needs its standard rate" in text
    assert "IT.standard: expected a percentage between 0 and 100, got 'x'" in text


def test_greece_is_gr_and_the_united_kingdom_gb_in_the_configuration():
    """EL is Greece's VAT prefix, not its country code: a Greek seller configured as EL would never be in the EU
    (no reverse charge), and rates keyed EL would never match a customer (customers are GR)."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as raised:
        Settings(seller={"country": "EL"}, tax={"rates": {"EL": 24, "UK": 20, "GR": 24}})
    text = str(raised.value)
    assert "got 'EL' (Greece is GR (EL is only the prefix of its VAT numbers))" in text
    assert "EL: not a country code (Greece is GR (EL is only the prefix of its VAT numbers))" in text
    assert "UK: not a country code (the United Kingdom is GB)" in text
    assert "GR:" not in text
    greek = Settings(seller={"country": "GR"}, tax={"rates": {"GR": 24}}).tax_rules()
    assert treatment(greek, Buyer(country="DE", tax_id=VALID_DE_VAT)).reverse_charge


def test_configured_rates_have_at_most_four_decimal_places():
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as raised:
        Settings(tax={"rates": {"DE": "1E-20000"}})
    assert "DE.standard: at most 4 decimal places, got '1E-20000'" in str(raised.value)
    rates = Settings(tax={"rates": {"DE": "1E+1", "US-NY": "8.875"}}).tax_rules().rates
    assert (str(rates["DE"].standard), str(rates["US-NY"].standard)) == ("10", "8.875")


def _fee(amount: str, plan: str):
    from invoices.model import InvoiceLine, LineKind

    return InvoiceLine(kind=LineKind.SUBSCRIPTION, description=plan, amount=Decimal(amount), plan_code=plan, plan_version=1)


@pytest.mark.parametrize(
    ("gross", "rate", "rounding", "expected"),
    [
        ("10.00", "19", Rounding.HALF_UP, ("8.40", "1.60")),  # 10 × 19/119 = 1.5966 → 1.60; net 8.40
        ("119.00", "19", Rounding.HALF_UP, ("100.00", "19.00")),
        ("0.03", "20", Rounding.HALF_UP, ("0.02", "0.01")),  # 0.03 × 20/120 = 0.005 → 0.01 (half up)
        ("0.03", "20", Rounding.HALF_EVEN, ("0.03", "0.00")),  # → 0.00 (half even)
        ("-10.00", "19", Rounding.HALF_UP, ("-8.40", "-1.60")),  # a negative line mirrors a positive one
    ],
)
def test_tax_inside_a_tax_inclusive_price(gross, rate, rounding, expected):
    from billing.core.tax import CountryRates, PlanTax, Treatment, invoice_taxes

    rule = Treatment(rates=CountryRates(standard=Decimal(rate)), name="VAT", country="DE")
    (tax,) = invoice_taxes([_fee(gross, "gross")], rule, {("gross", 1): PlanTax(inclusive=True)}, "EUR", rounding)
    assert (str(tax.taxable), str(tax.amount), str(tax.included)) == (*expected, expected[1])
    assert tax.taxable + tax.amount == Decimal(gross)


def test_inclusive_and_exclusive_prices_at_one_rate_make_one_line():
    from billing.core.tax import CountryRates, PlanTax, Treatment, invoice_taxes

    rule = Treatment(rates=CountryRates(standard=Decimal(19)), name="VAT", country="DE")
    plans = {("gross", 1): PlanTax(inclusive=True), ("net", 1): PlanTax()}
    (tax,) = invoice_taxes([_fee("10.00", "gross"), _fee("10.00", "net")], rule, plans, "EUR")
    # inclusive 10.00 → 8.40 + 1.60; exclusive 10.00 → 10.00 + 1.90: 18.40 taxable, 3.50 tax, 1.60 of it included
    assert (str(tax.taxable), str(tax.amount), str(tax.included)) == ("18.40", "3.50", "1.60")
