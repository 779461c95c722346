"""How credits share an invoice (``billing.core.credits.allocate``), pure: each grant within what it has and the
part of the invoice it may pay (a credit expiring during what the invoice bills pays only the part before), and
together as much as those limits allow, whatever the order they apply in."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from billing.core.credits import GrantView, allocate, net_of_discounts

D = Decimal
GRANTED = dt.datetime(2026, 2, 10, tzinfo=dt.UTC)
cents = st.integers(min_value=0, max_value=10_000).map(lambda c: D(c).scaleb(-2))


def grant(grant_id: int, available: str | Decimal, priority: int = 0) -> GrantView:
    return GrantView(grant_id, "free", priority, None, GRANTED, D(available))


def test_a_grant_that_may_pay_anything_leaves_a_capped_one_the_part_it_may_pay():
    # 35.00: 5.00 of it before grant 2's expiry. Grant 1 (first) pays 10.00 of the 30.00 only it may pay; grant 2
    # still pays its 5.00 of the 5.00
    assert allocate([grant(1, "10.00", 0), grant(2, "5.00", 1)], D("35.00"), {2: D("5.00")}) == [
        *allocate([grant(1, "10.00")], D("35.00")),
        *allocate([grant(2, "5.00")], D("5.00")),
    ]
    paid = allocate([grant(1, "40.00", 0), grant(2, "5.00", 1)], D("35.00"), {2: D("5.00")})
    # grant 1 has enough for everything: it pays all of it, the part before the expiry last
    assert [(a.grant_id, str(a.amount)) for a in paid] == [(1, "35.00")]
    paid = allocate([grant(1, "32.00", 0), grant(2, "5.00", 1)], D("35.00"), {2: D("5.00")})
    assert [(a.grant_id, str(a.amount)) for a in paid] == [(1, "32.00"), (2, "3.00")]


@given(
    st.lists(st.tuples(cents, st.one_of(st.none(), cents)), min_size=1, max_size=6),
    cents,
)
def test_grants_pay_as_much_as_their_limits_allow_never_beyond_one(grants, amount):
    views = [grant(i, available, priority=i) for i, (available, _) in enumerate(grants)]
    caps = {i: cap for i, (_, cap) in enumerate(grants) if cap is not None}
    paid = {a.grant_id: a.amount for a in allocate(views, amount, caps)}
    limit = {i: min(caps.get(i, amount), amount) for i in range(len(grants))}
    for i, (available, _) in enumerate(grants):
        assert D(0) <= paid.get(i, D(0)) <= available
    # the grants that may pay at most ``t`` of the invoice pay at most ``t`` together
    thresholds = sorted({D(0), amount, *limit.values()})
    for t in thresholds:
        assert sum((paid.get(i, D(0)) for i in limit if limit[i] <= t), D(0)) <= t
    # and together they pay the most those limits allow (the smallest cut: what may be paid below a threshold,
    # plus all that the grants allowed beyond it have)
    best = min(t + sum((available for i, (available, _) in enumerate(grants) if limit[i] > t), D(0))
               for t in thresholds)
    assert sum(paid.values(), D(0)) == min(best, amount)


def test_a_discount_reduces_the_lines_of_its_plans_and_beyond_them_every_line():
    lines = [("basic", D("5.00")), ("support", D("30.00")), ("support", D("10.00"))]
    # 50 % of support's 40.00: 20.00, from its two lines in proportion (15.00 and 5.00)
    assert net_of_discounts(lines, [(D("-20.00"), ["support"])]) == [D("5.00"), D("15.00"), D("5.00")]
    # 45.00 off support, which has 40.00: the 5.00 beyond it from every line left (basic's 5.00)
    assert net_of_discounts(lines, [(D("-45.00"), ["support"])]) == [D("0.00"), D("0"), D("0")]
    # unrestricted: every line in proportion
    assert net_of_discounts(lines, [(D("-9.00"), None)]) == [D("4.00"), D("24.00"), D("8.00")]
