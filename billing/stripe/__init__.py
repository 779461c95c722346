"""Stripe: pushing finalized invoices for collection (``sync``) and applying what Stripe's webhooks report
(``webhooks``). The HTTP route that receives them is ``billing.api.routes_stripe``; nothing here knows FastAPI."""
