"""Credit notes split over an invoice's tax rates (``invoices.store.lifecycle.credited_taxes``): whatever the
sequence of partial credit notes, no note gives back more net or more tax of a rate than is left of it, none gives
back a negative amount of a rate that billed none, and notes that credit the whole invoice give back each rate's
net and tax exactly as billed."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from invoices.model import TaxLine
from invoices.store.lifecycle import credited_taxes

CENT = Decimal("0.01")


@dataclass(frozen=True)
class _Invoice:
    """What ``credited_taxes`` reads of an invoice."""

    taxes: tuple[TaxLine, ...]
    tax_rate: Decimal
    currency: str = "EUR"

    @property
    def total(self) -> Decimal:
        return sum((tax.taxable + tax.amount for tax in self.taxes), Decimal(0))


@st.composite
def invoices(draw) -> _Invoice:
    rates = draw(st.lists(st.sampled_from(["0", "5.5", "7", "19", "20", "21"]), min_size=1, max_size=3,
                          unique=True))
    taxes = []
    for rate in rates:
        net = draw(st.integers(0, 20_000)) * CENT
        # the tax as billed: net × rate rounded, or a cent off it (taxes are rounded per rate and kind of price)
        tax = max(Decimal(0), (net * Decimal(rate) / 100).quantize(CENT) + draw(st.sampled_from([-1, 0, 0, 1])) * CENT)
        taxes.append(TaxLine(rate=Decimal(rate), taxable=net, amount=tax))
    invoice = _Invoice(tuple(taxes), Decimal(rates[0]))
    return invoice if invoice.total > 0 else _Invoice((TaxLine(Decimal(19), Decimal("1.00"), Decimal("0.19")),),
                                                      Decimal(19))


@given(invoices(), st.lists(st.integers(1, 1_000_000), min_size=1, max_size=6), st.booleans())
@settings(max_examples=2000, deadline=None)
def test_partial_credit_notes_never_give_back_more_of_a_rate_than_is_left(invoice, weights, to_the_end):
    total_cents = int(invoice.total / CENT)
    # amounts in cents: the weights' shares of the total (or of a part of it), each at least a cent
    whole = sum(weights) if to_the_end else sum(weights) + 1_000_000
    amounts = [max(1, total_cents * weight // whole) for weight in weights]
    while sum(amounts) > total_cents:
        amounts.pop()
    if to_the_end and amounts:
        amounts[-1] += total_cents - sum(amounts)
    before: list[TaxLine] = []
    for cents in amounts:
        note = credited_taxes(cents * CENT, invoice, before=before)
        assert sum((t.taxable + t.amount for t in note), Decimal(0)) == cents * CENT
        before += note
        for billed in invoice.taxes:
            given_net = sum((t.taxable for t in before if t.rate == billed.rate), Decimal(0))
            given_tax = sum((t.amount for t in before if t.rate == billed.rate), Decimal(0))
            assert 0 <= given_net <= billed.taxable, (billed, before)
            assert 0 <= given_tax <= billed.amount, (billed, before)
        assert all(t.taxable >= 0 and t.amount >= 0 for t in note), note
    if to_the_end and amounts:
        for billed in invoice.taxes:
            assert sum((t.taxable for t in before if t.rate == billed.rate), Decimal(0)) == billed.taxable
            assert sum((t.amount for t in before if t.rate == billed.rate), Decimal(0)) == billed.amount


def test_a_partial_credit_note_gives_back_no_more_tax_than_was_billed():
    """8.42 at 19 % taxed 1.59 (a cent under 19 %: tax-inclusive and tax-exclusive prices are rounded apart) and
    10.00 at 0 %, 20.01 in all. Crediting 20.00: the 19 % rate's part is round(20.00 × 10.01 / 20.01) =
    round(10.004997…) = 10.00 and its net round(10.00 / 1.19) = round(8.403…) = 8.40, which would give back 1.60
    of tax, a cent more than was billed; the cent goes to the net instead: 8.41 + 1.59. The last cent then gives
    back the rest of the net, 0.01, and no tax."""
    taxes = (TaxLine(Decimal(19), Decimal("8.42"), Decimal("1.59")), TaxLine(Decimal(0), Decimal("10.00"), Decimal(0)))
    invoice = _Invoice(taxes, Decimal(19))
    first = credited_taxes(Decimal("20.00"), invoice)
    assert [(str(t.rate), str(t.taxable), str(t.amount)) for t in first] == [
        ("19", "8.41", "1.59"), ("0", "10.00", "0.00")
    ]
    last = credited_taxes(Decimal("0.01"), invoice, before=first)
    assert [(str(t.taxable), str(t.amount)) for t in last] == [("0.01", "0.00"), ("0.00", "0.00")]


def test_no_rate_gets_a_negative_part_from_rounding():
    """0.33 at 19 %, 0.51 at 7 %, 0.51 at 0 % and 0.02 at 5 % (1.37, no tax, to keep it small); crediting 0.07:
    the parts round to 0.07 × 0.33 / 1.37 = 0.0169 → 0.02 and 0.07 × 0.51 / 1.37 = 0.0261 → 0.03 twice, which
    leaves -0.01 to the last rate. That rate gets nothing instead, and the cent comes off the first: 0.01."""
    rates = (("19", "0.33"), ("7", "0.51"), ("0", "0.51"), ("5", "0.02"))
    invoice = _Invoice(tuple(TaxLine(Decimal(rate), Decimal(net), Decimal(0)) for rate, net in rates), Decimal(19))
    note = credited_taxes(Decimal("0.07"), invoice)
    assert [str(t.taxable + t.amount) for t in note] == ["0.01", "0.03", "0.03", "0.00"]
    assert all(t.taxable >= 0 and t.amount >= 0 for t in note)
