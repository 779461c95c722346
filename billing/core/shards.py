"""Shards of a billing run: ``K/N`` splits the customers into N disjoint parts by a stable hash of their
external id, so that N workers (processes or machines) each bill their own customers and together bill every
customer exactly once, as one run would.

A customer's shard is ``blake2b(external id, 8 bytes) mod N`` (+1): the same on every machine and every Python
(unlike ``hash()``), independent of the order customers were created in, and balanced whatever the ids look like.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["Shard", "parse_shard"]


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (1 ≤ index ≤ count): the customers whose hash falls in it."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ValueError(f"expected K/N with 1 ≤ K ≤ N, got {self.index}/{self.count}")

    def owns(self, customer: str) -> bool:
        """Whether the customer (by external id) is billed by this shard."""
        return shard_of(customer, self.count) == self.index

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(customer: str, count: int) -> int:
    """The shard (1 … ``count``) a customer's external id falls in."""
    digest = hashlib.blake2b(customer.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count + 1


def parse_shard(text: str) -> Shard:
    """``"K/N"`` → ``Shard(K, N)``; ValueError naming what is wrong (not two integers, K outside 1…N)."""
    index, slash, count = text.strip().partition("/")
    if not slash or not index.strip().isdigit() or not count.strip().isdigit():
        raise ValueError(f"expected K/N (two whole numbers, e.g. 2/4), got {text!r}")
    return Shard(int(index), int(count))
