"""Invoice operations the CLI, the HTTP API and the scheduler share: each its own transaction, errors as
BillingInputError (ConflictError when the invoice's status does not allow the change); a subscription's
opening invoice, written when it is created and finalized once it has started; and the rules of when a period
may be billed and issued.

When (one rule for the CLI, the API and the scheduler; the clock is read here, ``now`` overrides it):

- a billing run bills a period that has begun (somewhere on earth): a past one, or the current one as drafts (a
  preview); never one to come (``check_period_begun``);
- an issued invoice cannot be changed, so a period invoice is issued once its period has ended in its
  customer's timezone; ``allow_open_period`` issues the current period (begun, not ended) early, never a period
  that has not begun (``check_period_can_close``); an opening invoice bills in advance and is issued once its
  subscription has started.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from billing import credits, payments
from billing.approval import ApprovalPolicy, check_approved, issuable
from billing.config import Settings, get_settings
from billing.core.compose import compose_opening_invoice
from billing.core.domain import Customer, Subscription
from billing.core.fees import given_back_elsewhere, opening_fee_period
from billing.core.overrides import fee_anchor, negotiate
from billing.core.periods import Period, PeriodState, has_begun_anywhere, period_state
from billing.db import coupon_tables, override_tables, repository, session_scope
from billing.db.stripe_tables import StripeInvoiceSyncRow
from billing.errors import BillingInputError, ConflictError, NotFoundError
from billing.notify.outbox import queue_invoice_finalized, queue_invoices_finalized
from dbkit import as_utc, read_only, utcnow
from invoices import store
from invoices.errors import InvoiceNotFoundError, InvoiceStateError
from invoices.model import (
    ALLOWED_TRANSITIONS,
    Invoice,
    InvoiceKind,
    InvoiceScope,
    InvoiceStatus,
    LineKind,
    Party,
    PaymentInstructions,
)
from pricing_plans.errors import UnknownPlanError
from pricing_plans.models import Catalog, Plan
from pricing_plans.money import ZERO, Rounding, round_money

__all__ = [
    "OpenPeriodError",
    "OpeningReport",
    "PaymentState",
    "PeriodNotBegunError",
    "check_draft_can_issue",
    "check_meters_charged_once",
    "check_period_begun",
    "check_period_can_close",
    "check_period_finalizable",
    "clock",
    "create_credit_note",
    "drop_opening_draft",
    "earlier_drafts",
    "finalize_invoice",
    "finalize_opening_invoices",
    "finalize_settings",
    "get_invoice",
    "invoice_actions",
    "invoices_page",
    "issue_day",
    "list_invoices",
    "payment_state",
    "printable",
    "refresh_opening_drafts",
    "set_invoice_status",
    "waits_for_earlier",
    "write_opening_invoice",
]


def finalize_settings(settings: Settings | None = None) -> store.FinalizeSettings:
    """How issued documents are numbered and dated, from the configuration: formats, terms and the seller."""
    settings = settings or get_settings()
    seller = settings.seller
    return store.FinalizeSettings(
        invoice_number_format=settings.invoice_number_format,
        credit_note_number_format=settings.credit_note_number_format,
        payment_terms_days=settings.payment_terms_days,
        seller=Party(name=seller.name, address=tuple(seller.address), email=seller.email, tax_id=seller.tax_id),
    )


def printable(engine: Engine, invoice: Invoice, settings: Settings | None = None) -> Invoice:
    """The invoice as it is printed for its customer, with how to pay it: the bank account and the reference
    to quote from ``[payment_instructions]`` (read when printing, so a reprint shows the account in force), and
    the page where it can be paid online (Stripe's hosted invoice page, once the push records it)."""
    settings = settings or get_settings()
    config = settings.payment_instructions
    number = invoice.number or ""
    payment = PaymentInstructions(
        bank_name=config.bank_name,
        account_holder=config.account_holder or (settings.seller.name if config.iban else None),
        iban=config.iban,
        bic=config.bic,
        reference=config.reference_for(number, invoice.customer_id or "") if number else None,
        pay_online_url=_pay_online_url(engine, invoice),
    )
    return replace(invoice, payment=payment)


def _pay_online_url(engine: Engine, invoice: Invoice) -> str | None:
    """Stripe's hosted page of a pushed invoice (recorded when the push finalized it there), while something is
    still to pay; none for an invoice never pushed, paid or void."""
    if invoice.id is None or invoice.status is not InvoiceStatus.FINALIZED:
        return None
    with read_only(engine).connect() as connection:
        return connection.execute(
            select(StripeInvoiceSyncRow.hosted_invoice_url).where(StripeInvoiceSyncRow.invoice_id == invoice.id)
        ).scalar_one_or_none()


def get_invoice(engine: Engine, key: str | int) -> Invoice:
    """An invoice by id, number or billing key."""
    with session_scope(engine) as session:
        try:
            return credits.with_credits(session, [store.get_invoice(session, key)])[0]
        except InvoiceNotFoundError as error:
            raise NotFoundError(str(error)) from None


def list_invoices(engine: Engine, **filters: object) -> list[Invoice]:
    """Invoices, oldest first, filtered as ``store.list_invoices`` filters, with their credits and payments;
    ``unpaid=True``: the finalized invoices with an amount due."""
    with session_scope(engine) as session:
        found = credits.with_credits(session, store.list_invoices(session, **filters))  # type: ignore[arg-type]
    return [i for i in found if i.amount_due > 0] if filters.get("unpaid") else found


class PaymentState(StrEnum):
    """Where an issued document stands for its customer (``payment_state``)."""

    CREDIT_NOTE = "credit_note"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"
    PAID = "paid"
    OVERDUE = "overdue"
    PARTLY_PAID = "partly_paid"
    OPEN = "open"


def payment_state(invoice: Invoice, today: dt.date) -> PaymentState:
    """An issued invoice's payment state on ``today`` (the customer's own date): a credit note, void or
    uncollectible as its status says; paid once nothing is due (paid, or settled by credits and payments);
    overdue the day after its due date while something is due; partly paid once a payment or credit paid part of
    it; else open."""
    if invoice.kind is InvoiceKind.CREDIT_NOTE:
        return PaymentState.CREDIT_NOTE
    if invoice.status in (InvoiceStatus.VOID, InvoiceStatus.UNCOLLECTIBLE):
        return PaymentState(invoice.status.value)
    if invoice.status is InvoiceStatus.PAID or invoice.amount_due <= 0:
        return PaymentState.PAID
    if invoice.due_date is not None and invoice.due_date < today:
        return PaymentState.OVERDUE
    if invoice.amount_paid > 0 or any(c.amount for c in invoice.credits_applied):
        return PaymentState.PARTLY_PAID
    return PaymentState.OPEN


def invoices_page(
    engine: Engine,
    *,
    limit: int,
    after: int | None = None,
    before: int | None = None,
    customer: str | None = None,
    period_start: dt.date | None = None,
    status: InvoiceStatus | str | None = None,
    unpaid: bool = False,
) -> tuple[list[Invoice], bool]:
    """At most ``limit`` invoices and credit notes by id (without their lines, with their credits and payments),
    after ``after`` or right before ``before``, filtered by customer, period and status (``unpaid``: finalized
    invoices with an amount due); and whether more lie that way."""
    found: list[Invoice] = []
    with session_scope(read_only(engine)) as session:
        while True:  # finalized invoices that credits paid in full are not unpaid: pages are read until one is full
            page, more = store.invoices_page(
                session, limit=limit, after=after, before=before, customer=customer, period_start=period_start,
                status=status, unpaid=unpaid,
            )
            page = credits.with_credits(session, page)
            kept = [i for i in page if i.amount_due > 0] if unpaid else page
            found = found + kept if before is None else kept + found
            if len(found) >= limit or not more or not page:
                break
            after, before = (page[-1].id, None) if before is None else (None, page[0].id)
    if len(found) > limit:
        found, more = (found[:limit], True) if before is None else (found[-limit:], True)
    return found, more


def finalize_invoice(
    engine: Engine,
    key: str | int,
    settings: store.FinalizeSettings,
    today: dt.date,
    *,
    now: dt.datetime | None = None,
    allow_open_period: bool = False,
    approval: ApprovalPolicy | None = None,
) -> Invoice:
    """Finalize one draft: a period invoice once its period has ended in its customer's timezone (or, with
    ``allow_open_period``, during it), an opening invoice once its subscription has started. With an
    ``approval`` policy, a draft that waits for approval is refused (``ApprovalRequiredError``)."""
    instant = clock(now)
    with session_scope(engine) as session:
        try:
            invoice = store.get_invoice(session, key)
            if invoice.status == InvoiceStatus.DRAFT:
                _check_can_issue(session, invoice, instant, allow_open_period)
                earlier = earlier_drafts(session, [invoice.id]).get(invoice.id)
                if earlier is not None:
                    raise ConflictError(f"{waits_for_earlier(invoice, earlier)}; nothing was finalized")
                if approval is not None:
                    # the customer before the draft, as every writer of both takes them (finalizing, a
                    # subscription's cancellation by a Stripe webhook): never two waiting for each other in a circle
                    repository.lock_customers(session, [invoice.customer_id or ""])
                    store.lock_invoice(session, invoice.id)
                    check_approved(session, invoice.id, approval)
            credits.finalize_with_credits(session, [invoice.id], settings, today, instant)
            issued = credits.with_credits(session, [store.get_invoice(session, invoice.id)])[0]
            queue_invoice_finalized(session, issued)
            return issued
        except InvoiceNotFoundError as error:
            raise NotFoundError(str(error)) from None
        except InvoiceStateError as error:
            raise ConflictError(str(error)) from None


def invoice_actions(invoice: Invoice) -> frozenset[str]:
    """What can be done to ``invoice`` now, as the services that do it decide (a page offers these and no other):
    ``finalize`` a draft; record a ``payment`` on an invoice that is owed (finalized or uncollectible:
    ``payments.record_payment``); issue a ``credit_note`` against an issued invoice that is not void
    (``create_credit_note``); ``void`` an invoice whose status allows it and that has no payment
    (``set_invoice_status``, ``payments.check_can_void``). A credit note takes none of these."""
    if invoice.kind is not InvoiceKind.INVOICE:
        return frozenset()
    if invoice.status is InvoiceStatus.DRAFT:
        return frozenset({"finalize"})
    found = set()
    if invoice.status in (InvoiceStatus.FINALIZED, InvoiceStatus.UNCOLLECTIBLE):
        found.add("payment")
    if invoice.status is not InvoiceStatus.VOID:
        found.add("credit_note")
    if InvoiceStatus.VOID in ALLOWED_TRANSITIONS[invoice.status] and invoice.amount_paid == 0:
        found.add("void")
    return frozenset(found)


def set_invoice_status(engine: Engine, key: str | int, status: InvoiceStatus) -> Invoice:
    """Move an issued invoice on (paid, void, uncollectible). A void gives back the credits applied to it and
    takes back the balance it or its credit notes put on the customer's account (refused, ConflictError, if that
    balance has already paid other invoices: ``credits.invoice_voided``)."""
    with session_scope(engine) as session:
        try:
            invoice = store.get_invoice(session, key)
            if invoice.kind is InvoiceKind.CREDIT_NOTE:  # (its amounts are booked and counted as issued, for good)
                raise ConflictError(
                    f"{invoice.number} is a credit note: it stays as issued (it cannot be {status.value}); to undo "
                    "it, void the invoice it credits"
                )
            if status is InvoiceStatus.VOID:
                # the customer first, then the invoice, as a credit note and a payment take them (a void then a
                # credit note at once deadlocked on PostgreSQL: each held the lock the other waited for)
                credits.lock_owners(session, [invoice.id])
                store.lock_invoice(session, invoice.id)
                payments.check_can_void(session, invoice.id)
            changed = store.set_status(session, invoice.id, status)
            if status is InvoiceStatus.VOID and invoice.status is not InvoiceStatus.VOID:
                credits.invoice_voided(session, changed, clock())
            return changed
        except InvoiceNotFoundError as error:
            raise NotFoundError(str(error)) from None
        except InvoiceStateError as error:
            raise ConflictError(str(error)) from None


def create_credit_note(
    engine: Engine,
    number: str,
    amount: Decimal,
    reason: str,
    settings: store.FinalizeSettings,
    today: dt.date,
    *,
    to_balance: bool = False,
    now: dt.datetime | None = None,
    rounding: Rounding = Rounding.HALF_UP,
    catalog: Catalog | None = None,
) -> Invoice:
    """A credit note against an issued invoice. It reduces first what the invoice still has to be paid; then,
    with ``to_balance``, what was paid in cash goes to the customer's balance (a ledger entry the next invoices
    use); the credits that paid the invoice go back to their grants (``credits.credit_note_issued``). ``rounding``:
    the catalog's, which splits the note into net and tax per rate as the invoices were rounded; ``catalog``, when
    given, sets it and tells which plans' prices hold the tax, for what later invoices gave back of the invoice's
    fees (``_fees_given_back``)."""
    instant = clock(now)
    with session_scope(engine) as session:
        try:
            invoice = store.get_invoice(session, number)
            # the customer's row before the note's number sequence, as every writer of both takes them
            repository.get_customer(session, invoice.customer_id or "", for_update=True)
            if catalog is not None:
                rounding = catalog.rounding
            given_back = _fees_given_back(session, invoice, rounding, catalog)
            note = store.create_credit_note(
                session, number, amount, reason, settings, today, rounding, given_back=given_back, now=instant
            )
            credits.credit_note_issued(session, invoice, note, to_balance=to_balance, now=instant, settings=settings)
            return note
        except ConflictError:
            raise
        except InvoiceNotFoundError as error:
            raise NotFoundError(str(error)) from None
        except InvoiceStateError as error:
            raise ConflictError(str(error)) from None
        except ValueError as error:
            raise BillingInputError(str(error)) from None


def _fees_given_back(session: Session, invoice: Invoice, rounding: Rounding, catalog: Catalog | None) -> Decimal:
    """What later issued invoices gave back, tax included, of the subscription fees ``invoice`` billed
    (``fees.given_back_elsewhere``). A draft that gives some back is a conflict: once issued it may give back less
    for the note (the run counts notes), or, issued as it stands, more than the note leaves."""
    keys = {
        (line.subscription_id, line.service_start)
        for line in invoice.lines
        if line.kind is LineKind.SUBSCRIPTION and line.subscription_id and line.service_start and line.amount > 0
    }
    if invoice.kind is not InvoiceKind.INVOICE or not keys:
        return ZERO
    others = [found for found, _ in store.fee_invoices(session, keys) if found.id != invoice.id]
    for other in others:
        refunds = [line for line in other.lines if line.kind is LineKind.SUBSCRIPTION and line.amount < 0]
        if other.status is InvoiceStatus.DRAFT and any((r.subscription_id, r.service_start) in keys for r in refunds):
            raise ConflictError(
                f"{invoice.number}: the draft {other.billing_key} gives back part of a fee it billed; finalize that "
                "draft first, then credit what is left"
            )
    inclusive = None if catalog is None else {
        (plan.code, plan.version) for versions in catalog.plans.values() for plan in versions if plan.tax_inclusive
    }
    return round_money(given_back_elsewhere(invoice, others, inclusive), invoice.currency, rounding)


# -- when a period may be billed and issued --------------------------------------------------------------------


class PeriodNotBegunError(BillingInputError):
    """A billing run or a finalization of a period whose first day has not begun anywhere."""


class OpenPeriodError(BillingInputError):
    """A finalization of invoices whose period has not ended in their customer's timezone (or, for an opening
    invoice, whose subscription has not started); nothing was finalized. ``allowable``: the period is the current
    one for every customer named, which ``allow_open_period`` would let through."""

    def __init__(self, message: str, *, allowable: bool) -> None:
        super().__init__(message)
        self.allowable = allowable


def clock(now: dt.datetime | None = None) -> dt.datetime:
    """``now`` as an aware UTC instant; the clock's when None (the one place the rules below read it)."""
    return as_utc(now) if now is not None else utcnow()


def issue_day(now: dt.datetime | None = None) -> dt.date:
    """The day an action by hand (the CLI, the API, the console) issues a document on: the UTC date at ``now``
    (default: the clock), whatever the host's own timezone; the scheduler issues on each customer's own date."""
    return clock(now).date()


def check_period_begun(period: Period, now: dt.datetime | None = None, *, action: str = "a billing run") -> None:
    """Refuse ``period`` if its first day has not begun anywhere yet: nothing is billed for a period to come."""
    if not has_begun_anywhere(period, clock(now)):
        raise PeriodNotBegunError(
            f"period {period.label} has not begun: its first day is {period.start.isoformat()}; {action} takes a "
            "past period, or the current one, never a period to come"
        )


def check_period_can_close(
    period: Period,
    timezones: Mapping[str, str],
    *,
    now: dt.datetime | None = None,
    allow_open_period: bool = False,
) -> None:
    """Refuse to issue the period invoices of ``period`` of these customers (external id → timezone) unless the
    period has ended for each in its timezone. ``allow_open_period`` lets the current period through (begun, not
    ended); a period that has not begun for one of them never is."""
    instant = clock(now)
    check_period_begun(period, instant, action="finalizing")
    states = {customer: period_state(period, zone, instant) for customer, zone in timezones.items()}
    future = sorted(c for c, state in states.items() if state is PeriodState.FUTURE)
    if future:
        raise OpenPeriodError(
            f"period {period.label} has not begun for {_named(future, timezones)} (it begins on "
            f"{period.start.isoformat()} in the customer's timezone): an invoice is never issued for a period to "
            "come; nothing was finalized",
            allowable=False,
        )
    still_open = sorted(c for c, state in states.items() if state is PeriodState.OPEN)
    if still_open and not allow_open_period:
        last_day = period.end - dt.timedelta(days=1)
        raise OpenPeriodError(
            f"period {period.label} has not ended for {_named(still_open, timezones)} (its last day is "
            f"{last_day.isoformat()} in the customer's timezone): an issued invoice cannot be changed, so it is "
            f"issued once its period has ended, from {period.end.isoformat()}; nothing was finalized",
            allowable=True,
        )


def check_period_finalizable(
    engine: Engine,
    period: Period,
    *,
    customer: str | None = None,
    now: dt.datetime | None = None,
    allow_open_period: bool = False,
) -> None:
    """``check_period_can_close`` for the customers a billing run of ``period`` bills (those with a subscription
    in it, or a draft of it; only ``customer``, if given): a run asked to finalize is refused before it writes
    anything."""
    instant = clock(now)
    check_period_begun(period, instant, action="finalizing")
    with session_scope(read_only(engine)) as session:
        billed = {
            s.customer_external_id for s in repository.subscriptions_active_between(session, period.start, period.end)
        }
        billed |= store.customers_with_drafts(session, period.start, InvoiceScope.PERIOD, ending_by=period.end)
        if customer is not None:
            billed &= {customer}
        owners = repository.customers_by_external_id(session, billed)
    zones = {c: owners[c].timezone if c in owners else "UTC" for c in billed}
    check_period_can_close(period, zones, now=instant, allow_open_period=allow_open_period)


def _named(customers: list[str], timezones: Mapping[str, str], shown: int = 5) -> str:
    """``customer acme (Europe/Berlin)``, or ``3 customers: a (UTC), b (UTC), c (Asia/Tokyo)`` (the first few)."""
    listed = ", ".join(f"{c} ({timezones[c]})" for c in customers[:shown])
    if len(customers) > shown:
        listed += f" and {len(customers) - shown} more"
    return f"customer {listed}" if len(customers) == 1 else f"{len(customers)} customers: {listed}"


def check_draft_can_issue(
    engine: Engine, invoice: Invoice, *, now: dt.datetime | None = None, allow_open_period: bool = False
) -> None:
    """``finalize_invoice``'s rules for one draft, checked before anything is written: its period has ended in its
    customer's timezone (a period invoice; ``allow_open_period``: the current one too), its subscription has
    started (an opening invoice). ``OpenPeriodError`` otherwise."""
    with session_scope(read_only(engine)) as session:
        _check_can_issue(session, invoice, clock(now), allow_open_period)


def _check_can_issue(session: Session, invoice: Invoice, instant: dt.datetime, allow_open_period: bool) -> None:
    """The rules above for one draft: its period (a period invoice), its subscription's start (an opening one)."""
    owner = repository.get_customer(session, invoice.customer_id or "")
    zone = owner.timezone if owner is not None else "UTC"
    if invoice.scope is InvoiceScope.OPENING and invoice.subscription_id is not None:
        subscription = repository.get_subscription(session, invoice.subscription_id)
        if subscription is not None and owner is not None and subscription.start_date > _local_today(owner, instant):
            raise OpenPeriodError(
                f"invoice {invoice.id} is the opening invoice of subscription {subscription.id}, which starts on "
                f"{subscription.start_date.isoformat()} ({zone}): it is issued once the subscription has started; "
                "nothing was finalized",
                allowable=False,
            )
    elif invoice.scope is InvoiceScope.PERIOD:
        period = Period(invoice.period_start, invoice.period_end)
        check_period_can_close(
            period, {invoice.customer_id or "": zone}, now=instant, allow_open_period=allow_open_period
        )


def earlier_drafts(
    session: Session, invoice_ids: Sequence[int], *, issued_along: Collection[int] | None = None
) -> dict[int, store.EarlierDraft]:
    """The earlier unissued draft each period draft among ``invoice_ids`` waits for (``store.earlier_drafts``:
    one billing a fee period it bills too, or any, for a customer holding a coupon)."""

    def holders(customers: Collection[str]) -> set[str]:
        return {c.customer for c in coupon_tables.customer_coupons(session, customers) if c.applied_on is not None}

    return store.earlier_drafts(session, invoice_ids, issued_along=issued_along, coupon_holders=holders)


def waits_for_earlier(draft: Invoice, earlier: store.EarlierDraft) -> str:
    """Why ``draft`` is not issued before ``earlier``, and what to do."""
    last, earlier_last = draft.period_end - dt.timedelta(days=1), earlier.period_end - dt.timedelta(days=1)
    return (
        f"invoice {draft.id} ({draft.period_start.isoformat()} to {last.isoformat()}) waits for the customer's "
        f"earlier draft, invoice {earlier.invoice_id} ({earlier.period_start.isoformat()} to "
        f"{earlier_last.isoformat()}): a later invoice adjusts against what earlier ones bill, so they are issued "
        f"in the order of their periods; finalize invoice {earlier.invoice_id} first"
    )


# -- opening invoices ------------------------------------------------------------------------------------------


def write_opening_invoice(
    session: Session,
    catalog: Catalog,
    customer: Customer,
    subscription: Subscription,
    plan: Plan,
    *,
    only_draft: bool = False,
) -> store.DraftOutcome | None:
    """Write (or refresh) the subscription's opening invoice — its first in-advance fee, prorated from its start —
    as a draft under ``start:<subscription id>``, in the caller's transaction: the billing run composes the same
    invoice under the same key and so finds it unchanged. Nothing for a plan without an in-advance fee; an issued
    opening invoice is left alone. ``only_draft``: refresh a stored draft, never create one."""
    draft = compose_opening_invoice(customer, subscription, plan, catalog, get_settings().tax_rules())
    if draft is None:
        return None
    if only_draft:
        stored = store.stored_drafts(session, [draft.billing_key]).get(draft.billing_key)
        if stored is None or stored.status != InvoiceStatus.DRAFT.value:
            return None
    return store.upsert_draft(session, draft)


def opening_plan(session: Session, catalog: Catalog, subscription: Subscription) -> Plan:
    """The plan pricing a subscription's opening invoice: its plan version with the negotiated price in force for
    its first fee period, if any. UnknownPlanError for a plan the catalog lacks or an override that no longer
    applies to it."""
    plan = catalog.plan(subscription.plan_code, subscription.plan_version)
    versions = override_tables.overrides_of(session, [subscription.id]).get(subscription.id)
    if not versions:
        return plan
    negotiated, problems = negotiate(plan, versions, catalog)
    if problems:
        detail = "; ".join(map(str, problems))
        raise UnknownPlanError(f"its negotiated price no longer applies to the catalog: {detail}")
    return negotiated.plan_on(fee_anchor(subscription, plan, opening_fee_period(subscription, plan)))


def check_meters_charged_once(
    session: Session,
    catalog: Catalog,
    subscription: Subscription,
    meters: set[str],
    *,
    ignore: int | None = None,
) -> None:
    """Every usage event of a customer is billed by each of its subscriptions whose plan charges the event's meter:
    two subscriptions sharing a day must not charge one meter, or its events would be billed twice. ConflictError
    when another subscription of ``subscription``'s customer (``ignore`` aside) covering one of its days charges
    one of ``meters`` — with its plan version or any of its negotiated prices."""
    if not meters:
        return
    others = [
        other
        for other in repository.subscriptions_of_customers(session, [subscription.customer_external_id])
        if other.id not in (subscription.id, ignore) and other.overlaps(subscription.start_date, subscription.end_date)
    ]
    versions = override_tables.overrides_of(session, [other.id for other in others])
    for other in others:
        try:
            plan = catalog.plan(other.plan_code, other.plan_version)
        except UnknownPlanError:
            continue  # (the run reports the unknown plan; it bills nothing of it)
        negotiated, _ = negotiate(plan, versions.get(other.id, ()), catalog)
        charged = {charge.meter for own in (plan, *(p for _, p in negotiated.versions)) for charge in own.charges}
        shared = sorted(meters & charged)
        if shared:
            until = f"until {other.end_date.isoformat()}" if other.end_date else "open-ended"
            raise ConflictError(
                f"meter: subscription {other.id} of customer {subscription.customer_external_id!r} (plan "
                f"{other.plan_code!r}, from {other.start_date.isoformat()}, {until}) charges {', '.join(shared)} on "
                "the same days: each event would be billed twice (a meter is charged by one subscription at a time)"
            )


def drop_opening_draft(session: Session, subscription_id: int) -> bool:
    """Delete the subscription's opening invoice if it is still a draft (one without a number: nothing is lost);
    whether there was one."""
    return store.delete_opening_draft(session, subscription_id)


@dataclass
class OpeningReport:
    """What ``finalize_opening_invoices`` did: the numbers issued, the drafts dropped (of subscriptions that cover
    no day) by subscription id, the drafts left as they are, with why, and those waiting for approval."""

    finalized: list[str] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    held: list[int] = field(default_factory=list)  # drafts (by id) waiting for approval


def finalize_opening_invoices(
    engine: Engine,
    catalog: Catalog,
    settings: store.FinalizeSettings,
    *,
    now: dt.datetime | None = None,
    customer: str | None = None,
    approval: ApprovalPolicy | None = None,
) -> OpeningReport:
    """Finalize the opening invoices of the subscriptions that have started (start date on or before today in the
    customer's timezone, which is also the issue date), in customer order, each in its own transaction with its
    ``invoice.finalized`` notification queued.

    Each draft is composed again first from the subscription as it is now, so that a cancellation or a plan change
    made since it was written counts; the draft of a subscription that covers no day is dropped. One whose plan
    version is no longer in the catalog is left as a draft and reported; with an ``approval`` policy, one that
    waits for approval (after that refresh) stays a draft."""
    report = OpeningReport()
    instant = as_utc(now or utcnow())
    due: list[int] = []
    with session_scope(read_only(engine)) as session:
        drafts = store.opening_drafts(session, customer)
        subscriptions = [repository.get_subscription(session, draft.subscription_id) for draft in drafts]
        owners = repository.customers_by_external_id(
            session, {s.customer_external_id for s in subscriptions if s is not None}
        )
        for draft, subscription in zip(drafts, subscriptions, strict=True):
            owner = None if subscription is None else owners.get(subscription.customer_external_id)
            if subscription is None or owner is None:
                report.skipped.append(("", f"{draft.billing_key}: no such subscription"))
            elif subscription.start_date <= _local_today(owner, instant):
                due.append(subscription.id)
    for subscription_id in due:
        with session_scope(engine) as session:
            _finalize_opening(session, catalog, settings, subscription_id, instant, report, approval)
    return report


def refresh_opening_drafts(engine: Engine, catalog: Catalog, subscription_ids: Iterable[int]) -> OpeningReport:
    """Compose the opening drafts of these subscriptions again from the subscriptions and customers as they are now,
    each in its own transaction, as ``finalize_opening_invoices`` does before it issues one (a customer's tax rate
    changed since, a cancellation made without the catalog): the drafts dropped (a subscription that covers no day,
    or no fee in advance any more) and those left as they are (a plan version gone from the catalog), with why."""
    report = OpeningReport()
    for subscription_id in subscription_ids:
        with session_scope(engine) as session:
            _rewrite_opening(session, catalog, subscription_id, report)
    return report


def _finalize_opening(
    session: Session,
    catalog: Catalog,
    settings: store.FinalizeSettings,
    subscription_id: int,
    instant: dt.datetime,
    report: OpeningReport,
    approval: ApprovalPolicy | None = None,
) -> None:
    rewritten = _rewrite_opening(session, catalog, subscription_id, report)
    if rewritten is None:
        return
    owner, invoice_id = rewritten
    if approval is not None and not issuable(session, [invoice_id], approval):
        report.held.append(invoice_id)
        return
    report.finalized += credits.finalize_with_credits(
        session, [invoice_id], settings, _local_today(owner, instant), instant
    )
    # In the same transaction: an invoice is issued if and only if its e-mail and webhook are queued.
    queue_invoices_finalized(session, credits.with_credits(session, store.get_invoices(session, [invoice_id])))


def _rewrite_opening(
    session: Session, catalog: Catalog, subscription_id: int, report: OpeningReport
) -> tuple[Customer, int] | None:
    """The subscription's opening draft written again (its customer and subscription locked): its owner and id, or
    None when there is no draft to issue (dropped, issued meanwhile, its plan gone: recorded in ``report``)."""
    found = repository.get_subscription(session, subscription_id)
    assert found is not None  # subscriptions are never deleted
    # the customer before the subscription and its draft, as every writer of them takes them (a Stripe webhook's
    # cancellation, a plan change): never two waiting for each other in a circle
    repository.lock_customers(session, [found.customer_external_id])
    subscription = repository.get_subscription(session, subscription_id, for_update=True)
    assert subscription is not None
    owner = repository.get_customer(session, subscription.customer_external_id)
    assert owner is not None
    if not subscription.overlaps(subscription.start_date, None):
        if drop_opening_draft(session, subscription.id):
            report.dropped.append(subscription.id)
        return None
    try:
        plan = opening_plan(session, catalog, subscription)
    except UnknownPlanError as error:
        report.skipped.append((owner.external_id, f"subscription {subscription.id}: {error}"))
        return None
    outcome = write_opening_invoice(session, catalog, owner, subscription, plan, only_draft=True)
    if outcome is None:  # no fee to bill in advance any more, or issued meanwhile by someone else
        if drop_opening_draft(session, subscription.id):
            report.dropped.append(subscription.id)
        return None
    return None if outcome.action == "issued" else (owner, outcome.invoice_id)


def _local_today(customer: Customer, instant: dt.datetime) -> dt.date:
    return instant.astimezone(ZoneInfo(customer.timezone)).date()
