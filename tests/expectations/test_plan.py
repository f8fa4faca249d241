"""The compiled plan fails exactly the rows GX fails, expectation by expectation, on faulty frames.

For every table, each expectation of its suite gets its own faults (nulls, values on and beside
each bound, values outside the set, duplicates, regex misses, pair violations), each on a fresh
SME's clean rows, and a conditional expectation gets them on rows inside and outside its
condition; a randomized frame (fixed seed) mixes such values over every column. GX (the runner's
path over the whole frame) and the plan must then list the same failing rows per expectation id,
with the same counts.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import random
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from expectation_frames import AS_OF, ROWS, UTC, clean_tables, frame, frames, row_sets

from expectations import runner
from expectations.plan import PlanError, compile_suite, table_plan
from expectations.prepare import DERIVED, column_types, prepare
from expectations.suites import loaded_suites, suite_parameters, suite_path
from warehouse.canonical import TABLES

PARAMETERS = suite_parameters(AS_OF)
COUNT_KEYS = runner._COUNT_KEYS

Row = dict[str, Any]
Edit = Callable[[list[Row]], None]


def _document(table_name: str) -> dict[str, Any]:
    return json.loads(suite_path(table_name).read_text())


def _step(arrow_type: pa.DataType) -> Any:
    """The smallest step of a column's values: a day, a second, one, or a cent."""
    if pa.types.is_date(arrow_type):
        return dt.timedelta(days=1)
    if pa.types.is_timestamp(arrow_type):
        return dt.timedelta(seconds=1)
    return 1 if pa.types.is_integer(arrow_type) else 0.01


def _python(value: Any, arrow_type: pa.DataType) -> Any:
    """A bound as the Python value a canonical row holds in a column of ``arrow_type``."""
    if isinstance(value, dict):
        value = PARAMETERS[value["$PARAMETER"]]
    if pa.types.is_date(arrow_type):
        return pd.Timestamp(value).date()
    if pa.types.is_timestamp(arrow_type):
        return pd.Timestamp(value).to_pydatetime().replace(tzinfo=UTC)
    return int(value) if pa.types.is_integer(arrow_type) else float(value)


def _target(rows: list[Row], columns: list[str]) -> Row:
    """The first row whose ``columns`` all hold values (else the first row)."""
    return next((r for r in rows if all(r.get(c) is not None for c in columns)), rows[0])


def _set(column: str, value: Any, needs: list[str] | None = None) -> Edit:
    def apply(rows: list[Row]) -> None:
        _target(rows, needs if needs is not None else [column])[column] = value

    return apply


def _derived(table_name: str, column: str) -> Any:
    return next((d for d in DERIVED[table_name] if d.name == column), None)


def _value_of(table_name: str, row: Row, column: str) -> Any:
    """A column's value in a canonical row; a derived date column from its input."""
    derived = _derived(table_name, column)
    if derived is None:
        return row[column]
    start = row[derived.inputs[0]]
    return None if start is None else start.date()


def _between_edits(table_name: str, kwargs: dict[str, Any]) -> list[Edit]:
    column = kwargs["column"]
    derived = _derived(table_name, column)
    if derived is not None:
        # A gap column: move its first input (coefficient +1) so the gap lands on and beside the bounds.
        source = derived.inputs[0]

        def shift(delta: float | None) -> Edit:
            def apply(rows: list[Row]) -> None:
                row = _target(rows, list(derived.inputs))
                row[source] = None if delta is None else round(row[source] + delta, 2)

            return apply

        return [shift(d) for d in (-0.02, -0.01, 0.01, 0.02, None)]
    arrow_type = column_types(table_name)[column]
    step = _step(arrow_type)
    edits = [_set(column, None)]
    for bound, outward in ((kwargs.get("min_value"), -1), (kwargs.get("max_value"), 1)):
        if bound is None:
            continue
        value = _python(bound, arrow_type)
        edits += [
            _set(column, value),
            _set(column, value + outward * step),
            _set(column, value - outward * step),
        ]
    return edits


def _pair_edits(table_name: str, kwargs: dict[str, Any]) -> list[Edit]:
    a, b = kwargs["column_A"], kwargs["column_B"]
    arrow_type = column_types(table_name)[a]
    step = _step(arrow_type)
    b_inputs = list(getattr(_derived(table_name, b), "inputs", (b,)))

    def relative(offset: int | None) -> Edit:
        def apply(rows: list[Row]) -> None:
            row = _target(rows, [a, *b_inputs])
            base = _value_of(table_name, row, b)
            row[a] = None if offset is None or base is None else base + offset * step

        return apply

    edits = [relative(o) for o in (-1, 0, 1, None)]
    if b_inputs != [b]:
        # The derived date is the start's calendar day: a late start on the same day still ties.
        def late_start(rows: list[Row]) -> None:
            row = _target(rows, [a, *b_inputs])
            day = row[a]
            row[b_inputs[0]] = dt.datetime(day.year, day.month, day.day, 23, 0, tzinfo=UTC)

        edits.append(late_start)
    return edits


def _outside_value(table_name: str, column: str, value_set: list[Any]) -> list[Any]:
    if pa.types.is_boolean(column_types(table_name)[column]):
        return [v for v in (True, False) if v not in value_set]
    return ["ZZZ", str(value_set[0]).lower(), ""]


def _unique_edits(column: str, literal: str) -> list[Edit]:
    return [_set(column, literal), _set(column, literal), _set(column, None), _set(column, None)]


def _compound_edits(table_name: str, columns: list[str]) -> list[Edit]:
    last = columns[-1]
    last_type = column_types(table_name)[last]

    def duplicate(null_column: str | None, vary: bool) -> Edit:
        def apply(rows: list[Row]) -> None:
            original = _target(rows, columns)
            if null_column is not None:
                original[null_column] = None
            copy_row = {**original, "source_record": "copy"}
            if vary:
                value = copy_row[last]
                copy_row[last] = (
                    f"{value}-other" if pa.types.is_string(last_type) else value + _step(last_type)
                )
            rows.append(copy_row)

        return apply

    return [duplicate(None, False), duplicate(last, False), duplicate(None, True)]


def _edits(table_name: str, expectation: dict[str, Any], index: int) -> list[Edit]:
    kind, kwargs = expectation["type"], expectation["kwargs"]
    column = kwargs.get("column")
    if kind == "expect_column_values_to_not_be_null":
        edits = [_set(column, None)]
    elif kind == "expect_column_values_to_be_null":
        sample = next(r[column] for r in ROWS[table_name]("SME-X") if r[column] is not None)
        edits = [_set(column, sample, needs=[]), _set(column, None, needs=[])]
    elif kind == "expect_column_values_to_be_between":
        edits = _between_edits(table_name, kwargs)
    elif kind == "expect_column_values_to_be_in_set":
        values = [*kwargs["value_set"][:1], *_outside_value(table_name, column, kwargs["value_set"]), None]
        edits = [_set(column, v, needs=[]) for v in values]
    elif kind == "expect_column_values_to_be_unique":
        edits = _unique_edits(column, f"dup-{index}")
    elif kind == "expect_column_values_to_match_regex":
        edits = [_set(column, v) for v in ("gbp", "GBPX", "GB", "GBP\n", "", "GBP")]
    elif kind == "expect_column_pair_values_a_to_be_greater_than_b":
        edits = _pair_edits(table_name, kwargs)
    elif kind == "expect_compound_columns_to_be_unique":
        edits = _compound_edits(table_name, kwargs["column_list"])
    else:
        raise AssertionError(f"no faults for {kind}")
    condition = kwargs.get("row_condition")
    if not condition:
        return edits
    name, parameter = condition["column"]["name"], condition["parameter"]
    others = [r[name] for r in ROWS[table_name]("SME-X") if r[name] is not None and r[name] != parameter]
    placed: list[Edit] = []
    for inside in [parameter, *others[:1], None]:
        for edit in edits:

            def apply(rows: list[Row], edit: Edit = edit, inside: Any = inside) -> None:
                for row in rows:
                    row[name] = inside
                edit(rows)

            placed.append(apply)
    return placed


def faulty_rows(table_name: str) -> list[Row]:
    """Clean rows of two SMEs, then every expectation's faults, each on a fresh SME's rows."""
    build = ROWS[table_name]
    rows = [r for sme in ("SME-000001", "SME-000002") for r in build(sme)]
    count = 0
    for index, expectation in enumerate(_document(table_name)["expectations"]):
        for edit in _edits(table_name, expectation, index):
            count += 1
            sme_rows = build(f"SME-{count + 100:06d}")
            edit(sme_rows)
            rows += sme_rows
    return rows


def _palette(table_name: str, clean: list[Row]) -> dict[str, list[Any]]:
    """Per column: its clean values, null, the suite's bounds and their neighbours, set members and misses."""
    types = column_types(table_name)
    palette: dict[str, list[Any]] = {
        c: [None, *{r[c] for r in clean}] for c in TABLES[table_name].column_names
    }
    for expectation in _document(table_name)["expectations"]:
        kwargs = expectation["kwargs"]
        column = kwargs.get("column")
        if column not in palette:
            continue
        arrow_type = types[column]
        if expectation["type"] == "expect_column_values_to_be_between":
            for bound in (kwargs.get("min_value"), kwargs.get("max_value")):
                value = _python(bound, arrow_type)
                palette[column] += [value, value - _step(arrow_type), value + _step(arrow_type)]
        if expectation["type"] == "expect_column_values_to_be_in_set":
            palette[column] += [
                *kwargs["value_set"][:3],
                *_outside_value(table_name, column, kwargs["value_set"]),
            ]
        if expectation["type"] == "expect_column_values_to_match_regex":
            palette[column] += ["gbp", "GBP\n", "GBPX"]
    return palette


def random_rows(table_name: str, seed: int) -> list[Row]:
    """Clean rows of 30 SMEs with a third of their cells replaced from the palette, and some rows repeated."""
    rng = random.Random(seed)
    rows = [r for sme in range(30) for r in ROWS[table_name](f"SME-{sme + 500:06d}")]
    palette = _palette(table_name, rows)
    columns = [c for c in TABLES[table_name].column_names if c not in ("raw_sha256", "source_record")]
    for _ in range(len(rows) * len(columns) // 3):
        column = rng.choice(columns)
        rng.choice(rows)[column] = rng.choice(palette[column])
    rows += [dict(rng.choice(rows)) for _ in range(len(rows) // 10)]
    return rows


def _compare(table_name: str, canonical: pd.DataFrame) -> dict[str, list[int]]:
    """Assert GX and the plan agree on every expectation's failing rows and counts; return the rows."""
    loaded = loaded_suites()[table_name]
    prepared = prepare(table_name, canonical, loaded.columns)
    gx_rows, suite_result = runner._gx_failing_rows(table_name, prepared, loaded.suite, PARAMETERS)
    outcomes = table_plan(table_name).run(prepared, PARAMETERS)
    assert [o.identifier for o in outcomes] == list(loaded.ids)
    plan_rows = {o.identifier: o.rows.tolist() for o in outcomes}
    assert plan_rows == {i: rows.tolist() for i, rows in gx_rows.items()}
    by_id = {o.identifier: o for o in outcomes}
    for result in suite_result.results:
        outcome = by_id[runner.expectation_id(result.expectation_config)]
        gx_counts = {k: result.result.get(k) for k in COUNT_KEYS}
        patched = copy.deepcopy(result)
        runner._whole_frame_counts(patched, outcome)
        assert {k: patched.result.get(k) for k in COUNT_KEYS} == gx_counts, outcome.identifier
        assert (patched.success, outcome.success) == (result.success, result.success), outcome.identifier
    return plan_rows


@pytest.mark.parametrize("table_name", list(TABLES))
def test_plan_fails_the_rows_gx_fails_for_every_injected_fault(table_name: str) -> None:
    rows = _compare(table_name, frame(table_name, faulty_rows(table_name)))
    silent = [identifier for identifier, failing in rows.items() if not failing]
    assert silent == [], "every expectation's faults must fail some row"


@pytest.mark.parametrize("table_name", list(TABLES))
def test_plan_fails_the_rows_gx_fails_on_a_randomized_frame(table_name: str) -> None:
    rows = _compare(table_name, frame(table_name, random_rows(table_name, seed=20261202)))
    assert sum(len(r) for r in rows.values()) > 0


@pytest.mark.parametrize("table_name", list(TABLES))
def test_plan_passes_clean_and_empty_frames_as_gx_does(table_name: str) -> None:
    clean = _compare(table_name, clean_tables(["SME-000001", "SME-000002"])[table_name])
    assert all(r == [] for r in clean.values())
    empty = _compare(table_name, frame(table_name, []))
    assert all(r == [] for r in empty.values())


def _without_run_details(document: dict[str, Any]) -> dict[str, Any]:
    """A suite result's outcome: every expectation's result (keyed by its configuration), statistics, success."""
    results = {json.dumps(r["expectation_config"], sort_keys=True): r for r in document["results"]}
    assert len(results) == len(document["results"])
    return {
        "results": results,
        "statistics": document["statistics"],
        "success": document["success"],
    }


def test_shard_validation_is_the_same_with_and_without_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    # A failing row must name its SME to be attributed, so the faults without one are left out here.
    tables = frames({name: [r for r in faulty_rows(name) if r["sme_id"]] for name in TABLES})
    with_plan = runner.validate_shard(tables, as_of=AS_OF, shard=5)
    monkeypatch.setattr(runner, "USE_PLAN", False)
    without = runner.validate_shard(tables, as_of=AS_OF, shard=5)
    assert with_plan.expectation_results == without.expectation_results
    pd.testing.assert_frame_equal(with_plan.failures, without.failures)
    pd.testing.assert_frame_equal(with_plan.sme_status, without.sme_status)
    for name in TABLES:
        assert _without_run_details(with_plan.gx_results[name]) == _without_run_details(
            without.gx_results[name]
        ), name


def test_gx_validates_only_the_failing_rows_and_a_sample_when_the_plan_decides() -> None:
    rows = row_sets([f"SME-{i:06d}" for i in range(200)])
    rows["monthly_financials"][450]["revenue"] = -1.0
    validation = runner.validate_shard(frames(rows), as_of=AS_OF, shard=0)
    revenue = next(
        r
        for r in validation.gx_results["monthly_financials"]["results"]
        if r["expectation_config"]["kwargs"].get("column") == "revenue"
        and r["expectation_config"]["type"] == "expect_column_values_to_be_between"
    )
    assert revenue["result"]["element_count"] == 600
    assert revenue["result"]["unexpected_count"] == 1
    assert revenue["result"]["unexpected_percent"] == pytest.approx(100 / 600)
    assert [r["source_record"] for r in revenue["result"]["unexpected_index_list"]] == ["reports[0]"]
    outcomes = table_plan("monthly_financials").run(
        prepare(
            "monthly_financials",
            frames(rows)["monthly_financials"],
            loaded_suites()["monthly_financials"].columns,
        ),
        PARAMETERS,
    )
    sample = runner._sample_positions(outcomes, 600)
    assert sample.tolist() == [*range(100), 450]


def _suite(expectation: dict[str, Any]) -> dict[str, Any]:
    return {"name": "vat_returns", "expectations": [expectation]}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"column": "received_date", "row_condition": 'status == "F"', "condition_parser": "pandas"},
            r"vat_returns: expect_column_values_to_not_be_null\(received_date\) where 'status == \"F\"': "
            r"row condition .* is not supported",
        ),
        (
            {
                "column": "received_date",
                "row_condition": {
                    "type": "comparison",
                    "column": {"name": "status"},
                    "operator": "in",
                    "parameter": ["F"],
                },
            },
            r"vat_returns: expect_column_values_to_not_be_null\(received_date\) where .*: row condition .* "
            "is not supported",
        ),
        (
            {"column": "received_date", "mostly": 0.95},
            r"vat_returns: expect_column_values_to_not_be_null\(received_date\): kwargs \['mostly'\] "
            "are not supported",
        ),
    ],
)
def test_unsupported_expectations_are_refused_when_compiled(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        compile_suite(_suite({"type": "expect_column_values_to_not_be_null", "kwargs": kwargs}))


def test_unknown_expectation_type_is_refused_when_compiled() -> None:
    with pytest.raises(
        PlanError,
        match=r"vat_returns: expect_column_mean_to_be_between\(net_vat_due\): expectation type "
        "expect_column_mean_to_be_between is not supported",
    ):
        compile_suite(
            _suite({"type": "expect_column_mean_to_be_between", "kwargs": {"column": "net_vat_due"}})
        )


def test_plan_lists_the_suites_expectations_in_order() -> None:
    for name, loaded in loaded_suites().items():
        assert table_plan(name).ids == loaded.ids
    assert np.array_equal(table_plan("vat_returns").checks[0].columns, ("sme_id",))


def test_condition_the_ids_cannot_name_is_refused_when_compiled() -> None:
    condition = {"type": "and", "conditions": []}
    with pytest.raises(
        PlanError,
        match=r"vat_returns: expect_column_values_to_be_null\(received_date\): row condition .* is not supported",
    ):
        compile_suite(
            _suite(
                {
                    "type": "expect_column_values_to_be_null",
                    "kwargs": {"column": "received_date", "row_condition": condition},
                }
            )
        )


def test_a_plan_that_disagrees_with_gx_stops_the_confirmation(monkeypatch: pytest.MonkeyPatch) -> None:
    """GX re-checks the expectations the plan fails: a plan that fails a row GX passes stops the
    confirmation (the date's Data Docs step), naming the table and the expectation."""
    plan = table_plan("vat_returns")
    strict = dataclasses.replace(plan.checks[0], find=lambda frame, kwargs: np.ones(len(frame), dtype=bool))
    monkeypatch.setattr(
        runner, "table_plan", lambda name: dataclasses.replace(plan, checks=(strict, *plan.checks[1:]))
    )
    monkeypatch.setattr(runner, "USE_PLAN", True)
    validation = runner.validate_shard(
        {"vat_returns": clean_tables(["SME-000001"])["vat_returns"]}, as_of=AS_OF, shard=0
    )
    assert validation.failing_smes == ["SME-000001"]
    with pytest.raises(
        RuntimeError,
        match=r"vat_returns: the compiled plan and GX disagree on the failing rows of "
        r"\['expect_column_values_to_not_be_null\(sme_id\)'\]",
    ):
        runner.confirm_with_gx({0: validation.evidence}, as_of=AS_OF)


def test_the_plan_runs_without_importing_great_expectations() -> None:
    script = (
        "import sys, datetime\n"
        "from expectations.plan import table_plan\n"
        "from expectations.prepare import prepare\n"
        "from expectations.suites import suite_parameters\n"
        "from warehouse.canonical import TABLES\n"
        "sys.path.insert(0, 'tests/expectations')\n"
        "from expectation_frames import clean_tables\n"
        "tables = clean_tables(['SME-000001'])\n"
        "parameters = suite_parameters(datetime.date(2026, 11, 1))\n"
        "for name in TABLES:\n"
        "    plan = table_plan(name)\n"
        "    columns = list(dict.fromkeys(c for check in plan.checks for c in check.columns))\n"
        "    columns += [check.condition.column for check in plan.checks if check.condition]\n"
        "    outcomes = plan.run(prepare(name, tables[name], list(dict.fromkeys(columns))), parameters)\n"
        "    assert all(o.success for o in outcomes), name\n"
        "print(sorted(m for m in sys.modules if m.startswith('great_expectations')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_shard_is_validated_and_its_evidence_stored_without_importing_great_expectations(
    tmp_path: Any,
) -> None:
    """A shard task (validate_shard, then the evidence it stores) needs no GX; the date's step does."""
    script = (
        "import sys, datetime\n"
        "sys.path.insert(0, 'tests/expectations')\n"
        "from expectation_frames import clean_tables\n"
        "from expectations import runner\n"
        "from warehouse.storage import Store\n"
        "tables = clean_tables(['SME-000001', 'SME-000002'])\n"
        "tables['vat_returns'].loc[0, 'net_vat_due'] = -5.0\n"
        "v = runner.validate_shard(tables, as_of=datetime.date(2026, 11, 1), shard=3)\n"
        "assert v.failing_smes == [tables['vat_returns'].loc[0, 'sme_id']], v.failing_smes\n"
        f"stored = runner._write_evidence(Store({str(tmp_path)!r}), v)\n"
        "assert sorted(stored) == sorted(tables), sorted(stored)\n"
        "print(sorted(m for m in sys.modules if m.startswith('great_expectations')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
