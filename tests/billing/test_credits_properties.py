"""The credit ledger's invariants (SQLite and PostgreSQL): by property, over random histories of grants, top-up
payments, invoices (negative ones too), voids and expiries; under four processes finalizing one customer's invoices
at once; and across a finalization killed with SIGKILL inside its transaction, then run again."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from billing import credits, invoicing
from billing.core.credits import day_start
from billing.db import make_engine, session_scope
from billing.db.credit_tables import CreditEntryRow, CreditGrantRow
from billing.errors import ConflictError
from invoices.model import InvoiceStatus
from invoices.tables import InvoiceRow
from tests.billing.test_credits import SETTINGS, customer, draft

pytestmark = pytest.mark.db

D = Decimal
_names = itertools.count()

operation = st.one_of(
    st.tuples(
        st.just("grant"),
        st.integers(1, 5000),  # cents
        st.booleans(),  # paid
        st.none() | st.integers(0, 4),  # expires: months after the current one (None: never)
        st.integers(0, 2),  # priority
    ),
    st.tuples(st.just("pay"), st.integers(0, 9)),  # pay the n-th top-up invoice
    st.tuples(st.just("invoice"), st.integers(-3000, 6000), st.integers(0, 20)),  # total (cents), grace days
    st.tuples(st.just("void"), st.integers(0, 9)),  # void the n-th issued invoice
)


def month_start(index: int) -> dt.date:
    return dt.date(2026 + index // 12, index % 12 + 1, 1)


def run_history(engine, who: str, history: list) -> None:
    clock = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    month, topups, issued = 0, [], []
    for op in history:
        if op[0] == "grant":
            _, cents, paid, expires, priority = op
            day = None if expires is None else month_start(month + 1 + expires)
            grant = credits.grant_credit(
                engine, who, D(cents) / 100, "USD", paid=paid, expires=day, priority=priority, settings=SETTINGS,
                now=clock,
            )
            if paid:
                topups.append(grant.invoice_number)
        elif op[0] == "pay" and op[1] < len(topups):
            invoicing.set_invoice_status(engine, topups[op[1]], InvoiceStatus.PAID)
        elif op[0] == "invoice":
            _, cents, grace = op
            start = month_start(month)
            invoice_id = draft(engine, who, start, str(D(cents) / 100))
            month += 1
            clock = max(clock, dt.datetime.combine(month_start(month), dt.time(1), dt.UTC) + dt.timedelta(days=grace))
            issued.append(invoicing.finalize_invoice(engine, invoice_id, SETTINGS, clock.date(), now=clock).number)
        elif op[0] == "void" and op[1] < len(issued):
            # (refused when the balance it gave the customer has paid another invoice since)
            with contextlib.suppress(ConflictError):
                invoicing.set_invoice_status(engine, issued[op[1]], InvoiceStatus.VOID)
        credits.balance(engine, who, now=clock)  # expiries written as the clock passes them


def check_ledger(engine, who: str) -> None:
    [usd] = credits.balance(engine, who, now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))  # every expiry written
    with session_scope(engine) as session:
        assert credits.ledger_problems(session) == []
        grants = {g.id: g for g in session.execute(
            select(CreditGrantRow).where(CreditGrantRow.customer_external_id == who)).scalars()}
        entries = list(session.execute(
            select(CreditEntryRow).where(CreditEntryRow.grant_id.in_(list(grants)))).scalars())
        invoices = {i.id: i for i in session.execute(
            select(InvoiceRow).where(InvoiceRow.customer_external_id == who)).scalars()}
    [usd] = credits.balance(engine, who, now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    assert min(usd.free, usd.paid, usd.balance) >= 0
    for grant in usd.grants:
        legs = [e for e in entries if e.grant_id == grant.id]
        # a grant's remaining amount is the sum of its customer legs, and the opposite of everything else it did
        assert grant.remaining == sum((e.amount for e in legs if e.account == "customer"), D(0))
        assert grant.remaining == -sum((e.amount for e in legs if e.account != "customer"), D(0))
        assert D(0) <= grant.remaining <= grant.amount
        if grant.kind == "paid" and any(e.kind == "application" for e in legs):
            assert invoices[grant.invoice_id].status in ("paid",)
        for e in legs:
            if e.kind == "application" and e.account == "invoice":
                # never for a period that began at or after the credit expired
                began = day_start(invoices[e.invoice_id].period_start, "UTC")
                assert grants[grant.id].expires_at is None or began < grants[grant.id].expires_at
    for invoice in invoicing.list_invoices(engine, customer=who):
        if invoice.status is not InvoiceStatus.VOID:
            paid = sum((c.amount for c in invoice.credits_applied), D(0)) + invoice.amount_paid
            if invoice.status is InvoiceStatus.PAID:  # marked paid by its status alone: nothing more is due
                assert invoice.amount_due == D("0.00") and paid <= max(invoice.total, D(0))
            else:
                assert paid + invoice.amount_due == max(invoice.total, D(0))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=st.lists(operation, min_size=1, max_size=12))
def test_the_ledger_holds_over_any_history(engine, history):
    who = customer(engine, f"c{next(_names)}")
    run_history(engine, who, history)
    check_ledger(engine, who)


CONCURRENT = textwrap.dedent(
    """
    import datetime as dt, json, random, sys
    from billing import invoicing
    from billing.db import make_engine
    from billing.errors import ConflictError
    from invoices.store import FinalizeSettings

    url, worker, ids = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    engine = make_engine(url)
    random.Random(worker).shuffle(ids)
    now = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)
    mine = []
    for invoice_id in ids:
        try:
            mine.append(invoicing.finalize_invoice(engine, invoice_id, FinalizeSettings(), now.date(), now=now).id)
        except ConflictError:
            pass  # another worker finalized it first
    print(json.dumps(mine))
    """
)


def test_four_processes_finalizing_at_once_never_apply_a_credit_twice(engine, db_url):
    who = customer(engine)
    now = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    credits.grant_credit(engine, who, D("50.00"), "USD", now=now)
    credits.grant_credit(engine, who, D("50.00"), "USD", expires=dt.date(2026, 9, 1), now=now)
    ids = [draft(engine, who, month_start(m), "9.00") for m in range(11)]  # 2026-01 … 2026-11: 11 × 9.00 = 99.00
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    processes = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT, db_url, str(w), json.dumps(ids)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
        for w in range(4)
    ]
    finalized = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        finalized += json.loads(out)
    assert sorted(finalized) == sorted(ids)  # each finalized once
    check_ledger(engine, who)
    # 100.00 of credit, 99.00 of invoices: every invoice paid in full, 1.00 left (the grant expiring in September
    # pays first, for the periods that began before 1 September: 8 × 9.00 = 72.00 at most, 50.00 of it)
    invoices = invoicing.list_invoices(engine, customer=who)
    assert sum((sum((c.amount for c in i.credits_applied), D(0)) for i in invoices), D(0)) == D("99.00")
    assert {str(i.amount_due) for i in invoices} == {"0.00"}
    [usd] = credits.balance(engine, who, now=dt.datetime(2026, 12, 6, tzinfo=dt.UTC))
    assert str(usd.free) == "1.00"


KILLED = textwrap.dedent(
    """
    import datetime as dt, os, signal, sys
    from billing import credits, invoicing
    from billing.db import make_engine
    from invoices.store import FinalizeSettings

    url, invoice_id = sys.argv[1], int(sys.argv[2])
    engine = make_engine(url)
    apply = credits.apply_credits

    def apply_then_die(session, ids, now, settings=None):
        apply(session, ids, now, settings)
        session.flush()
        print("applied", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    credits.apply_credits = apply_then_die
    now = dt.datetime(2026, 4, 2, tzinfo=dt.UTC)
    invoicing.finalize_invoice(engine, invoice_id, FinalizeSettings(), now.date(), now=now)
    """
)


def test_a_finalization_killed_inside_its_transaction_applies_its_credits_once_when_run_again(engine, db_url):
    who = customer(engine)
    credits.grant_credit(engine, who, D("10.00"), "USD", now=dt.datetime(2026, 1, 5, tzinfo=dt.UTC))
    invoice_id = draft(engine, who, dt.date(2026, 3, 1), "6.00")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    killed = subprocess.run([sys.executable, "-c", KILLED, db_url, str(invoice_id)], capture_output=True, text=True,
                            env=env, timeout=120)
    assert killed.returncode == -signal.SIGKILL and "applied" in killed.stdout, killed.stderr
    time.sleep(0.2)  # (PostgreSQL ends the dead connection's transaction)
    survivor = make_engine(db_url)
    assert invoicing.get_invoice(survivor, invoice_id).status is InvoiceStatus.DRAFT
    assert [e for e in credits.ledger(survivor, who) if e.kind == "application"] == []
    now = dt.datetime(2026, 4, 2, tzinfo=dt.UTC)
    march = invoicing.finalize_invoice(survivor, invoice_id, SETTINGS, now.date(), now=now)
    with pytest.raises(ConflictError):
        invoicing.finalize_invoice(survivor, invoice_id, SETTINGS, now.date(), now=now)
    # 6.00 applied once: 10.00 − 6.00 = 4.00 left
    assert [(c.kind, str(c.amount)) for c in march.credits_applied] == [("free", "6.00")]
    [usd] = credits.balance(survivor, who)
    assert str(usd.free) == "4.00"
    check_ledger(survivor, who)
