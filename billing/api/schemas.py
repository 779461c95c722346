"""The API's request and response bodies, as published in ``/openapi.json``.

Money is always a string with exactly the currency's minor digits (``"49.00"``, ``"1500"`` for JPY); quantities,
rates and percentages are decimal strings; dates are ISO (``2026-03-01``), periods half-open ``[start, end)``.
Request bodies refuse unknown fields; text refuses NUL characters and lone surrogates, which no database stores.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr

__all__ = [
    "EVENT_BATCH_SCHEMA",
    "MAX_BATCH",
    "ApiText",
    "CancelIn",
    "CustomerIn",
    "CustomerOut",
    "EventBatchOut",
    "EventResult",
    "InvoiceOut",
    "InvoiceSummaryOut",
    "MeterUsageOut",
    "PeriodOut",
    "PreviewOut",
    "SubscriptionIn",
    "SubscriptionOut",
    "ThresholdOut",
    "UsageOut",
]

MAX_BATCH = 10_000
"""Events per ``POST /v1/events``."""


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


ApiText = Annotated[StrictStr, AfterValidator(_storable)]
"""Text a database can store."""


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- events ------------------------------------------------------------------------------------------------

_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A usage event; see the README's ingestion section for every rule.",
    "required": ["id", "customer", "meter", "timestamp"],
    "properties": {
        "id": {"type": "string", "minLength": 1, "maxLength": 255, "description": "Idempotency key."},
        "customer": {"type": "string", "description": "The customer's external id."},
        "meter": {"type": "string", "description": "The meter's code."},
        "timestamp": {
            "type": "string",
            "format": "date-time",
            "description": "ISO-8601 with a UTC offset, at most a day ahead, within the customer's late-usage window "
            "(the current month and the 12 before it).",
        },
        "value": {
            "anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}, {"type": "null"}],
            "description": "A decimal (a JSON number, or a string in plain ASCII decimal notation), at most 6 "
            "decimal places; optional for count meters.",
        },
        "properties": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}

EVENT_BATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["events"],
    "properties": {"events": {"type": "array", "maxItems": MAX_BATCH, "items": _EVENT_SCHEMA}},
    "additionalProperties": False,
}
"""The body of ``POST /v1/events`` (read by the route itself, numbers as Decimal: never a float)."""


class EventResult(_Out):
    """What became of one event of a batch: ``accepted`` (stored now), ``duplicate`` (already stored with the
    same content; not counted again) or ``rejected`` (with the reason)."""

    index: int
    id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    reason: str | None = None


class EventBatchOut(_Out):
    """The outcome of a batch: the counts, and each event's status in input order."""

    accepted: int
    duplicates: int
    rejected: int
    events: list[EventResult]


# -- customers and subscriptions ------------------------------------------------------------------------------


class CustomerIn(_In):
    """A new customer. ``timezone`` defaults to the server's setting; ``tax_rate`` is a percentage (``"19"``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"external_id": "acme", "name": "Acme Corp", "email": "ap@acme.example", "currency": "USD",
                 "timezone": "Europe/Berlin", "tax_rate": "19"}
            ]
        },
    )

    external_id: ApiText = Field(max_length=255)
    name: ApiText = Field(max_length=255)
    email: ApiText | None = Field(default=None, max_length=320)
    currency: ApiText = Field(max_length=3)
    timezone: ApiText | None = Field(default=None, max_length=64)
    locale: ApiText = Field(default="en_US", max_length=35)
    address: list[Annotated[ApiText, Field(max_length=255)]] = Field(default_factory=list, max_length=10)
    webhook_url: ApiText | None = Field(default=None, max_length=2048)
    tax_rate: Annotated[ApiText, Field(max_length=32)] | StrictInt = "0"


class CustomerOut(_Out):
    external_id: str
    name: str
    email: str | None
    currency: str
    timezone: str
    locale: str
    address: list[str]
    webhook_url: str | None
    tax_rate: str


class CustomerCreatedOut(CustomerOut):
    """The customer just created, with its webhook secret: the only answer that ever carries it."""

    webhook_secret: str | None = Field(
        description="Signs the webhooks posted to webhook_url (Billing-Signature: HMAC-SHA256 of "
        "\"<t>.<body>\"). Returned once, here; null without a webhook_url. "
        "`billing customers rotate-webhook-secret` makes a new one.",
        examples=["whsec_3f1c0e5a9b7d2e4f6a8c0b1d3e5f7a9c2b4d6e8f0a1c3e5"],
    )


class SubscriptionIn(_In):
    """Subscribe ``customer`` to the version of ``plan`` in effect on ``start``."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"customer": "acme", "plan": "starter", "start": "2026-10-01"}]}
    )

    customer: ApiText = Field(max_length=255)
    plan: ApiText = Field(max_length=100)
    start: dt.date


class CancelIn(_In):
    """End a subscription on ``date`` (exclusive: its last day is the day before; default: today in the
    customer's timezone) for ``reason``."""

    date: dt.date | None = None
    reason: Literal["voluntary", "involuntary"] = "voluntary"


class SubscriptionOut(_Out):
    id: int
    customer: str
    plan: str
    plan_version: int
    start_date: dt.date
    end_date: dt.date | None
    status: Literal["active", "cancelled"]
    cancel_reason: Literal["voluntary", "involuntary"] | None
    previous_subscription_id: int | None


# -- invoices ------------------------------------------------------------------------------------------------


class PeriodOut(_Out):
    start: dt.date
    end: dt.date


class InvoiceSummaryOut(_Out):
    id: int
    number: str | None
    kind: Literal["invoice", "credit_note"]
    status: Literal["draft", "finalized", "paid", "void", "uncollectible"]
    customer: str | None
    currency: str
    period: PeriodOut
    issue_date: dt.date | None
    due_date: dt.date | None
    subtotal: str
    tax: str
    total: str


class _ServicePeriod(_Out):
    start: dt.date | None
    end: dt.date | None


class InvoiceLineOut(_Out):
    section: str
    kind: str
    description: str
    meter: str | None
    model: str | None
    quantity: str
    unit: str | None
    amount: str
    service_period: _ServicePeriod
    details: dict[str, Any]


class InvoiceOut(_Out):
    """An invoice as ``billing invoices show --json`` prints it (``invoices.render.invoice_json``)."""

    id: int
    number: str | None
    kind: str
    status: str
    billing_key: str
    customer: dict[str, Any]
    seller: dict[str, Any]
    currency: str
    locale: str
    period: PeriodOut
    issue_date: dt.date | None
    due_date: dt.date | None
    refers_to: str | None
    reason: str | None
    lines: list[InvoiceLineOut]
    subtotal: str
    discount: str
    tax_rate: str
    tax: str
    total: str


# -- usage ---------------------------------------------------------------------------------------------------


class MeterUsageOut(_Out):
    """A meter's usage in the period so far (a weighted sum: the period's average level)."""

    meter: str
    name: str
    unit: str
    quantity: str
    events: int


class ThresholdOut(_Out):
    """One threshold of one subscription: its limit, the value so far, the levels reached now, and the levels
    already notified (from the notifications)."""

    subscription_id: int
    key: str
    kind: Literal["usage", "spend"]
    meter: str | None
    limit: str
    value: str
    percent: str | None
    levels: list[int]
    reached: list[int]
    notified: list[int]


class PreviewLineOut(_Out):
    section: str
    kind: str
    description: str
    meter: str | None
    quantity: str
    unit: str | None
    amount: str
    subscription_id: int | None


class PreviewOut(_Out):
    """The upcoming invoice of the period as it stands, rated exactly as the billing run will rate it."""

    currency: str
    lines: list[PreviewLineOut]
    subtotal: str
    tax_rate: str
    tax: str
    total: str


class UsageOut(_Out):
    customer: str
    currency: str
    timezone: str
    period: PeriodOut
    label: str
    as_of: dt.datetime
    meters: list[MeterUsageOut]
    thresholds: list[ThresholdOut]
    preview: PreviewOut


def decimal_text(value: Decimal) -> str:
    """A quantity or rate as a plain decimal string (no exponent)."""
    return f"{value:f}"
