"""Minimum commitment (committed use): a true-up line tops the period's usage charges up to the minimum."""

from __future__ import annotations

from decimal import Decimal

from pricing_plans.money import ZERO

__all__ = ["true_up"]


def true_up(minimum: Decimal, usage_total: Decimal) -> Decimal:
    """max(0, minimum − usage_total).

    ``usage_total`` is the sum of the period's already rounded usage lines, so the true-up of rounded
    amounts is itself rounded and the usage plus the true-up adds up to the minimum to the cent.
    """
    return max(ZERO, minimum - usage_total)
