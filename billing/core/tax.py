"""Taxes: which rate a buyer pays, and an invoice's tax per rate. Pure: no database, no clock, no network.

Which rate (``treatment``), in this order:

1. an **exempt** customer (``tax_exempt_reason`` set) pays 0 %, the reason printed with it;
2. **reverse charge**: the seller is established in an EU member state and the buyer in another one, with a VAT
   number (checked when it was set): 0 %, with the legal wording :data:`REVERSE_CHARGE_NOTE`;
3. a customer's own ``tax_rate`` (not 0) — the one rate per customer of old — is its rate;
4. the rates of the configuration for the buyer's region (``"US-NY"``), else its country (``"DE"``): the plan's
   ``tax_category`` rate if the country names one, else its standard rate;
5. otherwise 0 %.

How much (``invoice_taxes``), per invoice: each line's plan says whether its prices include tax
(``tax_inclusive``) and which category it is taxed in; a coupon's discount line is shared among the lines it
reduced (the plans it is restricted to, else all), in proportion to what the discounts before it left of them.
Per rate and kind of price, the amounts are summed and the tax is rounded **once** to the currency's minor units
with the catalog's rounding (``half_up`` unless the catalog says ``half_even``):

- tax-exclusive prices: tax = round(Σ net × rate / 100); taxable = Σ net;
- tax-inclusive prices: tax = round(Σ gross × rate / (100 + rate)); taxable = Σ gross − tax.

The invoice lists one tax line per rate (both kinds of price merged), and its total is Σ (taxable + tax).

Tax ids are checked offline with python-stdnum (``check_tax_id``): format and check digits of EU VAT numbers
(the country prefix added when missing), GB VAT and every other scheme python-stdnum knows for the customer's
country; a number of a country python-stdnum has no scheme for is kept as given.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, Decimal, localcontext
from typing import Any

from billing.core.countries import COUNTRY_HINTS, NOT_COUNTRIES
from billing.core.domain import Customer
from billing.core.fees import refund_of_paid
from invoices.model import LINE_TAX_INCLUSIVE, LINE_TAX_RATE, InvoiceLine, LineKind, TaxLine
from pricing_plans.models import Plan
from pricing_plans.money import WEIGHTS, ZERO, Rounding, round_money, settled

__all__ = [
    "COUNTRY_HINTS",
    "EU_COUNTRIES",
    "MAX_RATE_PLACES",
    "NOT_COUNTRIES",
    "REVERSE_CHARGE_NOTE",
    "STANDARD",
    "Buyer",
    "CountryRates",
    "PlanTax",
    "TaxRules",
    "Treatment",
    "buyer",
    "check_tax_id",
    "customer_taxes",
    "invoice_taxes",
    "plan_terms",
    "tax_id_country",
    "treatment",
]

STANDARD = "standard"

REVERSE_CHARGE_NOTE = (
    "Reverse charge: VAT to be accounted for by the recipient (Article 196, Council Directive 2006/112/EC)"
)

# The EU member states by ISO 3166-1 code (Greece is GR; its VAT numbers start with EL). Northern Ireland's XI
# prefix covers goods only, so it is not a member state for services.
EU_COUNTRIES = frozenset(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split()  # noqa: SIM905
)
# A tax rate (percent) has at most this many decimal places (8.875, 14.975, 7.7).
MAX_RATE_PLACES = 4

_VAT_PREFIX = {"GR": "EL"}
_PREFIX_COUNTRY = {"EL": "GR", "XI": "GB"}
_SEPARATORS = re.compile(r"[\s.\-/]")
_ALPHANUMERIC = re.compile(r"[A-Z0-9]{1,40}")


@dataclass(frozen=True, slots=True)
class CountryRates:
    """The rates of one country or region (percent): ``standard``, and by category (``reduced``…)."""

    standard: Decimal
    categories: Mapping[str, Decimal] = field(default_factory=dict)
    name: str = "VAT"

    def rate(self, category: str) -> Decimal:
        return self.categories.get(category, self.standard) if category != STANDARD else self.standard


@dataclass(frozen=True, slots=True)
class TaxRules:
    """The configuration's tax rules: where the seller is established, and the rates by buyer country or region
    (keys ``"DE"``, ``"US-NY"``)."""

    seller_country: str | None = None
    rates: Mapping[str, CountryRates] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Buyer:
    """What taxes need of a customer."""

    country: str | None = None
    region: str | None = None
    tax_id: str | None = None
    exempt_reason: str | None = None
    tax_rate: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class PlanTax:
    """What a plan says of its taxes: whether its prices include tax, and its tax category."""

    inclusive: bool = False
    category: str = STANDARD


@dataclass(frozen=True, slots=True)
class Treatment:
    """How one buyer's invoices are taxed: the rates (``rates`` None: ``flat`` on everything), and why."""

    flat: Decimal = ZERO
    rates: CountryRates | None = None
    name: str = "Tax"
    country: str | None = None
    region: str | None = None
    reverse_charge: bool = False
    exempt_reason: str | None = None

    def rate(self, category: str) -> Decimal:
        return self.flat if self.rates is None else self.rates.rate(category)

    @property
    def note(self) -> str | None:
        if self.reverse_charge:
            return REVERSE_CHARGE_NOTE
        if self.exempt_reason is not None:
            return f"Exempt from tax: {self.exempt_reason}"
        return None


def treatment(rules: TaxRules, buyer: Buyer) -> Treatment:
    """The rate rule of ``buyer`` under ``rules`` (the order in the module's docstring)."""
    country, region = buyer.country, buyer.region
    if buyer.exempt_reason:
        return Treatment(country=country, region=region, exempt_reason=buyer.exempt_reason)
    seller = rules.seller_country
    if (
        seller in EU_COUNTRIES
        and country in EU_COUNTRIES
        and country != seller
        and buyer.tax_id
    ):
        return Treatment(name="VAT", country=country, region=region, reverse_charge=True)
    if buyer.tax_rate:
        return Treatment(flat=buyer.tax_rate, country=country, region=region)
    found = None
    if country is not None and region is not None:
        found = rules.rates.get(f"{country}-{region}")
    if found is None and country is not None:
        found = rules.rates.get(country)
    if found is None:
        return Treatment(country=country, region=region)
    return Treatment(rates=found, name=found.name, country=country, region=region)


# -- an invoice's taxes ----------------------------------------------------------------------------------------


def invoice_taxes(
    lines: Sequence[InvoiceLine],
    rule: Treatment,
    plans: Mapping[tuple[str, int], PlanTax],
    currency: str,
    rounding: Rounding = Rounding.HALF_UP,
) -> tuple[TaxLine, ...]:
    """The invoice's taxes, one line per rate (in the order the rates first appear), by the rules of the module's
    docstring; ``plans`` gives the tax terms of each plan version, by (code, version) (absent: exclusive,
    standard). An invoice without lines has one tax line of nothing at its standard rate."""
    groups: dict[tuple[Decimal, bool], Decimal] = {}
    for key, amount in _grouped(lines, rule, plans).items():
        groups[key] = groups.get(key, ZERO) + amount
    if not groups:
        groups[(rule.rate(STANDARD), False)] = ZERO
    merged: dict[Decimal, tuple[Decimal, Decimal, Decimal]] = {}
    for (rate, inclusive), base in groups.items():
        if inclusive:
            tax = round_money(base * rate / (100 + rate), currency, rounding)
            taxable, included = base - tax, tax
        else:
            tax = round_money(base * rate / 100, currency, rounding)
            taxable, included = base, round_money(ZERO, currency)
        before = merged.get(rate, (ZERO, ZERO, ZERO))
        merged[rate] = (before[0] + taxable, before[1] + tax, before[2] + included)
    return tuple(
        TaxLine(
            rate=rate,
            taxable=taxable,
            amount=tax,
            included=included,
            name=rule.name,
            country=rule.country,
            region=rule.region,
            reverse_charge=rule.reverse_charge,
            exempt_reason=rule.exempt_reason,
            note=rule.note,
        )
        for rate, (taxable, tax, included) in merged.items()
    )


Group = tuple[Decimal, bool]  # (rate, prices include tax)
Left = list[tuple[InvoiceLine, Group, Decimal]]  # each line, its group, what discounts left of it (a weight)


def _grouped(
    lines: Sequence[InvoiceLine], rule: Treatment, plans: Mapping[tuple[str, int], PlanTax]
) -> dict[Group, Decimal]:
    """Σ amounts per (rate, inclusive): the lines', then each discount line (in order) shared among what the
    earlier discounts left of the lines it reduced."""
    groups: dict[Group, Decimal] = {}
    left: Left = []
    for line in lines:
        if line.kind is LineKind.DISCOUNT:
            continue
        key = _group_of(line, rule, plans)
        left.append((line, key, line.amount))
        groups[key] = groups.get(key, ZERO) + line.amount
    for line in lines:
        if line.kind is not LineKind.DISCOUNT:
            continue
        restricted = line.details.extra.get("plans")
        fallback = (rule.rate(STANDARD), False)
        shares, left, rest = _take(line.amount, left, restricted or None)
        if rest:  # more than is left of the plans it reduced (a coupon's base is their amount before the others)
            more, left, rest = _take(rest, left, None)
            shares = {k: shares.get(k, ZERO) + more.get(k, ZERO) for k in shares.keys() | more.keys()}
            if rest:  # (placed in full on other lines: no line of nothing at the standard rate)
                shares[fallback] = shares.get(fallback, ZERO) + rest
        for key, share in shares.items():
            groups[key] = groups.get(key, ZERO) + share
    return groups


def _group_of(line: InvoiceLine, rule: Treatment, plans: Mapping[tuple[str, int], PlanTax]) -> Group:
    """The rate a line is taxed at and whether its price has the tax inside (a line of no plan: exclusive,
    standard)."""
    terms = PlanTax()
    if line.plan_code is not None and line.plan_version is not None:
        terms = plans.get((line.plan_code, line.plan_version), terms)
    return (rule.rate(terms.category), terms.inclusive)


def _marked(
    lines: Sequence[InvoiceLine], rule: Treatment, plans: Mapping[tuple[str, int], PlanTax]
) -> list[InvoiceLine]:
    """``lines``, each (but a discount line, which is shared among the lines it reduces) with its rate and kind of
    price in its details (``LINE_TAX_RATE``, ``LINE_TAX_INCLUSIVE``) when they are not all taxed alike: what pays a
    part of the invoice pays that part's own tax (an expiring credit, ``billing.core.credits.payable_before``)."""
    groups = [None if line.kind is LineKind.DISCOUNT else _group_of(line, rule, plans) for line in lines]
    if len({group for group in groups if group is not None}) < 2:
        return list(lines)
    marked = []
    for line, group in zip(lines, groups, strict=True):
        if group is not None:
            rate, inclusive = group
            extra = {**line.details.extra, LINE_TAX_RATE: f"{rate.normalize():f}"}
            if inclusive:
                extra[LINE_TAX_INCLUSIVE] = True
            line = replace(line, details=replace(line.details, extra=extra))
        marked.append(line)
    return marked


def _take(
    amount: Decimal, left: Left, plans: Container[str] | None
) -> tuple[dict[Group, Decimal], Left, Decimal]:
    """``amount`` (a discount: negative) shared among the groups of the lines of ``plans`` (None: all lines), in
    proportion to what is left of them, no group's part beyond what is left of it; the parts, what is left of each
    line after, and what could not be placed."""

    def covers(line: InvoiceLine) -> bool:  # (a refund already net of its discount takes no part of another)
        return (plans is None or line.plan_code in plans) and not refund_of_paid(line)

    # what is left of each group's covered lines, negative ones included (a fee paid in advance, adjusted): a
    # group whose lines net to nothing or less takes no part, and none takes more than its net
    with localcontext(WEIGHTS):
        netted: dict[Group, Decimal] = {}
        for other, key, rest in left:
            if covers(other):
                netted[key] = netted.get(key, ZERO) + rest
        covered = {key: settled(rest) for key, rest in netted.items() if settled(rest) > 0}
        if not covered:
            return {}, left, amount
        exponent = amount.as_tuple().exponent
        quantum = Decimal(1).scaleb(exponent if isinstance(exponent, int) else 0)
        whole = sum(covered.values(), ZERO)
        placed = max(amount, -whole.quantize(quantum, rounding=ROUND_DOWN))
        shares = _shares(placed, covered, next(iter(covered)))
        # each covered line keeps its part of what is left of its group (weights to 60 digits, settled: in 28
        # digits 6.15 and 29.01 less 3.52 left 31.6399…, and 100 % off them put −0.01 on a rate of no line)
        after = [
            (other, key, rest + shares.get(key, ZERO) * rest / covered[key])
            if covers(other) and key in covered
            else (other, key, rest)
            for other, key, rest in left
        ]
    return shares, after, amount - placed


def _shares(amount: Decimal, weights: Mapping[Group, Decimal], fallback: Group) -> dict[Group, Decimal]:
    """``amount`` in parts proportional to the positive ``weights``, in the amount's own precision; the largest
    part takes what rounding leaves, so the parts add up to ``amount``."""
    positive = {key: weight for key, weight in weights.items() if weight > 0}
    whole = sum(positive.values(), ZERO)
    if whole == 0:
        return {fallback: amount}
    exponent = amount.as_tuple().exponent
    quantum = Decimal(1).scaleb(exponent if isinstance(exponent, int) else 0)
    largest = max(positive, key=lambda key: positive[key])
    shares = {key: (amount * weight / whole).quantize(quantum) for key, weight in positive.items() if key != largest}
    shares[largest] = amount - sum(shares.values(), ZERO)
    return shares


# -- tax ids ---------------------------------------------------------------------------------------------------


def check_tax_id(value: str, country: str | None) -> tuple[str, str | None]:
    """``value`` in its compact form (``"DE 136 695 976"`` → ``"DE136695976"``) and the problem with it, if any:
    ``"not a valid VAT number of Germany (wrong check digit)"``.

    An EU member state's number is an EU VAT number (its country prefix added when missing, and it must be the
    customer's country); without a country, the number's own EU or GB prefix says it.
    """
    # (python-stdnum loads a module per country: imported here, where a number is checked, not at start-up)
    from stdnum import get_cc_module
    from stdnum.eu import vat as eu_vat
    from stdnum.exceptions import ValidationError

    compact = _SEPARATORS.sub("", value).upper()
    if not _ALPHANUMERIC.fullmatch(compact):
        return compact, "expected letters A–Z and digits (at most 40, spaces, dots, dashes and slashes aside)"
    prefix = compact[:2]
    if country is None:
        country = _PREFIX_COUNTRY.get(prefix, prefix)
        if country not in EU_COUNTRIES and country != "GB":
            return compact, "give the customer's country (ISO 3166 code such as DE) so that the number can be checked"
    module: Any
    if country in EU_COUNTRIES:
        vat_prefix = _VAT_PREFIX.get(country, country)
        if prefix == country and prefix != vat_prefix:  # GR094259216: Greece's numbers start EL
            return compact, f"VAT numbers of {_country_name(country)} start with {vat_prefix}, not {prefix}"
        if prefix.isalpha() and prefix != vat_prefix:
            return compact, f"a number starting {prefix} is not one of {_country_name(country)} ({country})"
        if not prefix.isalpha():
            compact = vat_prefix + compact
        module, scheme = eu_vat, "VAT"
    else:
        module = get_cc_module(country.lower(), "vat")
        if module is None:
            return compact, None  # a scheme python-stdnum does not know: kept as given
        scheme = _scheme(module)
    try:
        module.validate(compact)
    except ValidationError as error:
        return compact, f"not a valid {scheme} number of {_country_name(country)} ({_reason(error)})"
    return compact, None


def tax_id_country(compact: str) -> str | None:
    """The country an EU or GB VAT number's prefix names (``EL`` → ``GR``), if it names one."""
    country = _PREFIX_COUNTRY.get(compact[:2], compact[:2])
    return country if country in EU_COUNTRIES or country == "GB" else None


def _scheme(module: Any) -> str:
    """``VAT``, ``ABN``…: the short name python-stdnum's module gives its numbers."""
    doc = (module.__doc__ or "").strip().splitlines()
    name = doc[0].split("(")[0].strip().rstrip(".") if doc else ""
    return name or "tax"


def _reason(error: Exception) -> str:
    from stdnum.exceptions import InvalidChecksum, InvalidComponent, InvalidFormat, InvalidLength

    if isinstance(error, InvalidChecksum):
        return "wrong check digit"
    if isinstance(error, InvalidLength):
        return "wrong length"
    if isinstance(error, InvalidFormat):
        return "wrong format"
    if isinstance(error, InvalidComponent):
        return "a part of it is not valid"
    return str(error)


def _country_name(country: str) -> str:
    from babel import Locale

    return str(Locale("en").territories.get(country, country))


# -- a customer's draft ----------------------------------------------------------------------------------------


def buyer(customer: Customer) -> Buyer:
    return Buyer(
        country=customer.country,
        region=customer.region,
        tax_id=customer.tax_id,
        exempt_reason=customer.tax_exempt_reason,
        tax_rate=customer.tax_rate,
    )


def plan_terms(plans: Iterable[Plan | None]) -> dict[tuple[str, int], PlanTax]:
    """The tax terms of each plan version, by (code, version)."""
    return {
        (plan.code, plan.version): PlanTax(plan.tax_inclusive, plan.tax_category) for plan in plans if plan is not None
    }


def customer_taxes(
    customer: Customer,
    rules: TaxRules | None,
    lines: Sequence[InvoiceLine],
    plans: Iterable[Plan | None],
    rounding: Rounding = Rounding.HALF_UP,
) -> tuple[Decimal, tuple[TaxLine, ...], tuple[InvoiceLine, ...]]:
    """The main rate (the rate of the largest taxable amount), the taxes of a draft of ``customer`` with ``lines``
    from ``plans``, under ``rules`` (None: no configured rules, the customer's own rate), and the lines, each with
    its own rate when they are not all taxed alike."""
    rule = treatment(rules or TaxRules(), buyer(customer))
    terms = plan_terms(plans)
    taxes = invoice_taxes(lines, rule, terms, customer.currency, rounding)
    main = max(taxes, key=lambda tax: abs(tax.taxable)).rate if taxes else rule.rate(STANDARD)
    return main, taxes, tuple(_marked(lines, rule, terms))
