"""``billing portal link CUSTOMER [--days N]``: a signed, expiring link to the customer's portal
(``billing.portal_links``), to send to the customer; ``billing portal revoke CUSTOMER``: end every link made for
the customer so far."""

from __future__ import annotations

from typing import Annotated

import typer

from billing.cli import _json
from billing.cli._common import database

__all__ = ["register"]

portal_app = typer.Typer(
    help="The customer portal: make a link to send to a customer, or end the links sent.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(portal_app, name="portal")


@portal_app.command("link")
def link(
    customer: Annotated[str, typer.Argument(metavar="CUSTOMER", help="The customer's id.")],
    days: Annotated[int, typer.Option("--days", min=1, max=90, help="Days the link is good for (1 to 90).")] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="Print the link's record as JSON.")] = False,
) -> None:
    """Print a signed link to CUSTOMER's portal (usage, upcoming invoice, credits, invoices and their PDFs,
    details), good for --days days. It needs the portal_secret setting (BILLING_PORTAL_SECRET); links begin
    with public_url."""
    from billing.config import get_settings
    from billing.portal_links import create_portal_link

    with database() as engine:
        found = create_portal_link(engine, get_settings(), customer, days=days)
    expires = _json.timestamp(found.expires_at)
    if as_json:
        _json.emit({"object": "portal_link", "customer": found.customer, "url": found.url, "expires_at": expires})
        return
    typer.echo(found.url)
    typer.echo(f"portal link for {found.customer}, good until {expires}", err=True)


@portal_app.command("revoke")
def revoke(
    customer: Annotated[str, typer.Argument(metavar="CUSTOMER", help="The customer's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the revocation's record as JSON.")] = False,
) -> None:
    """End every portal link made for CUSTOMER until now: each is refused from the next page it opens (a portal
    open in a browser included). Links made afterwards open as usual."""
    from billing.portal_links import revoke_portal_links

    with database() as engine:
        revoked = revoke_portal_links(engine, customer)
    at = _json.timestamp(revoked.revoked_at)
    if as_json:
        _json.emit({"object": "portal_link_revocation", "customer": revoked.customer, "revoked_at": at})
        return
    typer.echo(f"every portal link made for {revoked.customer} before {at} is refused from now on")
