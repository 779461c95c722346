"""Churn-risk rules: each one firing and not firing at its boundary, the score and level, and the backtest's
precision and recall (pure); the `customer.at_risk` notification once per customer and period, and a cancellation
counted only once it was known (database, SQLite and PostgreSQL).

Default parameters (billing.config.Risk): usage drop share 0.5, inactive 14 days, adoption share 0.1, coupon ending
within 1 period, level 3; points usage_drop 2, inactive 3, low_adoption 1, failed_payment 3, downgrade 2,
cancellation 4, coupon_ending 1.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from billing.core.periods import month
from billing.core.risk import RiskRules, Rule, Signals, assess, backtest, rank

OCTOBER = month(2026, 10)  # ends 11-01
D = dt.date
RULES = RiskRules()


def _rules(signals: Signals) -> list[Rule]:
    return [r.rule for r in assess(signals, OCTOBER, RULES).reasons]


def _q(*values: str | None) -> list[Decimal | None]:
    return [None if v is None else Decimal(v) for v in values]


@pytest.mark.parametrize(
    ("usage", "fires"),
    [
        # average of 80, 100, 120 = 100; 0.5 × 100 = 50
        (_q("80", "100", "120", "50"), True),  # 50 ≤ 50: fires at the boundary
        (_q("80", "100", "120", "50.01"), False),
        (_q("0", "0", "0", "0"), False),  # no usage before: nothing to drop from
        (_q(None, "100", "120", "10"), False),  # not subscribed through the 3 periods before: no average
    ],
)
def test_usage_drop_at_its_boundary(usage, fires):
    assert (Rule.USAGE_DROP in _rules(Signals("c", usage={"calls": usage}))) is fires


@pytest.mark.parametrize(
    ("last_event", "fires"),
    [
        (D(2026, 10, 17), True),  # idle 10-18 … 10-31: 11-01 − 10-18 = 14 days ≥ 14
        (D(2026, 10, 18), False),  # 13 days
        (D(2026, 10, 31), False),  # 0 days
    ],
)
def test_inactive_at_its_boundary(last_event, fires):
    assert (Rule.INACTIVE in _rules(Signals("c", last_event=last_event))) is fires


def test_inactive_without_any_event_counts_from_the_start():
    assert Rule.INACTIVE in _rules(Signals("c", active_since=D(2026, 10, 18)))  # 11-01 − 10-18 = 14 days
    assert Rule.INACTIVE not in _rules(Signals("c", active_since=D(2026, 10, 19)))  # 13 days
    assert _rules(Signals("c")) == []  # nothing known: nothing fires


@pytest.mark.parametrize(
    ("used", "fires"),
    [("100", True), ("100.5", False), ("0", True)],  # allowance 1,000: 100 / 1,000 = 10 % ≤ 10 % fires
)
def test_low_adoption_at_its_boundary(used, fires):
    signals = Signals("c", allowances={"calls": (Decimal(used), Decimal(1000))})
    assert (Rule.LOW_ADOPTION in _rules(signals)) is fires


def test_payments_schedules_and_coupons():
    assert _rules(Signals("c", failed_payments=1)) == [Rule.FAILED_PAYMENT]
    assert _rules(Signals("c", failed_payments=0)) == []
    assert _rules(Signals("c", downgrade_scheduled=True)) == [Rule.DOWNGRADE_SCHEDULED]
    assert _rules(Signals("c", cancellation_scheduled=True)) == [Rule.CANCELLATION_SCHEDULED]
    assert _rules(Signals("c", coupons_ending=("WELCOME",))) == [Rule.COUPON_ENDING]


def test_score_level_and_expansion_signals():
    # usage drop on two meters (2 points once) + low adoption (1) = 3 ≥ level 3: at risk
    signals = Signals(
        "a",
        usage={"calls": _q("10", "10", "10", "5"), "gb": _q("4", "4", "4", "1")},
        allowances={"calls": (Decimal(5), Decimal(100))},
    )
    found = assess(signals, OCTOBER, RULES)
    assert [(r.rule.value, r.points) for r in found.reasons] == [
        ("usage_drop", 2),
        ("usage_drop", 0),
        ("low_adoption", 1),
    ]
    assert (found.score, found.at_risk) == (3, True)
    # a limit reached is an expansion signal, never a risk: score 0
    grows = assess(Signals("b", limits_reached=("usage:calls",)), OCTOBER, RULES)
    assert (grows.score, grows.at_risk, grows.expansion) == (0, False, ("usage:calls",))
    # 2 points is below the level
    assert not assess(Signals("c", downgrade_scheduled=True), OCTOBER, RULES).at_risk
    assert [a.customer for a in rank([grows, found, assess(Signals("c"), OCTOBER, RULES)])] == ["a", "b", "c"]


def test_backtest_precision_and_recall_worked_by_hand():
    august, september, october = month(2026, 8), month(2026, 9), month(2026, 10)
    flags = {august: {"a", "b", "c"}, september: {"a", "d"}}
    churn = {august: {"x"}, september: {"a", "e"}, october: {"b", "d", "f"}}
    result = backtest(flags, churn)
    # churn after August (the first period assessed) can be caught: a (Sep), e (Sep), b, d, f (Oct) = 5;
    # x churned in August itself, before any flag could warn: not counted.
    # caught (flagged in a period before the one they churned in): a (Aug < Sep), b (Aug < Oct), d (Sep < Oct) = 3
    # flagged: a, b, c, d = 4 → precision 3 / 4 = 75 %; recall 3 / 5 = 60 %; c is the false alarm
    assert (sorted(result.caught), sorted(result.churned)) == (["a", "b", "d"], ["a", "b", "d", "e", "f"])
    assert (result.precision, result.recall) == (Decimal("0.75"), Decimal("0.6"))
    assert result.false_alarms == {"c"}


# -- through the database ------------------------------------------------------------------------------------

CATALOG = """
[meters.calls]
name = "Calls"
aggregation = "count"

[plans.basic]
name = "Basic"
currency = "USD"
subscription = { fee = 10 }
charges = [{ meter = "calls", model = "per_unit", unit_amount = 0.01 }]
thresholds = [{ meter = "calls", allowance = 100, levels = [100] }]

[plans.mini]
name = "Mini"
currency = "USD"
subscription = { fee = 5 }
charges = [{ meter = "calls", model = "per_unit", unit_amount = 0.01 }]
"""


def _calls(customer: str, year_month: tuple[int, int], days: range) -> list[dict[str, str]]:
    y, m = year_month
    return [
        {"id": f"{customer}-{y}-{m}-{d}", "customer": customer, "meter": "calls", "timestamp": f"{y}-{m:02d}-{d:02d}T12:00:00Z"}
        for d in days
    ]


@pytest.fixture
def risky(engine):
    """a and b on basic (100 calls included) from 07-01. a: 30 calls a month (days 1–30) in July, August and
    September, 5 in October (days 1–5). b: 30 calls in each of the four months, and a cancellation for 12-01
    recorded now (after October's end). c on basic moving to mini (cheaper) on 12-01, recorded now too."""
    from billing import customers as service
    from billing.ingestion import ingest_batch
    from pricing_plans.loader import loads_catalog

    catalog, problems = loads_catalog(CATALOG, "risk.toml")
    assert not problems and catalog is not None
    for name in ("a", "b", "c"):
        service.create_customer(engine, name, name=name.upper(), email=None, currency="USD", timezone="UTC")
    subs = {name: service.subscribe(engine, catalog, name, "basic", D(2026, 7, 1)) for name in ("a", "b", "c")}
    events = []
    for m in (7, 8, 9):
        events += _calls("a", (2026, m), range(1, 31)) + _calls("b", (2026, m), range(1, 31))
        events += _calls("c", (2026, m), range(1, 31))
    events += _calls("a", (2026, 10), range(1, 6)) + _calls("b", (2026, 10), range(1, 31))
    events += _calls("c", (2026, 10), range(1, 31))
    report = ingest_batch(engine, catalog, events, now=dt.datetime(2026, 11, 2, tzinfo=dt.UTC))
    assert (report.accepted, report.rejected) == (335, [])  # 3 × 30 × 3 + 5 + 30 + 30
    service.cancel_subscription(engine, subs["b"].id, D(2026, 12, 1), "voluntary")
    service.change_plan(engine, catalog, subs["c"].id, "mini", D(2026, 12, 1))
    return catalog


def test_risk_from_the_database_and_one_notification_per_customer_and_period(engine, risky):
    from billing.risk import assess_period, queue_at_risk

    found = {a.customer: a for a in assess_period(engine, risky, OCTOBER, RULES)}
    # a: October 5 ≤ 0.5 × 30 (usage drop, 2); last event 10-05: 11-01 − 10-06 = 26 idle days (inactive, 3);
    # 5 / 100 included = 5 % ≤ 10 % (low adoption, 1): score 6, at risk
    a = found["a"]
    assert ([r.rule.value for r in a.reasons], a.score, a.at_risk) == (
        ["usage_drop", "inactive", "low_adoption"],
        6,
        True,
    )
    assert a.reasons[0].detail == "calls: 5 ≤ 0.5 × 30.00 (its 3-period average)"
    # b's cancellation and c's downgrade were recorded after October's end: unknown then, nothing fires
    assert (found["b"].reasons, found["c"].reasons) == ((), ())
    # assessed as known now, they fire: cancellation 4 (at risk), downgrade 2 (not)
    now = {a.customer: a for a in assess_period(engine, risky, OCTOBER, RULES, as_of=dt.datetime.now(dt.UTC))}
    assert ([r.rule.value for r in now["b"].reasons], now["b"].at_risk) == (["cancellation_scheduled"], True)
    assert ([r.rule.value for r in now["c"].reasons], now["c"].at_risk) == (["downgrade_scheduled"], False)

    first = queue_at_risk(engine, found.values())
    again = queue_at_risk(engine, [*now.values(), *found.values()])
    assert len(first) == 1  # a
    assert len(again) == 1  # b, now at risk; a's October notification exists already
    from billing.notify.outbox import list_notifications

    kinds = sorted((n.customer, n.period) for n in list_notifications(engine) if n.kind == "customer.at_risk")
    assert kinds == [("a", "2026-10"), ("b", "2026-10")]


def test_a_plan_of_fees_only_is_never_inactive():
    # no event for 30 days, but the plan charges no usage: nothing to send, no warning
    assert _rules(Signals("c", active_since=D(2026, 10, 1), metered=False)) == []


def test_the_scheduler_assesses_the_last_month_ended_everywhere():
    from billing.risk import last_closed_month

    # UTC−12 is the last place a day ends: October has ended everywhere from 1 November 12:00 UTC
    assert last_closed_month(dt.datetime(2026, 11, 1, 11, 59, tzinfo=dt.UTC)) == month(2026, 9)
    assert last_closed_month(dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)) == OCTOBER
    assert last_closed_month(dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.UTC)) == OCTOBER


def test_the_scheduler_queues_at_risk_once_per_customer_and_month(engine, risky):
    from billing.notify.outbox import list_notifications
    from billing.scheduler import JOBS, _risk_assessed, notify_at_risk

    assert "at_risk" in {job.id for job in JOBS}
    _risk_assessed.clear()
    now = dt.datetime(2026, 11, 2, 13, tzinfo=dt.UTC)  # October has ended everywhere
    # as worked above: a is at risk in October; b's cancellation and c's downgrade were not known by its end
    assert len(notify_at_risk(engine, risky, RULES, now)) == 1
    assert notify_at_risk(engine, risky, RULES, now + dt.timedelta(hours=6)) == []  # October assessed already
    _risk_assessed.clear()  # a restarted process assesses October again: the notification exists, none is added
    assert notify_at_risk(engine, risky, RULES, now + dt.timedelta(hours=12)) == []
    found = sorted((n.customer, n.period) for n in list_notifications(engine) if n.kind == "customer.at_risk")
    assert found == [("a", "2026-10")]


def test_the_month_assessed_has_ended_in_adak_and_kiritimati():
    from zoneinfo import ZoneInfo

    from billing.risk import last_closed_month

    def ended(period, zone: str, now: dt.datetime) -> bool:
        end = dt.datetime.combine(period.end, dt.time(), tzinfo=ZoneInfo(zone))
        return end <= now

    # 1 November 2026 05:00 UTC: October has ended in UTC and in Kiritimati (UTC+14, since 31 October 10:00 UTC),
    # not in Adak (UTC−9 until its summer time ends: 1 November 09:00 UTC)
    now = dt.datetime(2026, 11, 1, 5, tzinfo=dt.UTC)
    assert ended(OCTOBER, "Pacific/Kiritimati", now) and not ended(OCTOBER, "America/Adak", now)
    assert last_closed_month(now) == month(2026, 9)
    # 09:30 UTC: ended in Adak too, but not yet in UTC−12 (12:00 UTC)
    assert last_closed_month(now.replace(hour=9, minute=30)) == month(2026, 9)
    later = now.replace(hour=12)
    assert last_closed_month(later) == OCTOBER
    assert all(ended(OCTOBER, zone, later) for zone in ("Pacific/Kiritimati", "America/Adak", "Etc/GMT+12"))


def test_a_downgrade_compares_mrr_net_of_the_tax_inside_prices():
    """From 119.00 tax included (100.00 net at 19 %) to 110.00 plus tax is an expansion, as ``billing metrics``
    counts it, not a downgrade; at 0 % (a reverse-charged buyer) 119.00 → 110.00 is one."""
    from billing.core.domain import Subscription, SubscriptionStatus
    from billing.core.tax import Treatment
    from billing.risk import _is_downgrade
    from pricing_plans.loader import loads_catalog

    catalog, problems = loads_catalog(
        '[meters.calls]\nname = "Calls"\naggregation = "count"\n'
        '[plans.gross]\nname = "Gross"\ncurrency = "EUR"\ntax_inclusive = true\n'
        'subscription = { fee = 119.00, billing = "in_arrears" }\n'
        '[plans.net]\nname = "Net"\ncurrency = "EUR"\nsubscription = { fee = 110.00, billing = "in_arrears" }\n',
        "plans.toml",
    )
    assert not problems, problems

    def sub(id_: int, plan: str, start: dt.date, end: dt.date | None, previous: int | None) -> Subscription:
        return Subscription(
            id=id_, customer_id=1, customer_external_id="c", plan_code=plan, plan_version=1, start_date=start,
            end_date=end, status=SubscriptionStatus.ACTIVE, cancel_reason=None, previous_subscription_id=previous,
        )  # fmt: skip

    ending = sub(1, "gross", dt.date(2026, 1, 1), dt.date(2026, 11, 1), None)
    subs = [ending, sub(2, "net", dt.date(2026, 11, 1), None, 1)]
    assert not _is_downgrade(catalog, ending, subs, Treatment(flat=Decimal(19)))
    assert _is_downgrade(catalog, ending, subs, Treatment())
