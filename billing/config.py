"""The engine's settings: a TOML configuration file, overridden key by key by environment variables
``BILLING_<KEY>`` (and Stripe's own ``STRIPE_API_KEY`` and ``STRIPE_WEBHOOK_SECRET``).

The configuration file is the one named by ``BILLING_CONFIG`` (``billing --config FILE`` sets it), else
``config.toml`` in the working directory if there is one, else none (every setting at its default). A file named
by ``BILLING_CONFIG`` that does not exist is an error, not a silent fall-back to the defaults: a typo there would
otherwise bill against the wrong database.

Relative paths in the file (``catalog``, a SQLite ``database_url``) are relative to the file's folder, so the
same file works from any working directory; relative paths from environment variables stay relative to the
working directory, as a shell user expects.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import string
import tomllib
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from billing.core.countries import COUNTRY_HINTS, is_country
from billing.errors import BillingInputError

if TYPE_CHECKING:
    from billing.core.tax import TaxRules

__all__ = ["Approval", "ConfigError", "PaymentInstructions", "Settings", "config_file", "get_settings"]

DEFAULT_CONFIG = "config.toml"

# sqlite:///relative/path.db (three slashes, then no fourth): a file relative to the working directory.
_RELATIVE_SQLITE = re.compile(r"^(sqlite(?:\+\w+)?:///)(?!/)(?!:memory:)(?!file:)([^?]+)(\?.*)?$")


MAKE_SECRET = (
    "python -c \"import base64, secrets; print('whsec_' + base64.b64encode(secrets.token_bytes(32)).decode())\""
)
"""A command that prints a new Standard Webhooks secret."""


def webhook_key(secret: str) -> bytes:
    """The key of a Standard Webhooks secret, ``whsec_`` and base64 (the prefix optional, as the specification's
    libraries take it); empty when the secret is not base64 or is empty."""
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return b""


class ConfigError(BillingInputError):
    """The configuration file is missing (when named) or is not valid TOML, or a setting has a value it cannot
    take (named with where it came from)."""


def config_file() -> Path | None:
    """The configuration file in force: ``BILLING_CONFIG`` (which must exist), else ``./config.toml`` if present.

    Raises ConfigError if ``BILLING_CONFIG`` names a file that does not exist.
    """
    named = os.environ.get("BILLING_CONFIG", "").strip()
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"BILLING_CONFIG: {path}: no such file (unset it to use ./{DEFAULT_CONFIG})")
        return path
    default = Path(DEFAULT_CONFIG)
    return default if default.is_file() else None


def _read_config(path: Path) -> dict[str, Any]:
    """The file's settings, with its relative paths made relative to its folder."""
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the configuration: {error.strerror}") from None
    folder = path.resolve().parent
    catalog = data.get("catalog")
    if isinstance(catalog, str) and catalog and not Path(catalog).is_absolute():
        data["catalog"] = str(folder / catalog)
    url = data.get("database_url")
    if isinstance(url, str) and (match := _RELATIVE_SQLITE.match(url)):
        scheme, database, query = match.groups()
        data["database_url"] = f"{scheme}{folder / database}{query or ''}"
    return data


_EVENT_STORE_SCHEMES = ("sqlite", "postgresql", "chdb", "clickhouse", "clickhouses")
# What an invoice or credit note number may look like (the settings check each number format against it).
_INVOICE_NUMBER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._/ -]{0,62}[A-Za-z0-9])?")
_SAMPLE_SEQUENCE = (1, 12, 1234567)  # (a format is tried on these: "{seq:,}" makes 1,234,567)


class _ConfigFileSource(InitSettingsSource):
    """The configuration file as a settings source (below the environment variables)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        path = config_file()
        super().__init__(settings_cls, _read_config(path) if path is not None else {})


class Seller(BaseModel):
    """Who issues the invoices, as printed on them; ``country`` (ISO 3166-1 alpha-2) is where it is established
    for tax (an EU country makes EU business buyers of other member states reverse-charged). An unknown key is
    refused (a misspelt ``country`` would turn the reverse charge off without a word)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "Example Billing Co."
    address: list[str] = []
    email: str | None = None
    tax_id: str | None = None
    country: str | None = None

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        code = value.strip().upper()
        if code in COUNTRY_HINTS or not is_country(code):
            hint = f" ({COUNTRY_HINTS[code]})" if code in COUNTRY_HINTS else ""
            raise ValueError(f"expected an ISO 3166-1 alpha-2 country code such as IE, got {value!r}{hint}")
        return code


_RATE_PLACES = 4  # (billing.core.tax.MAX_RATE_PLACES)
_RATE_KEY = re.compile(r"[A-Z]{2}(-[A-Z0-9]{1,3})?")


class Tax(BaseModel):
    """Tax rates by buyer country (``DE``) or region (``US-NY``): a percentage (``19``: the standard rate), or a
    table ``{ standard = 19, reduced = 7, name = "MwSt." }`` whose other keys are the rates of plans' tax
    categories. ``name`` (default "VAT") is what the tax is called on invoices. An unknown key is refused."""

    model_config = ConfigDict(extra="forbid")

    name: str = "VAT"
    rates: dict[str, Any] = {}

    @property
    def _tables(self) -> dict[str, dict[str, Decimal | str]]:
        return {k: dict(v) if isinstance(v, dict) else {"standard": v} for k, v in self.rates.items()}

    @field_validator("rates", mode="before")
    @classmethod
    def _rates(cls, rates: Any) -> dict[str, Any]:
        """Every rate as a Decimal percentage between 0 and 100; every problem named by its key."""
        if not isinstance(rates, dict):
            raise ValueError("expected a table of rates by country (DE = 19)")
        problems, checked = [], {}
        for key, value in rates.items():
            if not _RATE_KEY.fullmatch(key):
                problems.append(f"{key}: expected a country code (DE) or a country and region (US-NY)")
            elif key[:2] in COUNTRY_HINTS:
                problems.append(f"{key}: not a country code ({COUNTRY_HINTS[key[:2]]})")
            table = dict(value) if isinstance(value, dict) else {"standard": value}
            if "standard" not in table:
                problems.append(f"{key}: a table of rates needs its standard rate")
            for name, rate in table.items():
                if name == "name":
                    continue
                try:
                    table[name] = Decimal(str(rate))
                    valid = table[name].is_finite() and 0 <= table[name] <= 100
                except (ArithmeticError, ValueError):
                    valid = False
                if not valid:
                    problems.append(f"{key}.{name}: expected a percentage between 0 and 100, got {rate!r}")
                elif -int(table[name].as_tuple().exponent) > _RATE_PLACES:
                    problems.append(f"{key}.{name}: at most {_RATE_PLACES} decimal places, got {rate!r}")
                elif int(table[name].as_tuple().exponent) > 0 or table[name].is_signed():  # 1E+1 → 10, -0 → 0
                    table[name] = abs(table[name]).quantize(Decimal(1))
            checked[key] = table
        if problems:
            raise ValueError("; ".join(problems))
        return checked

    def rules(self, seller_country: str | None) -> TaxRules:
        """The rules ``billing.core.tax`` applies."""
        from billing.core.tax import CountryRates, TaxRules

        found: dict[str, CountryRates] = {}
        for key, table in self._tables.items():
            name = str(table.get("name") or self.name)
            rates = {k: Decimal(v) for k, v in table.items() if k != "name"}
            found[key] = CountryRates(standard=rates.pop("standard"), categories=rates, name=name)
        return TaxRules(seller_country=seller_country, rates=found)


class Risk(BaseModel):
    """The churn-risk rules' parameters (``billing metrics risk``; the README's *Warning signs of churn*): each
    rule's threshold, the points it adds to a customer's score when it fires, and the score at which a customer is
    at risk (a ``customer.at_risk`` notification, once per customer and period)."""

    usage_drop_share: Decimal = Field(default=Decimal("0.5"), ge=0)
    """usage_drop fires when a meter's usage in the period ≤ this share × its average over the 3 periods before."""
    inactive_days: int = Field(default=14, ge=1)
    """inactive fires when no event arrived for ≥ this many whole days up to the period's end."""
    adoption_share: Decimal = Field(default=Decimal("0.1"), ge=0)
    """low_adoption fires when a meter's usage / its allowance (the plan's threshold) ≤ this share."""
    coupon_ending_periods: int = Field(default=1, ge=1)
    """coupon_ending fires when a coupon's last discounted period is the period or one of the next N − 1."""
    level: int = Field(default=3, ge=1)
    """A customer whose score (the points of the rules that fired) reaches this level is at risk."""
    points: dict[str, int] = {
        "usage_drop": 2,
        "inactive": 3,
        "low_adoption": 1,
        "failed_payment": 3,
        "downgrade_scheduled": 2,
        "cancellation_scheduled": 4,
        "coupon_ending": 1,
    }


_REFERENCE_FIELDS = {"number": "INV-2026-000001", "customer": "acme"}


def _iban_checks(iban: str) -> bool:
    """An IBAN's check digits hold (ISO 13616: the country and check digits moved to the end, letters as
    numbers A=10 … Z=35, the whole mod 97 is 1)."""
    compact = iban.replace(" ", "").upper()
    if not (15 <= len(compact) <= 34 and compact[:2].isalpha() and compact[2:4].isdigit() and compact.isalnum()):
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in moved)) % 97 == 1


class PaymentInstructions(BaseModel):
    """How customers pay by bank transfer, printed under the totals of every invoice with something to pay.

    ``reference`` is what the customer quotes with the transfer, a format of ``{number}`` (the invoice's
    number, the default) and ``{customer}`` (the customer's id). Every field may be left out: without a bank
    name or an IBAN the invoice prints the reference to quote and no account."""

    model_config = ConfigDict(extra="forbid")

    bank_name: str | None = None
    account_holder: str | None = None
    iban: str | None = None
    bic: str | None = None
    reference: str = "{number}"

    @field_validator("iban")
    @classmethod
    def _iban(cls, value: str | None) -> str | None:
        """An IBAN printed in groups of four (as people copy it), refused when its check digits are wrong: a
        typo here would send every payment astray."""
        if value is None or not value.strip():
            return None
        if not _iban_checks(value):
            raise ValueError(f"{value!r} is not a valid IBAN (its length, country or check digits are wrong)")
        compact = value.replace(" ", "").upper()
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))

    @field_validator("bic")
    @classmethod
    def _bic(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not re.fullmatch(r"[A-Z]{6}[A-Z0-9]{2}([A-Z0-9]{3})?", value.strip().upper()):
            raise ValueError(f"{value!r} is not a BIC (8 or 11 letters and digits, e.g. AIBKIE2D)")
        return value.strip().upper()

    @field_validator("reference")
    @classmethod
    def _reference(cls, value: str) -> str:
        try:
            value.format(**_REFERENCE_FIELDS)
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(f"{value!r}: only {{number}} and {{customer}} can be used ({error})") from None
        return value

    def reference_for(self, number: str, customer: str) -> str:
        """The reference to quote for invoice ``number`` of ``customer``."""
        return self.reference.format(number=number, customer=customer)


class Approval(BaseModel):
    """When a draft waits for ``billing invoices approve`` before it is issued (``[approval]``): its total is above
    the limit of its currency (``limits``, e.g. ``{ USD = "10000.00" }``; a currency without a limit never waits
    for its amount), it holds late usage (``late_usage``), or its customer is flagged for review."""

    limits: dict[str, Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]] = {}
    late_usage: bool = True

    @field_validator("limits", mode="before")
    @classmethod
    def _exact_limits(cls, value: Any) -> Any:
        """Limits are exact decimals, written as strings (or integers) in TOML, never floats."""
        if not isinstance(value, dict):
            return value
        for currency, limit in value.items():
            if isinstance(limit, float) or not isinstance(limit, (str, int)):
                raise ValueError(f"{currency}: expected the limit as a string such as \"10000.00\", got {limit!r}")
            if not (isinstance(currency, str) and len(currency) == 3 and currency.isupper()):
                raise ValueError(f"{currency!r}: expected a currency code such as USD")
        return {currency: str(limit) for currency, limit in value.items()}


class Settings(BaseSettings):
    """Every setting, with its default."""

    model_config = SettingsConfigDict(
        env_prefix="BILLING_", env_nested_delimiter="__", extra="ignore", populate_by_name=True
    )

    database_url: str = "sqlite:///billing.db"
    # Where the usage events live (see README "The event store"): unset, in the billing database; else
    # chdb:///folder, clickhouse://user:password@host:8123/database, or another SQL database's URL.
    events_url: str | None = None
    catalog: str = "catalog.toml"
    timezone: str = "UTC"
    invoice_number_format: str = "INV-{year}-{seq:06d}"
    credit_note_number_format: str = "CN-{year}-{seq:06d}"
    payment_terms_days: int = Field(default=14, ge=0, le=3650)
    finalize_grace_days: int = 2
    # Stripe: the secret key (Stripe's own variable STRIPE_API_KEY; without it nothing is pushed), the secret its
    # webhooks are signed with (STRIPE_WEBHOOK_SECRET), where the SDK sends its requests (tests point it at a
    # local server) and how many failed payments of one invoice end collection (Stripe ending its own retries
    # ends it earlier).
    stripe_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("stripe_api_key", "STRIPE_API_KEY")
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("stripe_webhook_secret", "STRIPE_WEBHOOK_SECRET")
    )
    stripe_api_base: str = "https://api.stripe.com"
    dunning_max_attempts: int = 4
    seller: Seller = Seller()
    tax: Tax = Tax()
    risk: Risk = Risk()
    # Bank transfer details and the reference to quote, printed on invoices ([payment_instructions]).
    payment_instructions: PaymentInstructions = PaymentInstructions()
    approval: Approval = Approval()
    # Notifications: the webhook used for customers without their own URL, the one secret every webhook is signed
    # with, retries (exponential backoff with jitter from the base delay, capped) and the SMTP server for e-mail.
    notification_webhook_url: str | None = None
    notification_webhook_secret: str | None = None
    notification_max_attempts: int = 8
    notification_backoff_base_seconds: int = 30
    notification_backoff_max_seconds: int = 21600
    notification_timeout_seconds: int = 10
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "billing@localhost"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    # The customer portal (billing.portal_links): the key its links are signed with (at least 32 characters; no
    # link can be made or opened without it), and the address customers reach `billing serve` at, which links
    # begin with.
    portal_secret: SecretStr | None = None
    public_url: str = "http://127.0.0.1:8000"

    @field_validator("events_url")
    @classmethod
    def _event_store_url(cls, value: str | None) -> str | None:
        """The event store's URL is refused here, when the settings are read, if its scheme names no store."""
        if value is None or not value.strip():
            return None
        scheme = value.strip().split(":", 1)[0].lower()
        if scheme.split("+", 1)[0] not in _EVENT_STORE_SCHEMES:
            raise ValueError(
                f"unknown scheme {scheme!r}: expected sqlite:///file.db, postgresql+psycopg://…, chdb:///folder or "
                "clickhouse[s]://user:password@host:8123/database"
            )
        return value.strip()

    @field_validator("invoice_number_format", "credit_note_number_format")
    @classmethod
    def _number_format(cls, value: str) -> str:
        """A number format is tried here, when the settings are read, instead of failing the first finalization:
        it takes ``{year}`` and ``{seq}`` only, must hold ``{seq}`` (else every number of a year is the same), and
        its numbers are letters, digits and ``. _ - /``, as links and file names can carry them."""
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        if "seq" not in fields:
            raise ValueError(f"{value!r}: expected a format holding {{seq}}, such as INV-{{year}}-{{seq:06d}}")
        try:
            samples = [value.format(year=2026, seq=seq) for seq in _SAMPLE_SEQUENCE]
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(f"{value!r}: expected only {{year}} and {{seq}} in the format ({error!s})") from None
        for sample in samples:
            if not _INVOICE_NUMBER.fullmatch(sample):
                raise ValueError(
                    f"{value!r} makes numbers such as {sample!r}: expected letters, digits, spaces and . _ - / "
                    "only, beginning and ending with a letter or digit, at most 64 characters"
                )
        return value

    @field_validator("credit_note_number_format")
    @classmethod
    def _numbers_apart(cls, value: str, info: ValidationInfo) -> str:
        """Invoices and credit notes count in sequences of their own: one format for both would give a credit note
        the number of an invoice, and its finalization would fail."""
        invoices = info.data.get("invoice_number_format")
        if invoices is not None and any(
            value.format(year=2026, seq=seq) == invoices.format(year=2026, seq=seq) for seq in _SAMPLE_SEQUENCE
        ):
            raise ValueError(
                f"expected a format whose numbers are not invoice_number_format's ({value!r}), such as "
                "CN-{year}-{seq:06d}"
            )
        return value

    @field_validator("notification_webhook_secret")
    @classmethod
    def _standard_webhooks_secret(cls, value: str | None) -> str | None:
        """Webhooks are signed the Standard Webhooks way, whose secret is ``whsec_`` and base64: a secret that is
        not is refused here, when the settings are read, instead of failing every delivery later."""
        if value is None or not value.strip():
            return None
        if not webhook_key(value.strip()):
            raise ValueError(
                f"expected whsec_ followed by base64 (a Standard Webhooks secret); make one with {MAKE_SECRET}"
            )
        return value.strip()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _ConfigFileSource(settings_cls))

    def tax_rules(self) -> TaxRules:
        """The tax rules of ``[tax]`` and the seller's country."""
        return self.tax.rules(self.seller.country)

    def secret(self, name: str) -> str:
        """The value of the secret setting ``name`` (``stripe_api_key``…), stripped; "" when not set."""
        value: SecretStr | None = getattr(self, name)
        return value.get_secret_value().strip() if value is not None else ""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings in force; a value a setting cannot take is a :class:`ConfigError` naming each such setting
    and where the settings come from (the configuration file, or the environment)."""
    try:
        return Settings()
    except ValidationError as error:
        source = config_file()
        where = f"{source}" if source is not None else "settings (environment)"
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()
        )
        raise ConfigError(f"{where}: {problems}") from None
