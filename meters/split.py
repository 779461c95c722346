"""Usage split by event properties: each meter's quantity per part of its events, computed by the database.

A :class:`Split` tells how a meter's events fall into parts: ``filters`` are tried in the order given and the
first whose every property has one of its listed values takes the event (its position; None when none matched);
the event's group is the values of its filter's ``group_by`` properties (None for a property the event lacks).
:func:`aggregate_split_usage` aggregates every part of every window exactly as :mod:`meters.aggregate` does a
whole meter, with the same division of work:

- ``count``, ``sum``, ``max`` and ``unique_count`` (distinct values *per part*) are one grouped query per meter:
  the part is a ``CASE`` over the event's properties (SQLite ``json_extract(properties, '$."country"')``,
  PostgreSQL ``properties::jsonb ->> 'country'``; property names and values are bound as parameters, never
  spliced into the SQL) and the query groups by window, part and the group's property values;
- ``latest``: the events ranked within their window and part by the database (``ROW_NUMBER() OVER (PARTITION
  BY window, part, group ORDER BY occurred_at DESC, id DESC)``; ties: the one stored last) and the first kept,
  with the part's count (``count(*) OVER``): one row per window and part leaves the database;
- ``weighted_sum``: the level carried into each window's part (a grouped sum of the earlier events) and
  Σ value × (window end − instant) grouped as ``count`` is, on ``numeric`` (PostgreSQL) or as two 64-bit sums of
  the duration's high and low bits (SQLite); what 64 bits cannot hold is summed on Python integers as the rows
  stream by, ``_STREAM_ROWS`` at a time;
- the per-event values of meters that keep them and the sums SQLite's 64-bit ``sum`` cannot hold: the events are
  loaded with their part, ranked by the database (``DENSE_RANK``), and the numpy kernels of
  :mod:`meters.aggregate` run per (window, part).

Nothing loops over events in Python. A part with no events in a window is absent from the result (a
``weighted_sum`` part whose level carried into the window is not zero is present).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple, cast

import numpy as np
from sqlalchemy import Connection, Engine

from dbkit.dialect import is_postgresql
from meters.aggregate import (
    _BEFORE_WINDOW,
    _IN_WINDOW,
    _NUMPY_KINDS,
    _SPLIT,
    _STREAM_ROWS,
    MeterAggregate,
    Window,
    _compute,
    _Computed,
    _EventRows,
    _Filters,
    _is_overflow,
    _load_windows,
    _snapshot,
    _time_weighted,
    _windows,
)
from meters.events import MeterSpec, from_scaled, meters_by_code

__all__ = ["PartKey", "Split", "aggregate_split_usage"]

Group = tuple[str | None, ...]


@dataclass(frozen=True, slots=True)
class Split:
    """How a meter's events are split into parts (hashable: equal splits can share one query).

    Attributes:
      filters: in the order they are tried, each as sorted ``(property, allowed values)`` pairs.
      group_by: the properties grouping each filter's events, one tuple per filter, then one for the events that
        match no filter.
    """

    filters: tuple[tuple[tuple[str, tuple[str, ...]], ...], ...]
    group_by: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if len(self.group_by) != len(self.filters) + 1:
            raise ValueError(
                f"a split of {len(self.filters)} filter(s) needs {len(self.filters) + 1} group_by tuples "
                f"(one per filter, then the unmatched events'), got {len(self.group_by)}"
            )
        for position, pairs in enumerate(self.filters):
            if not pairs or any(not values for _, values in pairs):
                raise ValueError(f"filter {position}: expected properties each with at least one value")

    @classmethod
    def of(
        cls,
        filters: Sequence[Mapping[str, Iterable[str]]] = (),
        group_by: Sequence[Sequence[str]] | None = None,
    ) -> Split:
        """A split from plain mappings; ``group_by`` defaults to no grouping at all."""
        pairs = tuple(tuple(sorted((key, tuple(values)) for key, values in f.items())) for f in filters)
        groups = tuple(tuple(g) for g in group_by) if group_by is not None else ((),) * (len(pairs) + 1)
        return cls(pairs, groups)

    def part_of(self, properties: Mapping[str, str] | None) -> tuple[int | None, Group]:
        """The reference rule, in Python: an event's (filter position or None, group values)."""
        found = properties or {}
        position = next(
            (i for i, pairs in enumerate(self.filters) if all(found.get(k) in values for k, values in pairs)), None
        )
        keys = self.group_by[-1 if position is None else position]
        return position, tuple(found.get(key) for key in keys)


class PartKey(NamedTuple):
    """One part of one meter's usage in one window."""

    key: Any
    meter: str
    filter: int | None
    group: Group


def aggregate_split_usage(
    engine: Engine,
    windows: Mapping[Any, Window],
    meters: Iterable[MeterSpec] | Mapping[str, MeterSpec],
    splits: Mapping[str, Split],
    *,
    received_until: dt.datetime | None = None,
    received_after: dt.datetime | None = None,
) -> dict[PartKey, MeterAggregate]:
    """Every split meter's usage in every window, part by part: ``{PartKey: MeterAggregate}``.

    ``windows`` as for :func:`meters.aggregate_usage`; ``splits`` maps a meter's code to its split. Only parts
    with events (or, for ``weighted_sum``, a level carried into the window) are present.
    """
    specs = meters_by_code(meters)
    unknown = sorted(set(splits) - set(specs))
    if unknown:
        raise ValueError(f"split of unknown meter(s): {', '.join(unknown)}")
    keys, customers, starts, ends = _windows(windows)
    if not keys or not splits:
        return {}
    received = _Filters(received_until, received_after)
    results: dict[PartKey, MeterAggregate] = {}
    with _snapshot(engine) as connection:
        _load_windows(connection, customers, starts, ends)
        for code in sorted(splits):
            spec = specs[code]
            found = _split_meter(connection, spec, _SplitSql(splits[code], connection), received, starts, ends)
            for index, position, group, count, quantity, values in found:
                key = keys[index]
                # (built as a tuple: a window may have many parts, and a NamedTuple's own constructor is slow)
                part = _new_tuple(PartKey, (key, code, position, group))
                results[part] = MeterAggregate(key, customers[index], code, quantity, count, values)
    return results


_Part = tuple[int, int | None, Group]  # (window index, filter position, group values)
# what a part of a window found: (window index, filter position, group values, events, quantity, values)
_Found = tuple[int, int | None, Group, int, Decimal, Sequence[Decimal] | None]
_new_tuple = tuple.__new__
_SQL_AGGREGATE = {
    "count": "0",
    "sum": "sum(s.value)",
    "max": "max(s.value)",
    "unique_count": "count(DISTINCT s.unique_value)",
}


class _SplitSql:
    """A split's SQL for one connection. The events' properties the split reads are extracted once per event, in a
    subquery the planner keeps apart (``LIMIT -1`` on SQLite, ``OFFSET 0`` on PostgreSQL: otherwise it would
    substitute each extraction into every expression that reads it); the part ``CASE`` and the group columns
    compare those columns. Parameters are listed in the order they appear in the text."""

    def __init__(self, split: Split, connection: Connection) -> None:
        self.postgres = is_postgresql(connection)
        self.marker = "%s" if self.postgres else "?"
        self.fence = "OFFSET 0" if self.postgres else "LIMIT -1"
        self.width = max(len(keys) for keys in split.group_by)
        self.group_by = split.group_by
        self.filters = split.filters
        names = [key for pairs in split.filters for key, _ in pairs] + [k for keys in split.group_by for k in keys]
        self.columns = {name: f"p{i}" for i, name in enumerate(dict.fromkeys(names))}

    def extract(self, key: str, params: list[Any]) -> str:
        """The SQL of property ``key`` of the event (NULL when absent), its parameter appended. PostgreSQL reads
        it from ``q.j``, the event's properties converted to ``jsonb`` once (one conversion per extraction costs
        three times as much with three properties)."""
        params.append(key if self.postgres else f'$."{key}"')
        if self.postgres:
            return f"(q.j ->> {self.marker})"
        if json.encoder.encode_basestring(key) == f'"{key}"':
            return f"json_extract(e.properties, {self.marker})"
        # a name JSON escapes (a quote, a backslash, a control character): SQLite's paths cannot name it
        params[-1] = key
        return f"(SELECT j.value FROM json_each(e.properties) j WHERE j.key = {self.marker})"

    def _case(self, then: list[str], otherwise: str, params: list[Any]) -> str:
        """``CASE`` over the filters in order: ``then[i]`` for the first filter ``i`` matched, else ``otherwise``."""
        whens = []
        for position, pairs in enumerate(self.filters):
            tests = []
            for key, values in pairs:
                tests.append(f"s.{self.columns[key]} IN ({', '.join([self.marker] * len(values))})")
                params.extend(values)
            whens.append(f"WHEN {' AND '.join(tests)} THEN {then[position]}")
        return f"CASE {' '.join(whens)} ELSE {otherwise} END" if whens else otherwise

    def parts(self) -> tuple[list[str], list[Any]]:
        """The part (the filter's position, NULL: none) and one expression per group column, over ``s``."""
        params: list[Any] = []
        expressions = [self._case([str(i) for i in range(len(self.filters))], "CAST(NULL AS INTEGER)", params)]
        for slot in range(self.width):
            slot_keys = [keys[slot] if slot < len(keys) else None for keys in self.group_by]
            values = ["NULL" if key is None else f"s.{self.columns[key]}" for key in slot_keys]
            if len(set(values)) == 1:
                expressions.append(values[0])
            else:
                expressions.append(self._case(values[:-1], values[-1], params))
        return expressions, params

    def inner(
        self, columns: list[tuple[str, str]], window: str, received: _Filters, meter: str
    ) -> tuple[str, list[Any]]:
        """The subquery ``s``: the events of the meter in (or before) each window (``columns``: (expression over
        ``e``, name) pairs), with their properties."""
        params: list[Any] = []
        extracted = "".join(f", {self.extract(key, params)} AS {name}" for key, name in self.columns.items())
        filter_sql, filter_params = received.sql(self.marker)
        source = (
            f"FROM usage_windows w CROSS JOIN usage_events e "
            f"WHERE e.customer = w.customer AND e.meter = {self.marker} {window} {filter_sql}"
        )
        selected = "".join(f", {expression} AS {name}" for expression, name in columns)
        if not self.postgres:
            return f"SELECT w.idx AS idx{selected}{extracted} {source} {self.fence}", [*params, meter, *filter_params]
        names = "".join(f", q.{name}" for _, name in columns)
        sql = (
            f"SELECT q.idx{names}{extracted} "
            f"FROM (SELECT w.idx AS idx{selected}, e.properties::jsonb AS j {source} {self.fence}) q {self.fence}"
        )
        return sql, [*params, meter, *filter_params]

    def grouped(self, aggregate: str, window: str, received: _Filters, meter: str) -> tuple[str, tuple[Any, ...]]:
        """(idx, part, group columns…, count, ``aggregate``) per window and part."""
        expressions, params = self.parts()
        columns = [("e.value", "value"), ("e.unique_value", "unique_value")]
        inner, inner_params = self.inner(columns, window, received, meter)
        positions = ", ".join(str(i) for i in range(1, 3 + self.width))
        sql = f"SELECT s.idx, {', '.join(expressions)}, count(*), {aggregate} FROM ({inner}) s GROUP BY {positions}"
        return sql, (*params, *inner_params)

    def newest(self, received: _Filters, meter: str) -> tuple[str, tuple[Any, ...]]:
        """(idx, part, group columns…, count, value of the newest event) per window and part: the events ranked
        within their part by the database (``ROW_NUMBER``, newest first; ties: the one stored last)."""
        expressions, params = self.parts()
        columns = [("e.occurred_at", "occurred_at"), ("e.id", "id"), ("coalesce(e.value, 0)", "value")]
        inner, inner_params = self.inner(columns, _IN_WINDOW, received, meter)
        named = "".join(f"{g} AS g{i}, " for i, g in enumerate(expressions))
        groups = [f"g{i}" for i in range(1 + self.width)]
        partition = ", ".join(["t.idx", *(f"t.{g}" for g in groups)])
        sql = (
            f"SELECT u.idx, {', '.join(f'u.{g}' for g in groups)}, u.n, u.value FROM ("
            f"SELECT t.idx, {', '.join(f't.{g}' for g in groups)}, t.value, count(*) OVER (PARTITION BY {partition}) "
            f"AS n, ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY t.occurred_at DESC, t.id DESC) AS rn "
            f"FROM (SELECT s.idx, {named}s.occurred_at, s.id, s.value FROM ({inner}) s) t) u WHERE u.rn = 1"
        )
        return sql, (*params, *inner_params)

    def weighted(self, received: _Filters, meter: str, *, rows: bool = False) -> tuple[str, tuple[Any, ...]]:
        """(idx, part, group columns…, count, Σ value × (window end − instant)) per window and part: on ``numeric``
        (PostgreSQL), as two 64-bit sums of the duration's high and low bits (SQLite). ``rows``: each event's
        (idx, part, group columns…, value, window end − instant) instead, for summing on Python integers."""
        expressions, params = self.parts()
        columns = [("coalesce(e.value, 0)", "value"), ("w.end_us - e.occurred_at", "remaining")]
        inner, inner_params = self.inner(columns, _IN_WINDOW, received, meter)
        if rows:
            return f"SELECT s.idx, {', '.join(expressions)}, s.value, s.remaining FROM ({inner}) s", (
                *params,
                *inner_params,
            )
        if self.postgres:
            dots = "sum(s.value::numeric * s.remaining)"
        else:
            dots = f"sum(s.value * (s.remaining >> {_SPLIT})), sum(s.value * (s.remaining & {(1 << _SPLIT) - 1}))"
        positions = ", ".join(str(i) for i in range(1, 3 + self.width))
        sql = f"SELECT s.idx, {', '.join(expressions)}, count(*), {dots} FROM ({inner}) s GROUP BY {positions}"
        return sql, (*params, *inner_params)

    def ranked(self, received: _Filters, meter: str) -> tuple[str, tuple[Any, ...]]:
        """Each event of the windows: (idx, part, group columns…, occurred_at, id, value, rank of its part)."""
        expressions, params = self.parts()
        columns = [("e.occurred_at", "occurred_at"), ("e.id", "id"), ("coalesce(e.value, 0)", "value")]
        inner, inner_params = self.inner(columns, _IN_WINDOW, received, meter)
        named = "".join(f"{g} AS g{i}, " for i, g in enumerate(expressions))  # g0: the part
        groups = [f"t.g{i}" for i in range(1 + self.width)]
        sql = (
            f"SELECT t.idx, {', '.join(groups)}, t.occurred_at, t.id, t.value, "
            f"DENSE_RANK() OVER (ORDER BY {', '.join(groups)}) "
            f"FROM (SELECT s.idx, {named}s.occurred_at, s.id, s.value FROM ({inner}) s) t"
        )
        return sql, (*params, *inner_params)


def _run(connection: Connection, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        return cast("list[tuple[Any, ...]]", cursor.fetchall())
    finally:
        cursor.close()


def _part(row: Sequence[Any], width: int) -> _Part:
    """(window index, filter position, group) of a row starting idx, part, group columns…."""
    return row[0], row[1], tuple(row[2 : 2 + width])


def _trim(found: Mapping[_Part, Any], group_by: tuple[tuple[str, ...], ...]) -> dict[_Part, Any]:
    """Each part's group cut to its own filter's group_by (the columns past it are NULL)."""
    return {
        (index, position, group[: len(group_by[-1 if position is None else position])]): value
        for (index, position, group), value in found.items()
    }


def _grouped_parts(rows: list[tuple[Any, ...]], kind: str, group_by: tuple[tuple[str, ...], ...]) -> list[_Found]:
    """(window, position, group, events, quantity, None) of each row of the grouped query, each group cut to its
    filter's group_by."""
    lengths: dict[int | None, int] = {position: len(keys) for position, keys in enumerate(group_by[:-1])}
    lengths[None] = len(group_by[-1])
    if kind == "count":
        return [(r[0], r[1], r[2 : 2 + lengths[r[1]]], r[-2], Decimal(r[-2]), None) for r in rows]
    if kind == "unique_count":
        return [(r[0], r[1], r[2 : 2 + lengths[r[1]]], r[-2], Decimal(r[-1]), None) for r in rows]
    return [(r[0], r[1], r[2 : 2 + lengths[r[1]]], r[-2], from_scaled(int(r[-1] or 0)), None) for r in rows]


def _split_meter(
    connection: Connection,
    spec: MeterSpec,
    sql: _SplitSql,
    received: _Filters,
    starts: list[int],
    ends: list[int],
) -> list[_Found]:
    """(window, position, group, events, quantity, values) per part of each window of one split meter."""
    kind = spec.aggregation
    if kind in _NUMPY_KINDS and not spec.keep_event_values:
        if kind == "latest":
            return _grouped_parts(_run(connection, *sql.newest(received, spec.code)), "latest", sql.group_by)
        return _weighted_parts(connection, spec.code, sql, received, starts, ends)
    in_numpy = kind in _NUMPY_KINDS or (spec.keep_event_values and kind != "unique_count")
    totals: dict[_Part, tuple[int, Decimal]] = {}
    if not in_numpy:
        savepoint = connection.begin_nested()
        try:
            rows = _run(connection, *sql.grouped(_SQL_AGGREGATE[kind], _IN_WINDOW, received, spec.code))
            savepoint.commit()
        except Exception as exc:
            savepoint.rollback()
            if not (kind == "sum" and _is_overflow(exc)):
                raise
            in_numpy = True
        else:
            parts = _grouped_parts(rows, kind, sql.group_by)
            if not spec.keep_event_values:
                return parts
            totals = {(index, position, group): (n, quantity) for index, position, group, n, quantity, _ in parts}
    computed: dict[_Part, _Computed] = {}
    levels: dict[_Part, int] = {}
    if in_numpy or spec.keep_event_values:
        computed, levels = _numpy_parts(connection, spec, sql, received, starts, ends)
        computed, levels = _trim(computed, sql.group_by), _trim(levels, sql.group_by)
    results: list[_Found] = []
    nothing = _Computed()
    for part in totals.keys() | computed.keys() | levels.keys():
        found = computed.get(part, nothing)
        values = (found.values or ()) if spec.keep_event_values else None
        if not in_numpy:
            count, quantity = totals[part]
        else:
            count, quantity = found.count, _numpy_quantity(kind, found, levels.get(part, 0))
        results.append((*part, count, quantity, values))
    return results


def _weighted_parts(
    connection: Connection, meter: str, sql: _SplitSql, received: _Filters, starts: list[int], ends: list[int]
) -> list[_Found]:
    """(window, position, group, events, time-weighted level, None) per part of each window of a weighted_sum
    meter, computed by the database: the level carried in and Σ value × time left, one row per window and part."""
    width = sql.width
    dots = _trim(
        {_part(row, width): (row[-2], row[-1]) for row in _dots(connection, sql, received, meter, ends)}, sql.group_by
    )
    levels = _trim(
        {_part(row, width): int(row[-1]) for row in _levels(connection, sql, received, meter) if row[-1]}, sql.group_by
    )
    found: list[_Found] = []
    for part in dots.keys() | levels.keys():
        index = part[0]
        count, dot = dots.get(part, (0, 0))
        level = levels.get(part, 0)
        quantity = _time_weighted(level, dot, starts[index], ends[index]) if count else from_scaled(level)
        found.append((*part, count, quantity, None))
    return found


def _dots(
    connection: Connection, sql: _SplitSql, received: _Filters, meter: str, ends: list[int]
) -> list[tuple[Any, ...]]:
    """(idx, part, group columns…, count, Σ value × time left) per window and part, exactly: SQLite's two 64-bit
    sums when every product and sum fits (a product that does not comes back a float, a sum that does not
    raises), else summed on Python integers as the rows stream by, ``_STREAM_ROWS`` at a time."""
    savepoint = connection.begin_nested()
    try:
        rows = _run(connection, *sql.weighted(received, meter))
        savepoint.commit()
        if sql.postgres:
            return [(*row[:-1], int(row[-1])) for row in rows]
        if all(type(high) is int and type(low) is int for *_, high, low in rows):
            return [(*row[:-2], (row[-2] << _SPLIT) + row[-1]) for row in rows]
    except Exception as exc:
        savepoint.rollback()
        if not _is_overflow(exc):
            raise
    sums: dict[tuple[Any, ...], list[int]] = {}
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(*sql.weighted(received, meter, rows=True))
        while chunk := cursor.fetchmany(_STREAM_ROWS):
            for *part, value, remaining in chunk:
                counted = sums.setdefault(tuple(part), [0, 0])
                counted[0] += 1
                counted[1] += value * remaining
    finally:
        cursor.close()
    return [(*part, count, dot) for part, (count, dot) in sums.items()]


def _numpy_quantity(kind: str, found: _Computed, level: int) -> Decimal:
    if kind == "count":
        return Decimal(found.count)
    if kind == "sum":
        return from_scaled(found.total)
    if kind == "max":
        return from_scaled(found.largest)
    if kind == "latest":
        return from_scaled(found.latest)
    return found.weighted if found.count else from_scaled(level)  # weighted_sum


def _numpy_parts(
    connection: Connection,
    spec: MeterSpec,
    sql: _SplitSql,
    received: _Filters,
    starts: list[int],
    ends: list[int],
) -> tuple[dict[_Part, _Computed], dict[_Part, int]]:
    """The numpy kernels per (window, part): the events loaded with the rank of their part as their "meter"."""
    width = sql.width
    rows = _run(connection, *sql.ranked(received, spec.code))
    parts: dict[tuple[int | None, Group], int] = {}
    events = _EventRows.empty([])
    if rows:
        table = np.array(rows, dtype=object)
        rank = table[:, -1].astype(np.int64) - 1
        _, first = np.unique(rank, return_index=True)
        for row_index in first.tolist():  # one per part, not per event
            _, position, group = _part(rows[row_index], width)
            parts[(position, group)] = len(parts)
        numbers = table[:, [0, 2 + width, 3 + width, 4 + width]].astype(np.int64)
        events = _EventRows.sorted([str(i) for i in range(len(parts))], numbers[:, 0], rank, *numbers[:, 1:].T)
    levels: dict[_Part, int] = {}
    if spec.aggregation == "weighted_sum":
        for row in _levels(connection, sql, received, spec.code):
            index, position, group = _part(row, width)
            if row[-1]:
                levels[(index, position, group)] = int(row[-1])
                parts.setdefault((position, group), len(parts))
    labels = {str(label): part for part, label in parts.items()}
    label_specs = {label: spec for label in labels}
    label_levels = {(index, str(parts[(p, g)])): level for (index, p, g), level in levels.items()}
    computed = _compute(events, label_specs, label_levels, starts, ends)
    by_part = {(index, *labels[label]): found for (index, label), found in computed.items()}
    return by_part, levels


def _levels(connection: Connection, sql: _SplitSql, received: _Filters, meter: str) -> list[tuple[Any, ...]]:
    """The level each window's part of a weighted_sum meter starts from: the sum of its earlier events."""
    savepoint = connection.begin_nested()
    try:
        rows = _run(connection, *sql.grouped("sum(s.value)", _BEFORE_WINDOW, received, meter))
        savepoint.commit()
        return rows
    except Exception as exc:
        savepoint.rollback()
        if not _is_overflow(exc):
            raise
    # SQLite's 64-bit sum overflowed: the sums on Python integers, per window and part
    rows = _run(connection, *sql.grouped("group_concat(s.value)", _BEFORE_WINDOW, received, meter))
    return [(*row[:-1], sum(int(v) for v in row[-1].split(",")) if row[-1] else 0) for row in rows]
