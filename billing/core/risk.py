"""Warning signs of churn and contraction, from usage: each customer's signals of one period, the rules that fire
on them, a score, and the backtest of the flags against later churn. Pure: ``billing.risk`` gathers the signals.

Rules (each fires at its threshold, boundary included; the parameters are ``billing.config.Risk``):

- ``usage_drop``: for a meter, usage in P ≤ ``usage_drop_share`` × the average usage of the 3 periods before
  (only when the customer was subscribed through those 3 periods and their average is > 0).
- ``inactive``: no usage event for ≥ ``inactive_days`` whole days up to P's end (counted from the last event's
  day, or from when the customer became active when there was none); only for a plan that charges usage.
- ``low_adoption``: for a meter with an allowance (a threshold of the plan), usage in P / allowance ≤
  ``adoption_share``.
- ``failed_payment``: a payment failed in P.
- ``downgrade_scheduled`` / ``cancellation_scheduled``: known by P's end, a move to a plan with a lower MRR, or a
  cancellation, takes effect after P.
- ``coupon_ending``: a coupon's last discounted period is P or one of the next ``coupon_ending_periods`` − 1.

A customer's **score** is the sum of the points of the rules that fired; **at risk** when score ≥ ``level``.
Reaching a usage threshold of 100 % (an allowance or a spend cap used up, a hard limit hit) is an **expansion
signal**, listed beside the risks and never scored: the customer needs more.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from billing.core.metrics import ratio
from billing.core.periods import Period

__all__ = ["Assessment", "Backtest", "Reason", "RiskRules", "Rule", "Signals", "assess", "backtest", "rank"]


class Rule(StrEnum):
    USAGE_DROP = "usage_drop"
    INACTIVE = "inactive"
    LOW_ADOPTION = "low_adoption"
    FAILED_PAYMENT = "failed_payment"
    DOWNGRADE_SCHEDULED = "downgrade_scheduled"
    CANCELLATION_SCHEDULED = "cancellation_scheduled"
    COUPON_ENDING = "coupon_ending"


@dataclass(frozen=True, slots=True)
class RiskRules:
    """The rules' parameters (the defaults are those of ``billing.config.Risk``)."""

    usage_drop_share: Decimal = Decimal("0.5")
    inactive_days: int = 14
    adoption_share: Decimal = Decimal("0.1")
    coupon_ending_periods: int = 1
    level: int = 3
    points: Mapping[str, int] = field(
        default_factory=lambda: {
            Rule.USAGE_DROP: 2,
            Rule.INACTIVE: 3,
            Rule.LOW_ADOPTION: 1,
            Rule.FAILED_PAYMENT: 3,
            Rule.DOWNGRADE_SCHEDULED: 2,
            Rule.CANCELLATION_SCHEDULED: 4,
            Rule.COUPON_ENDING: 1,
        }
    )


@dataclass(frozen=True, slots=True)
class Signals:
    """What the engine knows of one customer at the end of period P.

    Attributes:
      customer: the customer's external id.
      usage: per meter, the quantities of the 3 periods before P and of P, oldest first; None for a period the
        customer was not subscribed through (then no trailing average).
      last_event: the local day of the customer's last usage event before P's end (None: none at all).
      active_since: the day the customer became active (the idle days of a customer without events count from it).
      allowances: per meter with an allowance, (usage in P, the allowance).
      limits_reached: the thresholds used up in P (``usage:<meter>`` or ``spend``): expansion signals.
      failed_payments: payments that failed in P.
      downgrade_scheduled, cancellation_scheduled: known by P's end, taking effect after it.
      coupons_ending: the coupons whose last discounted period starts within the window (P and the next ones).
      metered: whether the customer's plan charges any usage (a plan of fees only sends no events: never inactive).
    """

    customer: str
    usage: Mapping[str, Sequence[Decimal | None]] = field(default_factory=dict)
    last_event: dt.date | None = None
    active_since: dt.date | None = None
    allowances: Mapping[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    limits_reached: tuple[str, ...] = ()
    failed_payments: int = 0
    downgrade_scheduled: bool = False
    cancellation_scheduled: bool = False
    coupons_ending: tuple[str, ...] = ()
    metered: bool = True


@dataclass(frozen=True, slots=True)
class Reason:
    """A rule that fired, with what made it fire, and its points."""

    rule: Rule
    detail: str
    points: int


@dataclass(frozen=True, slots=True)
class Assessment:
    """One customer's risk in one period."""

    customer: str
    period: Period
    reasons: tuple[Reason, ...]
    expansion: tuple[str, ...]
    level: int

    @property
    def score(self) -> int:
        return sum(r.points for r in self.reasons)

    @property
    def at_risk(self) -> bool:
        return self.score >= self.level


def _usage_drop(signals: Signals, rules: RiskRules) -> Iterable[str]:
    for meter, quantities in sorted(signals.usage.items()):
        *before, now = quantities
        if len(before) != 3 or now is None or any(q is None for q in before):
            continue
        average = sum((q for q in before if q is not None), Decimal(0)) / 3
        if average > 0 and now <= rules.usage_drop_share * average:
            share = rules.usage_drop_share.normalize()
            yield f"{meter}: {now.normalize():f} ≤ {share:f} × {average:.2f} (its 3-period average)"


def _idle_days(signals: Signals, period: Period) -> int | None:
    since = signals.last_event + dt.timedelta(days=1) if signals.last_event is not None else signals.active_since
    if since is None:
        return None
    return max(0, (period.end - since).days)


def _low_adoption(signals: Signals, rules: RiskRules) -> Iterable[str]:
    for meter, (used, allowance) in sorted(signals.allowances.items()):
        share = ratio(used, allowance)
        if share is not None and share <= rules.adoption_share:
            yield f"{meter}: {used.normalize():f} of {allowance.normalize():f} included ({share * 100:.1f} %)"


def assess(signals: Signals, period: Period, rules: RiskRules = RiskRules()) -> Assessment:
    """The rules that fire on ``signals`` at the end of ``period``."""
    fired: list[tuple[Rule, str]] = [(Rule.USAGE_DROP, d) for d in _usage_drop(signals, rules)]
    idle = _idle_days(signals, period)
    if signals.metered and idle is not None and idle >= rules.inactive_days:
        fired.append((Rule.INACTIVE, f"no event for {idle} days"))
    fired.extend((Rule.LOW_ADOPTION, d) for d in _low_adoption(signals, rules))
    if signals.failed_payments > 0:
        fired.append((Rule.FAILED_PAYMENT, f"{signals.failed_payments} failed payment(s)"))
    if signals.downgrade_scheduled:
        fired.append((Rule.DOWNGRADE_SCHEDULED, "a move to a cheaper plan is scheduled"))
    if signals.cancellation_scheduled:
        fired.append((Rule.CANCELLATION_SCHEDULED, "a cancellation is scheduled"))
    fired.extend((Rule.COUPON_ENDING, f"coupon {code} ends") for code in signals.coupons_ending)
    reasons: list[Reason] = []
    seen: set[Rule] = set()
    for rule, detail in fired:  # a rule's points count once, however many meters it fired on
        reasons.append(Reason(rule, detail, 0 if rule in seen else rules.points.get(rule, 0)))
        seen.add(rule)
    return Assessment(signals.customer, period, tuple(reasons), signals.limits_reached, rules.level)


def rank(assessments: Iterable[Assessment]) -> list[Assessment]:
    """Highest score first, then the most expansion signals, then by customer."""
    return sorted(assessments, key=lambda a: (-a.score, -len(a.expansion), a.customer))


@dataclass(frozen=True, slots=True)
class Backtest:
    """Flags against later churn: ``flagged`` (customer, period) pairs; a churned customer counts as caught when
    it was flagged in a period before the one it churned in.

    precision = flagged customers who churned later / flagged customers; recall = churned customers flagged at
    least one period before / churned customers (those churning in a period after the first one assessed)."""

    flagged: frozenset[str]
    churned: frozenset[str]
    caught: frozenset[str]

    @property
    def precision(self) -> Decimal | None:
        return ratio(len(self.caught), len(self.flagged))

    @property
    def recall(self) -> Decimal | None:
        return ratio(len(self.caught), len(self.churned))

    @property
    def false_alarms(self) -> frozenset[str]:
        return self.flagged - self.churned


def backtest(flags: Mapping[Period, Iterable[str]], churn: Mapping[Period, Iterable[str]]) -> Backtest:
    """``flags``: the customers at risk in each assessed period; ``churn``: the customers churned in each period.
    Only churn in a period after the first assessed one can be caught, so only that churn is counted."""
    assessed = sorted(flags)
    if not assessed:
        return Backtest(frozenset(), frozenset(), frozenset())
    first_flag: dict[str, Period] = {}
    for period in assessed:
        for customer in flags[period]:
            first_flag.setdefault(customer, period)
    churned_in: dict[str, Period] = {}
    for period in sorted(churn):
        if period > assessed[0]:
            for customer in churn[period]:
                churned_in.setdefault(customer, period)
    caught = {c for c, p in churned_in.items() if c in first_flag and first_flag[c] < p}
    flagged = {c for c, p in first_flag.items() if p < max(churn, default=p) or c in caught}
    return Backtest(frozenset(flagged), frozenset(churned_in), frozenset(caught))
