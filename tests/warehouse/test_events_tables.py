"""Kept dossier rows as Arrow tables: ``json_rows_table`` (Arrow's JSON reader, one call per page)
gives what ``rows_table`` gives for the same rows parsed one by one in Python."""

from __future__ import annotations

import datetime as dt
import json
import math

import pyarrow as pa

from warehouse.dossier_schema import ALL_COLUMNS
from warehouse.events import json_rows_table, row_json, rows_table

SCHEMA = pa.schema([pa.field(c.name, c.type) for c in ALL_COLUMNS])


def sample_value(field: pa.Field, n: int) -> object:
    kind = field.type
    if pa.types.is_timestamp(kind):
        return dt.datetime(2026, 11, 2, 6, n % 60, tzinfo=dt.UTC)
    if pa.types.is_date(kind):
        return dt.date(2026, 11, 1) + dt.timedelta(days=n)
    if pa.types.is_list(kind):
        return [f"CODE_{n}", "VAT_LATE"][: n % 3]
    if pa.types.is_floating(kind):
        return [0.1 * n, 3, float("nan"), None][n % 4]  # an int, a NaN and a null among the floats
    if pa.types.is_integer(kind):
        return n * 7
    if pa.types.is_boolean(kind):
        return n % 2 == 0
    return f"{field.name}-{n}"


def test_json_rows_equal_the_rows_parsed_one_by_one() -> None:
    rows = [{f.name: sample_value(f, n) for f in SCHEMA} for n in range(12)]
    rows[3] = {"dossier_id": "SME-3:x", "sme_id": "SME-3"}  # a row the law emptied
    rows[5] = {**rows[5], "not_a_column": {"nested": True}}  # ignored, as by rows_table
    texts = [row_json(row) for row in rows]
    parsed = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in json.loads(text).items()}
        for text in texts
    ]
    fast, slow = json_rows_table(texts, SCHEMA), rows_table(parsed, SCHEMA)
    assert fast.schema == SCHEMA
    assert fast.to_pylist() == slow.to_pylist()
    assert fast.column("dossier_id").to_pylist()[3] == "SME-3:x"


def test_instants_without_an_offset_are_utc_and_an_empty_page_is_an_empty_table() -> None:
    schema = pa.schema([("at", pa.timestamp("s", tz="UTC")), ("n", pa.int64())])
    table = json_rows_table(['{"at": "2026-11-02T09:30:00", "n": 1}', '{"at": null, "n": 2}'], schema)
    assert table.to_pylist() == [
        {"at": dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC), "n": 1},
        {"at": None, "n": 2},
    ]
    assert json_rows_table([], schema).equals(schema.empty_table())
