"""The public surface of ``invoices``: one ``__all__`` that names what exists, sorted and without private names;
the store's public functions and the renderers among them; and records that load no database."""

from __future__ import annotations

import subprocess
import sys

import invoices
from invoices import model, store

EXPECTED = {
    "DraftInvoice",
    "Invoice",
    "InvoiceLine",
    "InvoiceKind",
    "InvoiceScope",
    "InvoiceStatus",
    "Party",
    "Totals",
    "compute_totals",
    "InvoiceError",
    "InvoiceNotFoundError",
    "InvoiceStateError",
    "invoice_json",
    "render_html",
    "render_pdf",
}


def _isort_order(name: str) -> tuple[int, str]:
    # constants, then classes, then functions (ruff's order for ``__all__``)
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_every_name_in_all_exists_once() -> None:
    assert [name for name in invoices.__all__ if not hasattr(invoices, name)] == []
    assert len(invoices.__all__) == len(set(invoices.__all__))


def test_all_is_sorted_and_public() -> None:
    assert invoices.__all__ == sorted(invoices.__all__, key=_isort_order)
    assert [name for name in invoices.__all__ if name.startswith("_")] == []


def test_all_holds_the_records_the_store_and_the_renderers() -> None:
    assert EXPECTED - set(invoices.__all__) == set()
    assert set(model.__all__) - set(invoices.__all__) == set()
    assert set(store.__all__) - set(invoices.__all__) == set()


def test_a_name_is_the_object_of_the_module_that_defines_it() -> None:
    assert invoices.finalize is store.finalize
    assert invoices.Invoice is model.Invoice
    from invoices.render import render_pdf

    assert invoices.render_pdf is render_pdf


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from invoices import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(invoices.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    assert not hasattr(invoices, "nothing_of_the_kind")


def test_the_records_load_neither_the_database_nor_the_templates() -> None:
    code = (
        "import sys, invoices, invoices.model, invoices.errors;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'billing', 'meters', 'sqlalchemy', 'jinja2'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_invoices_imports_neither_billing_nor_meters() -> None:
    code = (
        "import sys, invoices, invoices.store, invoices.render, invoices.tables;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'billing', 'meters'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
