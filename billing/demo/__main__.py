"""``python -m billing.demo`` (``make demo``): runs the quarter of billing in ``billing.demo``."""

from __future__ import annotations

from billing.demo import main

if __name__ == "__main__":
    main()
