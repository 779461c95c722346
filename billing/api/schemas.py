"""The API's request and response bodies, as published in ``/openapi.json``.

Money is always a string with exactly the currency's minor digits (``"49.00"``, ``"1500"`` for JPY); quantities,
rates and percentages are decimal strings; dates are ISO (``2026-03-01``), periods half-open ``[start, end)``.
Request bodies refuse unknown fields; text refuses NUL characters and lone surrogates, which no database stores.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr
from pydantic_core import PydanticCustomError

__all__ = [
    "EVENT_BATCH_SCHEMA",
    "MAX_BATCH",
    "AgingOut",
    "AgingRowOut",
    "ApiDate",
    "ApiText",
    "AutoTopupIn",
    "AutoTopupOut",
    "BilledPeriodOut",
    "BillingRunIn",
    "BillingRunListOut",
    "BillingRunOut",
    "BillingRunRecordOut",
    "BillingRunReportOut",
    "CancelIn",
    "CouponCustomerIn",
    "CouponHolderOut",
    "CouponIn",
    "CouponListOut",
    "CouponOut",
    "CreditNoteIn",
    "CreditSettingsIn",
    "CustomerIn",
    "CustomerListOut",
    "CustomerOut",
    "EntitlementOut",
    "EntitlementsOut",
    "EventBatchOut",
    "EventResult",
    "InvoiceListOut",
    "InvoiceOut",
    "InvoiceSummaryOut",
    "LimitIn",
    "LimitListOut",
    "LimitOut",
    "MeterUsageOut",
    "MetricsListOut",
    "NotificationListOut",
    "NotificationOut",
    "PaymentIn",
    "PaymentListOut",
    "PaymentOut",
    "PaymentReversalIn",
    "PeriodOut",
    "PlanChangeIn",
    "PlanListOut",
    "PlanOut",
    "PortalLinkIn",
    "PortalLinkOut",
    "PortalRevocationOut",
    "PreviewOut",
    "SubscriptionIn",
    "SubscriptionListOut",
    "SubscriptionOut",
    "ThresholdOut",
    "UnbilledUsageOut",
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

FIRST_DAY, LAST_DAY = dt.date(1971, 1, 1), dt.date(9998, 12, 31)
"""The days a request may name (the years ``month_param`` takes): a billing period, a due date or a month's
figures computed from a day of year 1 or 9999 would leave the calendar."""


_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _day_text(value: Any) -> Any:
    """Only a day written YYYY-MM-DD: not a number of seconds (``0``, ``"1000166400"``), not an instant."""
    written = isinstance(value, str) and _DAY.fullmatch(value) is not None
    if isinstance(value, dt.datetime) or not (written or isinstance(value, dt.date)):
        raise PydanticCustomError("date_type", "expected a date (YYYY-MM-DD)")
    return value


def _plausible_day(value: dt.date) -> dt.date:
    if not FIRST_DAY <= value <= LAST_DAY:
        raise PydanticCustomError("date_range", "expected a date from 1971-01-01 to 9998-12-31")
    return value


ApiDate = Annotated[dt.date, BeforeValidator(_day_text), AfterValidator(_plausible_day)]
"""A day in a request: written YYYY-MM-DD (not a number of seconds), from 1971 to 9998."""


def examples(*values: dict[str, Any]) -> ConfigDict:
    """A model's configuration: unknown fields refused, and ``values`` as its examples in the OpenAPI document."""
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(values)})


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


_PERIOD = {"start": "2026-10-01", "end": "2026-11-01"}
_CUSTOMER = {
    "external_id": "acme", "name": "Acme Corp", "email": "ap@acme.example", "currency": "USD",
    "timezone": "America/New_York", "locale": "en_US", "address": ["1 Main St", "Springfield"],
    "webhook_url": "https://hooks.acme.example/billing", "tax_rate": "10", "country": "US", "region": "NY",
    "tax_id": None, "tax_exempt_reason": None, "archived_at": None,
}
_SUBSCRIPTION = {
    "id": 1, "customer": "acme", "plan": "api_growth", "plan_version": 1, "start_date": "2026-10-01",
    "end_date": None, "status": "active", "cancel_reason": None, "previous_subscription_id": None,
    "quantity": 1, "quantities": [{"effective_from": "2026-10-01", "quantity": 1}],
}
_INVOICE_SUMMARY = {
    "id": 7, "number": "INV-2026-000007", "kind": "invoice", "status": "finalized", "customer": "acme",
    "currency": "USD", "period": _PERIOD, "issue_date": "2026-11-03", "due_date": "2026-11-17",
    "subtotal": "52.75", "tax": "5.28", "total": "58.03", "amount_paid": "20.00", "amount_due": "38.03",
}
_INVOICE_LINE = {
    "section": "API Growth", "kind": "usage", "description": "API calls", "meter": "api_calls", "model": "graduated",
    "dimension": None, "quantity": "12000", "unit": "call", "amount": "4.00", "service_period": _PERIOD,
    "details": {"tiers": [{"up_to": "10000", "quantity": "10000", "amount": "0.00"},
                          {"up_to": "250000", "quantity": "2000", "amount": "4.00"}]},
}
_PLAN = {
    "code": "api_growth", "version": 1, "versions": [1, 2], "key": "api_growth", "effective_from": "2025-01-01",
    "name": "API Growth", "description": "Self-serve API access with 10,000 calls a month included",
    "currency": "USD", "interval": "month", "billing_anchor": "calendar",
    "subscription": {"fee": "49.00", "billing": "in_advance", "trial_days": 0, "seats": False},
    "charges": [
        {"meter": "api_calls", "description": None, "model": "graduated",
         "tiers": [{"up_to": "10000", "unit_amount": "0", "flat_amount": "0"},
                   {"up_to": None, "unit_amount": "0.002", "flat_amount": "0"}]},
        {"meter": "storage_gb", "description": None, "model": "per_unit", "unit_amount": "0.25"},
    ],
    "commitment": None,
    "thresholds": [{"meter": "api_calls", "allowance": "10000", "spend_cap": None, "levels": [80, 100],
                    "hard_limit": True}],
    "progressive_billing": None,
}
_METRICS_ROW = {
    "period": "2026-10", "currency": "USD", "customers_start": "40", "customers_end": "42", "mrr_end": "2450.00",
    "billed_revenue": "3120.55",
}


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

    model_config = examples(
        {"index": 0, "id": "evt-1", "status": "accepted", "reason": None},
        {"index": 4, "id": "evt-4", "status": "rejected", "reason": "unknown customer 'globex'"},
    )

    index: int
    id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    reason: str | None = None


class EventBatchOut(_Out):
    """The outcome of a batch: the counts, and each event's status in input order."""

    model_config = examples(
        {"accepted": 1, "duplicates": 1, "rejected": 0, "events": [
            {"index": 0, "id": "evt-1", "status": "accepted", "reason": None},
            {"index": 1, "id": "evt-1", "status": "duplicate", "reason": None}]}
    )

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

    external_id: ApiText = Field(
        max_length=255,
        description="Your id of the customer, used in paths: no spaces, control characters or '/'; not '.' or '..'.",
    )
    name: ApiText = Field(max_length=255)
    email: ApiText | None = Field(default=None, max_length=320)
    currency: ApiText = Field(max_length=3)
    timezone: ApiText | None = Field(default=None, max_length=64)
    locale: ApiText = Field(default="en_US", max_length=35)
    address: list[Annotated[ApiText, Field(max_length=255)]] = Field(default_factory=list, max_length=10)
    webhook_url: ApiText | None = Field(default=None, max_length=2048)
    tax_rate: Annotated[ApiText, Field(max_length=32)] | StrictInt = "0"
    country: ApiText | None = Field(default=None, max_length=2, description="ISO 3166-1 alpha-2 code, e.g. DE.")
    region: ApiText | None = Field(default=None, max_length=3, description="A region of the country, e.g. NY.")
    tax_id: ApiText | None = Field(
        default=None, max_length=64, description="Tax id (VAT number), checked offline: format and check digits."
    )
    tax_exempt_reason: ApiText | None = Field(
        default=None, max_length=500, description="Set: the customer is exempt from tax, for this reason."
    )


class CustomerPatchIn(_In):
    """Changes to a customer: only the fields given change; ``null`` clears an optional one (``tax_id``,
    ``email``…). ``archived``: true archives the customer (no new subscriptions), false makes it active again.
    The external id and the currency never change; issued invoices keep the buyer as they printed it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"country": "DE", "tax_id": "DE136695976"}, {"archived": True}]},
    )

    name: ApiText | None = Field(default=None, max_length=255)
    email: ApiText | None = Field(default=None, max_length=320)
    address: list[Annotated[ApiText, Field(max_length=255)]] | None = Field(default=None, max_length=10)
    country: ApiText | None = Field(default=None, max_length=2)
    region: ApiText | None = Field(default=None, max_length=3)
    tax_id: ApiText | None = Field(default=None, max_length=64)
    tax_exempt_reason: ApiText | None = Field(default=None, max_length=500)
    tax_rate: Annotated[ApiText, Field(max_length=32)] | StrictInt | None = None
    locale: ApiText | None = Field(default=None, max_length=35)
    timezone: ApiText | None = Field(default=None, max_length=64)
    webhook_url: ApiText | None = Field(default=None, max_length=2048)
    archived: bool | None = None


class CustomerOut(_Out):
    """A customer (its webhook secret is never shown again after its creation)."""

    model_config = examples(_CUSTOMER)

    external_id: str
    name: str
    email: str | None
    currency: str
    timezone: str
    locale: str
    address: list[str]
    webhook_url: str | None
    tax_rate: str
    country: str | None = None
    region: str | None = None
    tax_id: str | None = None
    tax_exempt_reason: str | None = None
    archived_at: dt.datetime | None = None


class CustomerCreatedOut(CustomerOut):
    """The customer just created, with its webhook secret: the only answer that ever carries it."""

    model_config = examples(_CUSTOMER | {"webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})

    webhook_secret: str | None = Field(
        description="Signs the webhooks posted to webhook_url, as the Standard Webhooks specification says "
        "(webhook-id, webhook-timestamp, webhook-signature: verify with any standardwebhooks library). Returned "
        "once, here; null without a webhook_url. `billing customers rotate-webhook-secret` makes a new one.",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


class SubscriptionIn(_In):
    """Subscribe ``customer`` to the version of ``plan`` in effect on ``start``."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"customer": "acme", "plan": "starter", "start": "2026-10-01"}]}
    )

    customer: ApiText = Field(max_length=255)
    plan: ApiText = Field(max_length=100)
    start: ApiDate
    quantity: StrictInt = Field(
        default=1, ge=1, le=1_000_000, description="Seats from the start; above 1 only on a plan priced per seat."
    )


class QuantityIn(_In):
    """Give a subscription ``quantity`` seats from ``effective_from`` on (default: today in the customer's
    timezone)."""

    model_config = examples({"quantity": 8, "effective_from": "2026-04-11"})

    quantity: StrictInt = Field(ge=1, le=1_000_000, description="The number of seats.")
    effective_from: ApiDate | None = Field(default=None, description="The first day with them.")


class CancelIn(_In):
    """End a subscription on ``date`` (exclusive: its last day is the day before; default: today in the
    customer's timezone) for ``reason``."""

    model_config = examples({"date": "2026-12-01", "reason": "voluntary"})

    date: ApiDate | None = None
    reason: Literal["voluntary", "involuntary"] = "voluntary"


class PlanChangeIn(_In):
    """Move a subscription to ``plan`` on ``date`` (default: today in the customer's timezone): the subscription
    ends the day before, and a new one to the version of ``plan`` in effect that day starts on it."""

    model_config = examples({"plan": "api_scale", "date": "2026-11-01"})

    plan: ApiText = Field(max_length=100, description="The new plan's code.")
    date: ApiDate | None = Field(default=None, description="The first day on the new plan.")


class QuantityOut(_Out):
    """A subscription's seats from ``effective_from`` on, until the next change."""

    model_config = examples({"effective_from": "2026-10-01", "quantity": 5})

    effective_from: dt.date
    quantity: int


class SubscriptionOut(_Out):
    """A subscription: ``[start_date, end_date)``, the plan version it keeps."""

    model_config = examples(_SUBSCRIPTION)

    id: int
    customer: str
    plan: str
    plan_version: int
    start_date: dt.date
    end_date: dt.date | None
    status: Literal["active", "cancelled"]
    cancel_reason: Literal["voluntary", "involuntary"] | None
    previous_subscription_id: int | None
    quantity: int = Field(description="The seats from the latest change on (1 unless the plan is priced per seat).")
    quantities: list[QuantityOut] = Field(description="The quantity schedule: the seats from each date on.")


# -- invoices ------------------------------------------------------------------------------------------------


class PeriodOut(_Out):
    """A period, half-open: ``[start, end)``."""

    model_config = examples(_PERIOD)

    start: dt.date
    end: dt.date


class InvoiceSummaryOut(_Out):
    """An invoice or credit note without its lines, as lists show it."""

    model_config = examples(_INVOICE_SUMMARY)

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
    amount_paid: str = Field(description="What payments not reversed gave the invoice.")
    amount_due: str = Field(
        description="total − credits applied − amount_paid, never below 0.00 (0.00 once paid or void)."
    )


class ServicePeriodOut(_Out):
    model_config = examples(_PERIOD)

    start: dt.date | None
    end: dt.date | None


class InvoiceLineOut(_Out):
    """One line of an invoice; ``details`` shows how it was rated (tiers, packages, proration)."""

    model_config = examples(_INVOICE_LINE)

    section: str
    kind: str
    description: str
    meter: str | None
    model: str | None
    dimension: str | None = Field(
        description="For a charge priced by event dimension, the part of its events the line bills: canonical JSON "
        'of the filter\'s properties and the group\'s values, e.g. {"filter":{"country":["CA","US"]},"group":{}}; '
        "null for every other line."
    )
    quantity: str
    unit: str | None
    amount: str
    service_period: ServicePeriodOut
    details: dict[str, Any]


class AppliedCreditOut(_Out):
    """Credit paying part of an issued invoice: ``free`` or ``paid`` prepaid credit, or the customer's ``balance``."""

    model_config = examples({"kind": "free", "description": "Free credit: Welcome offer", "amount": "4.40", "grant": 3})

    kind: str
    description: str
    amount: str
    grant: int


class TaxOut(_Out):
    """One rate's tax on an invoice: the net amount taxed and the tax (for tax-inclusive prices, ``tax_included``
    is the part inside the prices); a reverse charge or an exemption is 0 % with its ``note``."""

    model_config = examples(
        {"name": "VAT", "country": "DE", "region": None, "rate": "19", "taxable_amount": "100.00",
         "tax_amount": "19.00", "tax_included": "0.00", "reverse_charge": False, "exempt_reason": None, "note": None}
    )

    name: str
    country: str | None
    region: str | None
    rate: str
    taxable_amount: str
    tax_amount: str
    tax_included: str
    reverse_charge: bool
    exempt_reason: str | None
    note: str | None


class InvoiceOut(_Out):
    """An invoice as ``billing invoices show --json`` prints it (``invoices.render.invoice_json``)."""

    model_config = examples(
        {
            "id": 7, "number": "INV-2026-000007", "kind": "invoice", "status": "finalized",
            "billing_key": "period:acme:2026-10",
            "customer": {"external_id": "acme", "name": "Acme Corp", "address": ["1 Main St"], "email": None,
                         "tax_id": None},
            "seller": {"name": "Example Billing GmbH", "address": [], "email": None, "tax_id": None},
            "currency": "USD", "locale": "en_US", "period": _PERIOD, "issue_date": "2026-11-03",
            "due_date": "2026-11-17", "refers_to": None, "reason": None, "lines": [_INVOICE_LINE],
            "subtotal": "4.00", "discount": "0.00", "tax_rate": "10", "tax": "0.40", "tax_included": "0.00",
            "taxes": [{"name": "Tax", "country": None, "region": None, "rate": "10", "taxable_amount": "4.00",
                       "tax_amount": "0.40", "tax_included": "0.00", "reverse_charge": False, "exempt_reason": None,
                       "note": None}],
            "reverse_charge": False, "tax_notes": [], "total": "4.40", "credits_applied": [], "amount_paid": "0.00",
            "amount_due": "4.40",
        }
    )

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
    tax_rate: str = Field(description="The main rate (the only one, usually); ``taxes`` lists every rate.")
    tax: str
    tax_included: str = Field(description="The part of ``tax`` already inside tax-inclusive prices.")
    taxes: list[TaxOut] = Field(description="The tax per rate; total = Σ (taxable_amount + tax_amount).")
    reverse_charge: bool = Field(description="The buyer accounts for the VAT (EU reverse charge).")
    tax_notes: list[str] = Field(description="Legal wording to print: a reverse charge's, an exemption's reason.")
    total: str
    credits_applied: list[AppliedCreditOut] = Field(
        default_factory=list, description="Prepaid credits, then the customer's balance, paying the invoice."
    )
    amount_paid: str = Field(description="What payments not reversed gave the invoice (billing payments).")
    amount_due: str = Field(
        description="total − credits applied − amount_paid, never below 0.00 (0.00 once paid or void)."
    )


# -- usage ---------------------------------------------------------------------------------------------------


class MeterUsageOut(_Out):
    """A meter's usage in the period so far (a weighted sum: the period's average level)."""

    model_config = examples({"meter": "api_calls", "name": "API calls", "unit": "call", "quantity": "12000",
                             "events": 12000})

    meter: str
    name: str
    unit: str
    quantity: str
    events: int


class ThresholdOut(_Out):
    """One threshold of one subscription: its limit, the value so far, the levels reached now, and the levels
    already notified (from the notifications)."""

    model_config = examples(
        {"subscription_id": 1, "key": "usage:api_calls", "kind": "usage", "meter": "api_calls", "limit": "10000",
         "value": "12000", "percent": "120.0", "levels": [80, 100], "reached": [80, 100], "notified": [80, 100]}
    )

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
    """One line of the upcoming invoice."""

    model_config = examples(
        {"section": "API Growth", "kind": "usage", "description": "API calls", "meter": "api_calls",
         "dimension": None, "quantity": "12000", "unit": "call", "amount": "4.00", "subscription_id": 1}
    )

    section: str
    kind: str
    description: str
    meter: str | None
    dimension: str | None = Field(
        description="The part of a charge priced by event dimension the line bills (as on invoices), or null."
    )
    quantity: str
    unit: str | None
    amount: str
    subscription_id: int | None


class PreviewOut(_Out):
    """The upcoming invoice of the period as it stands, rated exactly as the billing run will rate it."""

    model_config = examples(
        {"currency": "USD", "lines": [
            {"section": "API Growth", "kind": "subscription", "description": "API Growth", "meter": None,
             "dimension": None, "quantity": "1", "unit": None, "amount": "49.00", "subscription_id": 1},
            {"section": "API Growth", "kind": "usage", "description": "API calls", "meter": "api_calls",
             "dimension": None, "quantity": "12000", "unit": "call", "amount": "4.00", "subscription_id": 1}],
         "subtotal": "53.00", "discount": "0.00", "tax_rate": "10", "tax": "5.30", "tax_included": "0.00",
         "taxes": [{"name": "Tax", "country": None, "region": None, "rate": "10", "taxable_amount": "53.00",
                    "tax_amount": "5.30", "tax_included": "0.00", "reverse_charge": False, "exempt_reason": None,
                    "note": None}],
         "total": "58.30"}
    )

    currency: str
    lines: list[PreviewLineOut]
    subtotal: str
    discount: str = Field(description="What the coupons take off (their lines are among ``lines``).")
    tax_rate: str = Field(description="The main rate (the only one, usually); ``taxes`` lists every rate.")
    tax: str
    tax_included: str = Field(description="The part of ``tax`` already inside tax-inclusive prices.")
    taxes: list[TaxOut] = Field(description="The tax per rate; total = subtotal − discount + tax − tax_included.")
    total: str


class UsageOut(_Out):
    """A customer's period so far: usage per meter, thresholds, and the upcoming invoice."""

    model_config = examples(
        {"customer": "acme", "currency": "USD", "timezone": "America/New_York", "period": _PERIOD,
         "label": "2026-10", "as_of": "2026-10-20T08:32:18.182270Z",
         "meters": [{"meter": "api_calls", "name": "API calls", "unit": "call", "quantity": "12000",
                     "events": 12000}],
         "thresholds": [], "preview": {"currency": "USD", "lines": [], "subtotal": "0.00", "discount": "0.00",
                                       "tax_rate": "10", "tax": "0.00", "tax_included": "0.00", "taxes": [],
                                       "total": "0.00"}}
    )

    customer: str
    currency: str
    timezone: str
    period: PeriodOut
    label: str
    as_of: dt.datetime
    meters: list[MeterUsageOut]
    thresholds: list[ThresholdOut]
    preview: PreviewOut


# -- entitlements ----------------------------------------------------------------------------------------------

_ENTITLEMENT = {
    "meter": "api_calls", "used": "10000", "limit": "10000", "remaining": "0", "blocked": True, "hard_limit": True,
    "resets_at": "2026-11-01T04:00:00Z", "period": {"start": "2026-10-01", "end": "2026-11-01"},
    "subscription_id": 1, "credit_balance": "25.00",
}


class EntitlementOut(_Out):
    """What a customer may still use of one meter in its current billing period: ``used`` so far (every event
    stored), its allowance ``limit`` (null: none) and ``remaining`` (never negative); ``blocked`` once a hard limit
    is reached (``used >= limit``); ``resets_at``, the instant the period ends. ``credit_balance`` is the credit
    that will pay for the meter's charges: the customer's, in its currency, not expired (free, paid, the cash
    balance), in the currency's minor units ("0.00" without any)."""

    model_config = examples(
        _ENTITLEMENT,
        {"meter": "storage_gb", "used": "12.5", "limit": None, "remaining": None, "blocked": False,
         "hard_limit": False, "resets_at": "2026-11-01T04:00:00Z",
         "period": {"start": "2026-10-01", "end": "2026-11-01"}, "subscription_id": 1, "credit_balance": "25.00"},
    )

    meter: str
    used: str
    limit: str | None
    remaining: str | None
    blocked: bool
    hard_limit: bool
    resets_at: dt.datetime
    period: PeriodOut
    subscription_id: int
    credit_balance: str | None


class EntitlementsOut(_Out):
    """A customer's entitlement to each meter its current subscriptions charge for or give an allowance of."""

    model_config = examples(
        {"customer": "acme", "timezone": "America/New_York", "as_of": "2026-10-20T08:32:18.182270Z",
         "entitlements": [_ENTITLEMENT]}
    )

    customer: str
    timezone: str
    as_of: dt.datetime
    entitlements: list[EntitlementOut]


# -- plans -----------------------------------------------------------------------------------------------------


class PlanOut(_Out):
    """One version of a price plan, as the catalog states it (amounts and quantities as decimal strings; a last
    tier's ``up_to`` is null: no bound), with every version of its code."""

    model_config = examples(_PLAN)

    code: str
    version: int
    versions: list[int] = Field(description="Every version of the plan, oldest first.")
    key: str = Field(description="The plan's table in the catalog (plans.<key>).")
    effective_from: dt.date | None = Field(description="The first day new subscriptions get this version.")
    name: str
    description: str | None
    currency: str
    interval: Literal["week", "month", "quarter", "year"]
    billing_anchor: Literal["calendar", "subscription_start"] = Field(
        description="Where periods begin: calendar boundaries, or the subscription's start day (anniversary)."
    )
    subscription: dict[str, Any] | None = Field(
        description="The recurring fee: fee, billing, trial_days, seats (true: the fee is per seat)."
    )
    charges: list[dict[str, Any]] = Field(description="The usage charges, one per meter, with the model's fields.")
    commitment: dict[str, Any] | None = Field(description="The minimum commitment, if any.")
    thresholds: list[dict[str, Any]] = Field(description="Alert levels of allowances and spend caps.")
    progressive_billing: dict[str, Any] | None = Field(
        default=None,
        description="The usage charges (amounts) at which an invoice of the usage so far is issued during a period.",
    )
    tax_inclusive: bool = Field(default=False, description="The plan's prices include tax.")
    tax_category: str = Field(default="standard", description="Which of a country's rates taxes the plan.")
    subscription_cost: str | None = Field(
        default=None,
        description="What serving one subscription costs the seller per billing period (for margins), if declared.",
    )


# -- billing runs --------------------------------------------------------------------------------------------


class BillingRunIn(_In):
    """Bill ``period``: write (or refresh) one draft invoice per customer, of ``customer`` only if given; with
    ``finalize``, number the period's drafts too."""

    model_config = examples({"period": "2026-10"}, {"period": "2026-10", "customer": "acme", "finalize": True})

    period: ApiText = Field(pattern=r"^[0-9]{4}-[0-9]{2}$", description="The billing period, YYYY-MM.")
    customer: ApiText | None = Field(default=None, max_length=255, description="Bill this customer only.")
    finalize: bool = Field(default=False, description="Finalize the period's drafts after writing them.")
    allow_open_period: bool = Field(
        default=False,
        description="With finalize: issue the current period before it has ended (never a period to come).",
    )


class SkippedOut(_Out):
    """A customer the run did not bill, and why."""

    model_config = examples({"customer": "globex", "reason": "its usage costs more than an invoice holds"})

    customer: str
    reason: str


class RunEventsOut(_Out):
    """The period's stored usage events: ``accepted`` = ``rated`` + ``unbilled``."""

    model_config = examples({"accepted": 125100, "rated": 125000, "unbilled": 100})

    accepted: int = Field(description="Every stored usage event of the period (in each customer's timezone).")
    rated: int = Field(description="Events the run rated.")
    unbilled: int = Field(description="Events no invoice will carry (listed by group in ``unbilled``).")


class UnbilledOut(_Out):
    """Events of one customer and meter that the run does not bill, and why (``reason``: before_start, after_end,
    no_subscription, meter_not_charged, unknown_plan, customer_skipped, unknown_customer, unpriced)."""

    model_config = examples(
        {"customer": "latecomer", "meter": "api_calls", "reason": "before_start",
         "detail": "before its subscription started on 2026-10-15", "events": 100,
         "message": "100 events of customer latecomer (api_calls) before its subscription started on 2026-10-15"}
    )

    customer: str
    meter: str
    reason: str
    detail: str = Field(description="The reason in words (\"before its subscription started on 2026-10-15\").")
    events: int
    message: str


class UnbilledUsageOut(_Out):
    """The events of a month's billing periods as a billing run of it would account them now (``billing usage
    unbilled``): ``accepted`` = ``rated`` + ``unbilled_events``, and the unbilled by customer, meter and reason."""

    model_config = examples(
        {"period": "2026-10", "accepted": 125100, "rated": 125000, "unbilled_events": 100,
         "unbilled": [{"customer": "latecomer", "meter": "api_calls", "reason": "before_start",
                       "detail": "before its subscription started on 2026-10-15", "events": 100,
                       "message": "100 events of customer latecomer (api_calls) before its subscription started on "
                       "2026-10-15"}]}
    )

    period: str
    accepted: int = Field(description="Every stored usage event of the month's billing periods.")
    rated: int = Field(description="Events a run would rate.")
    unbilled_events: int = Field(description="Events no invoice will carry (by group in ``unbilled``).")
    unbilled: list[UnbilledOut]


class BilledPeriodOut(_Out):
    """A billing period a run of a month billed besides the month itself: a week or an anniversary month whose last
    day falls in it, with its label (``2026-W43``, ``2026-10-15..2026-11-15``)."""

    model_config = examples({"period": {"start": "2026-10-19", "end": "2026-10-26"}, "label": "2026-W43"})

    period: PeriodOut
    label: str


_RUN_REPORT: dict[str, Any] = {
         "period": _PERIOD, "label": "2026-10", "created": 40, "updated": 2, "unchanged": 0, "removed": 1,
         "issued_untouched": 0, "late_lines": 3,
         "billing_periods": [{"period": {"start": "2026-10-19", "end": "2026-10-26"}, "label": "2026-W43"}],
         "events": {"accepted": 125100, "rated": 125000, "unbilled": 100},
         "unbilled": [{"customer": "latecomer", "meter": "api_calls", "reason": "before_start",
                       "detail": "before its subscription started on 2026-10-15", "events": 100,
                       "message": "100 events of customer latecomer (api_calls) before its subscription started on "
                       "2026-10-15"}],
         "totals": {"USD": "3120.55", "EUR": "980.00"}, "skipped": [],
         "finalized": ["INV-2026-000101", "INV-2026-000102"], "awaiting_approval": [4711]}  # fmt: skip


class BillingRunReportOut(_Out):
    """What a billing run did: drafts written, refreshed, unchanged and removed, issued invoices left alone, the
    customers skipped, the totals per currency, and the numbers finalized."""

    model_config = examples(_RUN_REPORT)

    period: PeriodOut
    label: str
    created: int = Field(description="Draft invoices written for the first time.")
    updated: int = Field(description="Drafts rewritten with new amounts.")
    unchanged: int = Field(description="Drafts that were already right.")
    removed: int = Field(description="Drafts deleted: nothing to invoice now.")
    issued_untouched: int = Field(description="Invoices already issued, left as they are.")
    late_lines: int = Field(description="Lines billing usage that arrived after its period was invoiced.")
    billing_periods: list[BilledPeriodOut] = Field(
        description="The weeks and anniversary months whose last day falls in the month, billed beside it, in the "
        "order they end (each customer-period on its own invoice)."
    )
    events: RunEventsOut
    unbilled: list[UnbilledOut] = Field(description="The period's events no invoice will carry, and why.")
    totals: dict[str, str] = Field(description="The drafts' totals per currency (money strings).")
    skipped: list[SkippedOut]
    finalized: list[str] = Field(description="The numbers given, when the run was asked to finalize.")
    awaiting_approval: list[int] = Field(
        default_factory=list,
        description="When the run was asked to finalize: the ids of the period's drafts left as drafts because they "
        "wait for approval (GET /v1/invoices/pending-approval says why).",
    )


class BillingRunOut(BillingRunReportOut):
    """A billing run just done: what it did, and its record's ``id`` (``GET /v1/billing-runs/{id}``)."""

    model_config = examples({**_RUN_REPORT, "id": 12})

    id: int = Field(description="The run's record in the history of billing runs.")


_RUN_RECORD: dict[str, Any] = {
    "id": 12, "period": _PERIOD, "label": "2026-10", "customer": None, "shard": None, "finalize": True,
    "source": "console", "actor": "Ada Lovelace", "started_at": "2026-11-03T09:14:02Z",
    "finished_at": "2026-11-03T09:14:31Z", "outcome": "completed", "error": None, "report": _RUN_REPORT,
}  # fmt: skip


class BillingRunRecordOut(_Out):
    """A billing run as recorded: who started it, when, what it was asked, how it ended, and what it did."""

    model_config = examples(_RUN_RECORD)

    id: int
    period: PeriodOut = Field(description="The calendar month it billed.")
    label: str
    customer: str | None = Field(description="The one customer it billed (null: every customer).")
    shard: str | None = Field(description="The shard it billed, K/N (null: every customer).")
    finalize: bool = Field(description="Whether it was asked to number the period's drafts.")
    source: Literal["cli", "api", "console", "scheduler"] = Field(description="Where it was started.")
    actor: str | None = Field(
        description="Who started it: the operating-system user (cli), the API key's name (api), the name of the key "
        "signed in (console); null when unknown."
    )
    started_at: dt.datetime
    finished_at: dt.datetime | None = Field(description="Null while running, or when its process was killed.")
    outcome: Literal["running", "completed", "failed"] = Field(
        description="running (or stopped without ending: running the period again is safe), completed, failed."
    )
    error: str | None = Field(description="Why it failed.")
    report: BillingRunReportOut | None = Field(description="What it did, once completed.")


class BillingRunListOut(_Out):
    """A page of billing runs, by id."""

    model_config = examples({"data": [_RUN_RECORD], "has_more": False})

    data: list[BillingRunRecordOut]
    has_more: bool = Field(description="Whether more runs lie beyond this page (in the direction walked).")


# -- invoice actions -----------------------------------------------------------------------------------------


class CreditNoteIn(_In):
    """Credit ``amount`` (tax included, in the invoice's currency) of an issued invoice, for ``reason``."""

    model_config = examples({"amount": "10.00", "reason": "Service outage on 14 October"})

    amount: ApiText = Field(max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?$", description="A positive decimal string.")
    reason: ApiText = Field(min_length=1, max_length=1000)
    to_balance: bool = Field(
        default=False, description="Refund the credited amount to the customer's balance (the next invoices use it)."
    )


# -- lists ---------------------------------------------------------------------------------------------------


class CustomerListOut(_Out):
    """A page of customers, by external id."""

    model_config = examples({"data": [_CUSTOMER], "has_more": False})

    data: list[CustomerOut]
    has_more: bool = Field(description="Whether more customers lie beyond this page (in the direction walked).")


class SubscriptionListOut(_Out):
    """A page of subscriptions, by id."""

    model_config = examples({"data": [_SUBSCRIPTION], "has_more": False})

    data: list[SubscriptionOut]
    has_more: bool = Field(description="Whether more subscriptions lie beyond this page (in the direction walked).")


class InvoiceListOut(_Out):
    """A page of invoices and credit notes, by id (the order they were first written in)."""

    model_config = examples({"data": [_INVOICE_SUMMARY], "has_more": True})

    data: list[InvoiceSummaryOut]
    has_more: bool = Field(description="Whether more invoices lie beyond this page (in the direction walked).")


class PlanListOut(_Out):
    """A page of plans, by code: each plan's latest version."""

    model_config = examples({"data": [_PLAN], "has_more": False})

    data: list[PlanOut]
    has_more: bool = Field(description="Whether more plans lie beyond this page (in the direction walked).")


class MetricsListOut(_Out):
    """A month's revenue and churn figures, one object per currency (by currency), every value a string."""

    model_config = examples({"data": [_METRICS_ROW], "has_more": False})

    data: list[dict[str, str]]
    has_more: bool = Field(description="Whether more currencies lie beyond this page (in the direction walked).")


def decimal_text(value: Decimal) -> str:
    """A quantity or rate as a plain decimal string (no exponent)."""
    return f"{value:f}"


# -- negotiated prices -------------------------------------------------------------------------------------

_OVERRIDE_TABLES = {
    "subscription": {"fee": "39.00", "billing": "in_advance"},
    "charges": [{"meter": "api_calls", "model": "graduated", "tiers": [
        {"up_to": "100000", "unit_amount": "0"}, {"up_to": "inf", "unit_amount": "0.0010"}]}],
}
_OVERRIDE = {
    "id": 3, "subscription_id": 1, "effective_from": "2026-12-01", "created_at": "2026-11-20T09:30:00Z",
    "subscription": _OVERRIDE_TABLES["subscription"], "charges": _OVERRIDE_TABLES["charges"], "commitment": None,
    "thresholds": None, "progressive_billing": None,
}

OVERRIDE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "effective_from": {"type": "string", "format": "date", "description": "A billing-period boundary "
                           "(default: the first period not yet invoiced)."},
        "subscription": {"type": "object", "description": "Replaces the plan's [subscription] (the fee)."},
        "charges": {"type": "array", "items": {"type": "object", "required": ["meter"]},
                    "description": "Each replaces the plan's charge on its meter, or adds one."},
        "commitment": {"type": "object", "description": "Replaces the plan's [commitment]."},
        "thresholds": {"type": "array", "items": {"type": "object"}, "description": "Replace the plan's."},
        "progressive_billing": {"type": "object", "description": "Replaces the plan's [progressive_billing]."},
    },
    "additionalProperties": False,
    "examples": [{"effective_from": "2026-12-01", **_OVERRIDE_TABLES}],
}
"""The body of ``PUT /v1/subscriptions/{id}/overrides``: the override file's tables as JSON, plus
``effective_from`` (read by the route itself, numbers as Decimal: never a float)."""


class OverrideOut(_Out):
    """One version of a subscription's negotiated prices: the tables it replaces (null: the plan's own), from
    ``effective_from``. Decimal numbers are strings; whole numbers stay numbers."""

    model_config = examples(_OVERRIDE)

    id: int
    subscription_id: int
    effective_from: dt.date
    created_at: dt.datetime
    subscription: dict[str, Any] | None = None
    charges: list[dict[str, Any]] | None = None
    commitment: dict[str, Any] | None = None
    thresholds: list[dict[str, Any]] | None = None
    progressive_billing: dict[str, Any] | None = None


class OverrideListOut(_Out):
    """A page of a subscription's override versions, by id (the order they were recorded in)."""

    model_config = examples({"data": [_OVERRIDE], "has_more": False})

    data: list[OverrideOut]
    has_more: bool = Field(description="Whether more versions lie beyond this page (in the direction walked).")


# -- prepaid credits -------------------------------------------------------------------------------------------


class CreditGrantIn(_In):
    """Grant ``amount`` of credit: free (usable now) or ``paid`` (sold on a top-up invoice, usable once it is
    paid); it expires at the start of ``expires`` in the customer's timezone."""

    model_config = examples(
        {"amount": "50.00", "currency": "USD", "paid": False, "expires": "2027-01-01", "priority": 0,
         "reason": "Welcome offer"}
    )

    amount: ApiText = Field(max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?$", description="A positive decimal string.")
    currency: ApiText = Field(min_length=3, max_length=3, description="ISO 4217 code.")
    paid: bool = False
    expires: ApiDate | None = None
    priority: int = Field(default=0, ge=0, le=1_000_000, description="Lower numbers are used first.")
    reason: ApiText | None = Field(default=None, max_length=1000)


_GRANT: dict[str, Any] = {
    "id": 3, "customer": "acme", "kind": "free", "currency": "USD", "amount": "50.00", "remaining": "50.00",
    "usable": True, "priority": 0, "expires": "2027-01-01", "expires_at": "2027-01-01T05:00:00+00:00",
    "reason": "Welcome offer", "invoice": None, "created_at": "2026-11-03T10:00:00+00:00",
}


class CreditGrantOut(_Out):
    """A grant of credit and what is left of it (the sum of its ledger entries)."""

    model_config = examples(_GRANT)

    id: int
    customer: str
    kind: str = Field(description="free, paid, or balance (money owed back to the customer).")
    currency: str
    amount: str
    remaining: str
    usable: bool = Field(description="False for a paid grant whose top-up invoice is not paid yet.")
    priority: int
    expires: dt.date | None
    expires_at: str | None
    reason: str | None
    invoice: str | None = Field(description="A paid grant's top-up invoice number.")
    created_at: str


class AutoTopupOut(_Out):
    """An automatic top-up: a top-up invoice of ``amount`` when the paid credit is below ``below``."""

    model_config = examples({"below": "10.00", "amount": "50.00"})

    below: str
    amount: str


class CreditBalanceOut(_Out):
    """A customer's credit in one currency, and what is set for it."""

    model_config = examples(
        {"currency": "USD", "free": "50.00", "paid": "0.00", "balance": "20.32", "total": "70.32",
         "pending": "0.00", "low_balance": "20.00", "auto_topup": {"below": "10.00", "amount": "50.00"},
         "grants": [_GRANT]}
    )

    currency: str
    free: str
    paid: str
    balance: str
    total: str
    pending: str = Field(description="Paid credit whose top-up invoice is not paid yet.")
    low_balance: str | None = Field(
        default=None, description="The level below which the total alerts (credit.balance_low); null: no alert."
    )
    auto_topup: AutoTopupOut | None = Field(default=None, description="The automatic top-up; null: none.")
    grants: list[CreditGrantOut]


class AutoTopupIn(_In):
    """Issue a top-up invoice of ``amount`` whenever the paid credit is below ``below`` (and none is unpaid)."""

    model_config = examples({"below": "10.00", "amount": "50.00"})

    below: ApiText = Field(max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?$", description="A positive decimal string.")
    amount: ApiText = Field(max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?$", description="A positive decimal string.")


class CreditSettingsIn(_In):
    """What is set for a customer's credit in one currency; a field left out or null turns it off."""

    model_config = examples(
        {"low_balance": "20.00", "auto_topup": {"below": "10.00", "amount": "50.00"}}, {"low_balance": None}
    )

    low_balance: ApiText | None = Field(
        default=None,
        max_length=32,
        pattern=r"^[0-9]+(\.[0-9]+)?$",
        description="Alert (credit.balance_low) when the total falls below this; null: no low-balance alert.",
    )
    auto_topup: AutoTopupIn | None = None


class CreditBalancesOut(_Out):
    """A customer's credit per currency."""

    model_config = examples({"customer": "acme", "balances": []})

    customer: str
    balances: list[CreditBalanceOut]


class CreditEntryOut(_Out):
    """One leg of a movement of credit; the legs of a movement sum to zero."""

    model_config = examples(
        {"id": 5, "movement": "apply:7:3", "kind": "application", "account": "customer", "grant": 3, "invoice": 7,
         "amount": "-12.00", "effective_at": "2026-11-03T10:00:00+00:00",
         "recorded_at": "2026-11-03T10:00:00+00:00"}
    )

    id: int
    movement: str
    kind: str
    account: str
    grant: int
    invoice: int | None
    amount: str
    effective_at: str
    recorded_at: str


class CreditEntryListOut(_Out):
    """A page of a customer's credit ledger, by entry id."""

    model_config = examples({"data": [], "has_more": False})

    data: list[CreditEntryOut]
    has_more: bool = Field(description="Whether more entries lie beyond this page (in the direction walked).")


# -- coupons -----------------------------------------------------------------------------------------------

_COUPON = {
    "code": "SPRING", "percent_off": "20", "amount_off": None, "currency": None, "duration": "repeating",
    "months": 3, "plans": ["starter"], "max_redemptions": 100, "expires_on": "2026-12-01",
    "created_at": "2026-10-01T09:00:00Z", "issued": 3, "applied": 2, "redeemed": 1, "redemption_rate": "0.3333",
}
_COUPON_HOLDER = {
    "coupon": "SPRING", "customer": "acme", "issued_at": "2026-10-01T09:00:00Z", "applied_on": "2026-10-01",
    "redeemed_at": None,
}


class CouponIn(_In):
    """A new coupon: ``percent_off`` (above 0, at most 100) or ``amount_off`` with its ``currency``; ``months`` for
    a repeating one (the billing periods it reduces); ``plans`` restricts it to those plans' sections."""

    model_config = examples(
        {"code": "SPRING", "percent_off": "20", "duration": "repeating", "months": 3, "plans": ["starter"]},
        {"code": "WELCOME10", "amount_off": "10.00", "currency": "USD", "duration": "once"},
    )

    code: ApiText = Field(max_length=64)
    percent_off: Annotated[ApiText, Field(max_length=32)] | StrictInt | None = None
    amount_off: Annotated[ApiText, Field(max_length=32)] | StrictInt | None = None
    currency: ApiText | None = Field(default=None, max_length=3)
    duration: ApiText = Field(max_length=16, description="once, repeating or forever")
    months: StrictInt | None = Field(default=None, ge=1, le=1200)
    plans: list[Annotated[ApiText, Field(max_length=100)]] = Field(default_factory=list, max_length=100)
    max_redemptions: StrictInt | None = Field(default=None, ge=1, le=1_000_000_000)
    expires_on: ApiDate | None = Field(default=None, description="From this day on it can no longer be issued.")


class CouponCustomerIn(_In):
    """The customer a coupon is issued or applied to."""

    model_config = examples({"customer": "acme"})

    customer: ApiText = Field(max_length=255)


class CouponHolderOut(_Out):
    """A coupon as one customer holds it: issued, applied from the billing periods after ``applied_on``, and
    redeemed when it first reduced a finalized invoice."""

    model_config = examples(_COUPON_HOLDER)

    coupon: str
    customer: str
    issued_at: dt.datetime
    applied_on: dt.date | None
    redeemed_at: dt.datetime | None


class CouponOut(_Out):
    """A coupon, with the customers it was issued to, applied to and redeemed by (``redemption_rate`` = redeemed
    / issued, null when none was issued); ``customers`` when read one at a time."""

    model_config = examples({**_COUPON, "customers": [_COUPON_HOLDER]})

    code: str
    percent_off: str | None
    amount_off: str | None
    currency: str | None
    duration: str
    months: int | None
    plans: list[str]
    max_redemptions: int | None
    expires_on: dt.date | None
    created_at: dt.datetime | None
    issued: int
    applied: int
    redeemed: int
    redemption_rate: str | None
    customers: list[CouponHolderOut] | None = None


class LimitIn(_In):
    """A customer's own allowance of a meter (``meter`` and ``allowance``, in its units) or spend cap (``spend_cap``:
    usage charges per period, in the plan's currency), replacing the catalog's in its thresholds."""

    model_config = examples({"meter": "api_calls", "allowance": "50000"}, {"spend_cap": "500.00"})

    meter: ApiText | None = Field(default=None, max_length=255)
    allowance: Annotated[ApiText, Field(max_length=32)] | StrictInt | None = None
    spend_cap: Annotated[ApiText, Field(max_length=32)] | StrictInt | None = None


class LimitOut(_Out):
    """A customer's own limit: ``threshold`` is ``usage:METER`` (an allowance, in the meter's units) or ``spend``
    (a spend cap, in the plan's currency)."""

    model_config = examples(
        {"customer": "acme", "threshold": "usage:api_calls", "kind": "usage", "meter": "api_calls", "limit": "50000"}
    )

    customer: str
    threshold: str
    kind: Literal["usage", "spend"]
    meter: str | None
    limit: str = Field(description="A decimal string.")


class LimitListOut(_Out):
    """A page of a customer's own limits, by threshold."""

    model_config = examples(
        {"data": [{"customer": "acme", "threshold": "spend", "kind": "spend", "meter": None, "limit": "500"}],
         "has_more": False}
    )

    data: list[LimitOut]
    has_more: bool = Field(description="Whether more limits lie beyond this page (in the direction walked).")


_NOTIFICATION: dict[str, Any] = {
    "id": "6f1c2a9e-4b7d-4e0a-9c3f-2d8e5b1a7c40", "kind": "usage.threshold_crossed", "customer": "acme",
    "period": "2026-10", "status": "sent", "attempts": 0, "last_error": None,
    "created_at": "2026-10-14T09:30:02Z", "next_attempt_at": "2026-10-14T09:30:02Z", "sent_at": "2026-10-14T09:30:03Z",
    "subscription_id": 1, "invoice_id": None, "threshold": "usage:api_calls", "level": 80,
    "payload": {"customer": "acme", "meter": "api_calls", "value": "8000", "limit": "10000", "level": 80},
}


class NotificationOut(_Out):
    """A notification (a usage or spend threshold crossed, an invoice finalized, a credit balance low or spent, a
    customer at risk) and where its delivery stands, as ``billing notifications list`` shows it."""

    model_config = examples(_NOTIFICATION)

    id: str = Field(description="Its id, the Idempotency-Key and webhook-id of every delivery attempt.")
    kind: str
    customer: str
    period: str
    status: Literal["pending", "sent", "dead"]
    attempts: int = Field(description="Delivery rounds that failed.")
    last_error: str | None
    created_at: dt.datetime
    next_attempt_at: dt.datetime
    sent_at: dt.datetime | None
    subscription_id: int | None
    invoice_id: int | None
    threshold: str | None = Field(description="A threshold crossing's threshold: usage:METER or spend.")
    level: int | None = Field(description="A threshold crossing's level, percent.")
    payload: dict[str, Any] = Field(description="The webhook's body after its id and kind.")


class NotificationListOut(_Out):
    """A page of the notifications, oldest first."""

    model_config = examples({"data": [_NOTIFICATION], "has_more": False})

    data: list[NotificationOut]
    has_more: bool = Field(description="Whether more notifications lie beyond this page (in the direction walked).")


class CouponListOut(_Out):
    """A page of the coupons, by code."""

    model_config = examples({"data": [_COUPON], "has_more": False})

    data: list[CouponOut]
    has_more: bool = Field(description="Whether more coupons lie beyond this page (in the direction walked).")


# -- payments and receivables -----------------------------------------------------------------------------------


class PaymentIn(_In):
    """A payment received against the invoice: ``amount`` in its currency and minor units, the day it was received
    (default today, UTC), how, and the bank's or processor's reference."""

    model_config = examples(
        {"amount": "30.00", "currency": "USD", "date": "2026-11-10", "method": "bank_transfer",
         "reference": "TRX-2026-1110-4471"}
    )

    amount: ApiText = Field(max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?$", description="A positive decimal string.")
    currency: ApiText | None = Field(
        default=None, min_length=3, max_length=3, description="ISO 4217 code; if given, the invoice's."
    )
    date: ApiDate | None = Field(default=None, description="The day received (default today, UTC).")
    method: Literal["bank_transfer", "card", "cash", "other"]
    reference: ApiText | None = Field(default=None, min_length=1, max_length=255)


class PaymentReversalIn(_In):
    """Why and when a payment was reversed (a bounced transfer, a charge-back)."""

    model_config = examples({"reason": "transfer returned by the bank", "date": "2026-11-14"})

    reason: ApiText | None = Field(default=None, max_length=1000)
    date: ApiDate | None = Field(default=None, description="The day reversed (default today, UTC).")


_PAYMENT: dict[str, Any] = {
    "id": 4, "invoice": "INV-2026-000007", "customer": "acme", "currency": "USD", "amount": "30.00",
    "applied": "30.00", "to_balance": "0.00", "method": "bank_transfer", "reference": "TRX-2026-1110-4471",
    "received_on": "2026-11-10", "recorded_at": "2026-11-10T09:12:00+00:00", "status": "succeeded",
    "reversed_on": None, "reversal_reason": None, "balance_recovered": None, "balance_unrecovered": None,
}


class PaymentOut(_Out):
    """A payment received: what the invoice took of it (``applied``), what went to the customer's balance
    (``to_balance``), and its reversal if it bounced."""

    model_config = examples(_PAYMENT)

    id: int
    invoice: str
    customer: str
    currency: str
    amount: str
    applied: str = Field(description="What the invoice took: never more than it was owed.")
    to_balance: str = Field(description="The excess, put on the customer's cash balance.")
    method: str
    reference: str | None
    received_on: dt.date
    recorded_at: str
    status: Literal["succeeded", "reversed"]
    reversed_on: dt.date | None
    reversal_reason: str | None
    balance_recovered: str | None = Field(description="Of a reversed payment: the excess taken back from the balance.")
    balance_unrecovered: str | None = Field(
        description="Of a reversed payment: the excess the customer had spent already (owed outside any invoice)."
    )


class PaymentListOut(_Out):
    """A page of payments, by id."""

    model_config = examples({"data": [_PAYMENT], "has_more": False})

    data: list[PaymentOut]
    has_more: bool = Field(description="Whether more payments lie beyond this page (in the direction walked).")


_AGING_ROW: dict[str, Any] = {
    "customer": "acme", "name": "Acme Corp", "currency": "USD", "invoices": 2, "current": "0.00", "1-30": "38.03",
    "31-60": "0.00", "61-90": "0.00", "90+": "120.00", "total": "158.03",
}


class AgingRowOut(_Out):
    """What one customer (a total row: every customer) owes in one currency, by days overdue."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, json_schema_extra={"examples": [_AGING_ROW]}
    )

    customer: str | None = None
    name: str | None = None
    currency: str
    invoices: int
    current: str = Field(description="Not yet due.")
    d1_30: str = Field(alias="1-30")
    d31_60: str = Field(alias="31-60")
    d61_90: str = Field(alias="61-90")
    d90_plus: str = Field(alias="90+")
    total: str


class AgingOut(_Out):
    """Aged receivables on ``as_of``: a row per customer and currency, the totals per currency."""

    model_config = examples(
        {"as_of": "2026-11-30", "buckets": ["current", "1-30", "31-60", "61-90", "90+"], "data": [_AGING_ROW],
         "totals": [{k: v for k, v in _AGING_ROW.items() if k not in ("customer", "name")}]}
    )

    as_of: dt.date
    buckets: list[str]
    data: list[AgingRowOut]
    totals: list[AgingRowOut]


# -- approval before issuing ---------------------------------------------------------------------------------

_WAITING = {
    "invoice_id": 4711, "billing_key": "period:acme:2026-10", "scope": "period", "customer": "acme",
    "currency": "USD", "period_start": "2026-10-01", "period_end": "2026-11-01", "total": "12400.00",
    "content_hash": "9f2c…", "awaiting_approval": True,
    "reasons": [{"code": "above_limit", "message": "total 12400.00 USD is above the approval limit 10000.00 USD"}],
    "approved": False, "approval_outdated": False, "approved_by": None, "approved_at": None, "approval_note": None,
}


class WaitReasonOut(_Out):
    """Why a draft waits for approval: ``above_limit`` (its total is above the approval limit of its currency),
    ``late_usage`` (it bills usage of an earlier, issued period), ``customer_review`` (its customer is flagged)."""

    model_config = examples(_WAITING["reasons"][0])

    code: Literal["above_limit", "late_usage", "customer_review"]
    message: str


class DraftApprovalOut(_Out):
    """A draft invoice, why it waits for approval (if it does), and its approval."""

    model_config = examples(_WAITING)

    invoice_id: int
    billing_key: str
    scope: Literal["period", "opening"]
    customer: str
    currency: str
    period_start: dt.date
    period_end: dt.date
    total: str = Field(description="The draft's total (money string).")
    content_hash: str = Field(description="The hash of the draft's content: an approval is given for this content.")
    awaiting_approval: bool = Field(description="It is left a draft by the automatic and period finalizations.")
    reasons: list[WaitReasonOut] = Field(description="Why it waits (empty: it never waits).")
    approved: bool = Field(description="Approved as its content is now.")
    approval_outdated: bool = Field(description="Approved once, but its content has changed since.")
    approved_by: str | None
    approved_at: dt.datetime | None
    approval_note: str | None


class DraftApprovalListOut(_Out):
    """A page of the drafts that wait for approval, by invoice id."""

    model_config = examples({"data": [_WAITING], "has_more": False})

    data: list[DraftApprovalOut]
    has_more: bool = Field(description="Whether more drafts lie beyond this page (in the direction walked).")


class ApproveIn(_In):
    """Approve a draft as its content is now, with a note for the record."""

    model_config = examples({"note": "checked with the account manager"})

    note: ApiText | None = Field(default=None, max_length=1000)


_REVIEW = {"customer": "acme", "review": True, "note": "disputed usage", "flagged_by": "api key finance",
           "flagged_at": "2026-11-02T09:30:00+00:00"}


class CustomerReviewIn(_In):
    """Flag a customer for review (each of its drafts waits for an approval) or clear the flag."""

    model_config = examples({"review": True, "note": "disputed usage"})

    review: bool
    note: ApiText | None = Field(default=None, max_length=1000)


class CustomerReviewOut(_Out):
    """A customer's review flag: while ``review`` is true, each of its drafts waits for an approval."""

    model_config = examples(_REVIEW)

    customer: str
    review: bool
    note: str | None
    flagged_by: str | None
    flagged_at: dt.datetime | None


class PortalLinkIn(_In):
    """How long the link is good for, in days (default 7, at most 90)."""

    model_config = examples({"days": 7})

    days: StrictInt = Field(default=7, ge=1, le=90)


class PortalLinkOut(_Out):
    """A signed link to the customer's portal, good until ``expires_at``: send it to the customer."""

    model_config = examples(
        {
            "object": "portal_link",
            "customer": "acme",
            "url": "https://billing.example.com/portal/link/v1.eyJjIjoiYWNtZSIsImUiOjE3OTk5OTk5OTl9.3q2-7w",
            "expires_at": "2026-12-08T10:00:00Z",
        }
    )

    object: Literal["portal_link"] = "portal_link"
    customer: str
    url: str
    expires_at: dt.datetime


class PortalRevocationOut(_Out):
    """Every portal link made for ``customer`` before ``revoked_at`` is refused from now on, on the next page it
    opens; links made afterwards open as usual."""

    model_config = examples(
        {"object": "portal_link_revocation", "customer": "acme", "revoked_at": "2026-12-01T09:30:00.123000Z"}
    )

    object: Literal["portal_link_revocation"] = "portal_link_revocation"
    customer: str
    revoked_at: dt.datetime
