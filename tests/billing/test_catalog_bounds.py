"""Catalog numbers the engine cannot keep exactly are refused where they are written, and nothing a catalog says
ends in a traceback: thousands of mutated copies of the sample catalog (huge, negative, NaN and infinite numbers,
wrong types, missing, renamed and unknown keys) each load as a catalog or as located problems; every catalog that
loads is then shown and quoted, even at huge quantities, without an exception other than a located
``AmountOutOfRangeError``. ``billing plans validate`` and ``billing quote`` are also run as commands."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import subprocess
import sys
import tomllib
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import customers as service
from billing.cli import plans as plans_cli
from billing.cli.quote import quote_json
from billing.core.domain import SubscriptionTerms
from billing.core.periods import parse_month
from billing.core.rating import rate_period, usage_charges
from billing.db import session_scope
from billing.metering import meter_specs
from billing.run import run_billing
from invoices import store
from invoices.model import compute_totals
from meters import ingest
from pricing_plans import CatalogProblem, MeterUsage, loads_catalog, round_money
from pricing_plans.errors import AmountOutOfRangeError
from pricing_plans.money import MAX_AMOUNT, format_amount, number_problem

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_TEXT = (ROOT / "catalog.toml").read_text(encoding="utf-8")
SAMPLE = tomllib.loads(SAMPLE_TEXT, parse_float=Decimal)
WIDE = Context(Emax=MAX_EMAX, Emin=MIN_EMIN)  # the mutations scale numbers far past what the default context holds
FILENAME = "mutated.toml"
PERIOD = parse_month("2026-03")
MINIMUM_LINE = SAMPLE_TEXT.splitlines().index("minimum = 2000.00") + 1
QUANTITIES = (Decimal(0), Decimal(1), Decimal(1_000_000), Decimal("1e14"), Decimal("1e20"), Decimal("1e400"))

# -- the catalog as TOML text again (tomllib only reads): every table inline, every key quoted -------------------


def to_toml(document: dict[str, Any]) -> str:
    return "\n".join(f"{_key(key)} = {_value(value)}" for key, value in document.items()) + "\n"


def _key(key: str) -> str:
    return json.dumps(key)


class Raw(str):
    """TOML text written as it is (an integer of 5,000 digits, which Python will not turn into a string)."""


def _value(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        if value.is_nan():
            return "nan"
        if value.is_infinite():
            return "-inf" if value < 0 else "inf"
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def test_the_sample_catalog_survives_the_round_trip():
    assert tomllib.loads(to_toml(SAMPLE), parse_float=Decimal) == SAMPLE
    catalog, problems = loads_catalog(to_toml(SAMPLE), FILENAME)
    assert problems == [] and catalog is not None


# -- mutations -----------------------------------------------------------------------------------------------

ODD_NUMBERS = [
    Decimal("1e26"), Decimal("1e30"), Decimal("-1e30"), 10**20, 10**15, 10**15 - 1, Decimal("999999999999999.99"),
    Decimal("1e15"), Decimal("1E+999999"), -1, Decimal("-0.01"), 0, Decimal("0.000000000001"),
    Decimal("0.0000000000001"), Decimal("1e-30"), Decimal("1E-999999"), Decimal("NaN"), Decimal("Infinity"),
    Decimal("-Infinity"), 2**31, 2**63, Raw("9" * 5000), Decimal("1." + "0" * 40), Decimal("3.14159265358979323846264338"),
]
ODD_STRINGS = ["NaN", "nan", "inf", "-inf", "Infinity", "1e30", "1e26", "-1", "1_000", "", " 5 ", "abc", "0x10", "٥"]
WRONG_TYPES = [
    True, False, [], {}, [1, 2], {"up_to": 1}, [{}], dt.date(2026, 1, 1), dt.datetime(2026, 1, 1, 12, 0),
    dt.time(12, 0),
]
leaves = st.one_of(
    st.sampled_from(ODD_NUMBERS),
    st.sampled_from(ODD_STRINGS),
    st.sampled_from(WRONG_TYPES),
    st.integers(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.one_of(leaves, st.lists(leaves, max_size=3), st.dictionaries(st.text(max_size=8), leaves, max_size=3))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and index in the document, containers and leaves."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    found: list[tuple[Any, ...]] = []
    for key, child in items:
        found.append((*prefix, key))
        found += _paths(child, (*prefix, key))
    return found


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


@st.composite
def mutated_catalogs(draw: st.DrawFn) -> dict[str, Any]:
    """The sample catalog with one to four of its numbers, strings, keys or tables changed."""
    document = copy.deepcopy(SAMPLE)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(document)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _at(document, path[:-1]), path[-1]
        current = parent[key]
        operation = draw(st.sampled_from(["scale", "negate", "replace", "replace", "delete", "rename", "add"]))
        number = isinstance(current, int | Decimal) and not isinstance(current, bool | Raw)
        if operation == "scale" and number and Decimal(current).is_finite():
            # (a context wide enough for 1E+999999 × 10^40: the default one would overflow here, not in the loader)
            parent[key] = WIDE.scaleb(Decimal(current), draw(st.integers(-40, 40)))
        elif operation == "negate" and number:
            parent[key] = Decimal(current).copy_negate()
        elif operation == "delete":
            del parent[key]
        elif operation == "rename" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["fee", "unit_amount", "up_to", "rate", "minimum", "price", "x"]))] = (
                parent.pop(key)
            )
        elif operation == "add" and isinstance(current, dict):
            current[draw(st.sampled_from(["fee", "unit_amount", "extra", "tiers", "charges"]))] = copy.deepcopy(
                draw(values)
            )
        else:
            parent[key] = copy.deepcopy(draw(values))  # (a later mutation must not change the shared samples)
    return document


def _check_loads_or_locates(text: str) -> Any:
    catalog, problems = loads_catalog(text, FILENAME)
    if catalog is None:
        assert problems, "no catalog and no problem"
    else:
        assert problems == []
    for problem in problems:
        assert isinstance(problem, CatalogProblem)
        assert problem.file == FILENAME and problem.message
        assert problem.path or problem.line is not None, f"a problem without a place: {problem}"
        assert str(problem).startswith(FILENAME)
    return catalog


def _exercise(catalog: Any) -> None:
    """What `plans validate`, `plans show` and `quote` do with a catalog: never an exception but a located
    AmountOutOfRangeError."""
    with plans_cli.console.capture():
        plans_cli.console.print(plans_cli._plans_table(catalog))
        for plan in catalog.all_plans():
            plans_cli._print_plan(catalog, plan)
    for plan in catalog.all_plans():
        terms = SubscriptionTerms(start_date=PERIOD.start)
        for quantity in QUANTITIES:
            usage = {
                charge.meter: MeterUsage(quantity=quantity, events=1 if quantity else 0,
                                         values=(quantity,) if quantity else ())
                for charge in plan.charges
            }
            try:
                spend: Decimal | str = usage_charges(terms, plan, usage, PERIOD, rounding=catalog.rounding)
            except AmountOutOfRangeError as error:
                spend = str(error)
            try:
                rated = rate_period(terms, plan, usage, PERIOD, meters=catalog.meters, rounding=catalog.rounding)
            except AmountOutOfRangeError as error:
                assert str(error).startswith(f"plan {plan.code!r} version {plan.version}")
                assert spend == str(error)  # the threshold check's spend fails exactly as the invoice does
                continue
            assert spend == rated.usage_total
            quote_json(rated)
            try:
                compute_totals(rated.lines, rated.currency, Decimal("19"))
            except AmountOutOfRangeError as error:
                assert "too large" in str(error)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_catalogs())
def test_a_mutated_catalog_is_valid_or_located_never_a_traceback(document):
    text = to_toml(document)
    catalog = _check_loads_or_locates(text)
    if catalog is not None:
        _exercise(catalog)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from([*SAMPLE_TEXT, "\x00", "é", "[", "]", "=", '"', "\n"]), max_size=400))
def test_arbitrary_text_is_a_catalog_or_located_problems(text):
    _check_loads_or_locates(SAMPLE_TEXT[: len(text)] + text)


# -- the bounds, by hand -------------------------------------------------------------------------------------


def _catalog(fee: str = "49.00", unit_amount: str = "0.25", extra: str = "") -> str:
    return f"""\
[meters.storage]
name = "Storage"
aggregation = "sum"

[plans.p]
name = "P"
currency = "USD"
{extra}
[plans.p.subscription]
fee = {fee}

[[plans.p.charges]]
meter = "storage"
model = "per_unit"
unit_amount = {unit_amount}
"""


@pytest.mark.parametrize(
    ("fee", "unit_amount", "where", "message"),
    [
        ("1e26", "0.25", "plans.p.subscription.fee", "too large: must be below 1,000,000,000,000,000 (at most 15 "
         "digits before the decimal point; got 1E+26)"),
        ("49.00", "1e30", "plans.p.charges[0].unit_amount", "too large: must be below 1,000,000,000,000,000 (at "
         "most 15 digits before the decimal point; got 1E+30)"),
        ("1000000000000000", "0.25", "plans.p.subscription.fee", "too large: must be below 1,000,000,000,000,000 "
         "(at most 15 digits before the decimal point; got 1000000000000000)"),
        ("49.00", "0.0000000000001", "plans.p.charges[0].unit_amount", "too many decimal places: at most 12 digits "
         "after the decimal point (got 1E-13)"),
        ("nan", "0.25", "plans.p.subscription.fee", "must be a finite number"),
        ('"inf"', "0.25", "plans.p.subscription.fee", "must be a finite number"),
    ],
)
def test_a_number_beyond_what_the_engine_keeps_is_a_located_problem(fee, unit_amount, where, message):
    catalog, problems = loads_catalog(_catalog(fee, unit_amount), "c.toml")
    assert catalog is None
    assert [str(problem) for problem in problems] == [f"c.toml: {where}: {message}"]


def test_the_largest_numbers_that_are_kept():
    catalog, problems = loads_catalog(_catalog("999999999999999.99", "0.000000000001"), "c.toml")
    assert problems == [] and catalog is not None
    plan = catalog.plan("p")
    assert plan.subscription is not None and str(plan.subscription.fee) == "999999999999999.99"
    # trailing zeros are not digits of the number: 0.250000000000000000 is 0.25
    assert number_problem(Decimal("0.250000000000000000")) is None
    assert number_problem(Decimal("-999999999999999.999999999999")) is None
    assert number_problem(Decimal("-1000000000000000")) is not None


@pytest.mark.parametrize(
    ("extra", "where", "message"),
    [
        ("version = 4294967296", "plans.p.version", "must be ≤ 2147483647 (got 4294967296)"),
        ("effective_from = 2026-01-01\n[[plans.p.thresholds]]\nspend_cap = 1e20", "plans.p.thresholds[0].spend_cap",
         "too large"),
    ],
)
def test_whole_numbers_and_thresholds_are_bounded_too(extra, where, message):
    _, problems = loads_catalog(_catalog(extra=extra), "c.toml")
    assert [problem.path for problem in problems] == [where]
    assert message in problems[0].message


def test_a_number_with_thousands_of_digits_is_located_on_its_line():
    _, problems = loads_catalog(_catalog(fee="9" * 5000), "c.toml")
    assert [str(problem) for problem in problems] == [
        "c.toml:10: a number with thousands of digits (numbers must be below 10^15)"
    ]


def test_an_exponent_past_what_decimal_arithmetic_holds_is_located_too():
    """A tier bound of 1E+1000039 (exponent past the arithmetic's 999,999): compared without arithmetic, so it is
    "too large" where it is written, not an Overflow traceback."""
    catalog = """
[meters.a]
name = "A"
aggregation = "count"

[plans.x]
name = "X"
currency = "USD"
[[plans.x.charges]]
meter = "a"
model = "graduated"
tiers = [{ up_to = 1E+1000039, unit_amount = 1 }, { up_to = "inf", unit_amount = 0 }]
"""
    _, problems = loads_catalog(catalog, "c.toml")
    assert [problem.path for problem in problems] == ["plans.x.charges[0].tiers[0].up_to"]
    assert problems[0].message.startswith("too large: must be below 1,000,000,000,000,000")


def test_rounding_refuses_an_amount_it_cannot_keep():
    assert str(round_money(Decimal("999999999999999.994"), "USD")) == "999999999999999.99"
    with pytest.raises(AmountOutOfRangeError, match=r"1E\+26 USD is too large"):
        round_money(Decimal("1e26"), "USD")
    with pytest.raises(AmountOutOfRangeError):
        format_amount(MAX_AMOUNT, "JPY")


def test_a_quantity_priced_beyond_what_a_line_holds_names_the_plan_and_charge():
    catalog, _ = loads_catalog(_catalog(unit_amount="1000"), "c.toml")
    plan = catalog.plan("p")
    usage = {"storage": MeterUsage(quantity=Decimal("1000000000000"))}  # 10^12 × 1000 = 10^15: one too many
    with pytest.raises(AmountOutOfRangeError) as raised:
        rate_period(SubscriptionTerms(start_date=PERIOD.start), plan, usage, PERIOD, meters=catalog.meters)
    assert str(raised.value) == (
        "plan 'p' version 1, charges[0] (storage, per_unit): a quantity of 1000000000000 costs more than an "
        "invoice line may hold (amounts must stay below 1,000,000,000,000,000 USD)"
    )
    usage = {"storage": MeterUsage(quantity=Decimal("999999999999.95"))}
    rated = rate_period(SubscriptionTerms(start_date=PERIOD.start), plan, usage, PERIOD, meters=catalog.meters)
    assert [str(line.amount) for line in rated.lines] == ["49.00", "999999999999950.00"]
    assert str(rated.subtotal) == "999999999999999.00"
    # each line below the limit, but not their sum (+ the fee of 49.00)
    usage = {"storage": MeterUsage(quantity=Decimal("999999999999.99"))}
    with pytest.raises(AmountOutOfRangeError) as raised:
        rate_period(SubscriptionTerms(start_date=PERIOD.start), plan, usage, PERIOD, meters=catalog.meters)
    assert str(raised.value) == (
        "plan 'p' version 1: its lines add up to 1000000000000039.00 USD, more than an invoice may hold (amounts "
        "must stay below 1,000,000,000,000,000 USD)"
    )


# -- the commands ----------------------------------------------------------------------------------------------


def _billing(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BILLING_CONFIG": str(ROOT / "config.toml")}
    return subprocess.run(
        [sys.executable, "-m", "billing", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("fee = 49.00", "fee = 1e26", "plans.api_growth.subscription.fee: too large"),
        ("unit_amount = 0.25 ", "unit_amount = 1e30 ", "plans.api_growth.charges[1].unit_amount: too large"),
        ("package_size = 1000\n", "package_size = nan\n", "plans.starter_jp.charges[0].package_size: must be a "
         "finite number"),
        ("minimum = 2000.00", "minimum = 2000" + "0" * 4400, f":{MINIMUM_LINE}: a number with thousands of digits"),
        ("rate = 2.9 ", 'rate = "1e30" ', "plans.payments.charges[0].rate: must be a percent between 0 and 100"),
    ],
)
def test_plans_validate_reports_huge_numbers_without_a_traceback(tmp_path, old, new, expected):
    assert old in SAMPLE_TEXT
    path = tmp_path / "catalog.toml"
    path.write_text(SAMPLE_TEXT.replace(old, new, 1), encoding="utf-8")
    result = _billing("plans", "validate", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "InvalidOperation" not in result.stderr
    assert f"{path}{expected}" in result.stderr or f"{path}: {expected}" in result.stderr
    assert result.stderr.rstrip().endswith(f"1 problem in {path}")


def test_quote_reports_usage_it_cannot_bill_without_a_traceback(tmp_path):
    result = _billing(
        "quote", "--catalog", str(ROOT / "catalog.toml"), "--plan", "api_growth", "--period", "2026-03",
        "--usage", "storage_gb=1e40", cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "plan 'api_growth' version 1, charges[1] (storage_gb, per_unit): a quantity of 1E+40 costs more" in (
        " ".join(result.stderr.split())
    )


def test_the_billing_run_skips_a_customer_whose_usage_costs_more_than_an_invoice_holds(engine):
    catalog, problems = loads_catalog(_catalog(unit_amount="10000"), "c.toml")
    assert not problems
    for customer in ("big", "small"):
        service.create_customer(engine, customer, customer.title(), f"ap@{customer}.test", "USD", timezone="UTC")
        service.subscribe(engine, catalog, customer, "p", dt.date(2026, 1, 1))
    events = [
        {"id": "e-big", "customer": "big", "meter": "storage", "timestamp": "2026-03-10T12:00:00Z",
         "value": 100_000_000_000},  # 10^11 × 10,000 = 10^15: one cent too much
        {"id": "e-small", "customer": "small", "meter": "storage", "timestamp": "2026-03-10T12:00:00Z", "value": 2},
    ]
    assert not ingest(engine, events, meter_specs(catalog), {"big", "small"}).rejected
    report = run_billing(engine, catalog, PERIOD)
    assert report.skipped == [
        ("big", "plan 'p' version 1, charges[0] (storage, per_unit): a quantity of 100000000000 costs more than an "
                "invoice line may hold (amounts must stay below 1,000,000,000,000,000 USD)")
    ]
    with session_scope(engine) as session:
        assert str(store.get_invoice(session, "period:small:2026-03").total) == "20049.00"  # 2 × 10,000 + 49
