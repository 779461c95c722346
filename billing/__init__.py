"""The billing engine's orchestrator: services over the pure packages, and its entry points (``billing.cli``,
``billing.api``)."""

__version__ = "0.1.0"
