"""The event store in ClickHouse: chDB (ClickHouse embedded in this process, ``chdb:///folder``) for one machine
and the test suite, ``clickhouse-connect`` for a server or cluster (``clickhouse://user:password@host:8123/db``).
The same SQL and the same table engine on both.

Exactly once, whatever the merges:

- **one row per event after a merge**: ``usage_events`` is a ``ReplacingMergeTree(version)`` ordered by
  ``(customer, meter, occurred_at, event_id)``; a duplicate (same id, same content) has the same sorting key, so a
  merge keeps one row of it: the first received (``version`` = 2^63 − ``received_at``, the largest wins);
- **exact before any merge**: every query reads the events through ``FINAL`` restricted to the windows asked
  about (the customers' key ranges), so a duplicate not merged yet is still counted once; nothing relies on a
  merge having happened (the tests stop merges with ``SYSTEM STOP MERGES``);
- **a batch stored once**: each chunk is inserted with a deterministic ``insert_deduplication_token`` (a digest of
  its ids and contents): two processes inserting the same chunk, or a retry after a lost answer, store it once;
- **conflicts**: before a chunk is inserted, the ids already stored are looked up; the same content is a
  duplicate (not inserted again), other content a conflict (rejected), exactly as on SQL. Two ingestions racing
  with different contents for one id can both get through: the aggregation then finds the id with two contents
  and raises :class:`~meters.errors.ConflictingEvents` naming it, so no billing run counts it silently.

Numbers are exact: ``value`` is ``Decimal(18, 6)`` (a value's magnitude is below 10^12 with 6 decimals), sums are
``Decimal(38, 6)``, a weighted sum's ∫ level dt is summed in ``Decimal(76, 6)`` and divided, half-even, in Python
(one number per window). Instants are integer microseconds since the epoch (UTC), as on SQL.

Every aggregation runs in ClickHouse, one pass over the windows' events per query, and hands back one row per
(window, meter) or part, never the events: ``count``/``sum``/``max`` (``countIf``/``sumIf``/``maxIf``),
``unique_count`` (``uniqExact``), ``latest`` (``argMax`` by time, then order of arrival), ``weighted_sum`` (the
level carried in, ``sumIf`` of the earlier events, and Σ value × (end − t) of the window's, so
∫ level dt = level × (end − start) + Σ value × (end − t)); the per-event values a ``percentage`` charge prices are
handed back as one sorted array per window.

``received_at`` is stamped by this process's clock. On chDB (one process owns the folder) a lock orders every
insert with the ingestion cutoff, so the cutoff is exact. On a server several hosts ingest at once: the cutoff is
the server's clock less :data:`SERVER_CUTOFF_GRACE`, so an insert must complete within it (chunks take well under
a second) and the hosts' clocks must agree to within it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
import time
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import IO, Any, Protocol, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from dbkit.clock import utcnow
from meters.aggregate import MeterAggregate, Window
from meters.errors import ConflictingEvents
from meters.events import VALUE_DIGITS, MeterSpec, from_epoch_us, from_scaled, meters_by_code, to_epoch_us
from meters.fees import walk
from meters.ingest import FileFormat, IngestReport, Progress, ingest, ingest_file
from meters.ingest.read import HASH, ID
from meters.queries import CountedWindow
from meters.split import PartKey, Split

__all__ = ["SERVER_CUTOFF_GRACE", "TABLE_DDL", "ClickHouseEventStore", "usage_event_ids_ddl", "usage_events_ddl"]

Key = TypeVar("Key", bound=Hashable)
Specs = Iterable[MeterSpec] | Mapping[str, MeterSpec]

SERVER_CUTOFF_GRACE = dt.timedelta(seconds=5)
"""On a server: how far behind its clock the ingestion cutoff is (inserts complete within it)."""

_VERSION_BASE = 2**63
_DEDUP_WINDOW = 100_000  # chunks whose tokens a table remembers


def usage_events_ddl(table: str, engine: str = "ReplacingMergeTree(version)", dedup_window: int = _DEDUP_WINDOW) -> str:
    """The ``usage_events`` table (``engine``: a replicated engine on a cluster, see the README;
    ``dedup_window``: how many inserted blocks' tokens it remembers)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {table} ("
        "event_id String, customer String, meter LowCardinality(String), "
        "occurred_at Int64, value Nullable(Decimal(18, 6)), unique_value Nullable(String), "
        "properties Nullable(String), content_hash Int64, received_at Int64, seq UInt32, "
        f"version UInt64 MATERIALIZED toUInt64({_VERSION_BASE} - received_at), "
        "INDEX ix_event_id event_id TYPE bloom_filter GRANULARITY 1, "
        "INDEX ix_received_at received_at TYPE minmax GRANULARITY 1"
        f") ENGINE = {engine} "
        "PARTITION BY toYYYYMM(toDateTime(intDiv(occurred_at, 1000000), 'UTC')) "
        "ORDER BY (customer, meter, occurred_at, event_id) "
        f"SETTINGS non_replicated_deduplication_window = {dedup_window}"
    )


def usage_event_ids_ddl(table: str, engine: str = "ReplacingMergeTree(version)") -> str:
    """The ids of the stored events, ordered by id: what ingestion looks a chunk's ids up in (a lookup by the
    primary key, whatever the number of events). A conflicting content is a row of its own."""
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (event_id String, content_hash Int64, customer String, "
        f"received_at Int64, version UInt64 MATERIALIZED toUInt64({_VERSION_BASE} - received_at)"
        f") ENGINE = {engine} ORDER BY (event_id, content_hash) "
        f"SETTINGS non_replicated_deduplication_window = {_DEDUP_WINDOW}"
    )


_ID_COLUMNS = ("event_id", "content_hash", "customer", "received_at")
TABLE_DDL = usage_events_ddl("usage_events")
_COLUMNS = ("event_id", "customer", "meter", "occurred_at", "value", "unique_value", "properties", "content_hash")
_INSERTED = (*_COLUMNS, "received_at", "seq")


class _Client(Protocol):
    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]: ...

    def command(self, sql: str) -> None: ...

    def insert(self, table: str, rows: list[tuple[Any, ...]], token: str) -> None: ...

    def insert_plain(
        self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]], token: str = ""
    ) -> None: ...

    def command_with(self, sql: str, params: Mapping[str, Any]) -> None: ...

    def server_now(self) -> int: ...

    def close(self) -> None: ...


# --- chDB -----------------------------------------------------------------------------------------------------

_CHDB_LOCK = threading.RLock()
_CHDB: dict[str, Any] = {}  # the process's one chDB session: {"path": …, "session": …}


def _chdb_session(path: str) -> Any:
    """The process's chDB session of ``path`` (chDB holds one folder per process: another one closes it)."""
    import chdb.session

    with _CHDB_LOCK:
        if _CHDB.get("path") != path:
            if _CHDB.get("session") is not None:
                _CHDB["session"].close()
                _CHDB.clear()
            os.makedirs(path, exist_ok=True)
            _CHDB["session"] = chdb.session.Session(path)  # type: ignore[no-untyped-call]
            _CHDB["path"] = path
        return _CHDB["session"]


def close_chdb() -> None:
    """Close the process's chDB session, if any."""
    with _CHDB_LOCK:
        if _CHDB.get("session") is not None:
            _CHDB["session"].close()
        _CHDB.clear()


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _quoted(item: Any) -> str:
    if isinstance(item, str):
        return "'" + item.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(item, list | tuple):
        return "[" + ",".join(_quoted(x) for x in item) + "]"
    return str(item)


def _param_text(value: Any) -> str:
    """A query parameter in ClickHouse's text form (strings escaped, arrays of quoted items)."""
    if isinstance(value, str):
        return _escaped(value)
    if isinstance(value, list | tuple):
        return _quoted(value)
    return str(value)


def _converter(kind: str) -> Any:
    """How a JSON value of ClickHouse type ``kind`` becomes the Python value clickhouse-connect gives."""
    for wrapper in ("Nullable(", "LowCardinality("):
        if kind.startswith(wrapper):
            kind = kind[len(wrapper) : -1]
    if kind.startswith("Array("):
        inner = _converter(kind[6:-1])
        return lambda items: None if items is None else [inner(x) for x in items]
    if kind.startswith("Decimal"):
        return lambda x: None if x is None else Decimal(str(x))
    if kind.startswith(("Int", "UInt")):
        return lambda x: None if x is None else int(x)
    return lambda x: x


def _chdb_folder(url: str) -> str:
    """The folder of a ``chdb:///absolute/folder`` URL (refused: a host, no path, a path that is a file)."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc or not path.startswith("/"):
        host = f" ({parts.netloc!r} read as a host)" if parts.netloc else ""
        raise ValueError(f"events_url {url}: expected chdb:///absolute/folder{host}")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"events_url {url}: {path} is not a folder")
    return path


class _ChdbClient:
    def __init__(self, path: str):
        self.path = path
        self.creating = False  # create_tables: the folder is made if missing

    def _run(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        texts = {name: _param_text(value) for name, value in (params or {}).items()}
        with _CHDB_LOCK:
            if _CHDB.get("path") != self.path and not self.creating and not os.path.isdir(self.path):
                # a typo in events_url must not read as a store without usage
                raise ValueError(f"the event store's folder {self.path} does not exist: billing db upgrade creates it")
            return _chdb_session(self.path).query(sql, "JSONCompact", params=texts)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        answer = json.loads(self._run(sql, params).bytes() or b"{}", parse_float=Decimal)
        if not answer:
            return []
        converters = [_converter(column["type"]) for column in answer["meta"]]
        return [tuple(c(x) for c, x in zip(converters, row, strict=True)) for row in answer["data"]]

    def command(self, sql: str) -> None:
        self._run(sql)

    def command_with(self, sql: str, params: Mapping[str, Any]) -> None:
        self._run(sql, params)

    def insert_plain(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]], token: str = "") -> None:
        lines = "\n".join("\t".join(map(_tsv, row)) for row in rows)
        self.command(
            f"INSERT INTO {table} ({', '.join(columns)}) SETTINGS insert_deduplication_token = {_quoted(token)} "
            f"FORMAT TabSeparated\n{lines}\n"
        )

    def insert(self, table: str, rows: list[tuple[Any, ...]], token: str) -> None:
        # TabSeparated: the quickest for Python to write and for ClickHouse to read (data after FORMAT is not
        # parsed as SQL, so no max_query_size applies)
        lines = "\n".join("\t".join(map(_tsv, row)) for row in rows)
        self.command(
            f"INSERT INTO {table} ({', '.join(_INSERTED)}) SETTINGS insert_deduplication_token = {_quoted(token)} "
            f"FORMAT TabSeparated\n{lines}\n"
        )

    def server_now(self) -> int:
        return to_epoch_us(utcnow())

    def close(self) -> None:
        """The session stays open for the process (one folder per process)."""


def _tsv(value: Any) -> str:
    """A field in ClickHouse's TabSeparated form (NULL is ``\\N``)."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return _escaped(value).replace("\r", "\\r").replace("\0", "\\0")
    return str(value)


# --- a ClickHouse server --------------------------------------------------------------------------------------


class _ServerClient:
    def __init__(self, **settings: Any):
        import clickhouse_connect

        self.client = clickhouse_connect.get_client(form_encode_query_params=True, **settings)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.client.query(sql, parameters=dict(params or {})).result_rows]

    def command(self, sql: str) -> None:
        self.client.command(sql)

    def command_with(self, sql: str, params: Mapping[str, Any]) -> None:
        self.client.command(sql, parameters=dict(params))

    def insert_plain(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]], token: str = "") -> None:
        settings = {"insert_deduplication_token": token} if token else None
        self.client.insert(table, rows, column_names=list(columns), settings=settings)

    def insert(self, table: str, rows: list[tuple[Any, ...]], token: str) -> None:
        self.client.insert(table, rows, column_names=list(_INSERTED), settings={"insert_deduplication_token": token})

    def server_now(self) -> int:
        now = self.client.query("SELECT toUnixTimestamp64Micro(now64(6))").result_rows[0][0]
        return int(now) - SERVER_CUTOFF_GRACE // dt.timedelta(microseconds=1)

    def close(self) -> None:
        self.client.close()


# --- the store ------------------------------------------------------------------------------------------------


class _ReceivingClock:
    """Orders the ``received_at`` of inserts with the ingestion cutoffs: an insert holds ``lock`` from its stamp
    to its end, a cutoff takes it, so no insert stamped at or before a cutoff is still under way."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_cutoff = 0
        self.last_received = 0


_CLOCKS: dict[str, _ReceivingClock] = {}


def _folder_clock(path: str) -> _ReceivingClock:
    """The process's clock of the chDB folder ``path`` (every store of the folder shares it)."""
    with _CHDB_LOCK:
        return _CLOCKS.setdefault(os.path.realpath(path), _ReceivingClock())


def _windows_cte(customers: Sequence[str], starts: Sequence[int], ends: Sequence[int]) -> tuple[str, dict[str, Any]]:
    """The windows as a ClickHouse table ``w`` (idx, customer, start, end), passed as array parameters."""
    sql = (
        "w AS (SELECT toUInt32(t.1) AS idx, t.2 AS customer, t.3 AS start, t.4 AS end FROM "
        "(SELECT arrayJoin(arrayZip(range(length({wc:Array(String)})), {wc:Array(String)}, "
        "{ws:Array(Int64)}, {we:Array(Int64)})) AS t))"
    )
    return sql, {"wc": list(customers), "ws": list(starts), "we": list(ends)}


class ClickHouseEventStore:
    """The events in ClickHouse (see the module docstring)."""

    def __init__(self, client: _Client, database: str, url: str, *, exact_cutoff: bool):
        self.client = client
        self.database = database
        self.table = f"`{database}`.usage_events"
        self.conflicts = f"`{database}`.usage_event_conflicts"
        self.ids = f"`{database}`.usage_event_ids"
        self._url = url
        self._exact_cutoff = exact_cutoff
        # on chDB, one for the folder in this process, whichever store of it inserts or takes the cutoff
        self._clock = _folder_clock(client.path) if isinstance(client, _ChdbClient) else _ReceivingClock()

    @classmethod
    def open(cls, url: str) -> ClickHouseEventStore:
        """``chdb:///folder[?database=name]`` or ``clickhouse[s]://user:password@host[:port]/database``."""
        parts = urlsplit(url)
        if parts.scheme == "chdb":
            database = parse_qs(parts.query).get("database", ["default"])[0]
            return cls(_ChdbClient(_chdb_folder(url)), database, url, exact_cutoff=True)
        database = unquote(parts.path.lstrip("/")) or "default"
        client = _ServerClient(
            host=parts.hostname or "localhost",
            port=parts.port or (8443 if parts.scheme == "clickhouses" else 8123),
            username=unquote(parts.username or "default"),
            password=unquote(parts.password or ""),
            database=database,
            secure=parts.scheme == "clickhouses",
        )
        shown = url.replace(f":{parts.password}@", ":***@") if parts.password else url
        return cls(client, database, shown, exact_cutoff=False)

    @property
    def url(self) -> str:
        return self._url

    def create_tables(self) -> None:
        if isinstance(self.client, _ChdbClient):
            self.client.creating = True
        self.client.command(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
        self.client.command(usage_events_ddl(self.table))
        self.client.command(usage_event_ids_ddl(self.ids))
        self.client.command(
            f"CREATE TABLE IF NOT EXISTS {self.conflicts} (event_id String, customer String, found_at Int64) "
            "ENGINE = ReplacingMergeTree ORDER BY (customer, event_id)"
        )

    def drop_tables(self) -> None:
        """Drop the store's tables (tests, benchmarks)."""
        self.client.command(f"DROP TABLE IF EXISTS {self.table}")
        self.client.command(f"DROP TABLE IF EXISTS {self.conflicts}")
        self.client.command(f"DROP TABLE IF EXISTS {self.ids}")

    def close(self) -> None:
        self.client.close()

    # ingestion

    def ingest(
        self,
        records: Iterable[Mapping[str, Any]],
        meters: Specs,
        known_customers: Collection[str],
        *,
        source: str = "api",
        now: dt.datetime | None = None,
        earliest: Mapping[str, dt.datetime] | None = None,
    ) -> IngestReport:
        return ingest(self, records, meters, known_customers, source=source, now=now, earliest=earliest)

    def ingest_file(
        self,
        source: str | os.PathLike[str] | IO[bytes],
        meters: Specs,
        known_customers: Collection[str],
        *,
        format: FileFormat | None = None,
        now: dt.datetime | None = None,
        earliest: Mapping[str, dt.datetime] | None = None,
        progress: Progress | None = None,
    ) -> IngestReport:
        # parsed in this process: forked parsers and an in-process ClickHouse do not mix
        return ingest_file(
            self,
            source,
            meters,
            known_customers,
            format=format,
            now=now,
            earliest=earliest,
            progress=progress,
            workers=0,
        )

    def store_chunk(self, events: list[tuple[Any, ...]]) -> dict[str, int]:
        """Store a chunk (``UsageEvent`` tuples): the ids already stored are looked up first and left out (their
        content hashes are handed back: duplicates or conflicts), the rest inserted with a deterministic
        deduplication token."""
        stored = self.stored_hashes([event[ID] for event in events])
        fresh = [event for event in events if event[ID] not in stored]
        if fresh:
            self.insert_events(fresh)
            # Another ingestion may have stored some of these ids meanwhile with other content (it passed its
            # check before this insert, or the other way round): the later of the two checks below sees both.
            # The first received content stays; this chunk's events that lost are conflicts, and the ids are
            # recorded, for the billing run to refuse until resolve_conflicts() removes the losing rows.
            raced = self._raced([event[ID] for event in fresh])
            mine = {event[ID]: event[HASH] for event in fresh}
            stored.update({i: digest for i, digest in raced.items() if digest != mine[i]})
        return stored

    def _raced(self, event_ids: Sequence[str]) -> dict[str, int]:
        """Of ``event_ids``, those stored with more than one content (recorded), with the first received's hash."""
        raced: dict[str, int] = {}
        for start in range(0, len(event_ids), 10_000):
            rows = self.client.query(
                f"SELECT event_id, argMax(content_hash, version), groupUniqArray(customer) FROM {self.ids} "
                "WHERE event_id IN {ids:Array(String)} GROUP BY event_id HAVING uniqExact(content_hash) > 1",
                {"ids": list(event_ids[start : start + 10_000])},
            )
            if rows:
                now = to_epoch_us(utcnow())
                found = [(event_id, customer, now) for event_id, _, customers in rows for customer in customers]
                self.client.insert_plain(self.conflicts, ("event_id", "customer", "found_at"), found)
            raced.update((event_id, int(digest)) for event_id, digest, _ in rows)
        return raced

    def resolve_conflicts(self) -> int:
        """Delete the rows of raced conflicts that were received after the first content of their id, and forget
        the conflicts: the first received content is the event, as on SQL. How many rows were deleted. The
        deletion is a mutation: it waits for the table's merges to be allowed (``SYSTEM START MERGES``)."""
        # the conflicts recorded now, and only those forgotten after: one recorded meanwhile stays, unresolved
        recorded = [row[0] for row in self.client.query(f"SELECT DISTINCT event_id FROM {self.conflicts}")]
        if not recorded:
            return 0
        losing = self.client.query(
            f"SELECT event_id, received_at FROM {self.table} WHERE event_id IN {{ids:Array(String)}} "
            "AND (event_id, content_hash) NOT IN (SELECT event_id, argMax(content_hash, version) "
            f"FROM {self.table} WHERE event_id IN {{ids:Array(String)}} GROUP BY event_id)",
            {"ids": recorded},
        )
        for table in (self.table, self.ids) if losing else ():
            self.client.command_with(
                f"DELETE FROM {table} WHERE (event_id, received_at) IN "
                "(SELECT tupleElement(t, 1), tupleElement(t, 2) FROM (SELECT arrayJoin(arrayZip("
                "{ids:Array(String)}, {at:Array(Int64)})) AS t))",
                {"ids": [row[0] for row in losing], "at": [int(row[1]) for row in losing]},
            )
        self.client.command_with(
            f"DELETE FROM {self.conflicts} WHERE event_id IN {{ids:Array(String)}}", {"ids": recorded}
        )
        return len(losing)

    def insert_events(self, events: list[tuple[Any, ...]]) -> None:
        """Insert ``events`` as they are, stamped received now, with the chunk's deduplication token (a digest of
        its ids and content hashes): the same chunk inserted twice is stored once."""
        digest = hashlib.blake2b(digest_size=16)
        for event in sorted(events, key=lambda e: e[ID]):
            digest.update(f"{event[ID]}\x1f{event[HASH]}\x1e".encode("utf-8", "surrogatepass"))
        clock = self._clock
        with clock.lock:
            # after any cutoff taken, and after the chunk before (the order of arrival breaks ties of ``latest``)
            received_at = max(to_epoch_us(utcnow()), clock.last_cutoff + 1, clock.last_received + 1)
            clock.last_received = received_at
            rows = [
                (*event[:4], None if event[4] is None else from_scaled(event[4]), *event[5:], received_at, seq)
                for seq, event in enumerate(events)
            ]
            self.client.insert(self.table, rows, digest.hexdigest())
            # the ids, ordered by id, that ingestion looks up (after the events: an id found is an event stored)
            self.client.insert_plain(
                self.ids, _ID_COLUMNS, [(e[ID], e[HASH], e[1], received_at) for e in events], digest.hexdigest()
            )

    def stored_hashes(self, event_ids: Sequence[str]) -> dict[str, int]:
        """The content hash of each of ``event_ids`` already stored (the first received, if raced)."""
        found: dict[str, int] = {}
        for start in range(0, len(event_ids), 10_000):
            rows = self.client.query(
                f"SELECT event_id, argMax(content_hash, version) FROM {self.ids} "
                "WHERE event_id IN {ids:Array(String)} GROUP BY event_id",
                {"ids": list(event_ids[start : start + 10_000])},
            )
            found.update((event_id, int(digest)) for event_id, digest in rows)
        return found

    def ingestion_cutoff(self) -> dt.datetime:
        if not self._exact_cutoff:
            return from_epoch_us(self.client.server_now())
        clock = self._clock
        with clock.lock:
            now = max(to_epoch_us(utcnow()), clock.last_cutoff, clock.last_received)
            clock.last_cutoff = now
        time.sleep(0)
        return from_epoch_us(now)

    # aggregation

    def aggregate(
        self,
        windows: Mapping[Any, Window],
        meters: Specs,
        *,
        received_until: dt.datetime | None = None,
        received_after: dt.datetime | None = None,
    ) -> dict[tuple[Any, str], MeterAggregate]:
        specs = meters_by_code(meters)
        keys, customers, starts, ends = _windows(windows)
        if not keys or not specs:
            return {}
        query = _Query(self.table, specs, customers, starts, ends, received_until, received_after)
        self._check_conflicts(query)
        rows = self.client.query(*query.grouped())
        found = {(row[0], row[1]): row for row in rows}
        results: dict[tuple[Any, str], MeterAggregate] = {}
        for code in sorted(specs):
            spec = specs[code]
            for index, key in enumerate(keys):
                row = found.get((index, code))
                count, quantity, values = _quantity(spec, row, starts[index], ends[index])
                fees = None
                if spec.per_event_fees:
                    # a percentage charge's fees, walked over the window's values in time order
                    walked = values if values is not None else _values(row)
                    fees = {terms: walk(terms, walked) for terms in spec.per_event_fees}
                    values = values if spec.keep_event_values else None
                results[(key, code)] = MeterAggregate(key, customers[index], code, quantity, count, values, fees)
        return results

    def aggregate_split(
        self,
        windows: Mapping[Any, Window],
        meters: Specs,
        splits: Mapping[str, Split],
        *,
        received_until: dt.datetime | None = None,
        received_after: dt.datetime | None = None,
    ) -> dict[PartKey, MeterAggregate]:
        specs = meters_by_code(meters)
        unknown = sorted(set(splits) - set(specs))
        if unknown:
            raise ValueError(f"split of unknown meter(s): {', '.join(unknown)}")
        keys, customers, starts, ends = _windows(windows)
        if not keys or not splits:
            return {}
        results: dict[PartKey, MeterAggregate] = {}
        for code in sorted(splits):
            spec = specs[code]
            query = _Query(self.table, {code: spec}, customers, starts, ends, received_until, received_after)
            self._check_conflicts(query)
            for row in self.client.query(*query.grouped(splits[code])):
                index, part, group = row[0], row[2], tuple(row[3])
                count, quantity, values = _quantity(spec, (row[0], row[1], *row[4:]), starts[index], ends[index])
                if count == 0 and (spec.aggregation != "weighted_sum" or not row[9]):
                    continue  # a part with neither events in the window nor a level carried into it
                position = None if part < 0 else int(part)
                key = keys[index]
                results[PartKey(key, code, position, group)] = MeterAggregate(
                    key, customers[index], code, quantity, count, values
                )
        return results

    def _check_conflicts(self, query: _Query) -> None:
        """Raise :class:`ConflictingEvents` if an event of the windows' customers is stored with two contents (two
        ingestions raced with them, see :meth:`store_chunk`), until :meth:`resolve_conflicts`."""
        rows = self.client.query(
            f"SELECT DISTINCT event_id FROM {self.conflicts} WHERE customer IN {{wc:Array(String)}} "
            "ORDER BY event_id LIMIT 20",
            {"wc": query.params["wc"]},
        )
        if rows:
            raise ConflictingEvents([row[0] for row in rows])

    def received_since(self, after: int) -> bool:
        rows = self.client.query(
            f"SELECT 1 FROM {self.table} WHERE received_at > {{after:Int64}} LIMIT 1", {"after": after}
        )
        return bool(rows)

    def received_spans(self, after: int, through: int) -> dict[str, tuple[dt.datetime, dt.datetime]]:
        # a copy received later than the first is not news: the first received copy of each event, then the range
        rows = self.client.query(
            f"SELECT customer, min(occurred_at), max(occurred_at) FROM (SELECT customer, occurred_at, "
            f"min(received_at) AS first FROM {self.table} WHERE event_id IN (SELECT event_id FROM {self.table} "
            "WHERE received_at > {after:Int64} AND received_at <= {through:Int64}) "
            "GROUP BY event_id, customer, occurred_at) "
            "WHERE first > {after:Int64} AND first <= {through:Int64} GROUP BY customer",
            {"after": after, "through": through},
        )
        return {customer: (from_epoch_us(earliest), from_epoch_us(latest)) for customer, earliest, latest in rows}

    def last_events(self, before: Mapping[str, dt.datetime]) -> dict[str, dt.datetime]:
        if not before:
            return {}
        customers = sorted(before)
        rows = self.client.query(
            f"SELECT customer, max(occurred_at) FROM {self.table} WHERE customer IN {{c:Array(String)}} "
            "AND occurred_at < arrayElement({b:Array(Int64)}, indexOf({c:Array(String)}, customer)) "
            "GROUP BY customer",
            {"c": customers, "b": [to_epoch_us(before[c]) for c in customers]},
        )
        return {customer: from_epoch_us(last) for customer, last in rows}

    def meter_totals(
        self,
        customer: str,
        meters: Iterable[MeterSpec],
        start: dt.datetime,
        end: dt.datetime,
        *,
        received_after: int | None = None,
    ) -> dict[str, MeterAggregate]:
        after = None if received_after is None else from_epoch_us(received_after)
        found = self.aggregate({customer: (start, end)}, meters, received_after=after)
        return {meter: aggregate for (_, meter), aggregate in found.items()}

    def count_events(
        self, windows: Mapping[Key, tuple[str, dt.datetime, dt.datetime]], meters: Iterable[str]
    ) -> dict[tuple[Key, str], int]:
        codes = sorted(set(meters))
        if not windows or not codes:
            return {}
        found = self.aggregate(windows, [MeterSpec(code, "count") for code in codes])
        return {pair: aggregate.events for pair, aggregate in found.items() if aggregate.events}

    def customers_by_meter(self, customer: str | None = None) -> dict[str, set[str]]:
        where = "" if customer is None else "WHERE customer = {customer:String}"
        rows = self.client.query(
            f"SELECT meter, groupUniqArray(customer) FROM {self.table} {where} GROUP BY meter",
            {} if customer is None else {"customer": customer},
        )
        return {meter: set(found) for meter, found in rows if found}

    def late_windows(self, windows: Mapping[Key, CountedWindow]) -> set[Key]:
        if not windows:
            return set()
        keys = list(windows)
        spans = [windows[key] for key in keys]
        cte, params = _windows_cte(
            [w.customer for w in spans], [to_epoch_us(w.start) for w in spans], [to_epoch_us(w.end) for w in spans]
        )
        params["wu"] = [to_epoch_us(w.counted_until) for w in spans]
        params["since"] = min(params["ws"])
        params["until"] = max(params["we"])
        rows = self.client.query(
            f"WITH {cte}, e AS (SELECT customer, occurred_at, received_at FROM {self.table} FINAL "
            "WHERE customer IN (SELECT customer FROM w) AND occurred_at >= {since:Int64} "
            "AND occurred_at < {until:Int64}) "
            "SELECT DISTINCT w.idx FROM e INNER JOIN w ON e.customer = w.customer "
            "WHERE e.occurred_at >= w.start AND e.occurred_at < w.end "
            "AND e.received_at > arrayElement({wu:Array(Int64)}, w.idx + 1)",
            params,
        )
        return {keys[row[0]] for row in rows}


def _windows(windows: Mapping[Any, Window]) -> tuple[list[Any], list[str], list[int], list[int]]:
    """Keys, customers, starts and ends (µs) of ``windows`` as :func:`meters.aggregate_usage` takes them."""
    keys: list[Any] = []
    customers: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for key, window in windows.items():
        if len(window) == 2:
            customer, (start, end) = key, window
        else:
            customer, start, end = window
        start_us, end_us = to_epoch_us(start), to_epoch_us(end)
        if not isinstance(customer, str) or end_us <= start_us:
            raise ValueError(f"window {key!r}: expected a customer id and start < end, got {window!r}")
        keys.append(key)
        customers.append(customer)
        starts.append(start_us)
        ends.append(end_us)
    return keys, customers, starts, ends


def _divide_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator (denominator > 0) rounded half-even, on integers."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


_SCALE = Decimal(10) ** VALUE_DIGITS


def _scaled(number: Decimal | None) -> int:
    """A Decimal with at most 6 decimals as the meters' fixed-point integer, exactly."""
    return 0 if number is None else int(number * _SCALE)


def _quantity(
    spec: MeterSpec, row: Sequence[Any] | None, start: int, end: int
) -> tuple[int, Decimal, tuple[Decimal, ...] | None]:
    """(events, quantity, values) of one (window, meter) row of :meth:`_Query.grouped`: idx, meter, count, sum,
    max, distinct, latest, level, Σ value × (end − t), values."""
    if row is None:
        return 0, Decimal(0), (() if spec.keep_event_values else None)
    count, total, largest, distinct, latest, level, dots, values = row[2:10]
    kind = spec.aggregation
    if kind == "count":
        quantity = Decimal(count)
    elif kind == "sum":
        quantity = from_scaled(_scaled(total))
    elif kind == "max":
        quantity = from_scaled(_scaled(largest)) if count else Decimal(0)
    elif kind == "unique_count":
        quantity = Decimal(distinct)
    elif kind == "latest":
        quantity = from_scaled(_scaled(latest)) if count else Decimal(0)
    else:  # weighted_sum: ∫ level dt / (end − start), rounded half-even to the value scale
        length = end - start
        quantity = from_scaled(_divide_half_even(_scaled(level) * length + _scaled(dots), length))
    kept = tuple(from_scaled(_scaled(v)) for v in values) if spec.keep_event_values else None
    return int(count), quantity, kept


def _values(row: Sequence[Any] | None) -> tuple[Decimal, ...]:
    """The values of one (window, meter) row of :meth:`_Query.grouped`, in time order (none without a row)."""
    return () if row is None else tuple(from_scaled(_scaled(v)) for v in row[9])


class _Query:
    """The SQL of one aggregation over a set of windows."""

    def __init__(
        self,
        table: str,
        specs: Mapping[str, MeterSpec],
        customers: Sequence[str],
        starts: Sequence[int],
        ends: Sequence[int],
        received_until: dt.datetime | None,
        received_after: dt.datetime | None,
    ):
        self.table = table
        self.specs = specs
        cte, self.params = _windows_cte(customers, starts, ends)
        self.params.update(
            meters=sorted(specs),
            weighted=sorted(c for c, s in specs.items() if s.aggregation == "weighted_sum"),
            uniques=sorted(c for c, s in specs.items() if s.aggregation == "unique_count"),
            maxes=sorted(c for c, s in specs.items() if s.aggregation == "max"),
            latests=sorted(c for c, s in specs.items() if s.aggregation == "latest"),
            kept=sorted(c for c, s in specs.items() if s.keep_event_values or s.per_event_fees),
            since=min(starts),
            until=max(ends),
        )
        received = []
        if received_until is not None:
            received.append("received_at <= {ru:Int64}")
            self.params["ru"] = to_epoch_us(received_until)
        if received_after is not None:
            received.append("received_at > {ra:Int64}")
            self.params["ra"] = to_epoch_us(received_after)
        since = "" if self.params["weighted"] else "AND occurred_at >= {since:Int64} "
        # FINAL over the windows' key ranges: a duplicate not merged yet is one row here (the first received);
        # the received_at filters apply to that row, after FINAL, never to a later copy of it
        self.events = (
            f"{cte}, d AS (SELECT event_id, customer, meter, occurred_at, value, unique_value, properties, "
            f"content_hash, received_at, seq FROM {table} FINAL "
            "WHERE customer IN (SELECT customer FROM w) AND meter IN {meters:Array(String)} "
            f"{since}AND occurred_at < {{until:Int64}}), "
            "e AS (SELECT * FROM d" + (f" WHERE {' AND '.join(received)}" if received else "") + ")"
        )

    def grouped(self, split: Split | None = None) -> tuple[str, dict[str, Any]]:
        """One row per (window, meter[, part, group]): idx, meter, [part, group,] count, sum, max, distinct,
        latest, level, Σ value × (end − t), values."""
        inside = "e.occurred_at >= w.start"
        value = "ifNull(e.value, toDecimal64(0, 6))"

        def of(kind: str) -> str:  # this kind's meters' events of the window: each aggregate reads only those
            return f"{inside} AND has({{{kind}:Array(String)}}, e.meter)"

        columns = (
            f"countIf({inside}), sumIf({value}, {inside}), maxIf({value}, {of('maxes')}), "
            f"uniqExactIf(e.unique_value, {of('uniques')}), "
            f"argMaxIf({value}, (e.occurred_at, e.received_at, e.seq), {of('latests')}), "
            f"sumIf({value}, NOT {inside}), "
            f"sumIf(toDecimal256({value}, 6) * (w.end - e.occurred_at), {of('weighted')}), "
            "arrayMap(x -> x.4, arraySort(groupArrayIf((e.occurred_at, e.received_at, e.seq, "
            f"{value}), {of('kept')})))"
        )
        params = dict(self.params)
        parts, group = "", "w.idx, e.meter"
        if split is not None:
            part_sql, group_sql = _split_sql(split, params)
            parts, group = f"{part_sql} AS part, {group_sql} AS grp, ", "w.idx, e.meter, part, grp"
        sql = (
            f"WITH {self.events} SELECT w.idx, e.meter, {parts}{columns} "
            "FROM e INNER JOIN w ON e.customer = w.customer "
            f"WHERE e.occurred_at < w.end AND ({inside} OR has({{weighted:Array(String)}}, e.meter)) "
            f"GROUP BY {group}"
        )
        return sql, params


def _split_sql(split: Split, params: dict[str, Any]) -> tuple[str, str]:
    """The part (the first matching filter's position, -1: none) and the group (an array of the group_by
    properties' values, NULL where absent) of an event, as ClickHouse expressions; names and values bound."""
    names: dict[str, str] = {}

    def prop(key: str) -> str:
        if key not in names:
            names[key] = f"k{len(names)}"
            params[names[key]] = key
        name = names[key]
        return f"ifNull(e.properties, '{{}}'), {{{name}:String}}"

    tests = []
    for position, pairs in enumerate(split.filters):
        conditions = []
        for number, (key, values) in enumerate(pairs):
            params[f"f{position}_{number}"] = list(values)
            allowed = f"{{f{position}_{number}:Array(String)}}"
            conditions.append(f"(JSONHas({prop(key)}) AND has({allowed}, JSONExtractString({prop(key)})))")
        tests.append(f"{' AND '.join(conditions)}, {position}")
    part = f"multiIf({', '.join(tests)}, -1)" if tests else "-1"

    def group(keys: tuple[str, ...]) -> str:
        items = [f"if(JSONHas({prop(k)}), JSONExtractString({prop(k)}), NULL)" for k in keys]
        return f"CAST([{', '.join(items)}], 'Array(Nullable(String))')"

    branches = [f"part = {position}, {group(keys)}" for position, keys in enumerate(split.group_by[:-1])]
    grp = f"multiIf({', '.join(branches)}, {group(split.group_by[-1])})" if branches else group(split.group_by[-1])
    return part, grp
