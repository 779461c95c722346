"""The engine's settings: ``config.toml`` (or the file named by ``BILLING_CONFIG``), overridden key by key by
environment variables ``BILLING_<KEY>``."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["Settings", "get_settings"]


def _config_file() -> Path:
    return Path(os.environ.get("BILLING_CONFIG", "config.toml"))


class Seller(BaseModel):
    """Who issues the invoices, as printed on them."""

    name: str = "Example Billing Co."
    address: list[str] = []
    email: str | None = None
    tax_id: str | None = None


class Settings(BaseSettings):
    """Every setting, with its default."""

    model_config = SettingsConfigDict(env_prefix="BILLING_", env_nested_delimiter="__", extra="ignore")

    database_url: str = "sqlite:///billing.db"
    catalog: str = "catalog.toml"
    timezone: str = "UTC"
    invoice_number_format: str = "INV-{year}-{seq:06d}"
    credit_note_number_format: str = "CN-{year}-{seq:06d}"
    payment_terms_days: int = 14
    finalize_grace_days: int = 2
    # Stripe: where the SDK sends its requests (tests point it at a local server) and how many failed payments
    # of one invoice end collection (Stripe ending its own retries ends it earlier).
    stripe_api_base: str = "https://api.stripe.com"
    dunning_max_attempts: int = 4
    seller: Seller = Seller()
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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=_config_file()))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
