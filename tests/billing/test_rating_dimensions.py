"""Hand-checked rating of charges priced by event dimension: one line per filter and group with usage, each on its
own quantity and price; the default for unmatched events, or none (then not billed and reported); the commitment
over every line. Pure: the usage is split with ``part_of``, the reference rule the database follows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import Decimal

from billing.core.domain import SubscriptionTerms
from billing.core.periods import month
from billing.core.rating import RatedPeriod, UnpricedUsage, rate_period, usage_charges
from pricing_plans import Catalog, Charge, DimensionedUsage, MeterUsage, Part, loads_catalog, part_of

PERIOD = month(2026, 3)
TERMS = SubscriptionTerms(start_date=dt.date(2026, 1, 1))

METERS = """
[meters.sms]
name = "SMS"
aggregation = "count"
unit = "message"

[meters.gb]
name = "Transfer"
aggregation = "sum"
unit = "GB"
"""


def catalog(text: str) -> Catalog:
    loaded, problems = loads_catalog(METERS + text, "catalog.toml")
    assert [str(p) for p in problems] == []
    assert loaded is not None
    return loaded


def split(charge: Charge, events: Iterable[tuple[Mapping[str, str], int]]) -> DimensionedUsage:
    """Usage of a count meter split by part: ``(properties, how many events)`` pairs."""
    counts: dict[Part, int] = {}
    total = 0
    for properties, count in events:
        part = part_of(charge, properties)
        counts[part] = counts.get(part, 0) + count
        total += count
    parts = {part: MeterUsage(quantity=Decimal(n), events=n) for part, n in counts.items()}
    return DimensionedUsage(parts=parts, total=MeterUsage(quantity=Decimal(total), events=total))


def split_sums(charge: Charge, events: Iterable[tuple[Mapping[str, str], str]]) -> DimensionedUsage:
    """Usage of a sum meter split by part: ``(properties, value)`` per event."""
    sums: dict[Part, tuple[Decimal, int]] = {}
    for properties, value in events:
        part = part_of(charge, properties)
        quantity, count = sums.get(part, (Decimal(0), 0))
        sums[part] = (quantity + Decimal(value), count + 1)
    parts = {part: MeterUsage(quantity=q, events=n) for part, (q, n) in sums.items()}
    total = MeterUsage(quantity=sum((q for q, _ in sums.values()), Decimal(0)), events=sum(n for _, n in sums.values()))
    return DimensionedUsage(parts=parts, total=total)


def rate(loaded: Catalog, plan: str, usage: Mapping[str, MeterUsage | DimensionedUsage]) -> RatedPeriod:
    chosen = loaded.plan(plan)
    rated = rate_period(TERMS, chosen, usage, PERIOD, meters=loaded.meters, rounding=loaded.rounding)
    # the threshold check's spend is the same total, without the lines
    assert usage_charges(TERMS, chosen, usage, PERIOD, rounding=loaded.rounding) == rated.usage_total
    return rated


def lines(rated: RatedPeriod) -> list[tuple[str, str, str]]:
    return [(line.description, str(line.quantity), str(line.amount)) for line in rated.usage_lines]


SMS = """
[plans.sms]
name = "SMS"
currency = "USD"

[[plans.sms.charges]]
meter = "sms"
model = "per_unit"
unit_amount = 0.0100

[[plans.sms.charges.filters]]
name = "US & Canada"
properties = { country = ["US", "CA"] }
unit_amount = 0.0079

[[plans.sms.charges.filters]]
properties = { country = ["DE"], direction = ["inbound"] }
unit_amount = 0
"""


def test_the_sms_example_one_line_per_filter_and_the_default() -> None:
    loaded = catalog(SMS)
    charge = loaded.plan("sms").charges[0]
    usage = split(
        charge,
        [
            ({"country": "US"}, 700),
            ({"country": "CA", "direction": "inbound"}, 300),  # only country is named: US & Canada
            ({"country": "DE", "direction": "inbound"}, 200),  # the filter naming both properties
            ({"country": "DE", "direction": "outbound"}, 250),  # DE outbound matches no filter: the default
            ({}, 50),  # no country at all: the default
        ],
    )
    rated = rate(loaded, "sms", {"sms": usage})
    assert lines(rated) == [
        ("SMS — US & Canada", "1000", "7.90"),  # 1000 × 0.0079 = 7.90
        ("SMS — DE, inbound", "200", "0.00"),  # 200 × 0 = 0
        ("SMS", "300", "3.00"),  # (250 + 50) × 0.0100 = 3.00
    ]
    assert rated.usage_total == Decimal("10.90")  # 7.90 + 0.00 + 3.00
    assert [line.dimension for line in rated.usage_lines] == [
        '{"filter":{"country":["CA","US"]},"group":{}}',
        '{"filter":{"country":["DE"],"direction":["inbound"]},"group":{}}',
        '{"filter":null,"group":{}}',
    ]
    assert [line.details.extra["events"] for line in rated.usage_lines] == [1000, 200, 300]
    assert rated.usage_lines[0].details.explanation == "1000 × 0.0079 = 7.90"
    assert {(line.meter, line.model, line.unit) for line in rated.usage_lines} == {("sms", "per_unit", "message")}
    assert rated.unpriced == ()


def test_the_most_specific_filter_wins_over_a_broader_one() -> None:
    loaded = catalog(
        """
[plans.p]
name = "P"
currency = "USD"

[[plans.p.charges]]
meter = "sms"
model = "per_unit"
unit_amount = 0.05

[[plans.p.charges.filters]]
name = "US"
properties = { country = ["US"] }
unit_amount = 0.01

[[plans.p.charges.filters]]
name = "US inbound"
properties = { country = ["US"], direction = ["inbound"] }
unit_amount = 0.002
"""
    )
    charge = loaded.plan("p").charges[0]
    usage = split(charge, [({"country": "US", "direction": "inbound"}, 500), ({"country": "US"}, 100)])
    assert lines(rate(loaded, "p", {"sms": usage})) == [
        ("SMS — US", "100", "1.00"),  # 100 × 0.01 = 1.00
        ("SMS — US inbound", "500", "1.00"),  # 500 × 0.002 = 1.00 (not 500 × 0.01 = 5.00)
    ]


TIERS = """
[plans.{key}]
name = "Tiered"
currency = "USD"

[[plans.{key}.charges]]
meter = "sms"
model = "{model}"
tiers = [{{ up_to = 1000, unit_amount = 0.02 }}, {{ up_to = "inf", unit_amount = 0.01 }}]

[[plans.{key}.charges.filters]]
name = "US"
properties = {{ country = ["US"] }}
tiers = [{{ up_to = 100, unit_amount = 0.50 }}, {{ up_to = "inf", unit_amount = 0.40 }}]

[[plans.{key}.charges.filters]]
name = "EU"
properties = {{ country = ["DE", "FR"] }}
tiers = [{{ up_to = 50, unit_amount = 1.00, flat_amount = 5 }}, {{ up_to = "inf", unit_amount = 0.10 }}]
"""


def test_graduated_tiers_apply_per_filter_at_their_boundaries() -> None:
    loaded = catalog(TIERS.format(key="grad", model="graduated"))
    charge = loaded.plan("grad").charges[0]

    def amounts(us: int, eu: int, other: int) -> list[tuple[str, str, str]]:
        usage = split(charge, [({"country": "US"}, us), ({"country": "FR"}, eu), ({"country": "JP"}, other)])
        return lines(rate(loaded, "grad", {"sms": usage}))

    # the top of each filter's first tier: 100 × 0.50 = 50.00; 50 × 1.00 + 5 = 55.00; 1000 × 0.02 = 20.00
    assert amounts(100, 50, 1000) == [
        ("SMS — US", "100", "50.00"),
        ("SMS — EU", "50", "55.00"),
        ("SMS", "1000", "20.00"),
    ]
    # the first unit of each next tier, the filters' own tiers and not the 1,151 units together:
    # 100 × 0.50 + 1 × 0.40 = 50.40; 50 × 1.00 + 5 + 1 × 0.10 = 55.10; 1000 × 0.02 + 1 × 0.01 = 20.01
    assert amounts(101, 51, 1001) == [
        ("SMS — US", "101", "50.40"),
        ("SMS — EU", "51", "55.10"),
        ("SMS", "1001", "20.01"),
    ]


def test_volume_tiers_apply_per_filter_at_their_boundaries() -> None:
    loaded = catalog(TIERS.format(key="vol", model="volume"))
    charge = loaded.plan("vol").charges[0]

    def amounts(us: int, eu: int) -> list[tuple[str, str, str]]:
        usage = split(charge, [({"country": "US"}, us), ({"country": "DE"}, eu)])
        return lines(rate(loaded, "vol", {"sms": usage}))

    # 100 × 0.50 = 50.00; 50 × 1.00 + 5 = 55.00
    assert amounts(100, 50) == [("SMS — US", "100", "50.00"), ("SMS — EU", "50", "55.00")]
    # the whole quantity at the next tier: 101 × 0.40 = 40.40; 51 × 0.10 = 5.10
    assert amounts(101, 51) == [("SMS — US", "101", "40.40"), ("SMS — EU", "51", "5.10")]


NO_DEFAULT = """
[plans.nd]
name = "No default"
currency = "USD"

[[plans.nd.charges]]
meter = "sms"
model = "per_unit"

[[plans.nd.charges.filters]]
name = "US"
properties = { country = ["US"] }
unit_amount = 0.01
"""


def test_unmatched_events_without_a_default_are_not_billed_and_are_listed() -> None:
    loaded = catalog(NO_DEFAULT)
    charge = loaded.plan("nd").charges[0]
    usage = split(charge, [({"country": "US"}, 300), ({"country": "JP"}, 40), ({}, 2)])
    rated = rate(loaded, "nd", {"sms": usage})
    assert lines(rated) == [("SMS — US", "300", "3.00")]  # 300 × 0.01 = 3.00; the 42 others are not billed
    assert rated.unpriced == (UnpricedUsage("sms", 42, Decimal(42), '{"filter":null,"group":{}}'),)


def test_only_unpriced_usage_shows_a_zero_line_and_the_usage_listed() -> None:
    loaded = catalog(NO_DEFAULT)
    charge = loaded.plan("nd").charges[0]
    rated = rate(loaded, "nd", {"sms": split(charge, [({"country": "JP"}, 7)])})
    assert lines(rated) == [("SMS", "0", "0.00")]
    assert rated.usage_lines[0].dimension is None
    assert rated.unpriced == (UnpricedUsage("sms", 7, Decimal(7), '{"filter":null,"group":{}}'),)


def test_unmatched_events_with_a_default_are_billed_at_it() -> None:
    loaded = catalog(SMS)
    charge = loaded.plan("sms").charges[0]
    rated = rate(loaded, "sms", {"sms": split(charge, [({"country": "JP"}, 7)])})
    assert lines(rated) == [("SMS", "7", "0.07")]  # 7 × 0.0100 = 0.07
    assert rated.usage_lines[0].dimension == '{"filter":null,"group":{}}'


def test_a_dimensioned_charge_without_usage_shows_one_zero_line() -> None:
    loaded = catalog(SMS)
    for usage in ({}, {"sms": DimensionedUsage()}, {"sms": MeterUsage()}):
        rated = rate(loaded, "sms", usage)
        assert lines(rated) == [("SMS", "0", "0.00")]
        assert rated.usage_lines[0].dimension is None and rated.unpriced == ()


def test_plain_usage_for_a_dimensioned_charge_is_unmatched_and_ungrouped() -> None:
    loaded = catalog(SMS)
    rated = rate(loaded, "sms", {"sms": MeterUsage(quantity=Decimal(120), events=120)})
    assert lines(rated) == [("SMS", "120", "1.20")]  # 120 × 0.0100 = 1.20
    assert rated.usage_lines[0].dimension == '{"filter":null,"group":{}}'


GROUPED = """
[plans.g]
name = "Grouped"
currency = "USD"

[[plans.g.charges]]
meter = "sms"
model = "per_unit"
unit_amount = 0.10
group_by = ["region"]

[[plans.g.charges.filters]]
name = "Premium"
properties = { tier = ["premium"] }
unit_amount = 0.25
group_by = []
"""


def test_group_by_rates_each_value_on_its_own_line_none_for_a_missing_property() -> None:
    loaded = catalog(GROUPED)
    charge = loaded.plan("g").charges[0]
    usage = split(
        charge,
        [
            ({"region": "eu"}, 3),
            ({"region": "us"}, 2),
            ({}, 1),
            ({"region": "eu", "tier": "premium"}, 4),  # the filter's group_by = [] : one line, not grouped
            ({"region": "us", "tier": "premium"}, 4),
        ],
    )
    rated = rate(loaded, "g", {"sms": usage})
    assert lines(rated) == [
        ("SMS — Premium", "8", "2.00"),  # (4 + 4) × 0.25 = 2.00
        ("SMS — eu", "3", "0.30"),  # 3 × 0.10 = 0.30
        ("SMS — us", "2", "0.20"),  # 2 × 0.10 = 0.20
        ("SMS — (none)", "1", "0.10"),  # 1 × 0.10 = 0.10
    ]
    assert [line.dimension for line in rated.usage_lines] == [
        '{"filter":{"tier":["premium"]},"group":{}}',
        '{"filter":null,"group":{"region":"eu"}}',
        '{"filter":null,"group":{"region":"us"}}',
        '{"filter":null,"group":{"region":null}}',
    ]


def test_filter_and_group_values_both_name_the_line() -> None:
    loaded = catalog(
        """
[plans.fg]
name = "FG"
currency = "USD"

[[plans.fg.charges]]
meter = "sms"
model = "per_unit"
group_by = ["region"]

[[plans.fg.charges.filters]]
properties = { country = ["US", "CA"] }
unit_amount = 0.01
"""
    )
    charge = loaded.plan("fg").charges[0]
    usage = split(charge, [({"country": "CA", "region": "west"}, 10), ({"country": "US"}, 20)])
    assert lines(rate(loaded, "fg", {"sms": usage})) == [
        ("SMS — US, CA — west", "10", "0.10"),  # 10 × 0.01 = 0.10
        ("SMS — US, CA — (none)", "20", "0.20"),  # 20 × 0.01 = 0.20
    ]


def test_package_sizes_apply_per_group() -> None:
    loaded = catalog(
        """
[plans.pk]
name = "Packages"
currency = "USD"

[[plans.pk.charges]]
meter = "gb"
model = "package"
package_size = 100
package_amount = 5.00
free_units = 10
group_by = ["region"]
"""
    )
    charge = loaded.plan("pk").charges[0]
    usage = split_sums(charge, [({"region": "eu"}, "100"), ({"region": "eu"}, "10"), ({"region": "us"}, "5")])
    assert lines(rate(loaded, "pk", {"gb": usage})) == [
        ("Transfer — eu", "110", "5.00"),  # ceil((110 − 10) / 100) = 1 package × 5.00 = 5.00
        ("Transfer — us", "5", "0.00"),  # 5 is within the group's 10 free units: 0
    ]  # the 115 GB as one group would be ceil((115 − 10) / 100) = 2 packages = 10.00


def test_a_commitment_counts_every_filter_line() -> None:
    loaded = catalog(SMS + "\n[plans.sms.commitment]\nminimum = 20.00\n")
    charge = loaded.plan("sms").charges[0]
    usage = split(charge, [({"country": "US"}, 1000), ({"country": "DE", "direction": "inbound"}, 9), ({}, 300)])
    rated = rate(loaded, "sms", {"sms": usage})
    # lines: 1000 × 0.0079 = 7.90, 9 × 0 = 0.00, 300 × 0.0100 = 3.00; usage 10.90
    assert [line.amount for line in rated.usage_lines] == [Decimal("7.90"), Decimal("0.00"), Decimal("3.00")]
    assert rated.commitment_line is not None
    assert rated.commitment_line.amount == Decimal("9.10")  # 20.00 − 10.90
    assert rated.subtotal == Decimal("20.00")


def test_a_plain_charge_given_dimensioned_usage_rates_the_meters_total() -> None:
    loaded = catalog(
        '[plans.plain]\nname = "Plain"\ncurrency = "USD"\n[[plans.plain.charges]]\nmeter = "sms"\n'
        'model = "per_unit"\nunit_amount = 0.01\n'
    )
    usage = DimensionedUsage(
        parts={Part(None): MeterUsage(quantity=Decimal(5), events=5)}, total=MeterUsage(quantity=Decimal(9), events=9)
    )
    rated = rate(loaded, "plain", {"sms": usage})
    assert lines(rated) == [("SMS", "9", "0.09")]  # 9 × 0.01 = 0.09
    assert rated.usage_lines[0].dimension is None


def test_part_line_name_names_each_part_as_its_rated_line_reads():
    """``part_line_name`` gives every part the description ``rate_period`` gives its line: for each part with
    usage, the same; for a dimension the plan has no part of (a filter's content changed), None."""
    from billing.core.rating import part_line_name
    from pricing_plans import dimension_key

    cat = catalog("""
[plans.p]
name = "P"
currency = "USD"
[[plans.p.charges]]
meter = "sms"
model = "per_unit"
unit_amount = "0.01"
group_by = ["carrier"]
[[plans.p.charges.filters]]
name = "Europe"
properties = { country = ["de", "fr"] }
group_by = []
unit_amount = "0.02"
[[plans.p.charges.filters]]
properties = { country = ["us", "ca"] }
unit_amount = "0.03"
[[plans.p.charges]]
meter = "gb"
model = "per_unit"
unit_amount = "0.50"
description = "Data out"
""")
    plan = cat.plan("p")
    charge = plan.charges[0]
    events = [({"country": "de"}, 1), ({"country": "us", "carrier": "att"}, 1), ({"country": "jp"}, 1),
              ({"country": "br", "carrier": "vivo"}, 1)]  # fmt: skip
    usage = split(charge, events)
    rated = rate_period(TERMS, plan, {"sms": usage}, PERIOD, meters=cat.meters)
    lines = {line.dimension: line.description for line in rated.usage_lines if line.meter == "sms"}
    # Europe is not grouped; the unnamed filter takes the charge's group_by; the unmatched events too (jp has no
    # carrier: "(none)")
    assert sorted(lines.values()) == ["SMS — (none)", "SMS — Europe", "SMS — us, ca — att", "SMS — vivo"]
    for dimension, description in lines.items():
        assert part_line_name(plan, cat.meters, "sms", dimension) == description
    assert {part_line_name(plan, cat.meters, "sms", dimension_key(charge, part)) for part in usage.parts} == set(
        lines.values()
    )
    assert part_line_name(plan, cat.meters, "gb", None) == "Data out"
    assert part_line_name(plan, cat.meters, "sms", None) == "SMS"
    gone = '{"filter":{"country":["at","de","fr"]},"group":{}}'  # (the filter's content since changed)
    assert part_line_name(plan, cat.meters, "sms", gone) is None
    assert part_line_name(plan, cat.meters, "sms", "not json") is None
    assert part_line_name(plan, cat.meters, "calls", None) is None
