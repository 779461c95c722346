"""``make demo``: a quarter of billing on the embedded database, start to finish.

On a fresh SQLite database in ``out/``: the sample catalog, about 200 customers over the sample plans (several
currencies and timezones, some starting mid-month, some upgrading, some cancelling), three months of generated
usage (a fixed seed, so every run gives the same invoices), and for each month: ingestion, the billing run and
finalization. Late events for the first month arrive after it was invoiced and land on the next invoice. The
invoices are written as HTML and PDF to ``out/invoices/``, then a summary, the payments received (in full, in part,
not at all) and the aged receivables. Notifications go to a local webhook
receiver (``billing.demo.receiver``). ``python -m billing.demo`` runs it.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import random
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine

from billing import coupons, credits, run_history
from billing import customers as service
from billing.apikeys import create_api_key
from billing.cli._common import print_table
from billing.config import get_settings
from billing.core.domain import SubscriptionTerms
from billing.core.periods import Period, month
from billing.core.rating import quote_period
from billing.db import make_engine, session_scope, upgrade
from billing.demo.receiver import ReceivedWebhook, run_receiver
from billing.ingestion import ingest_path
from billing.invoicing import finalize_opening_invoices, finalize_settings, printable
from billing.notify import deliver_pending, list_notifications
from billing.portal_links import create_portal_link
from billing.run import RunReport, finalize_period, run_billing
from invoices import store
from invoices.model import Invoice, InvoiceScope
from pricing_plans.charge_models import MeterUsage
from pricing_plans.dimensions import DimensionedUsage, Part
from pricing_plans.loader import load_catalog_or_raise
from pricing_plans.models import Catalog
from pricing_plans.money import ZERO, format_amount

OUT = Path("out")
RECEIVER_SECRET = "whsec_ZGVtby1yZWNlaXZlci1zZWNyZXQtMjAyNg=="  # Standard Webhooks: whsec_ and base64
SEED = 2026
MONTHS = (month(2026, 8), month(2026, 9), month(2026, 10))
CUSTOMERS = 200

console = Console()

# (plan, currency, share of customers)
PLAN_MIX = (
    ("api_growth", 0.30),
    ("seats", 0.14),
    ("payments", 0.10),
    ("starter_jp", 0.09),
    ("enterprise", 0.06),
    ("enterprise_annual", 0.03),
    # the plans priced by event dimension, per seat and with an add-on (README, "The sample catalog")
    ("sms", 0.06),
    ("cloud", 0.05),
    ("warehouse", 0.04),
    ("meetings", 0.05),
    ("call_analytics", 0.04),
    ("ai_tokens", 0.04),
)
PLACES = {
    "USD": [("America/New_York", "en_US"), ("America/Los_Angeles", "en_US"), ("America/Chicago", "en_US"),
            ("Europe/London", "en_GB"), ("UTC", "en_US")],
    "EUR": [("Europe/Berlin", "de_DE"), ("Europe/Paris", "fr_FR"), ("Europe/Madrid", "es_ES"),
            ("Europe/Dublin", "en_IE")],
    "JPY": [("Asia/Tokyo", "ja_JP")],
    "RUB": [("Europe/Moscow", "ru_RU"), ("Asia/Yekaterinburg", "ru_RU")],
}
TAX = {"USD": Decimal(0), "EUR": Decimal(19), "JPY": Decimal(10), "RUB": Decimal(20)}
NAMES = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka", "Tyrell", "Cyberdyne",
         "Soylent", "Vandelay", "Pied Piper", "Aperture", "Massive Dynamic", "Nakatomi", "Oscorp", "Gringotts",
         "Monarch", "Dunder")
SUFFIXES = ("Labs", "Systems", "Analytics", "Cloud", "Works", "Studio", "Logistics", "Health", "Retail", "Media")


@dataclass
class Account:
    """A generated customer and what happens to it during the quarter."""

    external_id: str
    plan: str
    currency: str
    start: dt.date
    upgrade_on: dt.date | None = None
    cancel_on: dt.date | None = None
    cancel_reason: str = "voluntary"
    heavy: bool = False
    seats: int = 1
    add_on: bool = False


def _print_run(period: Period, report: RunReport, numbers: list[str]) -> None:
    """The month's billing run in two lines: what it invoiced and finalized, and the usage no invoice carries."""
    console.print(
        f"billing run: {report.invoices} invoices ({report.customers} customers, {report.events:,} events "
        f"rated, {report.late_lines} late-usage lines), {len(numbers)} finalized "
        f"({numbers[0]} … {numbers[-1]})" if numbers else "no invoices"
    )
    # usage no invoice will carry: events outside a subscription (local days vs UTC timestamps), payments sent
    # after an upgrade to a plan that does not charge them (`billing usage unbilled --period` lists them)
    console.print(
        f"unbilled: {report.unbilled_events:,} of the period's {report.accepted:,} events, "
        f"{len({g.customer for g in report.unbilled})} customers (billing usage unbilled --period {period.label})"
    )


def main() -> None:
    started = time.perf_counter()
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "usage").mkdir(parents=True)
    (OUT / "invoices").mkdir()
    url = f"sqlite:///{OUT / 'billing.db'}"
    os.environ["BILLING_DATABASE_URL"] = url
    engine = make_engine(url)
    upgrade(engine)
    catalog = load_catalog_or_raise("catalog.toml")
    console.rule("[bold]Billing engine demo: August – October 2026")
    console.print(f"catalog.toml: {len(catalog.meters)} meters, {len(catalog.plans)} plans; database {url}")
    _quotes(catalog)

    server, received = run_receiver("127.0.0.1", 0, RECEIVER_SECRET)
    os.environ["BILLING_NOTIFICATION_WEBHOOK_URL"] = f"http://127.0.0.1:{server.server_address[1]}/hooks/billing"
    os.environ["BILLING_NOTIFICATION_WEBHOOK_SECRET"] = RECEIVER_SECRET
    get_settings.cache_clear()
    printer = _Printer()
    rng = random.Random(SEED)
    accounts = _create_accounts(engine, catalog, rng)
    _coupons(engine, catalog, accounts)
    # the first invoices of the subscriptions that started before the quarter (their in-advance fees), as the
    # scheduler issues them when a subscription starts
    opened = finalize_opening_invoices(engine, catalog, finalize_settings(), now=dt.datetime(2026, 8, 1, tzinfo=dt.UTC))
    console.print(f"opening invoices of the subscriptions started before August: {len(opened.finalized)} issued")
    welcomed = next(a for a in accounts if a.start < dt.date(2026, 8, 1))
    _grant_credit(engine, welcomed)
    summaries: list[tuple[Period, RunReport, list[str]]] = []
    late_file: Path | None = None
    for index, period in enumerate(MONTHS):
        console.rule(f"[bold]{period.label}")
        _month_of_usage(engine, catalog, accounts, period, rng, late_file)
        # (no simulated clock for the run: late usage is told by when events were received, and they were just now)
        with run_history.recorded(engine, period, source="cli", actor="make demo", finalize=True) as recording:
            report = run_billing(engine, catalog, period)
            numbers = finalize_period(engine, period, finalize_settings(), period.end + dt.timedelta(days=2))
            recording.done(report, numbers)
        printer.print_issued(engine)
        delivered = deliver_pending(engine, get_settings())
        console.print(f"notifications: {delivered.sent} delivered to the local receiver, {delivered.dead} dead")
        summaries.append((period, report, numbers))
        _print_run(period, report, numbers)
        if index == 0:
            late_file = _write_late_usage(OUT / "usage" / f"{period.label}-late.jsonl", accounts, period, rng)
    printer.finish(engine)
    _credit_ledger(engine, welcomed)
    _summary(engine, summaries)
    _payments(engine)
    _notifications(engine, received)
    server.shutdown()
    _metrics(engine, catalog)
    _risk_backtest(engine, catalog)
    _accounting_export(engine)
    _portal_link(engine, welcomed)
    _console_key(engine)
    console.print(f"[bold green]done[/] in {time.perf_counter() - started:.1f} s — see out/invoices/")


def _portal_link(engine: Engine, account: Account) -> None:
    """A link to one demo customer's portal (the one granted credit), signed with a secret kept in
    out/portal-secret, with which `make serve-demo` serves this database."""
    secret = os.environ.get("BILLING_PORTAL_SECRET") or secrets.token_urlsafe(32)
    (OUT / "portal-secret").write_text(secret, encoding="utf-8")
    os.environ["BILLING_PORTAL_SECRET"] = secret
    get_settings.cache_clear()
    link = create_portal_link(engine, get_settings(), account.external_id, days=7)
    console.print(f"customer portal of {account.external_id} (`make serve-demo` serves it for 7 days): {link.url}")


def _console_key(engine: Engine) -> None:
    """An API key for the finance console (kept in out/console-key too), and where `make serve-demo` serves it."""
    _, key = create_api_key(engine, "demo finance")
    (OUT / "console-key").write_text(key, encoding="utf-8")
    address = f"{get_settings().public_url.rstrip('/')}/console"
    console.print(f"finance console (`make serve-demo`): {address} — sign in with the API key {key}", highlight=False)


def _month_of_usage(
    engine: Engine, catalog: Catalog, accounts: list[Account], period: Period, rng: random.Random,
    late_file: Path | None,
) -> None:
    """The month's usage generated and ingested as it would arrive: its first two weeks on the 15th, the rest by
    its last evening (UTC), with the late events of the month before; alerts are checked, and progressive
    invoices issued, as it comes in."""
    path = OUT / "usage" / f"{period.label}.jsonl"
    count = _write_usage(path, accounts, period, rng)
    first_half, counts = _split(path, period.start + dt.timedelta(days=14), count)
    mid_month = dt.datetime.combine(period.start.replace(day=15), dt.time(20), dt.UTC)
    _ingest(engine, catalog, first_half, counts[0], mid_month)
    _print_progressive(engine, period)
    arrival = dt.datetime.combine(period.end - dt.timedelta(days=1), dt.time(20), dt.UTC)
    _ingest(engine, catalog, path, counts[1], arrival)
    if late_file is not None:
        _ingest(engine, catalog, late_file, sum(1 for _ in late_file.open()), arrival)


def _parts(total: int | str, events: int, parts: dict[Part, int | str]) -> DimensionedUsage:
    """Sample usage of a charge priced by dimension: each part's quantity (one event per unit, or ``events``)."""
    def usage(quantity: int | str, count: int) -> MeterUsage:
        return MeterUsage(quantity=Decimal(quantity), events=count)
    return DimensionedUsage({p: usage(q, min(events, int(Decimal(q)))) for p, q in parts.items()}, usage(total, events))


# What each sample plan costs for a month of typical usage (``billing quote`` does the same from the command line):
# 150,000 calls, 42.5 GB-months, 900 build minutes, 37 active users, 25 payments of 730.00; and for the plans
# priced by dimension, the usage of the README's worked examples ("The sample catalog"), part by part.
SAMPLE_USAGE: dict[str, MeterUsage | DimensionedUsage] = {
    "api_calls": MeterUsage(quantity=Decimal(150_000), events=150_000),
    "storage_gb": MeterUsage(quantity=Decimal("42.5"), events=3),
    "compute_minutes": MeterUsage(quantity=Decimal(900), events=60),
    "active_users": MeterUsage(quantity=Decimal(37), events=420),
    "payment_volume": MeterUsage(quantity=Decimal("18250.00"), events=25, values=(Decimal("730.00"),) * 25),
    # US & Canada 12,000; Germany 1,500 outbound and 300 inbound; 200 to other countries
    "sms": _parts(14_000, 14_000, {Part(0): 12_000, Part(1): 1_500, Part(2): 300, Part(None): 200}),
    # vCPU-hours: Frankfurt 1,000 standard and 120 GPU, Stockholm 2,000 standard, another region 500 standard
    "vm_hours": _parts(3_620, 120, {Part(0, ("standard-v3",)): 1_000, Part(0, ("gpu-a100",)): 120,
                                    Part(1, ("standard-v3",)): 2_000, Part(None, ("standard-v3",)): 500}),
    "object_storage": _parts(120, 2, {Part(0): 80, Part(1): 40}),  # GB-months in Frankfurt and Stockholm
    "warehouse_storage": MeterUsage(quantity=Decimal(2 * 10**12), events=2),  # 2 TB held all month
    "compute_credits": _parts(140, 31, {Part(0): 100, Part(1): 40}),  # standard and enterprise editions
    "cloud_recordings": MeterUsage(quantity=Decimal(250), events=4),
    "analysed_minutes": MeterUsage(quantity=Decimal("12345.5"), events=900),
    # large 1,500,000 tokens, small 12,000,000; 50,000 of a model without a price (not billed)
    "ai_tokens": _parts(13_550_000, 5_000, {Part(0): 1_500_000, Part(1): 12_000_000, Part(None): 50_000}),
}


def _quotes(catalog: Catalog) -> None:
    """The catalog validated, and a quote of one month of ``SAMPLE_USAGE`` for each of its plans, as an
    established subscription (started on 1 January) pays it: an annual plan's fee is billed once, with January."""
    table = Table(
        title="Quotes: one month of sample usage on each plan (billing quote)",
        caption="150,000 calls, 42.5 GB-months, 900 build minutes, 37 active users, 25 payments of 730.00; "
        "the plans priced by dimension: the README's examples",
    )
    for column in ("Plan", "Version", "Fee", "Usage charges", "True-up", "Total"):
        table.add_column(column, justify="left" if column == "Plan" else "right", no_wrap=True)
    established = SubscriptionTerms(dt.date(2026, 1, 1))
    for plan in catalog.all_plans():
        usage = {charge.meter: SAMPLE_USAGE[charge.meter] for charge in plan.charges}
        per_seat = plan.subscription is not None and plan.subscription.seats
        terms = SubscriptionTerms(established.start_date, quantity=12) if per_seat else established
        rated = quote_period(terms, plan, usage, MONTHS[0], meters=catalog.meters, rounding=catalog.rounding)
        table.add_row(
            f"{plan.code} ({plan.currency}/{plan.interval.value}{', 12 seats' if per_seat else ''})",
            str(plan.version),
            format_amount(rated.fee_line.amount if rated.fee_line else ZERO, plan.currency),
            format_amount(rated.usage_total, plan.currency),
            format_amount(rated.commitment_line.amount if rated.commitment_line else ZERO, plan.currency),
            format_amount(rated.subtotal, plan.currency),
        )
    print_table(table)


def _pick_plan(rng: random.Random) -> str:
    roll, total = rng.random(), 0.0
    for plan, share in PLAN_MIX:
        total += share
        if roll < total:
            return plan
    return PLAN_MIX[0][0]


def _grant_credit(engine: Engine, account: Account) -> None:
    """A free welcome credit for a customer subscribed before the quarter, granted on 1 August and expiring on
    1 October in its timezone: it pays August's and September's invoices (their periods began before it expired),
    never October's."""
    grant = credits.grant_credit(
        engine, account.external_id, Decimal(40), account.currency, expires=dt.date(2026, 10, 1),
        reason="welcome offer", now=dt.datetime(2026, 8, 1, tzinfo=dt.UTC),
    )
    credits.configure(engine, account.external_id, account.currency, low_balance=Decimal(15),
                      now=dt.datetime(2026, 8, 1, tzinfo=dt.UTC))
    console.print(
        f"credit: {grant.amount} {grant.currency} of free credit to {account.external_id} (\"welcome offer\"), "
        "expiring on 2026-10-01; it pays the invoices at finalization, after tax; an alert when it falls below "
        f"15.00 {grant.currency}, another when it is used up"
    )


def _credit_ledger(engine: Engine, account: Account) -> None:
    """What the welcome credit paid, movement by movement (`billing credits ledger`)."""
    table = Table(title=f"credit ledger of {account.external_id}")
    for column in ("Movement", "Kind", "Account", "Amount"):
        table.add_column(column, justify="right" if column == "Amount" else "left")
    for entry in credits.ledger(engine, account.external_id):
        table.add_row(entry.movement, entry.kind, entry.account, str(entry.amount))
    print_table(table)


def _create_accounts(engine: Engine, catalog: Catalog, rng: random.Random) -> list[Account]:
    accounts: list[Account] = []
    for number in range(1, CUSTOMERS + 1):
        plan = _pick_plan(rng)
        currency = catalog.plan(plan).currency
        timezone, locale = rng.choice(PLACES[currency])
        external_id = f"cus_{number:04d}"
        name = f"{rng.choice(NAMES)} {rng.choice(SUFFIXES)}"
        roll = rng.random()
        if roll < 0.75:
            start = dt.date(2026, rng.choice((5, 6, 7)), 1)
        else:  # a fifth start inside the quarter, most of them mid-month
            start = dt.date(2026, rng.choice((8, 9, 10)), rng.choice((1, 9, 15, 22)))
        account = Account(external_id, plan, currency, start, heavy=rng.random() < 0.12)
        fate = rng.random()
        if plan in ("api_growth", "seats") and fate < 0.10 and start < dt.date(2026, 9, 1):
            account.upgrade_on = dt.date(2026, 9, rng.choice((10, 16, 20)))
        elif fate < 0.16 and start < dt.date(2026, 9, 1):
            account.cancel_on = dt.date(2026, rng.choice((9, 10)), rng.choice((1, 12, 25)))
            account.cancel_reason = "involuntary" if fate < 0.12 else "voluntary"
        service.create_customer(
            engine, external_id, name, f"billing@{external_id}.example", currency, timezone=timezone,
            locale=locale, address=(f"{number} Market Street", "Suite 100"), tax_rate=TAX[currency],
        )
        if plan == "meetings":  # licences, and for half of them the recording-storage add-on beside the plan
            account.seats, account.add_on = rng.randrange(3, 40), rng.random() < 0.5
        subscription = service.subscribe(engine, catalog, external_id, plan, start, quantity=account.seats)
        add_on = service.subscribe(engine, catalog, external_id, "meetings_storage", start) if account.add_on else None
        if plan == "meetings" and start < dt.date(2026, 9, 1) and fate > 0.8:  # a team grows mid-September
            service.change_quantity(engine, catalog, subscription.id, account.seats + 5, dt.date(2026, 9, 16))
        if account.upgrade_on:
            upgrade_to = "enterprise" if plan == "api_growth" else "seats"
            if upgrade_to == plan:  # a seats customer moves to payments-based pricing? keep it simple: stays
                account.upgrade_on = None
            else:
                service.change_plan(engine, catalog, subscription.id, upgrade_to, account.upgrade_on)
                account.plan = upgrade_to
        if account.cancel_on:
            service.cancel_subscription(
                engine, subscription.id, account.cancel_on, account.cancel_reason, catalog=catalog
            )
            if add_on is not None:
                service.cancel_subscription(
                    engine, add_on.id, account.cancel_on, account.cancel_reason, catalog=catalog
                )
        accounts.append(account)
    table = Table(title=f"{len(accounts)} customers")
    for column in ("Plan", "Customers", "Starting in the quarter", "Upgrading", "Cancelling"):
        table.add_column(column, justify="left" if column == "Plan" else "right")
    by_plan = Counter(a.plan for a in accounts)
    for plan in sorted(by_plan):
        own = [a for a in accounts if a.plan == plan]
        table.add_row(plan, str(by_plan[plan]), str(sum(a.start >= MONTHS[0].start for a in own)),
                      str(sum(a.upgrade_on is not None for a in own)), str(sum(a.cancel_on is not None for a in own)))
    console.print(table)
    return accounts


def _coupons(engine: Engine, catalog: Catalog, accounts: list[Account]) -> None:
    """A coupon: 20 % off for three billing periods of the meetings storage add-on (its section only), applied to
    the first customers with the add-on (in July for three, in August for three more), and issued in August to
    as many others who never use it: the metrics show its redemption rate."""
    coupon = coupons.parse_coupon(
        "STORAGE20", percent="20", amount=None, currency=None, duration="repeating", months=3,
        plans=["meetings_storage"],
    )
    coupons.create_coupon(engine, catalog, coupon)
    july, august = dt.datetime(2026, 7, 20, 12, tzinfo=dt.UTC), dt.datetime(2026, 8, 5, 12, tzinfo=dt.UTC)
    with_add_on = [a for a in accounts if a.add_on][:6]
    others = [a for a in accounts if not a.add_on][:6]
    for index, account in enumerate(with_add_on):  # half from August, half from September
        coupons.apply_coupon(engine, "STORAGE20", account.external_id, now=july if index < 3 else august)
    for account in others:
        coupons.issue_coupon(engine, "STORAGE20", account.external_id, now=august)
    console.print(
        f"coupon STORAGE20 ({coupon.terms}, on meetings_storage): applied to {len(with_add_on)} customers, "
        f"issued to {len(others)} more"
    )


def _active_days(account: Account, period: Period) -> Iterator[dt.date]:
    day = max(period.start, account.start)
    end = min(period.end, account.cancel_on or period.end)
    while day < end:
        yield day
        day += dt.timedelta(days=1)


def _events_for(account: Account, period: Period, rng: random.Random) -> Iterator[dict[str, object]]:
    days = list(_active_days(account, period))
    if not days:
        return
    prefix = f"{account.external_id}-{period.label}"

    def at(day: dt.date) -> str:
        moment = dt.datetime.combine(day, dt.time(rng.randrange(24), rng.randrange(60), rng.randrange(60)), dt.UTC)
        return moment.isoformat().replace("+00:00", "Z")

    calls = {"api_growth": (300, 3000), "enterprise": (1000, 3000), "enterprise_annual": (1000, 3000),
             "starter_jp": (500, 7000)}.get(account.plan)
    if calls:
        low, high = calls
        heavy = account.heavy and account.plan == "api_growth"
        n = rng.randrange(8500, 12500) if heavy else rng.randrange(low, high)
        for i in range(n):
            yield {"id": f"{prefix}-c{i}", "customer": account.external_id, "meter": "api_calls",
                   "timestamp": at(rng.choice(days))}
        for i in range(rng.randrange(1, 4)):
            gigabytes = Decimal(rng.randrange(1, 400)) / 4 * (1 if i == 0 or rng.random() < 0.7 else -1)
            yield {"id": f"{prefix}-s{i}", "customer": account.external_id, "meter": "storage_gb",
                   "timestamp": at(rng.choice(days)), "value": str(gigabytes if i == 0 else gigabytes / 4)}
    if account.plan == "seats":
        users = rng.randrange(180, 240) if account.heavy else rng.randrange(3, 60)
        for i in range(users * 2):
            yield {"id": f"{prefix}-u{i}", "customer": account.external_id, "meter": "active_users",
                   "timestamp": at(rng.choice(days)), "properties": {"user_id": f"u{i % users}"}}
    if account.plan in ("payments", "enterprise", "enterprise_annual"):
        for i in range(rng.randrange(20, 300)):
            amount = Decimal(rng.randrange(500, 250000)) / 100
            yield {"id": f"{prefix}-p{i}", "customer": account.external_id, "meter": "payment_volume",
                   "timestamp": at(rng.choice(days)), "value": str(amount)}
    maker = _DIMENSIONED_EVENTS.get(account.plan)
    if maker is not None:
        for i, (meter, value, properties) in enumerate(maker(account, days, rng)):
            event: dict[str, object] = {"id": f"{prefix}-d{i}", "customer": account.external_id, "meter": meter,
                                        "timestamp": at(rng.choice(days))}
            if value is not None:
                event["value"] = value
            if properties:
                event["properties"] = properties
            yield event


# The events of the plans priced by dimension: (meter, value or None, properties). A few fall outside every
# filter of a charge without default (an unlisted region, edition or model): the run reports them unpriced.
_Made = Iterator[tuple[str, str | None, dict[str, str]]]


def _sms_events(account: Account, days: list[dt.date], rng: random.Random) -> _Made:
    countries = ("US",) * 9 + ("CA",) * 2 + ("DE",) * 4 + ("FR", "FR", "GB", "GB", "BR")
    for _ in range(rng.randrange(800, 9000) * len(days) // 31):
        country = rng.choice(countries)
        direction = "inbound" if country == "DE" and rng.random() < 0.3 else "outbound"
        yield "sms", None, {"country": country, "direction": direction}


def _cloud_events(account: Account, days: list[dt.date], rng: random.Random) -> _Made:
    machines = rng.sample([("eu-central-1", "standard-v3"), ("eu-central-1", "gpu-a100"),
                           ("eu-north-1", "standard-v3"), ("us-east-1", "standard-v3")], k=rng.randrange(1, 4))
    for region, platform in machines:
        vcpus = rng.choice((2, 4, 8, 16)) if platform == "standard-v3" else 1
        for _ in days:  # one event a day: the vCPU-hours the machines ran
            yield "vm_hours", str(vcpus * 24), {"region": region, "platform": platform}
    for region in sorted({region for region, _ in machines}):  # (in one order: the same invoices every run)
        yield "object_storage", str(rng.randrange(20, 400)), {"region": region}


def _warehouse_events(account: Account, days: list[dt.date], rng: random.Random) -> _Made:
    for _ in range(rng.randrange(1, 4)):  # bytes loaded into the warehouse
        yield "warehouse_storage", str(rng.randrange(50, 900) * 10**9), {}  # an event's value is < 10^12
    editions = ("standard",) * 6 + ("enterprise",) * 3 + ("business_critical",) * (1 if account.heavy else 0)
    for _ in days:
        edition = "trial" if rng.random() < 0.02 else rng.choice(editions)
        yield "compute_credits", str(Decimal(rng.randrange(5, 400)) / 10), {"edition": edition}


def _meetings_events(account: Account, days: list[dt.date], rng: random.Random) -> _Made:
    if account.add_on:  # recordings kept in the cloud-storage add-on
        for _ in range(rng.randrange(1, 5)):
            yield "cloud_recordings", str(rng.randrange(5, 90)), {}


def _call_analytics_events(account: Account, days: list[dt.date], rng: random.Random) -> _Made:
    for _ in range(rng.randrange(50, 600)):
        yield "analysed_minutes", str(Decimal(rng.randrange(5, 300)) / 10), {}


def _ai_token_events(account: Account, days: list[dt.date], rng: random.Random) -> _Made:
    models = ("large",) * 6 + ("small",) * 11 + ("small-2",) * 2 + ("experimental",)
    for _ in range(rng.randrange(200, 2000)):
        yield "ai_tokens", str(rng.randrange(100, 8000)), {"model": rng.choice(models)}


_DIMENSIONED_EVENTS = {
    "sms": _sms_events,
    "cloud": _cloud_events,
    "warehouse": _warehouse_events,
    "meetings": _meetings_events,
    "call_analytics": _call_analytics_events,
    "ai_tokens": _ai_token_events,
}


def _write_usage(path: Path, accounts: list[Account], period: Period, rng: random.Random) -> int:
    count = 0
    with path.open("w") as out:
        for account in accounts:
            for event in _events_for(account, period, rng):
                out.write(json.dumps(event, separators=(",", ":")) + "\n")
                count += 1
    return count


def _split(path: Path, day: dt.date, count: int) -> tuple[Path, tuple[int, int]]:
    """Move the events of ``path`` before ``day`` to a file of their own (``<name>-first.jsonl``); that file, and
    how many events each file now holds."""
    first = path.with_name(f"{path.stem}-first.jsonl")
    before = day.isoformat()
    lines = path.read_text().splitlines(keepends=True)
    early = [line for line in lines if json.loads(line)["timestamp"][:10] < before]
    first.write_text("".join(early))
    path.write_text("".join(line for line in lines if json.loads(line)["timestamp"][:10] >= before))
    return first, (len(early), count - len(early))


def _print_progressive(engine: Engine, period: Period) -> None:
    """The progressive invoices the month's first weeks of usage issued (plans with ``progressive_billing``)."""
    with session_scope(engine) as session:
        found = [
            i for i in store.list_invoices(session, period_start=period.start)
            if i.scope is InvoiceScope.PROGRESSIVE and i.number
        ]
    if found:
        example = found[0]
        console.print(
            f"progressive billing: {len(found)} invoice(s) issued mid-month as usage charges reached an amount, "
            f"e.g. {example.number} for {example.customer_id}: {example.total} {example.currency} "
            f"({example.billing_key})"
        )


def _write_late_usage(path: Path, accounts: list[Account], period: Period, rng: random.Random) -> Path:
    """Calls of ``period`` that reach us only after it was invoiced (of customers subscribed all through it)."""
    late = [a for a in accounts if a.plan == "api_growth" and a.cancel_on is None and a.start <= period.start][:6]
    with path.open("w") as out:
        for account in late:
            for i in range(rng.randrange(500, 1500)):
                day = period.end - dt.timedelta(days=1 + i % 3)
                out.write(json.dumps({"id": f"{account.external_id}-{period.label}-late{i}",
                                      "customer": account.external_id, "meter": "api_calls",
                                      "timestamp": f"{day.isoformat()}T18:00:00Z"}) + "\n")
    return path


def _ingest(engine: Engine, catalog: Catalog, path: Path, count: int, now: dt.datetime) -> None:
    """Ingest a file as it would have arrived at ``now`` (thresholds are checked right after, for that month)."""
    with Progress(TextColumn(f"ingest {path.name}"), BarColumn(), MofNCompleteColumn(), TextColumn("bytes"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("ingest", total=path.stat().st_size)
        report = ingest_path(engine, catalog, path, now=now,
                             progress=lambda done: progress.update(task, completed=done))
    console.print(f"{path.name}: {report.summary()} ({count:,} events generated)")


def _print_pdfs(batch: list[tuple[Invoice, str]]) -> int:
    from invoices.render import render_pdf

    for invoice, target in batch:
        Path(target).write_bytes(render_pdf(invoice))
    return len(batch)


class _Printer:
    """Writes every issued invoice to ``out/invoices/`` as HTML (here, at once) and PDF (in worker processes, while
    the demo goes on with the next month: printing a PDF takes a hundred times longer than the HTML)."""

    def __init__(self) -> None:
        # spawned, not forked: this process runs the webhook receiver's and the progress bars' threads
        self.pool = ProcessPoolExecutor(os.cpu_count() or 2, mp_context=multiprocessing.get_context("spawn"))
        self.printing: list[Future[int]] = [self.pool.submit(_print_pdfs, [])]  # the workers start meanwhile
        self.sent: set[str] = set()

    def print_issued(self, engine: Engine) -> None:
        from invoices.render import render_html

        with session_scope(engine) as session:
            stored = credits.with_credits(session, store.list_invoices(session, with_lines=True))
        issued = [
            printable(engine, invoice) for invoice in stored if invoice.number and invoice.number not in self.sent
        ]
        for invoice in issued:
            (OUT / "invoices" / f"{invoice.number}.html").write_text(render_html(invoice))
        self.sent |= {invoice.number for invoice in issued}
        jobs = [(invoice, str(OUT / "invoices" / f"{invoice.number}.pdf")) for invoice in issued]
        self.printing += [self.pool.submit(_print_pdfs, jobs[i : i + 8]) for i in range(0, len(jobs), 8)]

    def finish(self, engine: Engine) -> None:
        self.print_issued(engine)
        with Progress(TextColumn("PDF invoices"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("pdf", total=len(self.sent))
            for future in as_completed(self.printing):
                progress.advance(task, future.result())
        self.pool.shutdown()
        console.print(f"wrote {len(self.sent)} invoices as HTML and PDF to out/invoices/")


def _summary(engine: Engine, summaries: list[tuple[Period, RunReport, list[str]]]) -> None:
    with session_scope(engine) as session:
        invoices = [i for i in store.list_invoices(session) if i.number]
    table = Table(title="Invoices issued")
    table.add_column("Period")
    table.add_column("Invoices", justify="right")
    currencies = sorted({i.currency for i in invoices})
    for currency in currencies:
        table.add_column(f"Total {currency}", justify="right")
    table.add_column("Late-usage lines", justify="right")
    for period, report, numbers in summaries:
        own = [i for i in invoices if i.period_start == period.start]
        totals = {c: sum((i.total for i in own if i.currency == c), ZERO) for c in currencies}
        table.add_row(period.label, str(len(numbers)), *(format_amount(totals[c], c) for c in currencies),
                      str(report.late_lines))
    console.print(table)


def _payments(engine: Engine) -> None:
    """Payments received for the quarter's invoices (in full, in part, not at all) and the aged receivables."""
    from billing.demo.payments import record_payments_and_age

    console.rule("[bold]Payments and receivables")
    record_payments_and_age(engine, console)


def _notifications(engine: Engine, received: list[ReceivedWebhook]) -> None:
    """The alerts the quarter's usage triggered, and what reached the local receiver."""
    notifications = list_notifications(engine)
    alerts = [n for n in notifications if n.kind != "invoice.finalized"]
    table = Table(title=f"Usage, spend and credit alerts ({len(alerts)}), delivered to the demo's webhook receiver")
    for column in ("Period", "Customer", "Alert on", "Level", "Value", "Limit", "Status"):
        table.add_column(column, justify="right" if column in ("Level", "Value", "Limit") else "left", no_wrap=True)
    for n in alerts:
        if n.kind.startswith("credit."):
            subject, level = f"credit ({n.currency})", "below" if n.kind == "credit.balance_low" else "used up"
        else:
            subject = n.meter if n.kind.startswith("usage.") else f"spend ({n.currency})"
            level = f"{n.level} %"
        table.add_row(n.period, n.customer, subject, level, str(n.value), str(n.limit), n.status)
    print_table(table)
    kinds = Counter(n.kind for n in notifications)
    statuses = Counter(n.status for n in notifications)
    verified = sum(1 for r in received if r.verified)
    console.print(
        f"notifications: {dict(kinds)}; {dict(statuses)}; the receiver got {len(received)} signed requests "
        f"({verified} with a valid signature)"
    )


def _metrics(engine: Engine, catalog: Catalog) -> None:
    from billing.cli.metrics import plot_cohorts, plot_figures, print_cohorts, print_coupons, print_tables
    from billing.core.cohorts import Grain
    from billing.metrics_store import cohorts_from_database, figures_from_database

    figures = figures_from_database(engine, catalog, list(MONTHS))
    print_tables(figures)
    print_coupons(coupons.list_coupons(engine))
    plot_figures(figures, OUT / "metrics.png")
    console.print("wrote out/metrics.png (MRR bridge and churn/retention rates)")
    found = cohorts_from_database(engine, Grain.MONTH, as_of=dt.datetime(2026, 11, 2, tzinfo=dt.UTC))
    print_cohorts(found, Grain.MONTH)
    plot_cohorts(found, OUT / "cohorts.png")
    console.print("wrote out/cohorts.png (logo and revenue retention by cohort)")


def _risk_backtest(engine: Engine, catalog: Catalog) -> None:
    """The churn-risk rules backtested on the quarter: August and September assessed as they stood at their ends,
    against the customers who churned from September to November (after a flag could have warned); precision and
    recall printed whatever they are. October's risks are queued as customer.at_risk notifications and drawn."""
    from billing.cli.metrics import plot_risk, print_risk
    from billing.core.metrics import format_rate
    from billing.risk import backtest_periods, queue_at_risk, rules_from_settings

    rules = rules_from_settings(get_settings())
    observed = [*MONTHS, MONTHS[-1].next()]
    result, found = backtest_periods(engine, catalog, MONTHS[:2], observed, rules)
    october = backtest_periods(engine, catalog, MONTHS[2:], [], rules)[1][MONTHS[2]]
    print_risk(october, limit=12)
    queued = queue_at_risk(engine, [a for period in found.values() for a in period] + october)
    plot_risk(october, OUT / "risk.png")
    console.print(f"wrote out/risk.png; customer.at_risk notifications queued: {len(queued)}")
    console.print(
        f"[bold]risk backtest[/] (flags of {MONTHS[0].label} and {MONTHS[1].label}, churn up to "
        f"{observed[-1].label}): {len(result.flagged)} flagged, {len(result.churned)} churned later, "
        f"{len(result.caught)} of them flagged at least a month before; precision {format_rate(result.precision)} %, "
        f"recall {format_rate(result.recall)} %; flagged and did not churn: {len(result.false_alarms)}; "
        f"churned unflagged: {', '.join(sorted(result.churned - result.caught)) or 'none'}"
    )


def _accounting_export(engine: Engine) -> None:
    """The accounting export of each month in which the demo issued documents (as `billing export --period P
    --to out/export/P` writes it), and its journal's debits and credits per currency."""
    from billing.export import export_period

    table = Table(title="Accounting exports (out/export/): journal debits = credits")
    for column in ("Month", "Invoices", "Credit notes", "Journal legs", "Debits / credits"):
        table.add_column(column, justify="left" if column == "Month" else "right")
    for period in (*MONTHS, MONTHS[-1].next()):
        done = export_period(engine, period, OUT / "export" / period.label)
        totals = ", ".join(
            f"{format_amount(debit, currency)} / {format_amount(credit, currency)} {currency}"
            for currency, (debit, credit) in done.totals().items()
        )
        table.add_row(period.label, str(len(done.tables["invoices"])), str(len(done.tables["credit_notes"])),
                      str(len(done.tables["journal"])), totals or "—")
        if done.problems():
            raise RuntimeError(f"the journal of {period.label} does not balance: {done.problems()}")
    print_table(table)
