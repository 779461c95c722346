"""``billing customers review ID --on|--off``: flag a customer for review, so that each of its drafts waits for
approval before it is issued (``billing.approval``)."""

from __future__ import annotations

import typer

from billing.cli import _json
from billing.cli._common import console, engine_for_cli, fail
from billing.cli.customers import customers_app
from billing.errors import BillingError


def register(app: typer.Typer) -> None:
    # `customers` belongs to billing.cli.customers; the review flag lives here, beside approval.
    customers_app.command("review")(customers_review)


def customers_review(
    customer: str = typer.Argument(..., help="The customer's external id."),
    on: bool | None = typer.Option(None, "--on/--off", help="Flag the customer for review, or clear the flag."),
    note: str | None = typer.Option(None, "--note", help="Why, shown beside each of its waiting drafts."),
    by: str | None = typer.Option(None, "--by", help="Who flags it (default: the login name)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: the customer's review flag."),
) -> None:
    """Flag a customer for review (--on: each of its draft invoices waits for `billing invoices approve` before
    it is issued), clear the flag (--off), or show it (neither)."""
    import getpass

    from billing import approval

    engine = engine_for_cli()
    try:
        if on is None:
            review = approval.customer_review(engine, customer)
        else:
            review = approval.set_customer_review(engine, customer, on, by=by or getpass.getuser(), note=note)
    except BillingError as error:
        fail(str(error))
    if as_json:
        _json.emit(approval.review_json(review, customer))
        return
    if review is None:
        console.print(f"customer {customer} is not flagged for review")
    else:
        why = f": {review.note}" if review.note else ""
        console.print(f"customer {customer} is flagged for review (by {review.flagged_by}, "
                      f"{review.flagged_at:%Y-%m-%d %H:%M} UTC){why}; each of its drafts waits for approval")
