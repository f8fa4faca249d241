"""Incremental runs: an SME whose input fingerprint is unchanged since the previous date keeps its
validation status and score rows; everything else is validated and scored again, and the result is
the one a full run gives."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from landed_dates import grant_accounting_scope, land_again

import evaluation
from bench.core_pipeline import AS_OF, NEXT, _settings, land_next_date, prepare
from dossier import fingerprints as fp
from dossier import pipeline
from dossier.settings import override
from warehouse.canonical_files import digest_columns, sme_digests
from warehouse.storage import Store

SHARDS = 2


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    """40 SMEs landed on AS_OF and, with 30% of them changed, on NEXT; AS_OF run in full."""
    home = tmp_path_factory.mktemp("incremental") / "home"
    prepare(home, 40, SHARDS)
    changed = land_next_date(home, SHARDS, 0.3)
    with override(_settings(home, SHARDS)):
        for shard in range(SHARDS):
            pipeline.validate(shard, AS_OF)
            pipeline.evaluate(shard, AS_OF)
        yield home, changed


def staged(step: str, as_of: dt.date, shard: int) -> pa.Table:
    store = Store.from_settings()
    return store.read_table(store.layout.staging(step, as_of.isoformat(), shard))


def scores(as_of: dt.date) -> pd.DataFrame:
    frames = [staged(pipeline.SCORES_STEP, as_of, shard).to_pandas() for shard in range(SHARDS)]
    return pd.concat(frames, ignore_index=True).sort_values(["sme_id", "scope"], ignore_index=True)


def test_unchanged_smes_carry_their_rows_and_the_result_equals_a_full_run(
    landed: tuple[Path, list[str]],
) -> None:
    _home, changed = landed
    before = scores(AS_OF)
    counts = []
    for shard in range(SHARDS):
        validated = pipeline.validate(shard, NEXT)
        evaluated = pipeline.evaluate(shard, NEXT)
        counts.append((validated, evaluated))
    incremental = scores(NEXT)
    smes = {
        s
        for v, _e in counts
        for s in staged(pipeline.VALIDATION_STEP, NEXT, v["shard"]).column("sme_id").to_pylist()
    }
    # every SME but the changed ones (and any whose dates crossed the as-of day) is carried
    carried_validation = sum(v["carried"] for v, _e in counts)
    assert sum(v["validated"] for v, _e in counts) == len(smes) - carried_validation
    assert set(changed) <= smes
    assert 0 < carried_validation <= len(smes) - len(changed)
    scored = sum(e["scored"] for _v, e in counts)
    carried = sum(e["carried"] for _v, e in counts)
    assert carried > 0
    assert scored + carried == len(incremental)
    changed_rows = incremental["sme_id"].isin(changed)
    assert scored >= int(changed_rows.sum()) > 0

    # an unchanged SME's row is the previous date's row, value for value (fingerprint included),
    # unless one of its dates compares otherwise with the new as-of day (a bill fell due): then it
    # is scored again, with the same fingerprint
    due = before[before[fp.CARRY_UNTIL] <= NEXT]
    assert len(due) > 0
    again = incremental[~changed_rows].merge(
        due, on=["sme_id", "scope", fp.FINGERPRINT], suffixes=("", "_before")
    )
    assert len(again) == len(due[~due["sme_id"].isin(changed)])
    assert (again[fp.CARRY_UNTIL] > NEXT).all()
    assert scored >= int(changed_rows.sum()) + len(again)
    same = incremental[~changed_rows].merge(
        before[before[fp.CARRY_UNTIL] > NEXT],
        on=["sme_id", "scope", fp.FINGERPRINT],
        suffixes=("", "_before"),
    )
    assert len(same) == carried
    for column in evaluation.SCOPED_COLUMNS:
        left, right = (
            same[column],
            same[f"{column}_before"] if column not in ("sme_id", "scope") else same[column],
        )
        assert [repr(v) for v in left] == [repr(v) for v in right], column
    # a changed SME's fingerprint and revenue-based values moved
    moved = incremental[changed_rows].merge(before, on=["sme_id", "scope"], suffixes=("", "_before"))
    assert len(moved) == int(changed_rows.sum())
    assert (moved[fp.FINGERPRINT] != moved[f"{fp.FINGERPRINT}_before"]).all()
    assert (moved["revenue_12m"] != moved["revenue_12m_before"]).all()

    # a full run of the same date stages exactly the same rows
    validated = [staged(pipeline.VALIDATION_STEP, NEXT, shard) for shard in range(SHARDS)]
    for shard in range(SHARDS):
        assert pipeline.validate(shard, NEXT, full=True)["carried"] == 0
        assert pipeline.evaluate(shard, NEXT, full=True)["carried"] == 0
    full = scores(NEXT)
    assert pa.Table.from_pandas(full).equals(pa.Table.from_pandas(incremental))
    for shard in range(SHARDS):
        assert staged(pipeline.VALIDATION_STEP, NEXT, shard).equals(validated[shard])


def ran(day: dt.date) -> None:
    """``day`` validated and scored (incrementally), unless a test before on this worker did it."""
    store = Store.from_settings()
    if not store.exists(store.layout.staging(pipeline.SCORES_STEP, day.isoformat(), SHARDS - 1)):
        for shard in range(SHARDS):
            pipeline.validate(shard, day)
            pipeline.evaluate(shard, day)


def test_a_new_consent_scope_is_scored_and_every_other_row_carried(landed: tuple[Path, list[str]]) -> None:
    ran(NEXT)
    later = NEXT + dt.timedelta(days=1)
    land_again(NEXT, later, SHARDS)
    before = scores(NEXT)
    sme = str(before["sme_id"].iloc[0])
    assert "accounting@7m" not in set(before.loc[before["sme_id"] == sme, "scope"])
    grant_accounting_scope("incremental-new-scope", sme, 7, granted=AS_OF)
    results = []
    for shard in range(SHARDS):
        pipeline.validate(shard, later)
        results.append(pipeline.evaluate(shard, later))
    after = scores(later)
    new = after[(after["sme_id"] == sme) & (after["scope"] == "accounting@7m")]
    assert len(new) == 1
    assert new[fp.FINGERPRINT].iloc[0] not in set(before[fp.FINGERPRINT])
    # every other row is the previous date's, unless its dates compare otherwise with the new day
    carried = before[before[fp.CARRY_UNTIL] > later]
    keys = set(zip(carried["sme_id"], carried["scope"], carried[fp.FINGERPRINT], strict=True))
    same = 0
    for shard in range(SHARDS):
        now, then = (staged(pipeline.SCORES_STEP, day, shard) for day in (later, NEXT))
        pick = [
            [
                k in keys
                for k in zip(
                    *(t.column(c).to_pylist() for c in ("sme_id", "scope", fp.FINGERPRINT)), strict=True
                )
            ]
            for t in (now, then)
        ]
        assert now.filter(pa.array(pick[0])).equals(then.filter(pa.array(pick[1])))
        same += sum(pick[0])
    assert same == sum(r["carried"] for r in results) == len(carried)
    assert sum(r["scored"] for r in results) == len(after) - same >= 1


def test_a_new_model_version_scores_every_sme_again(
    landed: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    later = NEXT + dt.timedelta(days=2)
    land_again(NEXT, later, SHARDS)
    monkeypatch.setattr(evaluation, "MODEL_VERSION", evaluation.MODEL_VERSION + ".next")
    for shard in range(SHARDS):
        pipeline.validate(shard, later)
        result = pipeline.evaluate(shard, later)
        assert result["carried"] == 0
        assert result["scored"] == result["evaluated"] > 0


def frame(dates: list[str], revenue: list[float]) -> dict[str, pd.DataFrame]:
    return {
        "vat_returns": pd.DataFrame(
            {
                "sme_id": ["SME-1"] * len(dates),
                "due_date": [dt.date.fromisoformat(d) for d in dates],
                "total_sales_ex_vat": revenue,
            }
        )
    }


def prints(tables: dict[str, pd.DataFrame], as_of: dt.date) -> str:
    digests = digest_columns({name: sme_digests(f) for name, f in tables.items()}, ["SME-1"])
    return fp.fingerprints(
        digests, pd.DataFrame({"sme_id": ["SME-1"]}), context=(fp.as_of_month(as_of),)
    ).iloc[0]


def until(tables: dict[str, pd.DataFrame], as_of: dt.date) -> dt.date:
    return fp.carry_until(tables, ["SME-1"], as_of, fp.scoring_bounds).iloc[0]


def test_fingerprints_follow_the_rows_and_the_as_of_month_only() -> None:
    day = dt.date(2026, 11, 10)
    base = prints(frame(["2026-10-15", "2026-11-12"], [1.0, 2.0]), day)
    assert len(base) == 32
    # the order of the rows does not matter
    assert prints(frame(["2026-11-12", "2026-10-15"], [2.0, 1.0]), day) == base
    # a value, a date or a repeated row does
    assert prints(frame(["2026-10-15", "2026-11-12"], [1.0, 2.5]), day) != base
    assert prints(frame(["2026-10-15", "2026-11-13"], [1.0, 2.0]), day) != base
    assert prints(frame(["2026-10-15", "2026-11-12", "2026-11-12"], [1.0, 2.0, 2.0]), day) != base
    # another day of the same month gives the same fingerprint, a new month another one
    assert prints(frame(["2026-10-15", "2026-11-12"], [1.0, 2.0]), dt.date(2026, 11, 13)) == base
    assert prints(frame(["2026-10-15", "2026-11-12"], [1.0, 2.0]), dt.date(2026, 12, 20)) != base


def test_a_row_is_carried_until_one_of_its_dates_compares_otherwise_with_the_as_of_day() -> None:
    # evaluation reads due_date < as_of: the bill due on the 12th counts as due from the 13th on
    assert until(frame(["2026-10-15", "2026-11-12"], [1.0, 2.0]), dt.date(2026, 11, 10)) == dt.date(
        2026, 11, 13
    )
    assert until(frame(["2026-10-15", "2026-11-12"], [1.0, 2.0]), dt.date(2026, 11, 12)) == dt.date(
        2026, 11, 13
    )
    # once every date is behind the as-of day, only the next month ends the carry
    assert until(frame(["2026-10-15", "2026-11-12"], [1.0, 2.0]), dt.date(2026, 11, 13)) == dt.date(
        2026, 12, 1
    )
    # a date past the month's end, and a missing one, change nothing this month
    assert until(frame(["2027-01-05"], [1.0]), dt.date(2026, 12, 20)) == dt.date(2027, 1, 1)
    missing = frame(["2026-11-12"], [1.0])
    missing["vat_returns"]["due_date"] = pd.Series([None], dtype=object)
    assert until(missing, dt.date(2026, 11, 10)) == dt.date(2026, 12, 1)


def test_validation_carry_dates_follow_the_suites_bounds() -> None:
    # the suites bound a VAT return's due date by the as-of day plus a horizon: the date a row's
    # outcome changes is the first as-of day whose bounds place it otherwise, and never later
    tables = frame(["2026-10-15", "2026-11-12"], [1.0, 2.0])
    day = dt.date(2026, 11, 10)
    carry = fp.carry_until(tables, ["SME-1"], day, fp.validation_bounds).iloc[0]
    assert day < carry <= fp.next_month(day)
    for later in (day + dt.timedelta(days=k) for k in range(1, (fp.next_month(day) - day).days)):
        flat = {
            t: {c: [op for _b, op in tests] for c, tests in cols.items()}
            for t, cols in fp.validation_bounds(day).items()
        }
        assert flat == {
            t: {c: [op for _b, op in tests] for c, tests in cols.items()}
            for t, cols in fp.validation_bounds(later).items()
        }
        same = all(
            (v < b0) == (v < b1) and (v <= b0) == (v <= b1)
            for column, tests in fp.validation_bounds(day)["vat_returns"].items()
            if column in tables["vat_returns"]
            for (b0, _op), (b1, _op1) in zip(
                tests, fp.validation_bounds(later)["vat_returns"][column], strict=True
            )
            for v in pd.to_datetime(tables["vat_returns"][column]).to_numpy()
        )
        assert same == (later < carry), later


def test_a_shard_without_data_stages_typed_empty_files(landed: tuple[Path, list[str]]) -> None:
    empty_day = AS_OF - dt.timedelta(days=30)
    assert pipeline.validate(0, empty_day)["smes"] == 0
    assert pipeline.evaluate(0, empty_day)["evaluated"] == 0
    for step in (pipeline.VALIDATION_STEP, pipeline.SCORES_STEP):
        table = staged(step, empty_day, 0)
        assert table.num_rows == 0
        assert pa.types.is_string(table.schema.field("sme_id").type) or pa.types.is_large_string(
            table.schema.field("sme_id").type
        )
        assert not pa.types.is_null(table.schema.field(fp.FINGERPRINT).type)
