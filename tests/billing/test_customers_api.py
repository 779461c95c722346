"""``PATCH /v1/customers/{id}``: changing a customer's details, its tax id checked, archiving, over a live API."""

from __future__ import annotations

from tests.billing.test_api import add_customer, error_of, live_api, subscribe

__all__ = ["live_api"]


def test_a_patch_changes_the_fields_given_and_null_clears_one(live_api):
    add_customer(live_api, "acme", address=["1 Main St"])
    with live_api.client() as client:
        changed = client.patch("/v1/customers/acme", json={"country": "de", "tax_id": "DE 136 695 976",
                                                           "name": "Acme GmbH"})
        assert changed.status_code == 200, changed.text
        body = changed.json()
        assert (body["name"], body["country"], body["tax_id"], body["address"]) == (
            "Acme GmbH", "DE", "DE136695976", ["1 Main St"]
        )
        assert body["webhook_secret"] is None
        assert client.get("/v1/customers/acme").json()["tax_id"] == "DE136695976"
        cleared = client.patch("/v1/customers/acme", json={"tax_id": None, "tax_exempt_reason": "Charity"})
        assert (cleared.json()["tax_id"], cleared.json()["tax_exempt_reason"]) == (None, "Charity")
        missing = client.patch("/v1/customers/nobody", json={"name": "X"})
        unknown = client.patch("/v1/customers/acme", json={"currency": "EUR"})
    assert missing.status_code == 404
    assert unknown.status_code == 422 and error_of(unknown)["field"] == "currency"


def test_an_invalid_vat_id_is_refused_naming_the_field(live_api):
    add_customer(live_api, "acme", country="DE")
    with live_api.client() as client:
        refused = client.patch("/v1/customers/acme", json={"tax_id": "DE136695977"})
        created = client.post("/v1/customers", json={"external_id": "b", "name": "B", "currency": "EUR",
                                                     "country": "DE", "tax_id": "DE123"})
    assert refused.status_code == 422
    assert error_of(refused) == {
        "code": "invalid_input",
        "message": "customer 'acme': tax_id: 'DE136695977': not a valid VAT number of Germany (wrong check digit)",
        "field": "tax_id",
    }
    assert refused.json()["errors"] == [
        {"field": "tax_id", "message": "'DE136695977': not a valid VAT number of Germany (wrong check digit)"}
    ]
    assert created.status_code == 422 and error_of(created)["field"] == "tax_id"


def test_archiving_through_a_patch(live_api):
    add_customer(live_api, "acme")
    subscribe(live_api, "acme")
    with live_api.client() as client:
        running = client.patch("/v1/customers/acme", json={"archived": True})
        add_customer(live_api, "gone")
        archived = client.patch("/v1/customers/gone", json={"archived": True})
        refused = client.post("/v1/subscriptions", json={"customer": "gone", "plan": "starter", "start": "2026-03-01"})
        back = client.patch("/v1/customers/gone", json={"archived": False})
    assert running.status_code == 409 and "still running" in error_of(running)["message"]
    assert archived.status_code == 200 and archived.json()["archived_at"] is not None
    assert refused.status_code == 409 and "is archived" in error_of(refused)["message"]
    assert back.status_code == 200 and back.json()["archived_at"] is None


def test_a_patch_refused_changes_nothing_even_when_it_also_archives(live_api):
    add_customer(live_api, "acme")
    subscribe(live_api, "acme")
    with live_api.client() as client:
        refused = client.patch("/v1/customers/acme", json={"name": "Renamed", "archived": True})
        after = client.get("/v1/customers/acme").json()
    assert refused.status_code == 409 and "still running" in error_of(refused)["message"]
    # the name was not changed by a request that was refused
    assert (after["name"], after["archived_at"]) == ("Acme", None)


def test_a_patch_names_every_invalid_field(live_api):
    add_customer(live_api, "acme")
    with live_api.client() as client:
        refused = client.patch("/v1/customers/acme", json={
            "name": None, "email": "nope", "country": "XX", "region": "N!Y", "timezone": "Mars/Base",
            "tax_rate": "101",
        })
        unknown = client.patch("/v1/customers/nobody", json={"name": None})
    assert refused.status_code == 422, refused.text
    assert [error["field"] for error in refused.json()["errors"]] == [
        "name", "email", "timezone", "tax_rate", "country", "region"
    ]
    assert unknown.status_code == 404
