"""``billing coupons``: create a coupon, issue it to a customer, apply it, list and show coupons; thin wrappers
over ``billing.coupons``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.text import Text

from billing import coupons as service
from billing.cli import _json
from billing.cli._common import console, database, err_console, print_table
from billing.cli.customers import JsonOption, _catalog, _date, _table
from billing.core.coupons import Coupon
from billing.core.metrics import format_rate, ratio
from billing.errors import BillingInputError

HELP = "Coupons: create, issue to a customer, apply from the next billing period, list, show."

coupons_app = typer.Typer(help=HELP, no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(coupons_app, name="coupons")
    coupons_app.command("create")(coupons_create)
    coupons_app.command("issue")(coupons_issue)
    coupons_app.command("apply")(coupons_apply)
    coupons_app.command("list")(coupons_list)
    coupons_app.command("show")(coupons_show)


CodeArgument = Annotated[str, typer.Argument(metavar="CODE", help="The coupon's code.")]
CustomerOption = Annotated[str, typer.Option("--customer", metavar="CUSTOMER", help="The customer's external id.")]


def coupons_create(
    code: CodeArgument,
    duration: Annotated[str, typer.Option("--duration", metavar="once|repeating|forever", help="How long it lasts.")],
    percent: Annotated[
        str | None, typer.Option("--percent", metavar="P", help="A percentage off, above 0 and at most 100.")
    ] = None,
    amount: Annotated[str | None, typer.Option("--amount", metavar="A", help="An amount off each invoice.")] = None,
    currency: Annotated[str | None, typer.Option("--currency", metavar="C", help="The amount's currency.")] = None,
    months: Annotated[
        int | None, typer.Option("--months", metavar="N", help="Repeating: the billing periods it reduces.")
    ] = None,
    plans: Annotated[
        str | None, typer.Option("--plans", metavar="a,b", help="Only the sections of these plans (codes).")
    ] = None,
    max_redemptions: Annotated[
        int | None, typer.Option("--max-redemptions", metavar="N", help="At most N customers can have it applied.")
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option("--expires", metavar="DATE", help="From DATE on it can no longer be issued or applied."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a coupon: a percentage or an amount off, once, for N billing periods, or forever."""
    expires_on = None if expires is None else _date("--expires", expires)
    plan_codes = [p.strip() for p in (plans or "").split(",") if p.strip()]
    catalog = _catalog()
    with database() as engine:
        try:
            coupon = _parsed(code, percent, amount, currency, duration, months, plan_codes, max_redemptions, expires_on)
        except BillingInputError as exc:
            for problem in exc.problems:  # each on its own line
                err_console.print(f"error: {problem}", highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(1) from None
        created = service.create_coupon(engine, catalog, coupon)
    if as_json:
        _json.emit(service.coupon_json(created, service.CouponStats(created)))
        return
    console.print(f"coupon {created.code}: {created.terms}{_restrictions(created)}", highlight=False, markup=False)


def _parsed(
    code: str,
    percent: str | None,
    amount: str | None,
    currency: str | None,
    duration: str,
    months: int | None,
    plans: list[str],
    max_redemptions: int | None,
    expires_on: dt.date | None,
) -> Coupon:
    return service.parse_coupon(
        code,
        percent=percent,
        amount=amount,
        currency=currency,
        duration=duration,
        months=months,
        plans=plans,
        max_redemptions=max_redemptions,
        expires_on=expires_on,
    )


def _restrictions(coupon: Coupon) -> str:
    parts = []
    if coupon.plans:
        parts.append(f"plans {', '.join(coupon.plans)}")
    if coupon.max_redemptions is not None:
        parts.append(f"at most {coupon.max_redemptions} redemptions")
    if coupon.expires_on is not None:
        parts.append(f"expires {coupon.expires_on.isoformat()}")
    return f" ({'; '.join(parts)})" if parts else ""


def coupons_issue(code: CodeArgument, customer: CustomerOption, as_json: JsonOption = False) -> None:
    """Hand a coupon to a customer (it reduces nothing until it is applied)."""
    with database() as engine:
        held = service.issue_coupon(engine, code, customer)
    if as_json:
        _json.emit(service.holder_json(code, held))
        return
    console.print(f"coupon {code} issued to {customer}", highlight=False, markup=False)


def coupons_apply(code: CodeArgument, customer: CustomerOption, as_json: JsonOption = False) -> None:
    """Apply a coupon to a customer's subscriptions from the next billing period (issuing it if needed)."""
    with database() as engine:
        held = service.apply_coupon(engine, code, customer)
    if as_json:
        _json.emit(service.holder_json(code, held))
        return
    assert held.applied_on is not None
    console.print(
        f"coupon {code} applied to {customer}: it reduces the billing periods that start after "
        f"{held.applied_on.isoformat()}",
        highlight=False,
        markup=False,
    )


def coupons_list(as_json: JsonOption = False) -> None:
    """List the coupons with how many customers they were issued to, applied to and redeemed by."""
    with database() as engine:
        found = service.list_coupons(engine)
    if as_json:
        _json.emit(_json.listing(service.coupon_json(s.coupon, s) for s in found))
        return
    if not found:
        console.print("no coupons")
        return
    table = _table("Code", "Terms", "Issued", "Applied", "Redeemed", "Rate")
    for s in found:
        rate = "n/a" if s.issued == 0 else f"{format_rate(ratio(s.redeemed, s.issued))} %"
        cells = (s.coupon.code, s.coupon.terms + _restrictions(s.coupon), str(s.issued), str(s.applied))
        table.add_row(*map(Text, (*cells, str(s.redeemed), rate)))
    print_table(table)


def coupons_show(code: CodeArgument, as_json: JsonOption = False) -> None:
    """Show a coupon and the customers holding it."""
    with database() as engine:
        stats = service.get_coupon(engine, code)
    if as_json:
        document = service.coupon_json(stats.coupon, stats)
        document["customers"] = [service.holder_json(code, h) for h in stats.holders]
        _json.emit(document)
        return
    console.print(f"coupon {code}: {stats.coupon.terms}{_restrictions(stats.coupon)}", highlight=False, markup=False)
    table = _table("Customer", "Issued", "Applied on", "Redeemed")
    for h in stats.holders:
        applied = "—" if h.applied_on is None else h.applied_on.isoformat()
        redeemed = "—" if h.redeemed_at is None else h.redeemed_at.isoformat(timespec="seconds")
        table.add_row(*map(Text, (h.customer, h.issued_at.isoformat(timespec="seconds"), applied, redeemed)))
    print_table(table)
