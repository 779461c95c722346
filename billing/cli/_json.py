"""What ``--json`` prints: the HTTP API's bodies, so that a script reads the command and the API alike.

One rule for every command: standard output carries one JSON document and nothing else (progress bars, warnings
and notes go to standard error). A command that lists things prints ``{"data": [...]}``, the API's list body
without ``has_more`` (the command prints the whole list, there is no next page); any other command prints one
object. Where the API has the resource, the object is the API's, field for field (``billing.api.schemas``: a
customer is a ``CustomerOut``, an invoice an ``InvoiceOut``, the usage preview a ``UsageOut``, …); the other
objects (API keys, notifications, reports of ingestion, delivery, threshold checks and Stripe pushes) name their
fields after the records they show. Money is a string with exactly the currency's minor digits, quantities and
rates are decimal strings, dates and times ISO 8601 (UTC times end in ``Z``).

The shapes are built here from the records, not by importing the API (which would load FastAPI and every route
into each command); ``tests/billing/test_cli_json.py`` holds them to the API's models and functions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any

import typer

from pricing_plans.money import format_amount

if TYPE_CHECKING:
    from billing.apikeys import ApiKey
    from billing.core.domain import Customer, Subscription
    from billing.core.periods import Period
    from billing.notify import Notification
    from billing.preview import CustomerUsage, ThresholdState
    from billing.run import RunReport
    from invoices.model import Invoice
    from pricing_plans.models import Catalog, Plan

__all__ = [
    "api_key_json",
    "customer_json",
    "emit",
    "invoice_summary_json",
    "listing",
    "notification_json",
    "plain",
    "plan_json",
    "record_json",
    "run_json",
    "subscription_json",
    "usage_json",
]


def emit(document: Any) -> None:
    """Print ``document`` as JSON on standard output (indented, one document, a newline at the end)."""
    typer.echo(json.dumps(document, indent=2, default=plain))


def listing(items: Iterable[Any]) -> dict[str, list[Any]]:
    """A list as every command prints it: ``{"data": [...]}``."""
    return {"data": list(items)}


def plain(value: Any) -> Any:
    """A value JSON has no type for: a decimal as a plain string, a time in ISO 8601 (UTC as ``Z``), a date ISO."""
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, dt.datetime):
        return timestamp(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def decimal_text(value: Decimal) -> str:
    """A quantity or rate as the API writes it: a plain decimal string (no exponent)."""
    return f"{value:f}"


def timestamp(value: dt.datetime) -> str:
    """A time as the API writes it: ISO 8601, ``Z`` for UTC."""
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def period_json(period: Period) -> dict[str, str]:
    return {"start": period.start.isoformat(), "end": period.end.isoformat()}


# -- customers and subscriptions (CustomerOut, CustomerCreatedOut, SubscriptionOut) ----------------------------


def customer_json(customer: Customer, *, with_secret: bool = False) -> dict[str, Any]:
    """A customer (``CustomerOut``); ``with_secret``: as just created or rotated, with its webhook secret
    (``CustomerCreatedOut``)."""
    shown: dict[str, Any] = {
        "external_id": customer.external_id,
        "name": customer.name,
        "email": customer.email,
        "currency": customer.currency,
        "timezone": customer.timezone,
        "locale": customer.locale,
        "address": list(customer.address),
        "webhook_url": customer.webhook_url,
        "tax_rate": decimal_text(customer.tax_rate),
        "country": customer.country,
        "region": customer.region,
        "tax_id": customer.tax_id,
        "tax_exempt_reason": customer.tax_exempt_reason,
        "archived_at": None if customer.archived_at is None else timestamp(customer.archived_at),
    }
    if with_secret:
        shown["webhook_secret"] = customer.webhook_secret
    return shown


def subscription_json(subscription: Subscription) -> dict[str, Any]:
    """A subscription (``SubscriptionOut``)."""
    s = subscription
    return {
        "id": s.id,
        "customer": s.customer_external_id,
        "plan": s.plan_code,
        "plan_version": s.plan_version,
        "start_date": s.start_date.isoformat(),
        "end_date": None if s.end_date is None else s.end_date.isoformat(),
        "status": s.status.value,
        "cancel_reason": None if s.cancel_reason is None else s.cancel_reason.value,
        "previous_subscription_id": s.previous_subscription_id,
        "quantity": s.latest_quantity,
        "quantities": [
            {"effective_from": day.isoformat(), "quantity": quantity} for day, quantity in s.quantity_schedule
        ],
    }


# -- invoices (InvoiceSummaryOut; InvoiceOut is ``invoices.render.invoice_json``) ------------------------------


def invoice_summary_json(invoice: Invoice) -> dict[str, Any]:
    """An invoice or credit note without its lines (``InvoiceSummaryOut``)."""
    currency = invoice.currency
    return {
        "id": invoice.id,
        "number": invoice.number,
        "kind": invoice.kind.value,
        "status": invoice.status.value,
        "customer": invoice.customer_id,
        "currency": currency,
        "period": {"start": invoice.period_start.isoformat(), "end": invoice.period_end.isoformat()},
        "issue_date": None if invoice.issue_date is None else invoice.issue_date.isoformat(),
        "due_date": None if invoice.due_date is None else invoice.due_date.isoformat(),
        "subtotal": format_amount(invoice.subtotal, currency),
        "tax": format_amount(invoice.tax, currency),
        "total": format_amount(invoice.total, currency),
        "amount_paid": format_amount(invoice.amount_paid, currency),
        "amount_due": format_amount(invoice.amount_due, currency),
    }


# -- plans (PlanOut) ---------------------------------------------------------------------------------------


def plan_json(catalog: Catalog, plan: Plan) -> dict[str, Any]:
    """A plan version as the catalog states it, with every version of its code (``PlanOut``)."""
    fields = plan.model_dump(mode="json")
    shown = {"code": fields.pop("code"), "version": fields.pop("version")}
    shown["versions"] = [version.version for version in catalog.plans[plan.code]]
    return shown | fields


# -- billing runs (BillingRunOut) ------------------------------------------------------------------------------


def run_json(report: RunReport, finalized: list[str], awaiting: list[int] | None = None) -> dict[str, Any]:
    """What a billing run did (``BillingRunOut`` without its record's id): ``billing.run_history.report_json``."""
    from billing.run_history import report_json

    return report_json(report, finalized, awaiting or [])


# -- a customer's usage (UsageOut) -----------------------------------------------------------------------------


def usage_json(found: CustomerUsage) -> dict[str, Any]:
    """A customer's period so far (``UsageOut``): usage per meter, each threshold, and the upcoming invoice with
    amounts in the customer's currency."""
    from invoices.render import tax_json

    currency = found.customer.currency
    preview = found.preview
    totals = preview.totals
    return {
        "customer": found.customer.external_id,
        "currency": currency,
        "timezone": found.customer.timezone,
        "period": period_json(found.period),
        "label": found.period.label,
        "as_of": timestamp(found.as_of),
        "meters": [
            {
                "meter": meter.code,
                "name": meter.name,
                "unit": meter.unit,
                "quantity": decimal_text(meter.usage.quantity),
                "events": meter.usage.events,
            }
            for meter in found.meters
        ],
        "thresholds": [_threshold_json(state, currency) for state in found.thresholds],
        "preview": {
            "currency": currency,
            "lines": [
                {
                    "section": line.section,
                    "kind": str(line.kind),
                    "description": line.description,
                    "meter": line.meter,
                    "dimension": line.dimension,
                    "quantity": decimal_text(line.quantity),
                    "unit": line.unit,
                    "amount": format_amount(line.amount, currency),
                    "subscription_id": line.subscription_id,
                }
                for line in preview.lines
            ],
            "subtotal": format_amount(totals.subtotal, currency),
            "discount": format_amount(totals.discount, currency),
            "tax_rate": decimal_text(preview.tax_rate),
            "tax": format_amount(totals.tax, currency),
            "tax_included": format_amount(totals.tax_included, currency),
            "taxes": [tax_json(tax, currency) for tax in preview.tax_lines],
            "total": format_amount(totals.total, currency),
        },
    }


def _threshold_json(state: ThresholdState, currency: str) -> dict[str, Any]:
    """A threshold (``ThresholdOut``): a spend limit and value as money, a usage one as a plain number."""
    spec = state.spec
    spend = spec.kind == "spend"
    return {
        "subscription_id": state.subscription_id,
        "key": spec.key,
        "kind": spec.kind,
        "meter": spec.meter,
        "limit": format_amount(spec.limit, currency) if spend else decimal_text(spec.limit),
        "value": format_amount(state.value, currency) if spend else decimal_text(state.value),
        "percent": None if state.percent is None else decimal_text(state.percent),
        "levels": list(spec.levels),
        "reached": list(state.reached),
        "notified": list(state.notified),
    }


# -- records the API does not serve ------------------------------------------------------------------------


def api_key_json(key: ApiKey, secret: str | None = None) -> dict[str, Any]:
    """An API key as stored (its hash never shown); ``secret``: the key itself, printed when it is created."""
    shown: dict[str, Any] = {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "customer": key.customer,
        "created_at": timestamp(key.created_at),
        "revoked_at": None if key.revoked_at is None else timestamp(key.revoked_at),
    }
    if secret is not None:
        shown["secret"] = secret
    return shown


def notification_json(notification: Notification) -> dict[str, Any]:
    """A notification: what it is about, where its delivery stands, and ``payload``, the webhook's body after
    its ``id`` and ``kind``."""
    n = notification
    return {
        "id": n.id,
        "kind": n.kind,
        "customer": n.customer,
        "period": n.period,
        "status": n.status,
        "attempts": n.attempts,
        "last_error": n.last_error,
        "created_at": timestamp(n.created_at),
        "next_attempt_at": timestamp(n.next_attempt_at),
        "sent_at": None if n.sent_at is None else timestamp(n.sent_at),
        "subscription_id": n.subscription_id,
        "invoice_id": n.invoice_id,
        "threshold": n.threshold_key,
        "level": n.level,
        "payload": dict(n.payload),
    }


def record_json(record: Any) -> dict[str, Any]:
    """A report's record (a dataclass) with its own field names; decimals, dates and enums JSON-ready."""
    return {field.name: _ready(getattr(record, field.name)) for field in dataclasses.fields(record)}


def _ready(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal | dt.date):
        return plain(value)
    return value
