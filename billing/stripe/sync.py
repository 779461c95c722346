"""Pushing issued invoices to Stripe, which then collects them.

Every invoice that is ``finalized`` (issued and not yet paid, void or uncollectible), of kind ``invoice``, and not
yet completely in Stripe is pushed, oldest first, in four steps:

1. ``customer``: the Stripe customer of the invoice's customer, created once (our external id in its metadata as
   ``billing_customer_id``) and remembered in ``stripe_customers``;
2. ``invoice``: a draft Stripe invoice in the invoice's currency, ``charge_automatically``, ``auto_advance``
   false (so Stripe does not finalize it on its own while items are still being added), pending invoice items
   excluded, our invoice number and id in its metadata;
3. ``items``: one invoice item per invoice line, attached to that Stripe invoice, in integer minor units of the
   currency (49.00 USD → 4900, 1500 JPY → 1500), plus one negative item for a discount and one for tax when
   the invoice has them, then one negative item per prepaid credit (or cash balance) applied to it and, for a
   negative total, one item putting it on the customer's balance, so that Stripe's amount due is our amount
   due to the cent;
4. ``finalize``: with ``auto_advance`` true, from which point Stripe collects: it charges the customer's default
   payment method, retries failed payments on its schedule and reports through webhooks
   (:mod:`billing.stripe.webhooks`).

The Stripe invoice is created before its items and the items name it, rather than creating "pending" items that
the next invoice of the customer sweeps up: pending items of two invoices of one customer could otherwise end up
on the wrong Stripe invoice, and current API versions leave pending items out of new invoices anyway.

An invoice whose total is zero is pushed like any other (the customer sees it in Stripe as well); Stripe asks for
no payment and marks a zero invoice paid when it is finalized, and its ``invoice.paid`` webhook marks ours paid.
An invoice already paid, void or uncollectible before its first push is never pushed: Stripe would charge it.

Idempotency: every request carries an idempotency key made of this installation's id
(:func:`billing.db.installation.installation_id`, 32 hexadecimal digits), our invoice number and the step —
``<id>:INV-2026-000001:customer``, ``…:invoice``, ``…:item:1`` … ``…:item:N``, ``…:discount``, ``…:tax``,
``…:finalize`` — and what each step returned is stored before the next step begins. The installation id keeps two
databases that push to one Stripe account (a staging copy, a second business) from ever sending the same key for
two invoices that merely share a number: Stripe would answer the second with the first one's objects. The prefix
is fixed when an invoice's push begins and stored on its sync row (``key_prefix``), and every key of that push is
built from the stored prefix: a push begun before the installation id existed (migration 0009 leaves its prefix
empty) resumes with the unprefixed keys it started with, ``INV-2026-000001:item:2``, so a request Stripe carried
out whose answer was lost is answered again from its key rather than carried out a second time. A crash, a
refused request or a lost answer leaves the invoice at the last stored step; the next run resumes there, and a
request that Stripe carried out but whose answer never arrived is answered again by Stripe from its key instead of
being carried out twice. Stripe keeps keys for 24 hours, so a failed push should be retried within that (the
scheduler retries at each run). Two runs at once are safe for one invoice (same keys, same objects); the customer
mapping keeps the first Stripe customer stored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

import stripe
from sqlalchemy import Engine, case, select, update
from sqlalchemy.orm import Session

from billing.config import Settings, get_settings
from billing.credits import with_credits
from billing.db import session_scope
from billing.db.installation import installation_id
from billing.db.stripe_tables import StripeCustomerRow, StripeInvoiceSyncRow
from billing.errors import BillingInputError
from billing.stripe import STRIPE_API_VERSION, describe_error
from billing.stripe.adjust import Adjustment, sync_adjustments
from billing.stripe.amounts import collectable, to_stripe
from dbkit import for_update, insert_ignoring, read_only, utcnow
from invoices import store
from invoices.model import Invoice, InvoiceStatus, LineKind
from invoices.store import get_invoice

__all__ = [
    "STRIPE_API_VERSION",
    "InvoiceSync",
    "StripeItem",
    "SyncReport",
    "SyncStep",
    "idempotency_key",
    "stripe_client",
    "stripe_items",
    "sync_invoices",
]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


class SyncStep(StrEnum):
    """The last step of an invoice's push that completed (and was stored)."""

    PENDING = "pending"
    CUSTOMER = "customer"
    INVOICE = "invoice"
    ITEMS = "items"
    FINALIZED = "finalized"


@dataclass(frozen=True, slots=True)
class StripeItem:
    """One Stripe invoice item to create.

    Attributes:
      key: the step's part of the idempotency key (``item:3``, ``discount``, ``tax``).
      description: what the customer reads on the Stripe invoice.
      amount: integer minor units of the invoice's currency (negative for a discount).
      line: the invoice line's position (1-based), None for the discount and tax items.
    """

    key: str
    description: str
    amount: int
    line: int | None = None


@dataclass(frozen=True, slots=True)
class InvoiceSync:
    """Where one invoice's push stands after a run.

    Attributes:
      invoice_id, invoice_number, customer, currency, total: our invoice.
      step: the last step completed; ``finalized`` means Stripe now collects it.
      stripe_customer_id, stripe_invoice_id: the Stripe ids stored so far.
      items: the number of invoice items created in Stripe so far.
      error: why this run stopped before ``finalized`` (None when it did not).
    """

    invoice_id: int
    invoice_number: str
    customer: str
    currency: str
    total: Decimal
    step: SyncStep
    stripe_customer_id: str | None = None
    stripe_invoice_id: str | None = None
    items: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.step is SyncStep.FINALIZED


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What a sync run did: one entry per invoice it worked on, in order, then the voids and credit notes it
    carried to Stripe after their invoices' push (``billing.stripe.adjust``)."""

    results: tuple[InvoiceSync, ...] = ()
    adjustments: tuple[Adjustment, ...] = ()

    @property
    def synced(self) -> tuple[InvoiceSync, ...]:
        return tuple(result for result in self.results if result.ok)

    @property
    def failed(self) -> tuple[InvoiceSync, ...]:
        return tuple(result for result in self.results if not result.ok)

    @property
    def ok(self) -> bool:
        return not self.failed and all(adjustment.ok for adjustment in self.adjustments)


def idempotency_key(prefix: str, invoice_number: str, step: str) -> str:
    """The idempotency key of one step of an invoice's push, from the push's stored key prefix:
    ``0f3c…e9:INV-2026-000001:item:3`` (the installation id), or ``INV-2026-000001:item:3`` for the empty prefix
    of a push begun before there was one."""
    return f"{prefix}:{invoice_number}:{step}" if prefix else f"{invoice_number}:{step}"


def stripe_client(settings: Settings | None = None, *, max_network_retries: int = 2) -> stripe.StripeClient:
    """A Stripe client with the secret key and the API base from the settings (``stripe_api_key``, read from
    ``STRIPE_API_KEY``; ``stripe_api_base``) and the API version pinned to :data:`STRIPE_API_VERSION`.

    The SDK retries a request that failed on the network or with a server error with the same idempotency key,
    which is safe; ``max_network_retries=0`` turns that off. Raises BillingInputError if the key is not set.
    """
    settings = settings or get_settings()
    api_key = settings.secret("stripe_api_key")
    if not api_key:
        raise BillingInputError("STRIPE_API_KEY: not set (expected the Stripe secret key, sk_live_… or sk_test_…)")
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": settings.stripe_api_base.rstrip("/")},
        max_network_retries=max_network_retries,
        stripe_version=STRIPE_API_VERSION,
    )


def stripe_items(invoice: Invoice) -> list[StripeItem]:
    """The Stripe invoice items of ``invoice``: one per line (but the discount lines), then the discount (their
    sum) and the tax if not zero, then the credits applied and the payments received already (negative) and, for a
    negative total, what goes to the customer's balance.

    Amounts are Stripe's integers of the currency (``amounts.to_stripe``: 5 ISK is 500). Raises ValueError if an
    amount does not fit Stripe's units, if the items do not add up to the amount due, or if Stripe cannot collect
    the amount due (a three-decimal currency's amount not ending in 0: ``amounts.collectable``).
    """
    currency = invoice.currency
    items = [
        StripeItem(f"item:{position}", line.description, to_stripe(line.amount, currency), position)
        for position, line in enumerate(invoice.lines, start=1)
        if line.kind is not LineKind.DISCOUNT
    ]
    if invoice.discount:
        items.append(StripeItem("discount", "Discount", -to_stripe(invoice.discount, currency)))
    # The tax added on top, per rate (the tax included in tax-inclusive prices is inside their lines already); one
    # rate keeps the step key ``tax``, several are ``tax:1``, ``tax:2``…
    added = [tax for tax in invoice.taxes if tax.amount - tax.included]
    for index, tax in enumerate(added, start=1):
        key = "tax" if len(added) == 1 else f"tax:{index}"
        label = f"{tax.name} ({tax.rate.normalize():f} %)"
        items.append(StripeItem(key, label, to_stripe(tax.amount - tax.included, currency)))
    for credit in invoice.credits_applied:  # paid already: the credits are taken off what Stripe collects
        items.append(StripeItem(f"credit:{credit.grant_id}", credit.description, -to_stripe(credit.amount, currency)))
    if invoice.amount_paid:  # received already (a bank transfer): Stripe collects the rest
        items.append(StripeItem("payments", "Payments received", -to_stripe(invoice.amount_paid, currency)))
    if invoice.total < 0:  # the customer's balance holds it: nothing is refunded through Stripe
        items.append(StripeItem("balance", "To the customer's balance", -to_stripe(invoice.total, currency)))
    pushed = sum(item.amount for item in items)
    due = to_stripe(invoice.amount_due, currency)
    if pushed != due:
        raise ValueError(f"{invoice.number}: the items add up to {pushed} minor units, the amount due is {due}")
    if not collectable(due, currency):
        raise ValueError(
            f"{invoice.number}: {invoice.amount_due} {currency} is due, and Stripe collects {currency} only in "
            "multiples of 0.010 (the last of its three decimals 0): not pushed; collect it another way and record "
            "the payment (billing payments record)"
        )
    return items


def sync_invoices(
    engine: Engine,
    client_or_settings: stripe.StripeClient | Settings | None = None,
    *,
    limit: int | None = None,
    progress: ProgressCallback | None = None,
) -> SyncReport:
    """Push every finalized invoice not yet completely in Stripe (at most ``limit``), oldest first; then carry
to Stripe the voids and credit notes of pushed invoices issued since (``billing.stripe.adjust``).

    ``client_or_settings``: a ready ``StripeClient``, or the settings to build one from (``STRIPE_API_KEY`` and
    ``stripe_api_base``; None: the configured settings); a client handed in is held to
    :data:`STRIPE_API_VERSION` all the same, request by request. A Stripe error stops that invoice's push at its last
    stored step, is recorded as its ``last_error`` and reported; the run goes on with the next invoice.
    ``progress(done, total)`` is called as invoices are done.
    """
    if limit is not None and limit < 1:
        raise BillingInputError(f"limit: expected a positive number, got {limit}")
    client = (
        client_or_settings
        if isinstance(client_or_settings, stripe.StripeClient)
        else stripe_client(client_or_settings)
    )
    installation = installation_id(engine)
    with session_scope(read_only(engine)) as session:
        invoice_ids = _invoices_to_push(session, limit)
    total = len(invoice_ids)
    if progress:
        progress(0, total)
    results = []
    for done, invoice_id in enumerate(invoice_ids, start=1):
        results.append(_Push(engine, client, installation, invoice_id).run())
        if progress:
            progress(done, total)
    return SyncReport(tuple(results), sync_adjustments(engine, client, installation))


def _invoices_to_push(session: Session, limit: int | None) -> list[int]:
    """The finalized invoices whose push has not reached its last step, oldest first."""
    pushed = set(
        session.scalars(
            select(StripeInvoiceSyncRow.invoice_id).where(StripeInvoiceSyncRow.step == SyncStep.FINALIZED.value)
        )
    )
    waiting = [invoice_id for invoice_id in store.finalized_invoice_ids(session) if invoice_id not in pushed]
    return waiting if limit is None else waiting[:limit]


@dataclass
class _Push:
    """One invoice's push: loads its stored state, runs the remaining steps, stores each step's result."""

    engine: Engine
    client: stripe.StripeClient
    installation: str
    invoice_id: int
    invoice: Invoice = field(init=False)
    key_prefix: str = field(init=False)
    step: SyncStep = SyncStep.PENDING
    stripe_customer_id: str | None = None
    stripe_invoice_id: str | None = None
    item_ids: list[str] = field(default_factory=list)
    item_keys: list[str] | None = None  # the steps' keys of those items (None: a push begun before migration 0032)

    def run(self) -> InvoiceSync:
        with session_scope(self.engine) as session:
            self.invoice = with_credits(session, [get_invoice(session, self.invoice_id)])[0]
            self._load_state(session)
        try:
            items = stripe_items(self.invoice)
            if not self.invoice.customer_id:
                raise ValueError(f"{self.invoice.number}: the invoice names no customer id")
        except ValueError as exc:
            return self._failed(str(exc))
        try:
            if self.step is SyncStep.PENDING:
                self._ensure_customer()
            if self.step is SyncStep.CUSTOMER:
                self._create_invoice()
            if self.step is SyncStep.INVOICE:
                self._create_items(items)
            if self.step is SyncStep.ITEMS:
                self._finalize()
        except stripe.StripeError as exc:
            return self._failed(describe_error(exc))
        except ValueError as exc:  # what Stripe would collect is not what is due here: not finalized
            return self._failed(str(exc))
        log.info("pushed %s to Stripe as %s", self.invoice.number, self.stripe_invoice_id)
        return self._result()

    # -- state -------------------------------------------------------------------------------------------

    @property
    def number(self) -> str:
        return self.invoice.number or str(self.invoice.id)

    def _load_state(self, session: Session) -> None:
        now = utcnow()
        insert_ignoring(
            session,
            StripeInvoiceSyncRow.__table__,
            {
                "invoice_id": self.invoice.id,
                "invoice_number": self.number,
                "customer_external_id": self.invoice.customer_id or "",
                "step": SyncStep.PENDING.value,
                "stripe_item_ids": "[]",
                "stripe_item_keys": "[]",
                "attempts": 0,
                "started_at": now,
                "updated_at": now,
                # A push starting now keys its requests with the installation id; one already under way keeps
                # the prefix it began with (its row exists, this insert is ignored).
                "key_prefix": self.installation,
            },
        )
        session.execute(
            update(StripeInvoiceSyncRow)
            .where(StripeInvoiceSyncRow.invoice_id == self.invoice.id)
            .values(attempts=StripeInvoiceSyncRow.attempts + 1, updated_at=now)
        )
        row = session.execute(
            select(StripeInvoiceSyncRow).where(StripeInvoiceSyncRow.invoice_id == self.invoice.id)
        ).scalar_one()
        self.step = SyncStep(row.step)
        self.key_prefix = row.key_prefix
        self.stripe_customer_id = row.stripe_customer_id
        self.stripe_invoice_id = row.stripe_invoice_id
        self.item_ids = list(json.loads(row.stripe_item_ids))
        self.item_keys = None if row.stripe_item_keys is None else list(json.loads(row.stripe_item_keys))

    def _save(self, session: Session, **values: Any) -> None:
        """Store this run's progress. A step never moves back: another run of the same push may have gone further
        since this one read the row (finished it, even), and what it stored stands."""
        if "step" in values:
            steps = list(SyncStep)
            step = SyncStep(values["step"])
            further = [s.value for s in steps[steps.index(step) :]]
            values["step"] = case(
                (StripeInvoiceSyncRow.step.in_(further), StripeInvoiceSyncRow.step), else_=step.value
            )
        session.execute(
            update(StripeInvoiceSyncRow)
            .where(StripeInvoiceSyncRow.invoice_id == self.invoice.id)
            .values(updated_at=utcnow(), last_error=None, **values)
        )

    def _failed(self, message: str) -> InvoiceSync:
        log.warning("Stripe push of %s stopped after step %s: %s", self.number, self.step, message)
        with session_scope(self.engine) as session:
            session.execute(
                update(StripeInvoiceSyncRow)
                .where(
                    StripeInvoiceSyncRow.invoice_id == self.invoice.id,
                    StripeInvoiceSyncRow.step != SyncStep.FINALIZED.value,  # another run finished it meanwhile
                )
                .values(last_error=message, updated_at=utcnow())
            )
        return self._result(error=message)

    def _result(self, error: str | None = None) -> InvoiceSync:
        return InvoiceSync(
            invoice_id=self.invoice.id,
            invoice_number=self.number,
            customer=self.invoice.customer_id or "",
            currency=self.invoice.currency,
            total=self.invoice.total,
            step=self.step,
            stripe_customer_id=self.stripe_customer_id,
            stripe_invoice_id=self.stripe_invoice_id,
            items=len(self.item_ids),
            error=error,
        )

    def _options(self, step: str | None = None) -> Any:
        """The request options of one step: the pinned API version and, for a step that creates or changes
        something, its idempotency key."""
        options: dict[str, str] = {"stripe_version": STRIPE_API_VERSION}
        if step is not None:
            options["idempotency_key"] = idempotency_key(self.key_prefix, self.number, step)
        return options

    # -- steps -------------------------------------------------------------------------------------------

    def _ensure_customer(self) -> None:
        external_id = self.invoice.customer_id or ""
        with session_scope(self.engine) as session:
            known = session.execute(
                select(StripeCustomerRow.stripe_customer_id).where(
                    StripeCustomerRow.customer_external_id == external_id
                )
            ).scalar_one_or_none()
        if known is None:
            party = self.invoice.customer
            params: dict[str, Any] = {"metadata": {"billing_customer_id": external_id}}
            if party.name:
                params["name"] = party.name
            if party.email:
                params["email"] = party.email
            created = self.client.v1.customers.create(params=params, options=self._options("customer"))
        with session_scope(self.engine) as session:
            if known is None:
                insert_ignoring(
                    session,
                    StripeCustomerRow.__table__,
                    {"customer_external_id": external_id, "stripe_customer_id": created.id, "created_at": utcnow()},
                )
                # The first Stripe customer stored for this customer wins, should two runs have raced.
                known = session.execute(
                    select(StripeCustomerRow.stripe_customer_id).where(
                        StripeCustomerRow.customer_external_id == external_id
                    )
                ).scalar_one()
            self._save(session, step=SyncStep.CUSTOMER.value, stripe_customer_id=known)
        self.stripe_customer_id, self.step = known, SyncStep.CUSTOMER

    def _create_invoice(self) -> None:
        invoice = self.invoice
        created = self.client.v1.invoices.create(
            params={
                "customer": self.stripe_customer_id or "",
                "currency": invoice.currency.lower(),
                "collection_method": "charge_automatically",
                "auto_advance": False,
                "pending_invoice_items_behavior": "exclude",
                "description": f"Invoice {self.number}, {invoice.period_label}",
                "metadata": {
                    "billing_invoice_number": self.number,
                    "billing_invoice_id": str(invoice.id),
                    "billing_customer_id": invoice.customer_id or "",
                },
            },
            options=self._options("invoice"),
        )
        with session_scope(self.engine) as session:
            self._save(session, step=SyncStep.INVOICE.value, stripe_invoice_id=created.id)
        self.stripe_invoice_id, self.step = created.id, SyncStep.INVOICE

    def _create_items(self, items: list[StripeItem]) -> None:
        """Create the items not created yet, found by their keys (an item of a credit applied since an earlier run
        of this push is created too); each one's Stripe id and key stored at once, beside those another run may
        have stored meanwhile (the same key makes the same item: Stripe answers it again)."""
        if self.item_keys is None:  # begun before item keys were stored: its items were the first ones, in order
            known = min(len(items), len(self.item_ids))
            self._record_items(items[:known], self.item_ids[:known])
        currency = self.invoice.currency.lower()
        for item in items:
            if item.key in (self.item_keys or ()):
                continue
            metadata = {"billing_invoice_number": self.number}
            if item.line is not None:
                metadata["billing_invoice_line"] = str(item.line)
            created = self.client.v1.invoice_items.create(
                params={
                    "customer": self.stripe_customer_id or "",
                    "invoice": self.stripe_invoice_id or "",
                    "amount": item.amount,
                    "currency": currency,
                    "description": item.description,
                    "metadata": metadata,
                },
                options=self._options(item.key),
            )
            self._record_items([item], [created.id])
        with session_scope(self.engine) as session:
            self._save(session, step=SyncStep.ITEMS.value)
        self.step = SyncStep.ITEMS

    def _record_items(self, items: list[StripeItem], stripe_ids: list[str]) -> None:
        """Store these items as created, added to what the row holds (read under its lock)."""
        with session_scope(self.engine) as session:
            statement = select(StripeInvoiceSyncRow).where(StripeInvoiceSyncRow.invoice_id == self.invoice.id)
            row = session.execute(for_update(session, statement)).scalar_one()
            keys = [] if row.stripe_item_keys is None else list(json.loads(row.stripe_item_keys))
            ids = list(json.loads(row.stripe_item_ids)) if keys else []
            for item, stripe_id in zip(items, stripe_ids, strict=True):
                if item.key not in keys:
                    keys.append(item.key)
                    ids.append(stripe_id)
            self._save(session, stripe_item_ids=json.dumps(ids), stripe_item_keys=json.dumps(keys))
        self.item_ids, self.item_keys = ids, keys

    def _finalize(self) -> None:
        stripe_invoice_id = self.stripe_invoice_id or ""
        self._check_draft(stripe_invoice_id)
        try:
            finalized = self.client.v1.invoices.finalize_invoice(
                stripe_invoice_id, params={"auto_advance": True}, options=self._options("finalize")
            )
        except stripe.InvalidRequestError:
            # Finalized by an earlier attempt whose key Stripe no longer remembers? Then the push is done.
            finalized = self.client.v1.invoices.retrieve(stripe_invoice_id, options=self._options())
            if finalized.status in (None, "draft"):
                raise
        hosted = getattr(finalized, "hosted_invoice_url", None)
        with session_scope(self.engine) as session:
            self._save(
                session, step=SyncStep.FINALIZED.value, synced_at=utcnow(), hosted_invoice_url=hosted or None
            )
        self.step = SyncStep.FINALIZED

    def _check_draft(self, stripe_invoice_id: str) -> None:
        """Before Stripe collects, its draft must ask exactly what is due here now. The items of a credit applied
        since this run read the invoice (a credit note issued meanwhile, pushed or not by another run at once) are
        created first, under their keys (another run's item is answered again); anything else that differs (a
        payment recorded since, a void) raises ValueError: the push stops there, reported, rather than collect the
        wrong amount."""
        found = self.client.v1.invoices.retrieve(stripe_invoice_id, options=self._options())
        if found.status != "draft":
            return  # finalized by an earlier attempt whose answer was lost
        with session_scope(self.engine) as session:
            current = with_credits(session, [get_invoice(session, self.invoice_id)])[0]
        items = stripe_items(current)
        if any(item.key not in (self.item_keys or ()) for item in items):
            self._create_items(items)
            found = self.client.v1.invoices.retrieve(stripe_invoice_id, options=self._options())
        due = to_stripe(current.amount_due, current.currency)
        if current.status is not InvoiceStatus.FINALIZED or found.amount_due != due:
            raise ValueError(
                f"{self.number}: the Stripe invoice {stripe_invoice_id} asks {found.amount_due} minor units and "
                f"{due} are due here ({current.status}): not finalized (correct or delete the draft in Stripe)"
            )

