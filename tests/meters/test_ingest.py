"""Ingestion into the database (SQLite, and PostgreSQL when configured): JSON Lines and CSV, every rejection
named by its line, duplicates and conflicts, re-ingestion, chunks, worker processes, interruptions and two
processes ingesting the same file at once."""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from meters import (
    IngestInterrupted,
    IngestReport,
    MalformedFileError,
    MeterSpec,
    Rejection,
    from_epoch_us,
    ingest,
    ingest_file,
    ingestion_cutoff,
)
from meters.tables import UsageEventRow

NOW = dt.datetime(2024, 4, 1, tzinfo=dt.UTC)
METERS = [
    MeterSpec("api_calls", "count"),
    MeterSpec("payments", "sum"),
    MeterSpec("storage_gb", "weighted_sum"),
    MeterSpec("active_users", "unique_count", unique_property="user_id"),
]
CUSTOMERS = {"acme", "globex"}


def line(event_id: str, meter: str = "api_calls", customer: str = "acme", **extra: object) -> str:
    record: dict[str, object] = {
        "id": event_id,
        "customer": customer,
        "meter": meter,
        "timestamp": extra.pop("timestamp", "2024-03-10T12:00:00Z"),
    }
    record.update(extra)
    return json.dumps(record)


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"{text}\n" for text in lines), encoding="utf-8")
    return path


def stored(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(UsageEventRow)).scalar_one()


def rows(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(select(UsageEventRow).order_by(UsageEventRow.event_id))]


def ingest_path(engine: Engine, path: Path, **options: object) -> IngestReport:
    return ingest_file(engine, path, METERS, CUSTOMERS, now=NOW, **options)  # type: ignore[arg-type]


def reasons(report: IngestReport) -> dict[int, str]:
    return {rejection.line: rejection.reason for rejection in report.rejected}


# -- JSON Lines --------------------------------------------------------------------------------------------


def test_good_duplicate_and_bad_lines(engine: Engine, tmp_path: Path) -> None:
    path = write(
        tmp_path / "usage.jsonl",
        line("e1"),
        line("e2", "payments", value="10.25"),
        line("e1"),  # the same event again: a duplicate
        line("e2", "payments", value="10.26"),  # the same id, other content: a conflict
        "{oops",
        "",
        line("e3", customer="initech"),
        line("e4", "active_users", properties={"user_id": "u1"}),
    )
    report = ingest_path(engine, path)
    assert (report.accepted, report.duplicates, len(report.rejected)) == (3, 1, 3)
    assert reasons(report) == {
        4: "conflict: id 'e2' is used by line 2 with other content",
        5: "not JSON: Expecting property name enclosed in double quotes (column 2)",
        7: "unknown customer 'initech'",
    }
    conflict = report.rejected[0]
    assert conflict == Rejection(4, "e2", conflict.reason, line("e2", "payments", value="10.26"))
    assert stored(engine) == 3


def test_ingesting_the_same_file_again_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    path = write(
        tmp_path / "usage.jsonl",
        *(line(f"e{i}", "payments", value=f"{i}.5") for i in range(1, 6)),
        line("bad", meter="nope"),
    )
    first = ingest_path(engine, path)
    before = rows(engine)
    again = ingest_path(engine, path)
    assert (first.accepted, first.duplicates, len(first.rejected)) == (5, 0, 1)
    assert (again.accepted, again.duplicates, len(again.rejected)) == (0, 5, 1)
    assert again.rejected == first.rejected
    assert rows(engine) == before  # not one row added or touched (received_at included)


def test_an_id_already_stored_with_other_content_is_a_conflict(engine: Engine, tmp_path: Path) -> None:
    ingest_path(engine, write(tmp_path / "a.jsonl", line("e1", "payments", value="1")))
    report = ingest_path(engine, write(tmp_path / "b.jsonl", line("e1", "payments", value="2"), line("e2")))
    assert (report.accepted, report.duplicates) == (1, 0)
    assert reasons(report) == {1: "conflict: id 'e1' was already ingested with other content"}
    with engine.connect() as connection:
        assert connection.execute(select(UsageEventRow.value).where(UsageEventRow.event_id == "e1")).scalar() == 10**6


def test_the_same_event_written_differently_is_a_duplicate(engine: Engine, tmp_path: Path) -> None:
    ingest_path(engine, write(tmp_path / "a.jsonl", line("e1", "payments", value="1.50", properties={"a": "1"})))
    again = write(
        tmp_path / "b.jsonl",
        line("e1", "payments", value=1.5, timestamp="2024-03-10T13:00:00+01:00", properties={"a": "1"}),
    )
    report = ingest_path(engine, again)
    assert (report.accepted, report.duplicates, report.rejected) == (0, 1, [])


def test_every_rejection_reason_names_its_line(engine: Engine, tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.jsonl",
        line("r1", meter="bandwidth"),
        line("r2", customer="initech"),
        json.dumps({"customer": "acme", "meter": "api_calls", "timestamp": "2024-03-10T12:00:00Z"}),
        line("r4", timestamp="2024-03-10T12:00:00"),
        line("r5", timestamp="2024-04-03T00:00:00Z"),
        line("r6", timestamp="yesterday"),
        line("r7", "payments", value="-3"),
        line("r8", "payments", value="three"),
        line("r9", "payments", value="0.0000001"),
        line("r10", "active_users"),
        "not json at all",
        line("r12", properties={"nested": {"a": "b"}}),
        line("r13", "payments"),
        "[]",
        line("ok", "storage_gb", value="-3"),  # weighted_sum takes decrements
    )
    report = ingest_path(engine, path)
    assert report.accepted == 1
    assert reasons(report) == {
        1: "unknown meter 'bandwidth' (known: active_users, api_calls, payments, storage_gb)",
        2: "unknown customer 'initech'",
        3: "missing field 'id'",
        4: "timestamp '2024-03-10T12:00:00' has no UTC offset (end it with Z or +hh:mm)",
        5: "timestamp '2024-04-03T00:00:00Z' is more than 1 day in the future",
        6: "timestamp 'yesterday' is not an ISO-8601 date and time",
        7: "negative value -3: meter 'payments' aggregates by sum "
        "(only weighted_sum meters take negative values, as decrements)",
        8: "value 'three' is not a number in plain decimal notation (like 1500 or -2.5)",
        9: "value 0.0000001 has more than 6 decimal places",
        10: "missing property 'user_id' (meter 'active_users' counts its unique values)",
        11: "not JSON: Expecting value (column 1)",
        12: "property 'nested' must be a string (got an object)",
        13: "missing field 'value' (meter 'payments' aggregates by sum)",
        14: "not a JSON object (got a list)",
    }
    assert [r.event_id for r in report.rejected][:3] == ["r1", "r2", None]


def test_line_endings_bom_blank_lines_and_bad_utf8(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf"
        + line("e1").encode()
        + b"\r\n"
        + b"   \r\n"
        + line("e2").encode()[:-2]
        + b'\xff"}\n'
        + line("e3").encode()  # no final line break
    )
    report = ingest_path(engine, path)
    assert (report.accepted, report.duplicates) == (2, 0)
    assert reasons(report) == {3: "not valid UTF-8"}
    assert "\ufffd" in report.rejected[0].raw


def test_a_file_of_nothing_but_garbage_stores_nothing_and_says_so(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(b"\x00\x01\x02\nPK\x03\x04\n")
    report = ingest_path(engine, path)
    assert (report.accepted, report.duplicates, len(report.rejected)) == (0, 0, 2)
    assert stored(engine) == 0


@pytest.mark.parametrize("workers", [0, 1])
def test_lenient_numbers_and_repeated_keys_are_rejected_by_line(engine: Engine, tmp_path: Path, workers: int) -> None:
    head = '{"id": "d1", "customer": "acme", "meter": "payments", "timestamp": "2024-03-10T12:00:00Z", "value": 1'
    lines = [
        line("n1", "payments", value="1_000"),
        line("n2", "payments", value="\u0665").replace("\\u0665", "\u0665"),  # an Arabic-Indic five, in UTF-8
        line("n3", "payments", value=" 5 "),
        head + ', "id": "d2"}',
        line("p1", "api_calls", properties={"region": "eu"}).replace("}}", ', "region": "us"}}'),
        line("ok1", "payments", value="1000"),
        head.replace('"value": 1', '"value": 1.5e3').replace('"d1"', '"ok2"') + "}",  # a JSON number's exponent
    ]
    # enough lines for several chunks, so that worker processes parse them
    path = write(tmp_path / "strict.jsonl", *lines, *(line(f"f{i}") for i in range(20)))
    report = ingest_path(engine, path, chunk_size=4, workers=workers)
    plain = "is not a number in plain decimal notation (like 1500 or -2.5)"
    assert reasons(report) == {
        1: f"value '1_000' {plain}",
        2: f"value '\u0665' {plain}",
        3: f"value ' 5 ' {plain}",
        4: "duplicate key 'id'",
        5: "duplicate key 'region' in 'properties'",
    }
    assert [rejection.event_id for rejection in report.rejected] == ["n1", "n2", "n3", "d2", "p1"]
    assert report.accepted == 22
    with engine.connect() as connection:
        values = dict(connection.execute(select(UsageEventRow.event_id, UsageEventRow.value)).all())
    assert (values["ok1"], values["ok2"]) == (1_000_000_000, 1_500_000_000)

    csv_path = tmp_path / "strict.csv"
    csv_path.write_text(
        "id,customer,meter,timestamp,value,properties\n"
        "c1,acme,payments,2024-03-10T12:00:00Z,1_000,\n"
        "c2,acme,payments,2024-03-10T12:00:00Z, 5 ,\n"
        "c3,acme,payments,2024-03-10T12:00:00Z,1e3,\n"
        'c4,acme,payments,2024-03-10T12:00:00Z,1,"{""a"": ""1"", ""a"": ""2""}"\n'
        "c5,acme,payments,2024-03-10T12:00:00Z,-0.5,\n"
        "c6,acme,payments,2024-03-10T12:00:00Z,2.25,\n",
        encoding="utf-8",
    )
    report = ingest_path(engine, csv_path)
    assert reasons(report) == {
        2: f"value '1_000' {plain}",
        3: f"value ' 5 ' {plain}",
        4: f"value '1e3' {plain}",
        5: "duplicate key 'a' in 'properties'",
        6: "negative value -0.5: meter 'payments' aggregates by sum "
        "(only weighted_sum meters take negative values, as decrements)",
    }
    assert report.accepted == 1


@pytest.mark.parametrize("workers", [0, 1])
def test_events_older_than_their_customers_late_usage_window_are_rejected(
    engine: Engine, tmp_path: Path, workers: int
) -> None:
    earliest = {"acme": dt.datetime(2023, 4, 1, tzinfo=dt.UTC)}  # globex: no window given, the fixed bounds only
    path = write(
        tmp_path / "old.jsonl",
        line("o1", timestamp="2023-03-31T23:59:59Z"),
        line("o2", timestamp="2023-04-01T00:00:00Z"),
        line("o3", timestamp="0001-01-01T00:00:00Z"),
        line("o4", customer="globex", timestamp="2020-01-01T00:00:00Z"),
        line("o5", customer="globex", timestamp="0001-01-01T00:00:00Z"),
        *(line(f"f{i}") for i in range(10)),
    )
    report = ingest_file(engine, path, METERS, CUSTOMERS, now=NOW, earliest=earliest, chunk_size=4, workers=workers)
    assert reasons(report) == {
        1: "timestamp '2023-03-31T23:59:59Z' is older than the late-usage window of customer 'acme', which begins "
        "at 2023-04-01T00:00:00+00:00: usage that old is never billed",
        3: "timestamp '0001-01-01T00:00:00Z' is out of range (before 1970-01-01T00:00:00+00:00)",
        5: "timestamp '0001-01-01T00:00:00Z' is out of range (before 1970-01-01T00:00:00+00:00)",
    }
    assert report.accepted == 12 == stored(engine)
    batch = [json.loads(line("b1", timestamp="2023-01-15T00:00:00Z")), json.loads(line("b2"))]
    report = ingest(engine, batch, METERS, CUSTOMERS, now=NOW, earliest=earliest)
    assert (report.accepted, [(r.line, r.event_id) for r in report.rejected]) == (1, [(0, "b1")])
    assert "older than the late-usage window" in report.rejected[0].reason


@pytest.mark.parametrize("workers", [0, 1])
def test_the_report_bounds_the_timestamps_of_each_customers_stored_events(
    engine: Engine, tmp_path: Path, workers: int
) -> None:
    """What alerts need to know: an interval per customer that covers every event stored now, chunk by chunk (a
    chunk's interval is that of all its events)."""
    def at(day: int, hour: int = 12) -> str:
        return f"2024-03-{day:02d}T{hour:02d}:00:00Z"

    first = write(tmp_path / "a.jsonl", *(line(f"a{day}", timestamp=at(day)) for day in (5, 2, 9, 3)))
    report = ingest_path(engine, first, chunk_size=2, workers=workers)
    utc = dt.UTC
    assert report.spans == {"acme": (dt.datetime(2024, 3, 2, 12, tzinfo=utc), dt.datetime(2024, 3, 9, 12, tzinfo=utc))}
    # only what is stored now counts: duplicates, conflicts and rejections do not
    second = write(
        tmp_path / "b.jsonl",
        line("a5", timestamp=at(5)),  # a duplicate
        line("a2", timestamp=at(1)),  # a conflict
        line("g1", customer="globex", timestamp=at(20, 8)),
        line("g2", customer="globex", timestamp=at(21)),
        line("g3", customer="globex", timestamp="2024-05-01T00:00:00Z"),  # too far ahead
        line("a10", timestamp=at(10)),
    )
    report = ingest_path(engine, second, chunk_size=2, workers=workers)
    assert (report.accepted, report.duplicates, len(report.rejected)) == (3, 1, 2)
    assert report.spans == {
        "acme": (dt.datetime(2024, 3, 10, 12, tzinfo=utc),) * 2,
        "globex": (dt.datetime(2024, 3, 20, 8, tzinfo=utc), dt.datetime(2024, 3, 21, 12, tzinfo=utc)),
    }
    assert ingest_path(engine, second, workers=workers).spans == {}  # nothing stored now
    third = write(
        tmp_path / "c.jsonl",
        line("x1", timestamp=at(1)),
        line("x2", customer="globex", timestamp=at(30)),  # same chunk: both get the chunk's interval
        line("x3", customer="globex", timestamp=at(15)),
    )
    report = ingest_path(engine, third, chunk_size=2, workers=workers)
    assert report.spans == {
        "acme": (dt.datetime(2024, 3, 1, 12, tzinfo=utc), dt.datetime(2024, 3, 30, 12, tzinfo=utc)),
        "globex": (dt.datetime(2024, 3, 1, 12, tzinfo=utc), dt.datetime(2024, 3, 30, 12, tzinfo=utc)),
    }


# -- CSV -------------------------------------------------------------------------------------------------


def test_csv_with_property_columns_and_a_properties_object(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "usage.csv"
    path.write_text(
        "id,customer,meter,timestamp,value,properties,properties.user_id\n"
        "c1,acme,api_calls,2024-03-10T12:00:00Z,,,\n"
        'c2,acme,payments,2024-03-10T12:00:00Z,10.25,"{""region"": ""eu""}",\n'
        "c3,acme,active_users,2024-03-10T12:00:00Z,,,u1\n"
        'c4,acme,payments,2024-03-10T12:00:00Z,"1,5",,\n'
        "c5,acme,payments\n"
        'c6,acme,active_users,2024-03-10T12:00:00Z,,,"two\nlines"\n'
        "c7,acme,payments,2024-03-10T12:00:00Z,1,not json,\n",
        encoding="utf-8",
    )
    report = ingest_path(engine, path)
    assert (report.accepted, report.duplicates) == (4, 0)
    assert [rejection.event_id for rejection in report.rejected] == ["c4", "c5", "c7"]
    assert reasons(report) == {
        5: "value '1,5' is not a number in plain decimal notation (like 1500 or -2.5)",
        6: "expected 7 fields (as in the header), got 3",
        9: "'properties' must be a JSON object of strings (not JSON)",  # c6 spans lines 7 and 8
    }
    with engine.connect() as connection:
        found = dict(connection.execute(select(UsageEventRow.event_id, UsageEventRow.properties)).all())
    assert found["c2"] == '{"region":"eu"}'
    assert found["c6"] == '{"user_id":"two\\nlines"}'


def test_csv_and_json_lines_of_the_same_events_are_duplicates(engine: Engine, tmp_path: Path) -> None:
    ingest_path(
        engine,
        write(
            tmp_path / "a.jsonl",
            line("e1", "payments", value="2.5", properties={"region": "eu"}),
            line("e2", "active_users", properties={"user_id": "u9"}),
        ),
    )
    path = tmp_path / "a.csv"
    path.write_text(
        "id,customer,meter,timestamp,value,properties.region,properties.user_id\n"
        "e1,acme,payments,2024-03-10T12:00:00Z,2.50,eu,\n"
        "e2,acme,active_users,2024-03-10T12:00:00Z,,,u9\n",
        encoding="utf-8",
    )
    report = ingest_path(engine, path)
    assert (report.accepted, report.duplicates, report.rejected) == (0, 2, [])


def test_a_bad_csv_header_stores_nothing(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "usage.csv"
    path.write_text("id,customer,meter,when,amount\ne1,acme,api_calls,2024-03-10T12:00:00Z,1\n", encoding="utf-8")
    with pytest.raises(MalformedFileError) as error:
        ingest_path(engine, path)
    assert str(error.value) == (
        f"{path}:1: bad CSV header: unknown column 'when'; unknown column 'amount'; missing column 'timestamp' "
        "(columns: id, customer, meter, timestamp, value, properties, properties.<name>)"
    )
    assert stored(engine) == 0


def test_the_format_can_be_given(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "events.txt"
    path.write_text("id,customer,meter,timestamp\ne1,acme,api_calls,2024-03-10T12:00:00Z\n", encoding="utf-8")
    assert ingest_path(engine, path, format="csv").accepted == 1
    with pytest.raises(ValueError, match="unknown format"):
        ingest_path(engine, path, format="xml")


# -- API batches -----------------------------------------------------------------------------------------


def test_an_api_batch_names_rejections_by_index(engine: Engine) -> None:
    records = [
        json.loads(line("b0")),
        json.loads(line("b1", "payments", value="3")),
        {"id": "b2", "customer": "acme"},
        "not an object",
        json.loads(line("b1", "payments", value="4")),
    ]
    report = ingest(engine, records, METERS, CUSTOMERS, now=NOW)  # type: ignore[arg-type]
    assert (report.accepted, report.duplicates) == (2, 0)
    assert reasons(report) == {
        2: "missing field 'meter'; missing field 'timestamp'",
        3: "not an object (got str)",
        4: "conflict: id 'b1' is used by index 1 with other content",
    }
    assert report.rejected[0].raw == '{"id": "b2", "customer": "acme"}'
    assert report.source == "api"
    assert report.summary() == "accepted 2, duplicates 0, rejected 3"


def test_an_empty_batch(engine: Engine) -> None:
    assert ingest(engine, [], METERS, CUSTOMERS).summary() == "accepted 0, duplicates 0, rejected 0"


# -- chunks, workers, interruptions ----------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1])
def test_chunks_and_worker_processes_count_the_same(engine: Engine, tmp_path: Path, workers: int) -> None:
    lines = []
    for i in range(1, 301):
        if i % 50 == 0:
            lines.append("{broken")
        elif i % 70 == 0:
            lines.append(line(f"e{i - 60}"))  # a duplicate of an event 60 lines up (another chunk)
        elif i % 90 == 0:
            lines.append(line(f"e{i - 33}", timestamp="2024-03-11T00:00:00Z"))  # a conflict with the chunk before
        elif i % 95 == 0:
            lines.append(line(f"e{i - 2}", timestamp="2024-03-11T00:00:00Z"))  # a conflict in the same chunk
        else:
            lines.append(line(f"e{i}"))
    path = write(tmp_path / "big.jsonl", *lines)
    progress: list[int] = []
    report = ingest_path(engine, path, chunk_size=32, workers=workers, progress=progress.append)
    assert report.duplicates == 3  # lines 70, 140, 280 (line 210 repeats e150, which line 150 never made)
    assert reasons(report) == {
        50: "not JSON: Expecting property name enclosed in double quotes (column 2)",
        90: "conflict: id 'e57' was already ingested with other content",
        95: "conflict: id 'e93' is used by line 93 with other content",
        100: "not JSON: Expecting property name enclosed in double quotes (column 2)",
        150: "not JSON: Expecting property name enclosed in double quotes (column 2)",
        180: "conflict: id 'e147' was already ingested with other content",
        190: "conflict: id 'e188' is used by line 188 with other content",
        200: "not JSON: Expecting property name enclosed in double quotes (column 2)",
        250: "not JSON: Expecting property name enclosed in double quotes (column 2)",
        270: "conflict: id 'e237' was already ingested with other content",
        285: "conflict: id 'e283' is used by line 283 with other content",
        300: "not JSON: Expecting property name enclosed in double quotes (column 2)",
    }
    assert report.rejected[1].raw == lines[89]  # a worker does not send raw lines back; the reader has them
    assert report.rejected[2].raw == lines[94]
    assert report.accepted == 300 - 3 - 12 == stored(engine)
    assert progress[-1] == path.stat().st_size and progress == sorted(progress)


@pytest.mark.parametrize(("workers", "sizes"), [(1, [4, 4, 8, 16, 32, 32, 4]), (0, [32, 32, 32, 4])])
def test_a_worker_parses_the_first_chunk_in_growing_parts(engine: Engine, tmp_path: Path, workers: int,
                                                          sizes: list[int], one_thread: None) -> None:
    # The storing process waits only for an eighth of the first chunk before it stores; each transaction's events
    # (``meters_on_stored``) tell the parts. Parsed in process, the chunks are the chunk size.
    from meters.ingest import ON_STORED

    path = write(tmp_path / "ramp.jsonl", *(line(f"e{i:03d}") for i in range(100)))
    stored_sizes: list[int] = []
    hooked = engine.execution_options(**{ON_STORED: lambda _c, events, _r, _s: stored_sizes.append(len(events))})
    report = ingest_file(hooked, path, METERS, CUSTOMERS, now=NOW, chunk_size=32, workers=workers)
    assert report.accepted == 100 == stored(engine)
    assert stored_sizes == sizes


class _FailingStream(io.RawIOBase):
    """Lines of events, then an I/O error (a disk or a pipe that fails part-way)."""

    def __init__(self, good_lines: int):
        self.lines: Iterator[bytes] = iter([f"{line(f'e{i}')}\n".encode() for i in range(good_lines)])

    def readable(self) -> bool:
        return True

    def __iter__(self) -> Iterator[bytes]:
        yield from self.lines
        raise OSError("connection reset by peer")


def test_an_interrupted_file_reports_exactly_what_was_stored(engine: Engine) -> None:
    with pytest.raises(IngestInterrupted) as error:
        ingest_file(engine, _FailingStream(25), METERS, CUSTOMERS, now=NOW, chunk_size=10, workers=0)
    interrupted = error.value
    assert isinstance(interrupted.cause, OSError)
    assert interrupted.report.accepted == 20 == stored(engine)  # two whole chunks; the third never was
    assert interrupted.line == 21
    assert "ingestion stopped at line 21" in str(interrupted)
    assert "accepted 20, duplicates 0, rejected 0" in str(interrupted)


def test_the_ingestion_cutoff_parts_events_received_before_it_from_those_after(engine: Engine) -> None:
    ingest(engine, [json.loads(line("before"))], METERS, CUSTOMERS, now=NOW)
    cutoff = ingestion_cutoff(engine)
    ingest(engine, [json.loads(line("after"))], METERS, CUSTOMERS, now=NOW)
    with engine.connect() as connection:
        received = dict(connection.execute(select(UsageEventRow.event_id, UsageEventRow.received_at)).all())
    assert from_epoch_us(received["before"]) <= cutoff < from_epoch_us(received["after"])


def test_a_cutoff_waits_for_the_chunk_being_stored_and_counts_it_before(engine: Engine) -> None:
    # A chunk's transaction is held open (after its insert, before its commit); a cutoff taken meanwhile returns
    # only once that chunk is committed, and the chunk is received before it; a chunk stored after it, after.
    import threading

    from meters.ingest import ON_STORED

    inside, release = threading.Event(), threading.Event()

    def hold(connection: object, events: object, received_at: int, summary: object = None) -> None:
        inside.set()
        assert release.wait(10)

    held = engine.execution_options(**{ON_STORED: hold})
    storing = threading.Thread(target=ingest, args=(held, [json.loads(line("held"))], METERS, CUSTOMERS), kwargs={
        "now": NOW})
    storing.start()
    assert inside.wait(10)
    taken: list[dt.datetime] = []
    cutting = threading.Thread(target=lambda: taken.append(ingestion_cutoff(engine)))
    cutting.start()
    cutting.join(0.5)
    assert cutting.is_alive() and not taken  # waiting for the chunk's transaction
    release.set()
    storing.join(10)
    cutting.join(10)
    ingest(engine, [json.loads(line("later"))], METERS, CUSTOMERS, now=NOW)
    with engine.connect() as connection:
        received = dict(connection.execute(select(UsageEventRow.event_id, UsageEventRow.received_at)).all())
    assert from_epoch_us(received["held"]) <= taken[0] < from_epoch_us(received["later"])


# -- concurrency -----------------------------------------------------------------------------------------

_INGEST_IN_A_PROCESS = """
import datetime as dt, json, sys, time
from billing.db import make_engine
from meters import MeterSpec, ingest_file
engine = make_engine(sys.argv[1])
time.sleep(max(0.0, float(sys.argv[4]) - time.time()))  # both processes start ingesting at the same moment
meters = [MeterSpec("api_calls", "count"), MeterSpec("payments", "sum")]
report = ingest_file(engine, sys.argv[2], meters, {"acme", "globex"}, chunk_size=int(sys.argv[3]),
                     now=dt.datetime(2024, 4, 1, tzinfo=dt.UTC))
print(json.dumps([report.accepted, report.duplicates, len(report.rejected)]))
"""


@pytest.mark.slow
def test_two_processes_ingesting_the_same_file_count_each_event_once(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    events = 30_000
    path = write(
        tmp_path / "same.jsonl",
        *(line(f"e{i}", "payments", customer=("acme", "globex")[i % 2], value=f"{i}.01") for i in range(events)),
    )
    start = str(time.time() + 3)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _INGEST_IN_A_PROCESS, db_url, str(path), "500", start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
        results.append(json.loads(out))
    assert sum(accepted for accepted, _, _ in results) == events
    assert sum(duplicates for _, duplicates, _ in results) == events
    assert all(rejected == 0 for _, _, rejected in results)
    assert stored(engine) == events
    with engine.connect() as connection:
        total = connection.execute(select(func.sum(UsageEventRow.value))).scalar_one()
    assert total == sum(i * 10**6 + 10_000 for i in range(events))
