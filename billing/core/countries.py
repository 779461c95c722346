"""Country codes: which two-letter codes name a country a buyer or a seller is in (ISO 3166-1 alpha-2, as
Babel's data knows them), and what to write instead of the codes that look like one. A customer's country and the
seller's are checked by the same rule."""

from __future__ import annotations

__all__ = ["COUNTRY_HINTS", "NOT_COUNTRIES", "is_country"]

# Codes that look like a country's but are not one: what to write instead.
COUNTRY_HINTS = {
    "EL": "Greece is GR (EL is only the prefix of its VAT numbers)",
    "UK": "the United Kingdom is GB",
}
# Codes Babel names that are groups of countries or placeholders (the pseudo-locales' XA and XB among them), not
# a country anyone is in.
NOT_COUNTRIES = frozenset({"EU", "EZ", "UN", "QO", "ZZ", "XA", "XB"})


def is_country(code: str) -> bool:
    """Whether ``code`` (upper case) is an ISO 3166-1 alpha-2 code of a country Babel's data knows (XK, Kosovo's
    user-assigned code, included): not a region such as EU, nor an unknown or private-use code such as XX."""
    from babel import Locale  # (loaded only when a country is checked)

    return len(code) == 2 and code.isalpha() and code.isupper() and code not in NOT_COUNTRIES and (
        code in Locale("en").territories
    )
