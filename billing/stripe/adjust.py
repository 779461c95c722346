"""Carrying to Stripe what happens to an invoice here after its push (``billing stripe sync`` runs it after the
pushes, and so does the scheduler's ``stripe_sync`` job):

- a **void**: the Stripe invoice is voided (``POST /v1/invoices/{id}/void``), so that Stripe stops collecting it;
  one whose push had not finished is voided too if Stripe finalized it, or deleted while it is a draft. If Stripe
  has collected it already, nothing is voided (``paid``): the ``invoice.paid`` webhook records the money, which
  goes to the customer's balance here, and the invoice stays void. A credit note of an invoice void here is not
  carried (the void is).
- a **credit note** that took part of an unpaid invoice's amount due here (step 1 of
  ``billing.credits.credit_note_issued``) after the push carried that invoice's credits: a Stripe credit note of
  the same amount, in the mode the Stripe invoice called for when it was first tried — ``pre_payment`` while it is
  open (Stripe then collects that much less), ``out_of_band`` once it is paid (Stripe records the note; what it
  collected beyond what is due here is on the customer's balance here). The mode is stored before the request
  (set once: two runs at once send the same request), so that a retry after a lost answer sends the same request
  under the same idempotency key; a retry first looks among the Stripe invoice's credit notes for one made by an
  earlier attempt (``metadata[billing_credit_note_number]``): Stripe forgets keys after a day.

A note that took nothing off the amount due (its invoice was paid here already, or it refunds what was paid) moves
no money Stripe holds: the engine refunds to the customer's balance or leaves the refund to the finance team, in
Stripe if that is where it was paid.

A note is in the push already when its credit is one of the push's items (``credit:<grant id>``, recorded by key
as each item is created, whichever run creates it). Idempotency keys, from the push's stored key prefix (this
installation's id for a push begun before there was one): ``<prefix>:INV-2026-000001:void`` and
``<prefix>:CN-2026-000001:credit_note`` (``…:credit_note:out_of_band``; after Stripe refused one, ``…:2``,
``…:3``: Stripe answers a refused key with the same refusal for a day; a void likewise, ``…:void:2``). Stripe
refusing a request (its state does not allow it) is reported on the invoice's or the note's row (``last_error``)
and tried again at the next run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import stripe
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from billing.credits import note_reductions
from billing.db import session_scope
from billing.db.stripe_tables import StripeCreditNoteRow, StripeInvoiceSyncRow
from billing.stripe import STRIPE_API_VERSION, describe_error
from billing.stripe.amounts import collectable, to_stripe
from dbkit import insert_ignoring, read_only, utcnow
from invoices import store
from invoices.store import IssuedNote

__all__ = ["Adjustment", "sync_adjustments"]

log = logging.getLogger(__name__)

PRE_PAYMENT = "pre_payment"
OUT_OF_BAND = "out_of_band"


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A void or a credit note carried to Stripe (or tried).

    Attributes:
      kind: ``void`` or ``credit_note``.
      document: our invoice's number (a void) or the credit note's.
      invoice_number: the invoice it concerns.
      stripe_invoice_id: the Stripe invoice.
      currency: the invoice's currency.
      amount: what a credit note took off the amount due, carried to Stripe (None for a void).
      outcome: ``voided`` or ``paid`` (a void), ``pre_payment`` or ``out_of_band`` (a credit note); None on error.
      stripe_credit_note_id: the Stripe credit note made.
      error: why it was not carried this time.
    """

    kind: str
    document: str
    invoice_number: str
    stripe_invoice_id: str
    currency: str
    amount: Decimal | None = None
    outcome: str | None = None
    stripe_credit_note_id: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class _Pushed:
    """An invoice whose push created its Stripe invoice (finalized there, or not yet)."""

    invoice_id: int
    number: str
    stripe_invoice_id: str
    key_prefix: str  # the push's, or this installation's id for a push begun before there was one
    finalized: bool
    synced_at: Any
    pushed_credits: frozenset[int] | None  # None: a push begun before its items' keys were stored
    voided: bool
    currency: str
    void_refusals: int = 0


def sync_adjustments(engine: Engine, client: stripe.StripeClient, installation: str) -> tuple[Adjustment, ...]:
    """Carry to Stripe every void of an invoice whose Stripe invoice exists, and every credit note of a pushed
    invoice, not carried yet (see the module's note); ``installation``: this installation's id (the keys' prefix
    of a push begun before there was one)."""
    with session_scope(read_only(engine)) as session:
        pushed = _pushed(session, installation)
        void = store.void_among(session, [p.invoice_id for p in pushed.values() if not p.voided])
        void_here = void | {p.invoice_id for p in pushed.values() if p.voided}
        carried = set(
            session.scalars(
                select(StripeCreditNoteRow.credit_note_id).where(StripeCreditNoteRow.synced_at.is_not(None))
            )
        )
        finalized = [p.invoice_id for p in pushed.values() if p.finalized and p.invoice_id not in void_here]
        notes = [note for note in store.credit_notes_of(session, finalized) if note.id not in carried]
        reductions = note_reductions(session, [note.id for note in notes])
    results = [_guarded(engine, client, pushed[invoice_id], None, None) for invoice_id in sorted(void)]
    for note in notes:
        reduction = reductions.get(note.id)
        if reduction is not None and _after_push(note, reduction[0], pushed[note.invoice_id]):
            results.append(_guarded(engine, client, pushed[note.invoice_id], note, reduction[1]))
    return tuple(results)


def _pushed(session: Session, installation: str) -> dict[int, _Pushed]:
    """Every invoice whose Stripe invoice was created, by id."""
    rows = session.scalars(
        select(StripeInvoiceSyncRow).where(StripeInvoiceSyncRow.stripe_invoice_id.is_not(None))
    ).all()
    currencies = store.invoice_currencies(session, [row.invoice_id for row in rows])
    return {
        row.invoice_id: _Pushed(
            row.invoice_id, row.invoice_number, row.stripe_invoice_id or "", row.key_prefix or installation,
            row.step == "finalized", row.synced_at, _credits_in(row.stripe_item_keys), row.voided_at is not None,
            currencies.get(row.invoice_id, ""), row.void_refusals,
        )
        for row in rows
    }


def _credits_in(item_keys: str | None) -> frozenset[int] | None:
    """The credit grants whose application the push's items took off the amount due (``credit:<grant id>``)."""
    if item_keys is None:
        return None
    return frozenset(int(key.removeprefix("credit:")) for key in json.loads(item_keys) if key.startswith("credit:"))


def _after_push(note: IssuedNote, grant_id: int, pushed: _Pushed) -> bool:
    """Whether the note's reduction of the amount due is not in the push's items already."""
    if pushed.pushed_credits is not None:
        return grant_id not in pushed.pushed_credits
    return pushed.synced_at is None or note.issued_at > pushed.synced_at  # a push begun before migration 0032


def _guarded(
    engine: Engine, client: stripe.StripeClient, pushed: _Pushed, note: IssuedNote | None, taken: Decimal | None
) -> Adjustment:
    """A void (``note`` None) or a credit note carried; an unexpected error (the database's) is reported as this
    one's, and the others are still carried."""
    try:
        if note is None or taken is None:
            return _void(engine, client, pushed)
        return _credit(engine, client, note, taken, pushed)
    except Exception as exc:  # reported, logged, tried again at the next run
        log.exception("Stripe: %s was not carried", pushed.number if note is None else note.number)
        kind, document = ("void", pushed.number) if note is None else ("credit_note", note.number)
        message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'no message'}"
        return Adjustment(kind, document, pushed.number, pushed.stripe_invoice_id, pushed.currency, taken,
                          error=message)


def _options(key: str | None = None) -> Any:
    options: dict[str, str] = {"stripe_version": STRIPE_API_VERSION}
    if key is not None:
        options["idempotency_key"] = key
    return options


def _key(prefix: str, document: str, step: str) -> str:
    return f"{prefix}:{document}:{step}"


def _void(engine: Engine, client: stripe.StripeClient, pushed: _Pushed) -> Adjustment:
    """Stop Stripe collecting an invoice voided here: void its Stripe invoice, or delete it if the push had not
    finalized it yet (a draft); if Stripe has collected it, nothing (``paid``)."""
    result = Adjustment("void", pushed.number, pushed.number, pushed.stripe_invoice_id, pushed.currency)
    try:
        found = _retrieved(client, pushed)
        if found is None:
            outcome = "deleted"  # deleted by an earlier run whose answer was lost
        elif found.status == "draft":
            client.v1.invoices.delete(pushed.stripe_invoice_id, options=_options())
            outcome = "deleted"
        elif found.status in ("open", "uncollectible"):
            _void_open(engine, client, pushed)
            outcome = "voided"
        else:
            outcome = "paid" if found.status == "paid" else "voided"
    except stripe.StripeError as exc:
        message = describe_error(exc)
        log.warning("Stripe: the void of %s was not carried: %s", pushed.number, message)
        with session_scope(engine) as session:
            session.execute(_sync_row(pushed).values(last_error=f"void: {message}", updated_at=utcnow()))
        return replace(result, error=message)
    with session_scope(engine) as session:
        now = utcnow()
        session.execute(_sync_row(pushed).values(voided_at=now, void_outcome=outcome, last_error=None, updated_at=now))
    log.info("Stripe: %s voided (%s)", pushed.number, outcome)
    return replace(result, outcome=outcome)


def _void_open(engine: Engine, client: stripe.StripeClient, pushed: _Pushed) -> None:
    """Void an open Stripe invoice; a refusal is counted (Stripe did nothing), so that the next run's request goes
    under a key of its own (``…:void:2``): Stripe answers a key it refused with the same refusal for a day."""
    step = "void" if not pushed.void_refusals else f"void:{pushed.void_refusals + 1}"
    try:
        client.v1.invoices.void_invoice(
            pushed.stripe_invoice_id, options=_options(_key(pushed.key_prefix, pushed.number, step))
        )
    except stripe.InvalidRequestError:
        with session_scope(engine) as session:
            session.execute(_sync_row(pushed).values(void_refusals=StripeInvoiceSyncRow.void_refusals + 1))
        raise


def _retrieved(client: stripe.StripeClient, pushed: _Pushed) -> Any:
    """The Stripe invoice; None if it is gone (a draft, which only a void here deletes)."""
    try:
        return client.v1.invoices.retrieve(pushed.stripe_invoice_id, options=_options())
    except stripe.InvalidRequestError as exc:
        if exc.code == "resource_missing" and not pushed.finalized:
            return None
        raise


def _sync_row(pushed: _Pushed) -> Any:
    return update(StripeInvoiceSyncRow).where(StripeInvoiceSyncRow.invoice_id == pushed.invoice_id)


def _credit(
    engine: Engine, client: stripe.StripeClient, note: IssuedNote, taken: Decimal, pushed: _Pushed
) -> Adjustment:
    """Carry one credit note as a Stripe credit note of ``taken`` (what it took off the amount due here)."""
    result = Adjustment("credit_note", note.number, pushed.number, pushed.stripe_invoice_id, note.currency, taken)
    amount = to_stripe(taken, note.currency)
    if not collectable(amount, note.currency):  # (Stripe would collect, or refund, an amount it cannot)
        message = (
            f"{taken} {note.currency} credited, and Stripe collects and refunds {note.currency} only in multiples "
            "of 0.010: not carried; settle it with the customer another way"
        )
        log.warning("Stripe: credit note %s was not carried: %s", note.number, message)
        with session_scope(engine) as session:
            session.execute(_note_row(note).values(last_error=message))
        return replace(result, error=message)
    try:
        mode, attempts, refusals = _mode(engine, client, note, amount, pushed)
        created = _made_before(client, note, pushed) if attempts > 1 else None
        if created is None:
            created = _create_note(client, note, amount, mode, pushed, refusals)
    except stripe.StripeError as exc:
        message = describe_error(exc)
        log.warning("Stripe: credit note %s was not carried: %s", note.number, message)
        with session_scope(engine) as session:
            values: dict[str, Any] = {"last_error": message}
            if isinstance(exc, stripe.InvalidRequestError):  # refused, nothing done: the next run chooses again
                values.update(mode=None, refusals=StripeCreditNoteRow.refusals + 1)
            session.execute(_note_row(note).values(**values))
        return replace(result, error=message)
    with session_scope(engine) as session:
        session.execute(
            _note_row(note).values(stripe_credit_note_id=created.id, synced_at=utcnow(), last_error=None)
        )
    log.info("Stripe: credit note %s carried as %s (%s)", note.number, created.id, mode)
    return replace(result, outcome=mode, stripe_credit_note_id=created.id)


def _create_note(
    client: stripe.StripeClient, note: IssuedNote, amount: int, mode: str, pushed: _Pushed, refusals: int
) -> Any:
    params: dict[str, Any] = {
        "invoice": pushed.stripe_invoice_id,
        "amount": amount,
        "memo": f"Credit note {note.number}",
        "metadata": {"billing_credit_note_number": note.number, "billing_invoice_number": pushed.number},
    }
    step = "credit_note"
    if mode == OUT_OF_BAND:
        params["out_of_band_amount"] = amount
        step = "credit_note:out_of_band"
    if refusals:
        step += f":{refusals + 1}"  # after a refusal, whose key Stripe answers with it again for a day
    return client.v1.credit_notes.create(
        params=params, options=_options(_key(pushed.key_prefix, note.number, step))  # type: ignore[arg-type]
    )


def _made_before(client: stripe.StripeClient, note: IssuedNote, pushed: _Pushed) -> Any:
    """The Stripe credit note an earlier attempt made of this note, if its answer was lost (and Stripe has
    forgotten its key since: a day later, the same key would make another one); None if there is none."""
    listed = client.v1.credit_notes.list(
        params={"invoice": pushed.stripe_invoice_id, "limit": 100}, options=_options()  # type: ignore[arg-type]
    )
    for made in listed.auto_paging_iter():
        if (made.to_dict().get("metadata") or {}).get("billing_credit_note_number") == note.number:
            return made
    return None


def _note_row(note: IssuedNote) -> Any:
    return update(StripeCreditNoteRow).where(StripeCreditNoteRow.credit_note_id == note.id)


def _mode(
    engine: Engine, client: stripe.StripeClient, note: IssuedNote, amount: int, pushed: _Pushed
) -> tuple[str, int, int]:
    """The note's mode — the stored one, or (the first time, or after a refusal) the one the Stripe invoice's
    status calls for, stored before the request; the first one stored wins — its attempts, this one included,
    and the refusals so far."""
    with session_scope(engine) as session:
        insert_ignoring(
            session,
            StripeCreditNoteRow.__table__,
            {
                "credit_note_id": note.id,
                "credit_note_number": note.number,
                "invoice_id": note.invoice_id,
                "stripe_invoice_id": pushed.stripe_invoice_id,
                "amount": amount,
                "attempts": 0,
                "refusals": 0,
                "created_at": utcnow(),
            },
        )
        session.execute(_note_row(note).values(attempts=StripeCreditNoteRow.attempts + 1))
        stored, attempts, refusals = session.execute(_stored_mode(note)).one()
    if stored is not None:
        return str(stored), int(attempts), int(refusals)
    found = client.v1.invoices.retrieve(pushed.stripe_invoice_id, options=_options())
    if found.status == "void":
        raise stripe.InvalidRequestError(f"the Stripe invoice {pushed.stripe_invoice_id} is void", None)
    chosen = OUT_OF_BAND if found.status == "paid" else PRE_PAYMENT
    with session_scope(engine) as session:
        session.execute(_note_row(note).where(StripeCreditNoteRow.mode.is_(None)).values(mode=chosen))
        stored, attempts, refusals = session.execute(_stored_mode(note)).one()
    return str(stored), int(attempts), int(refusals)


def _stored_mode(note: IssuedNote) -> Any:
    return select(StripeCreditNoteRow.mode, StripeCreditNoteRow.attempts, StripeCreditNoteRow.refusals).where(
        StripeCreditNoteRow.credit_note_id == note.id
    )


