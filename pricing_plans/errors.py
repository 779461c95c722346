"""The catalog's errors, as values that carry where they came from.

Exception tree::

    CatalogError            raised by load_catalog_or_raise() when a catalog has any problem; holds them all
    UnknownPlanError        a plan code (or version) that the catalog does not have
    AmountOutOfRangeError   an amount too large to be kept exactly (a huge quantity × a price), never rounded away

A single problem is a :class:`CatalogProblem` (``source`` + ``message``) and prints as
``FILE: KEY.PATH: message`` (or ``FILE:LINE: message`` for TOML syntax errors).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AmountOutOfRangeError", "CatalogError", "CatalogProblem", "UnknownPlanError"]


@dataclass(frozen=True, slots=True)
class CatalogProblem:
    """One problem found in a catalog.

    Attributes:
      file: the catalog file's name as given.
      path: the TOML key path (``plans.growth.charges[0].tiers[2].up_to``), or "" for the whole file.
      message: what is wrong and what was expected.
      line: the line number, when known (TOML syntax errors).
    """

    file: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.file}:{self.line}: {self.message}"
        if self.path:
            return f"{self.file}: {self.path}: {self.message}"
        return f"{self.file}: {self.message}"


class CatalogError(Exception):
    """Raised when a catalog cannot be loaded; ``problems`` holds every problem found, not just the first."""

    def __init__(self, problems: list[CatalogProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class UnknownPlanError(LookupError):
    """Raised when a plan code or plan version is not in the catalog."""


class AmountOutOfRangeError(ValueError):
    """Raised when an amount reaches :data:`pricing_plans.money.MAX_AMOUNT`: a computed line (a huge quantity ×
    a price) that the engine could no longer round, add up and tax exactly. The message names the amount; callers
    that know the plan and charge say which."""
