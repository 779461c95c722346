"""The orchestrator's pure core: periods, the domain records, rating, fee timing, invoice composition and the
revenue figures. No database, no clock, no network: every function here is tested without a database, and
``lint-imports`` keeps SQLAlchemy, stripe, FastAPI and Typer out."""
