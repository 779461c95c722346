"""Stripe: pushing finalized invoices for collection (``sync``), carrying later voids and credit notes there
(``adjust``), and applying what Stripe's webhooks report
(``webhooks``). The HTTP route that receives them is ``billing.api.routes_stripe``; nothing here knows FastAPI.

Every request names the Stripe API version this code was written and tested against,
:data:`STRIPE_API_VERSION`, whatever the account's default version or the SDK's own: what Stripe answers (and
which parameters it takes) then does not change under us when either is upgraded. The webhook endpoint should be
created with the same version, so that events arrive in the shape ``webhooks`` reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import stripe

__all__ = ["STRIPE_API_VERSION", "describe_error"]

STRIPE_API_VERSION = "2026-10-28.endive"


def describe_error(error: stripe.StripeError) -> str:
    """A Stripe error in one line: its class and the first line of its message."""
    message = (error.user_message or str(error) or "").strip().splitlines()
    return f"{type(error).__name__}: {message[0] if message else 'no message'}"
