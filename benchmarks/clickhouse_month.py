"""The ClickHouse event store on chDB at a month's scale: events seeded inside ClickHouse, each figure measured in
a process of its own, with its peak memory (the process's own ``VmHWM``, which it reports), beside a baseline.

- aggregate a month: ``ClickHouseEventStore.aggregate`` of every customer's own March (5 timezones) for the 6
  kinds of ``benchmarks.aggregate``, beside a plain ``GROUP BY customer, meter`` ``sum(value)`` of the same rows
  in a plain ``MergeTree`` table; 10,000,000 events for 10,000 customers at ``BENCH_SCALE=1``,
  100,000,000 for 100,000 with ``BENCH_CLICKHOUSE_MONTH_100M=1`` (seeded in 13 minutes
  on 2 cores, 13 GB on disk);
- a ``latest`` meter: 10,000,000 events of one ``latest`` meter, the store's ``argMax`` beside the same
  ``GROUP BY``;
- the billing run: ``billing run --period 2024-03`` (the CLI, a catalog, customers and subscriptions in a SQLite
  billing database) with ``events_url`` a chDB folder, and with ``events_url`` a PostgreSQL schema of its own,
  each beside the same run with the events in the SQLite billing database; the same events
  (``benchmarks.aggregate``'s generator, 1,000,000 for 1,000 customers at ``BENCH_SCALE=1``, copied into chDB
  with ClickHouse's ``sqlite()`` table function, into PostgreSQL with ``COPY``); the three runs' invoices must be
  identical (totals and content hashes). PostgreSQL is ``$BILLING_BENCH_DATABASE_URL``, else
  ``$BILLING_TEST_DATABASE_URL``, else the local ``test`` database; its run is skipped, saying why, only when it
  does not answer.

The events are not generated in Python: ``INSERT … SELECT … FROM numbers(N)`` writes them straight into the
store's ``usage_events`` (its schema, unique ids, pseudo-random customers, meters in ``benchmarks.aggregate``'s
mix, instants and values from ``cityHash64`` of the row number: deterministic), the ids into
``usage_event_ids`` as ingestion would, and the plain copy. The folder is cached under ``bench-data/`` by size.
Every process's peak (its ``VmHWM``) includes Python and chDB themselves: the idle figure is that floor (a
process that opens the folder and runs ``SELECT 1``).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any, cast

from rich.console import Console

from benchmarks import DATA, Figure, best_of
from benchmarks.aggregate import METERS, TIMEZONES, _month_span, sqlite_database, windows
from meters.events import MeterSpec

VERSION = 1  # of the seeding SQL: a cached folder of another version is seeded again
_MIB = 1024 * 1024
_DAY_US = 86_400_000_000
_LATEST = [MeterSpec("seats", "latest")]
_PLAIN = "plain_events"


def _seed_sql(table: str, events: int, customers: int, latest_only: bool) -> str:
    """Rows in the store's schema from ``numbers``: ``events`` in March, ``events // 200`` weighted_sum events in
    February (the level carried into March) unless ``latest_only``."""
    start, end = _month_span(customers)
    history = 0 if latest_only else events // 200
    mix = (
        "'seats'"
        if latest_only
        else "multiIf(p < 60, 'api_calls', p < 80, 'bytes', p < 92, 'active_users', p < 95, 'peak_rps', "
        "p < 98, 'storage_gb', 'seats')"
    )
    return (
        f"INSERT INTO {table} (event_id, customer, meter, occurred_at, value, unique_value, properties, "
        "content_hash, received_at, seq) "
        f"SELECT concat('e', leftPad(toString(number + 1), 10, '0')), "
        f"concat('c', leftPad(toString(cityHash64(number, 1) % {customers}), 5, '0')), m, t, "
        "if(m = 'api_calls', NULL, toDecimal64(if(m = 'storage_gb', toInt64(cityHash64(number, 4) % 25) - 5, "
        "toInt64(1 + cityHash64(number, 4) % 999999)), 6)), "
        "if(m = 'active_users', concat('u', toString(cityHash64(number, 5) % 1000)), NULL), NULL, "
        "reinterpretAsInt64(cityHash64(number, 6)), t + 1000, toUInt32(number % 50000) "
        f"FROM (SELECT number, cityHash64(number, 2) % 100 AS p, "
        f"if(number < {events}, {mix}, 'storage_gb') AS m, "
        f"if(number < {events}, {start} + toInt64(cityHash64(number, 3) % {end - start}), "
        f"{start - 29 * _DAY_US} + toInt64(cityHash64(number, 3) % {29 * _DAY_US})) AS t "
        f"FROM numbers({events + history}))"
    )


def seeded_folder(events: int, customers: int, console: Console, *, latest_only: bool = False) -> Path:
    """The cached chDB folder of ``events`` (database ``bench``: the store's tables and the plain copy)."""
    from meters.store.clickhouse import ClickHouseEventStore, close_chdb, usage_events_ddl

    kind = "latest" if latest_only else "month"
    folder = DATA / f"chdb-{kind}-{events}-{customers}-v{VERSION}"
    if (folder / "seeded").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    DATA.mkdir(exist_ok=True)
    console.log(f"seeding {events:,} events ({kind}) into {folder.name} inside ClickHouse (once)...")
    started = time.perf_counter()
    store = ClickHouseEventStore.open(f"chdb://{folder}?database=bench")
    try:
        store.create_tables()
        store.client.command(_seed_sql(store.table, events, customers, latest_only))
        store.client.command(
            f"INSERT INTO {store.ids} (event_id, content_hash, customer, received_at) "
            f"SELECT event_id, content_hash, customer, received_at FROM {store.table}"
        )
        store.client.command(usage_events_ddl(f"`bench`.{_PLAIN}", "MergeTree", dedup_window=0))
        columns = (
            "event_id, customer, meter, occurred_at, value, unique_value, properties, content_hash, received_at, seq"
        )
        store.client.command(f"INSERT INTO `bench`.{_PLAIN} ({columns}) SELECT {columns} FROM {store.table}")
        parts = store.client.query(
            "SELECT count() FROM system.parts WHERE database = 'bench' AND table = 'usage_events' AND active"
        )[0][0]
    finally:
        close_chdb()
    (folder / "seeded").write_text(f"{events} {customers}\n")
    console.log(f"seeded in {time.perf_counter() - started:.1f} s ({parts} active parts in usage_events)")
    return folder


# --- the measured process -------------------------------------------------------------------------------------


def _child(folder: str, mode: str, customers: int, runs: int) -> dict[str, Any]:
    """In the measured process: ``mode`` (aggregate, latest, group_by, idle) ``runs`` times; the best seconds."""
    from meters.store.clickhouse import ClickHouseEventStore

    store = ClickHouseEventStore.open(f"chdb://{folder}?database=bench")
    start, end = _month_span(customers)
    by_customer = windows(customers)
    rows: list[int] = []

    def aggregate(meters: list[MeterSpec]) -> None:
        rows.append(len(store.aggregate(by_customer, meters)))

    def group_by() -> None:
        rows.append(
            len(
                store.client.query(
                    f"SELECT customer, meter, sum(value) FROM `bench`.{_PLAIN} WHERE occurred_at >= {start} "
                    f"AND occurred_at < {end} GROUP BY customer, meter"
                )
            )
        )

    work = {
        "aggregate": lambda: aggregate(METERS),
        "latest": lambda: aggregate(_LATEST),
        "group_by": group_by,
        "idle": lambda: store.client.query("SELECT 1"),
    }[mode]
    seconds = best_of(runs, work)
    in_month = store.client.query(
        f"SELECT count() FROM `bench`.{_PLAIN} WHERE occurred_at >= {start} AND occurred_at < {end}"
    )[0][0]
    return {"seconds": seconds, "rows": rows[-1] if rows else 0, "in_month": int(in_month)}


def measured(command: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """(wall seconds, stdout) of a child process ``command``. (Its peak memory is its own ``VmHWM``, which it
    reports: ``wait4``'s ``ru_maxrss`` would count the parent's resident set the child had between fork and exec.)"""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.run(command, stdout=out, stderr=err, env=env, check=False)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {process.returncode}: {err.read().decode()[-2000:]}")
        return seconds, out.read().decode()


def _in_child(folder: Path, mode: str, customers: int, runs: int) -> tuple[dict[str, Any], int]:
    args = [sys.executable, "-m", "benchmarks.clickhouse_month", str(folder), mode, str(customers), str(runs)]
    _, out = measured(args)
    result = json.loads(out.strip().splitlines()[-1])
    return result, int(result["peak"])


# --- the figures ----------------------------------------------------------------------------------------------


def run(scale: float, console: Console) -> list[Figure]:
    figures: list[Figure] = []
    sizes = [max(10_000, int(10_000_000 * scale))]
    if os.environ.get("BENCH_CLICKHOUSE_MONTH_100M"):
        sizes.append(100_000_000)
    for events in sizes:
        figures.extend(_month(events, console))
    figures.extend(_latest(max(10_000, int(10_000_000 * scale)), console))
    figures.extend(_billing_run(max(1000, int(1_000_000 * scale)), console))
    return figures


def _month(events: int, console: Console) -> list[Figure]:
    customers = max(events // 1000, 5)
    folder = seeded_folder(events, customers, console)
    runs = 1 if events > 20_000_000 else 3
    console.log(f"aggregating the month of {events:,} events, {customers:,} windows (each in its own process)...")
    aggregate, aggregate_peak = _in_child(folder, "aggregate", customers, runs)
    group_by, group_peak = _in_child(folder, "group_by", customers, runs)
    _, idle_peak = _in_child(folder, "idle", customers, 1)
    in_month = aggregate["in_month"]
    console.log(
        f"{events:,}: aggregate {aggregate['seconds']:.2f} s, peak {aggregate_peak / _MIB:,.0f} MiB; GROUP BY "
        f"{group_by['seconds']:.2f} s, peak {group_peak / _MIB:,.0f} MiB; idle process {idle_peak / _MIB:,.0f} MiB"
    )
    best = "best of 3" if runs > 1 else "one run after seeding"
    return [
        Figure(
            f"chDB aggregate a seeded month, {in_month:,} events, {customers:,} windows, 6 kinds ({best})",
            in_month / aggregate["seconds"],
            "events/s",
            in_month / group_by["seconds"],
            "plain GROUP BY customer, meter",
        ),
        Figure(
            f"chDB aggregate {in_month:,} events: peak RSS of its process (VmHWM; idle process "
            f"{idle_peak / _MIB:,.0f} MiB; lower is better)",
            aggregate_peak / _MIB,
            "MiB",
            group_peak / _MIB,
            "the plain GROUP BY's process",
        ),
    ]


def _latest(events: int, console: Console) -> list[Figure]:
    customers = max(events // 1000, 5)
    folder = seeded_folder(events, customers, console, latest_only=True)
    console.log(f"aggregating {events:,} events of a latest meter (each in its own process)...")
    latest, latest_peak = _in_child(folder, "latest", customers, 3)
    group_by, group_peak = _in_child(folder, "group_by", customers, 3)
    console.log(
        f"latest: {latest['seconds']:.2f} s, peak {latest_peak / _MIB:,.0f} MiB; GROUP BY "
        f"{group_by['seconds']:.2f} s, peak {group_peak / _MIB:,.0f} MiB"
    )
    return [
        Figure(
            f"chDB latest meter, {latest['in_month']:,} events, {customers:,} windows: peak RSS (VmHWM; "
            f"{latest['in_month'] / latest['seconds']:,.0f} events/s vs GROUP BY's "
            f"{latest['in_month'] / group_by['seconds']:,.0f}; lower is better)",
            latest_peak / _MIB,
            "MiB",
            group_peak / _MIB,
            "the plain GROUP BY's process",
        )
    ]


# --- the billing run through the CLI --------------------------------------------------------------------------


def _billing_run(events: int, console: Console) -> list[Figure]:
    from benchmarks.billing_run import CATALOG, add_customers
    from billing.db import make_engine, upgrade
    from meters.store.clickhouse import ClickHouseEventStore, close_chdb

    customers = max(10, events // 1000)
    source = sqlite_database(events, customers, console)
    with tempfile.TemporaryDirectory(prefix="bench-chdb-run-") as scratch, ExitStack() as stack:
        root = Path(scratch)
        (root / "catalog.toml").write_text(CATALOG)
        postgres = _postgres_events(stack, console)
        names = ["sqlite", "chdb", *(["postgresql"] if postgres else [])]
        for name in names:
            shutil.copyfile(source, root / f"{name}.db")
            engine = make_engine(f"sqlite:///{root / name}.db")
            upgrade(engine)
            add_customers(engine, customers, TIMEZONES)
            engine.dispose()
        events_url = f"chdb://{root / 'events'}?database=events"
        store = ClickHouseEventStore.open(events_url)
        try:
            store.create_tables()
            store.client.command(_copy_sql(store.table, root / "chdb.db"))
            copied = store.client.query(f"SELECT count() FROM {store.table}")[0][0]
        finally:
            close_chdb()
        urls: dict[str, str | None] = {"sqlite": None, "chdb": events_url}
        if postgres:
            urls["postgresql"] = postgres
            started = time.perf_counter()
            in_postgres = _copy_to_postgres(postgres, source)
            console.log(f"copied {in_postgres:,} events into PostgreSQL in {time.perf_counter() - started:.1f} s")
            assert in_postgres == copied, (in_postgres, copied)
        console.log(
            f"billing run through the CLI: {customers:,} customers, {copied:,} events, "
            f"{', '.join(_LABELS[name] for name in names)}..."
        )
        results = {name: _cli_run(root, name, url) for name, url in urls.items()}
        invoices = {name: _invoices(root / f"{name}.db") for name in names}
    same = all(invoices[name] == invoices["sqlite"] for name in names)
    console.log(
        "billing run: "
        + "; ".join(
            f"{_LABELS[name]} events {seconds:.2f} s, peak {peak / _MIB:,.0f} MiB, created {report.get('created')}"
            for name, (seconds, peak, report) in results.items()
        )
    )
    stores = [_LABELS[name] for name in names]
    console.log(f"invoices (totals and content hashes) identical on {', '.join(stores[:-1])} and {stores[-1]}: {same}")
    assert same and all(report.get("created") == customers for _, _, report in results.values()), results
    (sql_s, sql_peak, _), (ch_s, ch_peak, _) = results["sqlite"], results["chdb"]
    figures = [
        Figure(
            f"`billing run` (CLI) on chDB events, {customers:,} customers / {copied:,} events, "
            f"peak RSS {ch_peak / _MIB:,.0f} MiB vs SQLite's {sql_peak / _MIB:,.0f} MiB",
            customers / ch_s,
            "customers/s",
            customers / sql_s,
            "the same run, events in the SQLite billing database",
        )
    ]
    if "postgresql" in results:
        pg_s, pg_peak, _ = results["postgresql"]
        figures.append(
            Figure(
                f"`billing run` (CLI) on PostgreSQL events, {customers:,} customers / {copied:,} events, "
                f"peak RSS {pg_peak / _MIB:,.0f} MiB vs SQLite's {sql_peak / _MIB:,.0f} MiB",
                customers / pg_s,
                "customers/s",
                customers / sql_s,
                "the same run, events in the SQLite billing database",
            )
        )
    return figures


_LABELS = {"sqlite": "SQLite", "chdb": "chDB", "postgresql": "PostgreSQL"}
_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_COLUMNS = "event_id, customer, meter, occurred_at, value, unique_value, properties, content_hash, received_at"


def _cli_run(root: Path, name: str, events_url: str | None) -> tuple[float, int, dict[str, Any]]:
    """(wall seconds, peak resident set, the JSON report) of ``billing run --period 2024-03`` on ``name``.db."""
    config = root / f"{name}.toml"
    lines = [f'database_url = "sqlite:///{root / name}.db"', f'catalog = "{root / "catalog.toml"}"']
    config.write_text("\n".join([*lines, f'events_url = "{events_url}"'] if events_url else lines) + "\n")
    env = {**os.environ, "BILLING_CONFIG": str(config), "BENCH_VMHWM": str(root / "peak")}
    command = [sys.executable, "-m", "benchmarks.clickhouse_month", "--cli", "run", "--period", "2024-03", "--json"]
    seconds, out = measured(command, env)
    return seconds, int((root / "peak").read_text()), json.loads(out)


def _postgres_events(stack: ExitStack, console: Console) -> str | None:
    """The URL of a fresh PostgreSQL schema for the events (dropped when ``stack`` closes), its ``usage_events``
    made as ``billing db upgrade`` makes a separate store's; None, said why, when PostgreSQL does not answer."""
    from sqlalchemy.exc import OperationalError

    from benchmarks import postgres_schema, postgres_url
    from billing.event_store import create_event_tables

    try:
        url = stack.enter_context(postgres_schema(postgres_url() or _POSTGRES, "month"))
    except OperationalError as error:
        console.log(f"PostgreSQL does not answer, its billing run is skipped: {str(error).splitlines()[0]}")
        return None
    create_event_tables(url)
    return url


def _copy_to_postgres(url: str, source: Path) -> int:
    """The SQLite database's events into PostgreSQL's ``usage_events`` (``COPY``, the aggregation index made after
    the rows as ``benchmarks.aggregate`` does); the count there."""
    import psycopg

    from billing.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as connection, closing(sqlite3.connect(source)) as sqlite:
            driver = cast("psycopg.Connection[Any]", connection.connection.dbapi_connection)
            with driver.cursor() as cursor:
                cursor.execute("DROP INDEX ix_usage_events_aggregation")
                rows = sqlite.execute(f"SELECT {_COLUMNS} FROM usage_events ORDER BY id")
                with cursor.copy(f"COPY usage_events ({_COLUMNS}) FROM STDIN") as copy:
                    while chunk := rows.fetchmany(50_000):
                        for row in chunk:
                            copy.write_row(row)
                cursor.execute(
                    "CREATE INDEX ix_usage_events_aggregation ON usage_events "
                    "(meter, customer, occurred_at, value, received_at, unique_value) INCLUDE (id)"
                )
                cursor.execute("SELECT count(*) FROM usage_events")
                count = cursor.fetchone()
            driver.commit()
            driver.autocommit = True
            driver.execute("VACUUM ANALYZE usage_events")
            driver.autocommit = False
        assert count is not None
        return int(count[0])
    finally:
        engine.dispose()


def _invoices(path: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute(
            "SELECT customer_external_id, total, content_hash FROM invoices ORDER BY customer_external_id"
        ).fetchall()


def _copy_sql(table: str, sqlite_path: Path) -> str:
    """The SQLite database's events into the store (values there are scaled by 10^6)."""
    return (
        f"INSERT INTO {table} (event_id, customer, meter, occurred_at, value, unique_value, properties, "
        "content_hash, received_at, seq) SELECT event_id, customer, meter, occurred_at, "
        "CAST(CAST(value AS Nullable(Decimal(38, 6))) / 1000000 AS Nullable(Decimal(18, 6))), unique_value, "
        "properties, content_hash, received_at, 0 "
        f"FROM sqlite('{sqlite_path}', 'usage_events')"
    )


def _vmhwm() -> int:
    """This process's peak resident set (``VmHWM``, bytes): what its own memory reached since its ``exec``."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _write_vmhwm(path: str) -> None:
    Path(path).write_text(str(_vmhwm()))


if __name__ == "__main__":
    if sys.argv[1] == "--cli":  # the billing CLI, its peak written at exit to the file $BENCH_VMHWM
        atexit.register(_write_vmhwm, os.environ["BENCH_VMHWM"])
        sys.argv = ["billing", *sys.argv[2:]]
        from billing.cli import main

        main()
    else:  # the measured process: FOLDER MODE CUSTOMERS RUNS
        print(json.dumps({**_child(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])), "peak": _vmhwm()}))
