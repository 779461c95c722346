"""Stripe: pushing finalized invoices for collection (``sync``) and applying what Stripe's webhooks report
(``webhooks``). The HTTP route that receives them is ``billing.api.routes_stripe``; nothing here knows FastAPI.

Every request names the Stripe API version this code was written and tested against,
:data:`STRIPE_API_VERSION`, whatever the account's default version or the SDK's own: what Stripe answers (and
which parameters it takes) then does not change under us when either is upgraded. The webhook endpoint should be
created with the same version, so that events arrive in the shape ``webhooks`` reads.
"""

from __future__ import annotations

__all__ = ["STRIPE_API_VERSION"]

STRIPE_API_VERSION = "2026-10-28.endive"
