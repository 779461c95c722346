"""The words of an invoice in its customer's language: gettext catalogs, one per language.

The document's labels are written in English in the template and in :mod:`invoices.render` (``_("Amount due")``);
each language translates them in ``invoices/locale/<language>/LC_MESSAGES/invoices.po``. Babel compiles a
catalog the first time a document in its language is printed (in memory, a few milliseconds, then kept), so a
fresh clone needs no build step and no compiled ``.mo`` file can fall behind its ``.po``.

A customer's locale picks its catalog by language (``de_AT`` and ``de_DE`` both read ``de``); a language without
a catalog prints English labels (its numbers, dates and currency still formatted as its locale writes them).

Unit names are pluralized by the language's own rules (English and German have two forms, Russian three,
Japanese one): :data:`UNITS` lists the units whose names are translated, each marked for extraction with both
English forms; a meter's other units use the catalog's ``unit_plural`` when it has one (English only).
"""

from __future__ import annotations

import gettext
from decimal import Decimal
from functools import cache
from io import BytesIO
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

__all__ = ["DOMAIN", "LOCALE_DIR", "N_", "SOURCE_LANGUAGE", "UNITS", "catalog_languages", "translations", "unit_name"]

DOMAIN = "invoices"
LOCALE_DIR = Path(__file__).parent / "locale"
SOURCE_LANGUAGE = "en"


def N_(message: str) -> str:
    """Marks a label kept in a table for extraction; it is translated where it is printed."""
    return message


def _unit_forms(singular: str, plural: str) -> tuple[str, str]:
    """Marks a unit's two English forms for extraction (``pybabel extract -k _unit_forms:1,2``)."""
    return singular, plural


# The units whose names the catalogs translate, by the name a meter gives (``unit = "call"``).
UNITS: dict[str, tuple[str, str]] = {
    forms[0]: forms
    for forms in (
        _unit_forms("unit", "units"),
        _unit_forms("call", "calls"),
        _unit_forms("request", "requests"),
        _unit_forms("event", "events"),
        _unit_forms("message", "messages"),
        _unit_forms("user", "users"),
        _unit_forms("seat", "seats"),
        _unit_forms("minute", "minutes"),
        _unit_forms("hour", "hours"),
        _unit_forms("day", "days"),
        _unit_forms("GB-month", "GB-months"),
        _unit_forms("GB", "GB"),
        _unit_forms("token", "tokens"),
        _unit_forms("credit", "credits"),
        _unit_forms("byte-month", "byte-months"),
        _unit_forms("vCPU-hour", "vCPU-hours"),
    )
}


def catalog_languages() -> list[str]:
    """The languages with a catalog, and English (the labels' own language), sorted."""
    found = {path.parent.parent.name for path in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po")}
    return sorted(found | {SOURCE_LANGUAGE})


def _language(locale: str) -> str:
    try:
        return Locale.parse(locale).language
    except (UnknownLocaleError, ValueError):
        return SOURCE_LANGUAGE


@cache
def _compiled(language: str) -> gettext.NullTranslations:
    source = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if language == SOURCE_LANGUAGE or not source.is_file():
        return gettext.NullTranslations()
    with source.open("rb") as file:
        catalog = read_po(file, locale=language, domain=DOMAIN)
    compiled = BytesIO()
    write_mo(compiled, catalog)  # fuzzy entries left out, as `pybabel compile` leaves them
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def translations(locale: str) -> gettext.NullTranslations:
    """The catalog for a customer's locale (``de_DE`` → ``de``); English (no translation) when there is none."""
    return _compiled(_language(locale))


def _plural_count(quantity: Decimal, locale: str) -> int:
    """The integer gettext's plural formula is given for ``quantity``: the quantity itself when whole, else an
    integer of the same plural category (CLDR's rules: "1.5 GB-months", "1,5 Гбайт-месяца")."""
    if quantity == quantity.to_integral_value():
        return int(abs(quantity))
    try:
        rule = Locale.parse(locale).plural_form
    except (UnknownLocaleError, ValueError):
        return 2
    category = rule(abs(quantity))
    return next((n for n in range(2, 200) if rule(n) == category), 2)


def unit_name(unit: str, quantity: Decimal, locale: str, plural: str | None = None) -> str:
    """``unit`` in the form ``quantity`` takes in the customer's language: a translated unit of :data:`UNITS`,
    else ``plural`` (the meter's English plural) or the unit as the meter names it."""
    singular, english_plural = UNITS.get(unit, (unit, plural or unit))
    return translations(locale).ngettext(singular, english_plural, _plural_count(quantity, locale))


def catalog_problems() -> list[str]:
    """What keeps the catalogs from printing every label in their language: a label of the template
    (``invoices.pot``) a catalog lacks or leaves untranslated or fuzzy, a translation whose placeholders differ
    from its label's, a catalog that does not compile; as ``file: message`` lines."""
    from babel.messages.checkers import python_format

    with (LOCALE_DIR / f"{DOMAIN}.pot").open("rb") as file:
        template = read_po(file)
    wanted = {message.id if isinstance(message.id, str) else message.id[0] for message in template if message.id}
    problems = []
    for language in catalog_languages():
        if language == SOURCE_LANGUAGE:
            continue
        source = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
        with source.open("rb") as file:
            catalog = read_po(file, locale=language)
        have = {}
        for message in catalog:
            if message.id:
                have[message.id if isinstance(message.id, str) else message.id[0]] = message
        for key in sorted(wanted):
            found = have.get(key)
            if found is None:
                problems.append(f"{source}: {key!r} is not translated")
                continue
            message = found
            strings = list(message.string) if isinstance(message.string, (list, tuple)) else [message.string]
            if message.fuzzy or not all(strings):
                problems.append(f"{source}: {key!r} is not translated")
                continue
            try:
                python_format(catalog, message)
            except Exception as error:  # babel's TranslationError: the placeholders differ
                problems.append(f"{source}: {key!r}: {error}")
        try:
            write_mo(BytesIO(), catalog)
        except Exception as error:
            problems.append(f"{source}: does not compile: {error}")
    return problems


if __name__ == "__main__":
    found = catalog_problems()
    print("\n".join(found) or f"catalogs complete: {', '.join(catalog_languages())}")
    raise SystemExit(1 if found else 0)
