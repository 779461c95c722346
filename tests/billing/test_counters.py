"""Usage counters kept at store time, against a real database (SQLite and PostgreSQL): a duplicate and a
conflicting redelivery count nothing, a late event counts in the month it occurred in, a timezone change recounts,
a threshold is crossed exactly once across two ingestions read from the counters, and the counters always equal
their recount from the events (``billing db check``)."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import uuid
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text, update
from typer.testing import CliRunner

from billing import customers as service
from billing.apikeys import create_api_key
from billing.cli import app
from billing.config import get_settings
from billing.db import session_scope
from billing.db.counters import check, month_window
from billing.db.entitlement_tables import UsageCounterRow
from billing.db.notification_tables import ThresholdEvaluationRow
from billing.entitlements import customer_entitlements
from billing.event_store import create_event_tables, events_counted
from billing.ingestion import ingest_batch
from billing.notify import list_notifications
from billing.reactions import react_to_usage
from billing.thresholds import check_thresholds
from dbkit.dialect import is_postgresql
from pricing_plans.loader import loads_catalog
from tests.billing.test_event_writer import _serving

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"

[meters.storage]
name = "Storage"
aggregation = "sum"
unit = "GB"

[meters.peak]
name = "Peak"
aggregation = "max"
unit = "GB"

[meters.seats]
name = "Seats"
aggregation = "unique_count"
unique_property = "user"
unit = "user"

[plans.pro]
name = "Pro"
currency = "USD"
charges = [
  { meter = "api_calls", model = "per_unit", unit_amount = 0.01 },
  { meter = "storage", model = "per_unit", unit_amount = 1 },
]
[[plans.pro.thresholds]]
meter = "api_calls"
allowance = 10
levels = [50, 100]
[[plans.pro.thresholds]]
spend_cap = 5.00
levels = [100]
"""

MARCH_NOW = dt.datetime(2026, 3, 20, 12, tzinfo=dt.UTC)


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "counters.toml")
    assert not problems, problems
    return loaded


def customer(engine, catalog, who, timezone="UTC"):
    service.create_customer(engine, who, who.title(), f"{who}@example.test", "USD", timezone=timezone)
    service.subscribe(engine, catalog, who, "pro", dt.date(2026, 1, 1))


def event(event_id, when, meter="api_calls", who="acme", **fields):
    return {"id": event_id, "customer": who, "meter": meter, "timestamp": when, **fields}


def mixed(prefix, count, *, minutes):
    """``count`` events every ``minutes`` from 2026-02-27 (UTC): calls, storage and peak in turn, of acme and tokyo
    in turn, the values a mix of decimals."""
    start = dt.datetime(2026, 2, 27, tzinfo=dt.UTC)
    return [
        event(f"{prefix}{i}", (start + dt.timedelta(minutes=minutes * i)).isoformat().replace("+00:00", "Z"),
              ("api_calls", "storage", "peak")[i % 3], who=("acme", "tokyo")[i % 2],
              **({} if i % 3 == 0 else {"value": f"{i % 7}.{i % 10}"}))
        for i in range(count)
    ]


def send(engine, catalog, events, now=MARCH_NOW):
    return ingest_batch(engine, catalog, events, now=now)


def counters(engine):
    """(customer, meter, month label, events, total, largest) of every counter."""
    with session_scope(engine) as session:
        rows = session.scalars(select(UsageCounterRow)).all()
        found = []
        for r in rows:
            start = dt.datetime.fromtimestamp(r.window_start / 1_000_000, dt.UTC)
            found.append((r.customer_external_id, r.meter, start.isoformat()[:16], r.events, r.total, r.largest))
        return sorted(found)


def agree(engine):
    with engine.connect() as connection, connection.begin():
        compared, differ = check(connection)
    assert differ == []
    return compared


def test_a_duplicate_a_conflict_and_a_late_event_count_as_the_events_are_stored(engine, catalog):
    customer(engine, catalog, "acme")
    first = send(engine, catalog, [
        event("c1", "2026-03-02T10:00:00Z"),
        event("c2", "2026-03-03T10:00:00Z"),
        event("s1", "2026-03-03T10:00:00Z", "storage", value="2.5"),
        event("s2", "2026-03-04T10:00:00Z", "storage", value="0.25"),
        event("p1", "2026-03-04T10:00:00Z", "peak", value="7"),
        event("p2", "2026-03-05T10:00:00Z", "peak", value="3"),
    ])
    assert first.accepted == 6
    # 2 calls; storage 2.5 + 0.25 = 2.75 GB (2,750,000 × 10^-6), largest 2.5; peak largest 7 (total 10)
    assert counters(engine) == [
        ("acme", "api_calls", "2026-03-01T00:00", 2, 0, None),
        ("acme", "peak", "2026-03-01T00:00", 2, 10_000_000, 7_000_000),
        ("acme", "storage", "2026-03-01T00:00", 2, 2_750_000, 2_500_000),
    ]
    again = send(engine, catalog, [
        event("c1", "2026-03-02T10:00:00Z"),  # a duplicate: already counted
        event("s1", "2026-03-03T10:00:00Z", "storage", value="99"),  # a conflict: rejected, not counted
        event("c3", "2026-03-04T10:00:00Z"),  # new: 3 calls
        event("late", "2026-02-27T23:00:00Z"),  # February, late: a counter of February's
    ])
    assert (again.accepted, again.duplicates, len(again.rejected)) == (2, 1, 1)
    assert counters(engine) == [
        ("acme", "api_calls", "2026-02-01T00:00", 1, 0, None),
        ("acme", "api_calls", "2026-03-01T00:00", 3, 0, None),
        ("acme", "peak", "2026-03-01T00:00", 2, 10_000_000, 7_000_000),
        ("acme", "storage", "2026-03-01T00:00", 2, 2_750_000, 2_500_000),
    ]
    assert agree(engine) == 4


def test_counters_are_calendar_months_of_the_customers_timezone_and_follow_a_change_of_it(engine, catalog):
    customer(engine, catalog, "tokyo", timezone="Asia/Tokyo")
    # 2026-02-28T16:00Z is 2026-03-01 01:00 in Tokyo: March there; 2026-02-28T14:00Z is still February (23:00)
    send(engine, catalog, [
        event("a", "2026-02-28T16:00:00Z", who="tokyo"),
        event("b", "2026-02-28T14:00:00Z", who="tokyo"),
    ])
    # Tokyo's March starts 2026-02-28T15:00Z, its February 2026-01-31T15:00Z
    assert [row[2:4] for row in counters(engine)] == [("2026-01-31T15:00", 1), ("2026-02-28T15:00", 1)]
    service.update_customer(engine, "tokyo", {"timezone": "UTC"})
    # recounted in the same transaction: both events are February in UTC
    assert [row[2:4] for row in counters(engine)] == [("2026-02-01T00:00", 2)]
    assert agree(engine) == 1


def test_a_threshold_is_crossed_exactly_once_across_two_ingestions_from_the_counters(engine, catalog):
    cross_each_level_once(engine, catalog)
    assert agree(engine) == 2


def cross_each_level_once(engine, catalog):
    customer(engine, catalog, "acme")
    # 4 calls of an allowance of 10: below 50 %
    send(engine, catalog, [event(f"a{i}", "2026-03-05T10:00:00Z") for i in range(4)])
    assert react_to_usage(engine, catalog, now=MARCH_NOW).created == []
    # 4 + 3 = 7 ≥ 5 (50 %): one notification; the same events again (duplicates) add nothing
    send(engine, catalog, [event(f"b{i}", "2026-03-06T10:00:00Z") for i in range(3)])
    send(engine, catalog, [event(f"b{i}", "2026-03-06T10:00:00Z") for i in range(3)])
    crossed = react_to_usage(engine, catalog, now=MARCH_NOW).created
    assert [(c.threshold_key, c.level, str(c.value)) for c in crossed] == [("usage:api_calls", 50, "7")]
    # re-evaluated from the counters: still 7, nothing new
    assert check_thresholds(engine, catalog, now=MARCH_NOW).created == []
    # 7 + 3 = 10 = 100 %; spend 10 × 0.01 + storage 4.75 × 1 = 4.85 < 5.00: no spend notification
    send(engine, catalog, [event(f"c{i}", "2026-03-07T10:00:00Z") for i in range(3)]
         + [event("st", "2026-03-07T10:00:00Z", "storage", value="4.75")])
    crossed = react_to_usage(engine, catalog, now=MARCH_NOW).created
    assert [(c.threshold_key, c.level, str(c.value)) for c in crossed] == [("usage:api_calls", 100, "10")]
    # 0.16 GB more: spend 0.10 + 4.91 = 5.01 ≥ 5.00
    send(engine, catalog, [event("st2", "2026-03-08T10:00:00Z", "storage", value="0.16")])
    crossed = react_to_usage(engine, catalog, now=MARCH_NOW).created
    assert [(c.threshold_key, c.level, str(c.value)) for c in crossed] == [("spend", 100, "5.01")]
    # told once each, nothing lost
    assert sorted(n.kind for n in list_notifications(engine)) == [
        "spend.threshold_crossed", "usage.threshold_crossed", "usage.threshold_crossed"
    ]
    assert check_thresholds(engine, catalog, now=MARCH_NOW).created == []


def test_a_wrong_counter_shows_in_the_evaluation_and_in_billing_db_check(engine, catalog, cli_env):
    customer(engine, catalog, "acme")
    send(engine, catalog, [event(f"a{i}", "2026-03-05T10:00:00Z") for i in range(3)])
    runner = CliRunner()
    result = runner.invoke(app, ["db", "check", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"counters": 1, "differ": []}
    start, end = month_window(ZoneInfo("UTC"), "UTC", 1_772_705_000_000_000)  # 2026-03-05T10:03:20Z: March
    with session_scope(engine) as session:
        session.execute(update(UsageCounterRow).values(events=5))
    # the evaluation reads the counter: 5 of 10 is 50 %
    assert [c.level for c in check_thresholds(engine, catalog, now=MARCH_NOW).created] == [50]
    result = runner.invoke(app, ["db", "check", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["differ"] == [
        {"customer": "acme", "meter": "api_calls", "window_start": start, "window_end": end,
         "stored": [5, 0, None], "counted": [3, 0, None]}
    ]


def test_many_customers_at_once_counted_and_evaluated_in_bulk(engine, catalog):
    # 144 customers × (api_calls, storage): 276 counters, 288 evaluations and 108 notifications in one pass (the
    # bulk paths: on PostgreSQL, more than 100 of each are copied through a staging table)
    names = [f"c{n:03d}" for n in range(144)]
    for who in names:
        customer(engine, catalog, who)
    batch = []
    for n, who in enumerate(names):
        batch += [event(f"{who}-{i}", "2026-03-05T10:00:00Z", who=who) for i in range(n % 12)]  # 0 … 11 calls
        batch.append(event(f"{who}-s", "2026-03-05T10:00:00Z", "storage", who=who, value="1.5"))
    assert send(engine, catalog, batch).accepted == len(batch)
    assert agree(engine) == 144 + 132  # every storage counter; api_calls of the 132 with calls (n % 12 > 0)
    crossed = react_to_usage(engine, catalog, now=MARCH_NOW).created
    # 5 … 9 calls reach 50 % of 10, 10 and 11 reach 100 % too: per 12 customers 7 at 50 % and 2 at 100 %, × 12
    assert sorted(c.level for c in crossed) == [50] * 84 + [100] * 24
    with session_scope(engine) as session:
        found = {
            (r.customer_external_id, r.threshold_key): (str(r.value), r.highest_level)
            for r in session.scalars(select(ThresholdEvaluationRow))
        }
    assert len(found) == 288
    # c011: 11 calls (110 %), spend 11 × 0.01 + 1.5 × 1 = 1.61 of 5.00
    assert found[("c011", "usage:api_calls")] == ("11", 100)
    assert found[("c011", "spend")] == ("1.61", None)
    assert found[("c012", "usage:api_calls")] == ("0", None)
    stored = {(n.customer, n.level): n for n in list_notifications(engine)}
    assert len(stored) == 108 and {c.notification_id for c in crossed} == {n.id for n in stored.values()}
    told = stored[("c143", 100)]  # 143 % 12 = 11 calls
    assert (told.kind, told.threshold_key, str(told.value), str(told.limit), told.period) == (
        "usage.threshold_crossed", "usage:api_calls", "11", "10", "2026-03")
    assert (told.payload["level_value"], told.payload["period_start"], told.status) == ("10", "2026-03-01", "pending")
    assert react_to_usage(engine, catalog, now=MARCH_NOW).created == []


def test_crossings_told_meanwhile_by_a_concurrent_check_are_not_told_twice(engine, catalog, monkeypatch):
    # 144 customers cross 50 % (5 calls of 10) and are told; then 72 of them reach 100 %. The second check does
    # not see the first's notifications before it writes (as when a concurrent check commits them meanwhile): it
    # tries the 72 customers' 144 crossings, their 72 at 50 % told already are refused by the unique key
    # (PostgreSQL: the copy into the table fails, is rolled back, and the rows go through the staging table), and
    # only the 72 at 100 % are new.
    import billing.thresholds

    names = [f"c{n:03d}" for n in range(144)]
    for who in names:
        customer(engine, catalog, who)
    five = [event(f"{who}-{i}", "2026-03-05T10:00:00Z", who=who) for who in names for i in range(5)]
    assert send(engine, catalog, five).accepted == 720
    first = react_to_usage(engine, catalog, now=MARCH_NOW).created
    assert sorted(c.level for c in first) == [50] * 144
    more = [event(f"{who}-{i}", "2026-03-06T10:00:00Z", who=who) for who in names[::2] for i in range(5, 10)]
    assert send(engine, catalog, more).accepted == 360
    monkeypatch.setattr(billing.thresholds, "_existing_keys", lambda session, pairs: set())
    staged: list[int] = []
    real = billing.thresholds._staged_notifications

    def spy(session, columns, rows):
        staged.append(len(rows))
        return real(session, columns, rows)

    monkeypatch.setattr(billing.thresholds, "_staged_notifications", spy)
    second = react_to_usage(engine, catalog, now=MARCH_NOW).created
    assert staged == ([144] if is_postgresql(engine) else [])  # (the first check copied its 144 at once)
    assert sorted((c.customer, c.level) for c in second) == [(who, 100) for who in names[::2]]
    stored = list_notifications(engine)
    assert len(stored) == 216 == len({(n.customer, n.level) for n in stored})
    assert {n.id for n in stored} == {c.notification_id for c in first + second}


def test_a_large_chunk_across_months_and_timezones_counts_as_its_events_do(engine, catalog):
    # 1,500 events in one chunk (SQLite tallies a chunk this large in the database): two customers, one in Tokyo,
    # across the end of February (UTC and Tokyo's), duplicates of half of them sent again afterwards
    customer(engine, catalog, "acme")
    customer(engine, catalog, "tokyo", timezone="Asia/Tokyo")
    batch = mixed("e", 1500, minutes=5)
    assert send(engine, catalog, batch).accepted == 1500
    again = send(engine, catalog, batch[::2])
    assert (again.accepted, again.duplicates) == (0, 750)
    # 1,500 events over 5.2 days from 2026-02-27: each customer's February and March, each of three meters
    assert agree(engine) == 2 * 2 * 3
    assert sum(row[3] for row in counters(engine)) == 1500


def test_events_posted_over_http_are_counted_on_both_paths_and_billing_db_check_is_clean(
    db_url, engine, sample_catalog_path, cli_env
):
    """Events posted to a real server: single events and a batch on the lean path (no ``Idempotency-Key``), a batch
    with a key through the full middleware, a duplicate and a conflicting redelivery. Every stored event is
    counted in its month, nothing else is, and ``billing db check`` finds every counter equal to its recount."""
    service.create_customer(engine, "acme", "Acme", None, "USD")
    _, key = create_api_key(engine, "writer")
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def post(port: int, events: list[dict[str, object]], **extra: str) -> dict[str, object]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("POST", "/v1/events", body=json.dumps({"events": events}), headers={**headers, **extra})
        response = connection.getresponse()
        answer = json.loads(response.read())
        connection.close()
        assert response.status == 200, answer
        return answer

    with _serving(db_url, sample_catalog_path) as port:
        for n in range(3):  # single events, lean path
            post(port, [event(f"s{n}", "2026-03-05T10:00:00Z")])
        post(port, [event(f"b{n}", "2026-02-10T10:00:00Z") for n in range(4)])  # a batch, lean path
        keyed = post(port, [event(f"k{n}", "2026-03-06T10:00:00Z") for n in range(2)], **{"Idempotency-Key": "k-1"})
        assert keyed["accepted"] == 2
        again = post(port, [event("s0", "2026-03-05T10:00:00Z"), event("s1", "2026-03-01T10:00:00Z")])
        assert (again["duplicates"], again["rejected"]) == (1, 1)  # s0 the same, s1 with another timestamp
    # March: 3 single + 2 keyed; February: the batch of 4
    assert [(row[2], row[3]) for row in counters(engine)] == [("2026-02-01T00:00", 4), ("2026-03-01T00:00", 5)]
    result = CliRunner().invoke(app, ["db", "check", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"counters": 2, "differ": []}


def test_events_in_chdb_are_not_counted_and_thresholds_entitlements_read_them_there(
    engine, catalog, chdb_folder, cli_env, monkeypatch
):
    """``events_url`` pointing at chDB: the billing database stores no event and keeps no counter; thresholds are
    each crossed exactly once, read from the events in chDB; entitlements too; ``billing db check`` says there is
    nothing to compare, and where the events are."""
    url = f"chdb://{chdb_folder}?database=t_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("BILLING_EVENTS_URL", url)
    get_settings.cache_clear()
    assert create_event_tables(url) is not None
    assert not events_counted(engine)
    cross_each_level_once(engine, catalog)
    assert counters(engine) == []  # nothing counted in the billing database
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM usage_events")).scalar_one() == 0
    # 10 calls and 4.91 GB of March, read from chDB
    used = {e.meter: str(e.used) for e in customer_entitlements(engine, catalog, "acme", now=MARCH_NOW).meters}
    assert used == {"api_calls": "10", "storage": "4.91"}
    result = CliRunner().invoke(app, ["db", "check", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert (answer["counters"], answer["differ"], answer["event_store"].startswith("chdb://")) == (None, [], True)
    result = CliRunner().invoke(app, ["db", "check"])
    said = " ".join(result.stdout.split())  # (as the console wrapped it)
    assert result.exit_code == 0 and "not kept, the events live in the event store chdb://" in said


PERCENTAGE_CATALOG = """
[meters.payments]
name = "Payments"
aggregation = "sum"
unit = "USD"

[plans.card]
name = "Card"
currency = "USD"
charges = [
  { meter = "payments", model = "percentage", rate = 10, fixed_amount = 1 },
]
[[plans.card.thresholds]]
spend_cap = 25.00
levels = [100]
"""


def test_a_spend_cap_on_a_percentage_charge_is_priced_event_by_event_not_from_the_counter(engine):
    catalog, problems = loads_catalog(PERCENTAGE_CATALOG, "percentage.toml")
    assert not problems, problems
    service.create_customer(engine, "shop", "Shop", "shop@example.test", "USD")
    service.subscribe(engine, catalog, "shop", "card", dt.date(2026, 1, 1))
    # two payments of 100: 10 % + 1 each = 11 + 11 = 22.00 < 25.00
    send(engine, catalog, [event(f"p{i}", "2026-03-05T10:00:00Z", "payments", who="shop", value="100")
                           for i in range(2)])
    assert check_thresholds(engine, catalog, now=MARCH_NOW).created == []
    # a third: 33.00 ≥ 25.00
    send(engine, catalog, [event("p2", "2026-03-06T10:00:00Z", "payments", who="shop", value="100")])
    crossed = check_thresholds(engine, catalog, now=MARCH_NOW).created
    assert [(c.threshold_key, c.level, str(c.value)) for c in crossed] == [("spend", 100, "33.00")]


def test_billing_db_check_compares_one_instant_while_events_are_stored(engine, catalog, monkeypatch):
    if not is_postgresql(engine):
        pytest.skip("SQLite: the check holds the write lock, no chunk is stored meanwhile")
    from billing.db import counters as module

    customer(engine, catalog, "acme")
    send(engine, catalog, [event("a1", "2026-03-05T10:00:00Z")])
    recount = module.recount

    def recount_then_store(connection, customers=None):
        counted = recount(connection, customers)
        send(engine, catalog, [event("a2", "2026-03-05T11:00:00Z")])  # stored (and counted) meanwhile
        return counted

    monkeypatch.setattr(module, "recount", recount_then_store)
    # the recount made 1 event; the counter it is compared with is of the same instant: 1, not 2
    assert module.checked(engine) == (1, [])


def _used_parsed_tallies(monkeypatch):
    """Whether each stored chunk used its workers' tally (True) or was tallied in its transaction (False); the
    file is parsed by a worker only in a process that runs one thread: the test waits for stray threads (a
    writer's ends after a second idle), and says so if one stays."""
    import threading
    import time

    import billing.db.counters as counters_module

    deadline = time.monotonic() + 5
    while threading.active_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    if threading.active_count() > 1:
        pytest.skip(f"threads still running, no worker would parse: {[t.name for t in threading.enumerate()]}")
    used: list[bool] = []
    real = counters_module._parsed_rows
    real_added = counters_module._added_if_unchanged

    def parsed_rows(connection, parsed):
        rows = real(connection, parsed)
        used.append(rows is not None)
        return rows

    def added_if_unchanged(connection, parsed, received_at):  # (PostgreSQL, a chunk of a few counters)
        added = real_added(connection, parsed, received_at)
        used.append(added)
        return added

    monkeypatch.setattr(counters_module, "_parsed_rows", parsed_rows)
    monkeypatch.setattr(counters_module, "_added_if_unchanged", added_if_unchanged)
    return used


def _file(tmp_path, batch):
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in batch), encoding="utf-8")
    return path


def test_a_file_parsed_by_workers_is_counted_as_its_events_are_stored(engine, catalog, tmp_path, monkeypatch):
    # 3 chunks of 400 lines parsed by a worker process (the first in parts of 50, 50, 100 and 200), which tallies
    # each chunk's counters: the counters equal their recount; the file again (every event a duplicate) and half
    # of it in a new file count nothing more
    from billing.ingestion import known_customers
    from billing.metering import meter_specs
    from meters import ingest_file

    customer(engine, catalog, "acme")
    customer(engine, catalog, "tokyo", timezone="Asia/Tokyo")
    batch = mixed("w", 1200, minutes=9)
    path = _file(tmp_path, batch)
    used = _used_parsed_tallies(monkeypatch)

    def ingest(source):
        return ingest_file(
            engine, source, meter_specs(catalog), known_customers(engine), now=MARCH_NOW, chunk_size=400, workers=1
        )

    assert ingest(path).accepted == 1200
    assert used == [True] * 6  # each chunk counted from its worker's tally
    # 1,200 events every 9 minutes from 2026-02-27: 7.5 days, each customer's February and March, three meters
    assert agree(engine) == 2 * 2 * 3
    assert sum(row[3] for row in counters(engine)) == 1200
    before = counters(engine)
    assert ingest(path).duplicates == 1200
    assert ingest(_file(tmp_path, [*batch[::2], event("new", "2026-03-02T00:00:00Z")])).accepted == 1
    assert sum(row[3] for row in counters(engine)) == 1201
    assert [row for row in counters(engine) if row not in before] == [
        ("acme", "api_calls", "2026-03-01T00:00", 1 + next(r[3] for r in before if r[:3] == (
            "acme", "api_calls", "2026-03-01T00:00")), 0, None)
    ]
    assert agree(engine) == 12


def test_a_timezone_changed_while_a_file_is_parsed_is_counted_in_the_new_one(engine, catalog, tmp_path, monkeypatch):
    # The workers tally with the timezones the ingestion began with (New York here); the database says UTC by
    # the time the chunks are stored: each chunk is counted in the storing transaction's timezone instead.
    from billing.metering import meter_specs
    from meters import ingest_file

    customer(engine, catalog, "acme")
    # 02:00Z on 1 March is still February in New York (21:00 on the 28th), March in UTC
    batch = [event(f"m{i}", f"2026-03-01T02:{i % 60:02d}:00Z") for i in range(300)]
    used = _used_parsed_tallies(monkeypatch)
    report = ingest_file(
        engine, _file(tmp_path, batch), meter_specs(catalog), {"acme": "America/New_York"}, now=MARCH_NOW, chunk_size=100,
        workers=1,
    )
    assert report.accepted == 300
    assert used == [False] * 6  # (the first chunk in 4 parts) each worker's tally was of New York: tallied again in UTC
    assert counters(engine) == [("acme", "api_calls", "2026-03-01T00:00", 300, 0, None)]
    assert agree(engine) == 1


def test_a_batch_after_a_timezone_change_is_counted_in_the_new_one_though_its_customers_were_trusted(
    engine, catalog, monkeypatch
):
    # An API batch trusts the customers it found for a second (their timezones with them), and tallies its
    # counters in those timezones; the change below commits within that second: the batch's events are counted
    # in the timezones read as they are stored (the tally is of one customer's old one: none of it is used).
    import billing.ingestion

    monkeypatch.setattr(billing.ingestion, "TRUSTED", 3600.0)  # (however slow the machine)
    customer(engine, catalog, "acme")
    customer(engine, catalog, "tokyo", timezone="Asia/Tokyo")
    used = _used_parsed_tallies(monkeypatch)
    send(engine, catalog, [event("a0", "2026-03-05T10:00:00Z"), event("t0", "2026-03-05T10:00:00Z", who="tokyo")])
    service.update_customer(engine, "tokyo", {"timezone": "UTC"})
    # 2026-02-28T16:00Z: March in Tokyo (01:00 on the 1st), February in UTC
    send(engine, catalog, [event("a1", "2026-02-28T16:00:00Z"), event("t1", "2026-02-28T16:00:00Z", who="tokyo")])
    assert used == [True, False]  # the second batch's tally was not used (Tokyo's timezone changed)
    assert counters(engine) == [
        ("acme", "api_calls", "2026-02-01T00:00", 1, 0, None),
        ("acme", "api_calls", "2026-03-01T00:00", 1, 0, None),
        ("tokyo", "api_calls", "2026-02-01T00:00", 1, 0, None),
        ("tokyo", "api_calls", "2026-03-01T00:00", 1, 0, None),
    ]
    assert agree(engine) == 4


def test_a_customer_not_found_is_looked_for_again_by_the_next_batch(engine, catalog):
    # only customers found are trusted: one created after a batch named it is known to the next batch at once
    first = send(engine, catalog, [event("n0", "2026-03-05T10:00:00Z", who="newco")])
    assert (first.accepted, [r.reason for r in first.rejected]) == (0, ["unknown customer 'newco'"])
    customer(engine, catalog, "newco")
    assert send(engine, catalog, [event("n1", "2026-03-05T10:00:00Z", who="newco")]).accepted == 1
    assert counters(engine) == [("newco", "api_calls", "2026-03-01T00:00", 1, 0, None)]


def _customers_in_bulk(engine, names):
    """Customers in UTC, without subscriptions, in one statement."""
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO customers (external_id, name, currency, timezone, locale, address, tax_rate, "
                 "created_at) VALUES (:e, :e, 'USD', 'UTC', 'en_US', '', 0, :now)"),
            [{"e": name, "now": MARCH_NOW} for name in names],
        )


@pytest.mark.parametrize("copied", [False, True], ids=["as JSON", "copied"])
def test_a_chunk_of_many_counters_is_added_from_the_text_its_worker_wrote(
    engine, catalog, tmp_path, monkeypatch, copied
):
    # 150 customers in each of two chunks of 300 lines (the first stored in parts: the last of them holds 150
    # events): 150 counters, more than a list of values takes. On PostgreSQL they go as one JSON parameter, or,
    # past ``_MANY`` (a file's chunk), the worker writes them in COPY's text format (a backslash in an id escaped)
    # and the storing transaction adds the received_through; either way the counters equal their recount.
    from billing.db import counters as counters_module
    from billing.ingestion import known_customers
    from billing.metering import meter_specs
    from meters import ingest_file

    names = [f"c{i:03d}" for i in range(149)] + ["back\\slash"]
    _customers_in_bulk(engine, names)
    batch = [event(f"k{i}", f"2026-03-0{1 + i % 9}T10:00:00Z", who=names[i % 150]) for i in range(600)]
    used = _used_parsed_tallies(monkeypatch)
    texts: list[bool] = []
    if copied:
        monkeypatch.setattr(counters_module, "_MANY", 149)
        through_table = counters_module._copied_if_unchanged

        def copied_from(cursor, parsed, received_at):
            texts.append(parsed.copy_text is not None)
            return through_table(cursor, parsed, received_at)

        monkeypatch.setattr(counters_module, "_copied_if_unchanged", copied_from)
    report = ingest_file(
        engine, _file(tmp_path, batch), meter_specs(catalog), known_customers(engine), now=MARCH_NOW,
        chunk_size=300, workers=1,
    )
    assert report.accepted == 600
    assert used == [True] * 5  # (the first chunk in parts of 37, 38, 75 and 150)
    # (PostgreSQL: the last part and the second chunk, 150 counters each, from the text their worker wrote)
    assert texts == ([True, True] if copied and is_postgresql(engine) else [])
    assert ("back\\slash", "api_calls", "2026-03-01T00:00", 4, 0, None) in counters(engine)
    assert agree(engine) == 150


@pytest.mark.parametrize("copied", [False, True], ids=["one statement", "copied"])
def test_a_chunk_of_many_counters_tallied_in_a_timezone_since_changed_is_counted_in_the_new_one(
    engine, catalog, tmp_path, monkeypatch, copied
):
    # 150 customers; the workers tally c000 in New York (the timezone the ingestion began with), the database says
    # UTC: a chunk of 150 counters with c000's is not added (on PostgreSQL the statement that compares the
    # timezones adds nothing), it is tallied again in the storing transaction's timezones instead. On PostgreSQL,
    # 150 counters go as one JSON parameter, or (past ``_MANY``, a file's chunk) through a table.
    from billing.db import counters as counters_module
    from billing.ingestion import known_customers
    from billing.metering import meter_specs
    from meters import ingest_file

    names = [f"c{i:03d}" for i in range(150)]
    _customers_in_bulk(engine, names)
    # 02:00Z on 1 March: February in New York, March in UTC
    batch = [event(f"z{i}", f"2026-03-01T02:{i % 60:02d}:00Z", who=names[i % 150]) for i in range(300)]
    began_with = {**known_customers(engine), "c000": "America/New_York"}
    used = _used_parsed_tallies(monkeypatch)
    copies: list[int] = []
    if copied:
        monkeypatch.setattr(counters_module, "_MANY", 149)
        through_table = counters_module._copied_if_unchanged
        monkeypatch.setattr(counters_module, "_copied_if_unchanged", lambda *a: copies.append(1) or through_table(*a))
    report = ingest_file(
        engine, _file(tmp_path, batch), meter_specs(catalog), began_with, now=MARCH_NOW, chunk_size=150, workers=1
    )
    assert report.accepted == 300
    # two chunks of 150 lines, the first in parts of 18, 19, 38 and 75: c000's events are lines 1 and 151 (the
    # first part and the second chunk), the other parts' tallies are used
    assert used == [False, True, True, True, False]
    assert copies == ([1] if copied and is_postgresql(engine) else [])  # (the second chunk's 150 counters)
    assert ("c000", "api_calls", "2026-03-01T00:00", 2, 0, None) in counters(engine)
    assert sum(row[3] for row in counters(engine)) == 300
    assert agree(engine) == 150


def test_counters_in_copy_text_escape_what_copy_reads_as_special():
    from billing.db.counters import _copy_text

    rows = [("a\\b\tc\nd\re", "api_calls", 1, 2, 3, None, 5), ("acme", "peak", 10, 20, 1, 7_000_000, None)]
    zones = {"a\\b\tc\nd\re": "Asia/Tokyo", "acme": "UTC"}
    assert _copy_text(rows, zones) == (
        b"a\\\\b\\tc\\nd\\re\tapi_calls\t1\t2\t3\t\\N\t5\tAsia/Tokyo\t\n"
        b"acme\tpeak\t10\t20\t1\t7000000\t\\N\tUTC\t\n"
    )


def test_after_the_database_drops_its_connections_one_batch_fails_and_the_next_ones_are_stored(db_url, catalog):
    """The API's path on the product's engine (a pooled connection is pinged only after a second idle, or once a
    connection of the pool was found lost): the database drops every connection while they are in steady use; the
    first batch fails (its error is the lost connection's, and sending it again is safe), every later one is
    stored on a new connection, and the counters agree with the events."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL: a server that closes a client's connections")
    from billing.db import make_engine

    engine = make_engine(db_url, pool_size=3, max_overflow=0)
    try:
        customer(engine, catalog, "acme")
        held = [engine.connect() for _ in range(3)]  # three pooled connections, each used a moment ago
        pids = [connection.execute(text("SELECT pg_backend_pid()")).scalar_one() for connection in held]
        for connection in held:
            connection.close()
        with make_engine(db_url).connect() as admin:
            for pid in pids:
                assert admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
        outcomes = []
        for n in range(5):
            try:
                outcomes.append(send(engine, catalog, [event(f"after-{n}", "2026-03-20T11:00:00Z")]).accepted)
            except Exception as exc:
                outcomes.append(type(exc).__name__)
        assert isinstance(outcomes[0], str) and outcomes[1:] == [1, 1, 1, 1], outcomes
        assert send(engine, catalog, [event("after-0", "2026-03-20T11:00:00Z")]).accepted == 1  # sent again
        assert [row[:4] for row in counters(engine)] == [("acme", "api_calls", "2026-03-01T00:00", 5)]
        agree(engine)
    finally:
        engine.dispose()
