"""Validate a shard's canonical tables in batches and attribute every failing row to its SME.

Each canonical table of a shard is validated as one batch (never per SME): the table's frame,
prepared by :func:`expectations.prepare.prepare`, is checked against the table's suite. Each
failing row is reported by its position (``unexpected_index_column_names`` on the prepared
frame's ``row`` index), for column, column-pair, multi-column and compound-uniqueness expectations
alike; the runner maps those rows back to the SME, the record (key values and ``source_record``)
and the field, and writes one readable reason per failing record. An SME with any failing record
fails; the others pass.

With :data:`USE_PLAN` (the default), the suites compiled into vectorised checks
(:mod:`expectations.plan`) decide every expectation's failing rows and counts over the whole
frame, and the shard task never imports GX. Each table's :class:`TableEvidence` (the failing rows
and up to :data:`DOCS_PASSING_ROWS` passing rows, the plan's outcomes and a readable sample) is
stored; once per as-of date :func:`build_data_docs` has GX validate the expectations the plan
failed over every shard's evidence at once (:func:`confirm_with_gx`), and GX's failing rows there
must equal the plan's or that step fails. GX does not evaluate the expectations the plan passes, so
a row the plan missed would go unnoticed at run time: ``tests/expectations/test_plan.py`` (GX and
the plan over fault-injected and randomized frames) is what holds the plan to GX's semantics. In
every result the counts (``element_count``, ``unexpected_count``, missing counts and percentages)
are the whole frames', not the sample's, so the Data Docs report the date exactly as a GX run over
every row does (the equivalence test compares them). With ``USE_PLAN = False`` GX validates every
row in the shard task, as the reference.

The steps, as the pipeline calls them for one shard and then once per as-of date::

    validation = validate_shard(tables, as_of=as_of, shard=shard)   # pure: frames in, outcome out
    record_validation(session, validation)    # validation_results, quarantine, evidence JSON
    build_data_docs(as_of)                    # after every shard: GX confirms; Data Docs (HTML)

Shards run in parallel processes, so nothing here writes to a shared GX project while validating:
:func:`record_validation` stores the shard's evidence (or, without the plan, its GX results) as
JSON in the store (``staging/gx_validation/as_of=<date>/shard=<NNNN>.json``, samples as Parquet
under ``staging/validation_samples/``). :func:`build_data_docs` reads those files into the
file-backed GX project under ``get_settings().data_docs_dir`` and renders the site in one step.
"""

from __future__ import annotations

import datetime
import functools
import logging
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dossier.settings import get_settings
from expectations.plan import Outcome, Plan, resolve_parameter, table_plan
from expectations.prepare import ROW_INDEX, column_types, derived_inputs, prepare
from expectations.suites import (
    LoadedSuite,
    expectation_columns,
    expectation_id,
    load_suite,
    loaded_suites,
    suite_parameters,
)
from warehouse.canonical import TABLES
from warehouse.db import in_chunks, upsert
from warehouse.dossier_store import store_absolute, store_relative
from warehouse.models import QuarantineEntry, ValidationResult, utcnow
from warehouse.storage import Store

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

log = logging.getLogger(__name__)

STAGE = "validate"
"""Quarantine stage of the entries this module writes."""

GX_RESULTS_STEP = "gx_validation"
"""Staging step under which each shard's GX validation results (or the plan's evidence) are kept as JSON."""

SAMPLES_STEP = "validation_samples"
"""Staging step under which the plan's evidence keeps each table's sample rows as Parquet."""

RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": [ROW_INDEX],
    "exclude_unexpected_values": True,
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 20,
}
"""Every failing row's position and nothing more: no lists of values, no query strings."""

DOCS_SAMPLE_ROWS = 20
"""Failing records kept per expectation in the GX result JSON (the warehouse keeps all of them)."""

FAILURE_COLUMNS = (
    "sme_id",
    "table_name",
    "source",
    "record",
    "field",
    "expectation",
    "observed",
    "reason",
    "raw_sha256",
)
"""Columns of :attr:`ShardValidation.failures`: one row per failing record per expectation."""

_LIMITS = {"record": 256, "field": 128, "reason": 512}
"""Lengths of the quarantine columns these texts are stored in."""


@dataclass
class TableEvidence:
    """What GX needs, after the plan decided, to confirm one table of one shard and report it.

    * ``sample``: the prepared rows GX validates (every row any check fails and up to
      :data:`DOCS_PASSING_ROWS` passing ones), indexed by their position in the shard's frame;
    * ``outcomes``: the plan's outcome of every expectation over the whole frame, by expectation id
      (failing rows as positions in the shard's frame);
    * ``docs``: per expectation id, the readable sample of failing records the Data Docs show
      (:func:`_docs_fields`).
    """

    sample: pd.DataFrame
    outcomes: dict[str, Outcome]
    docs: dict[str, dict[str, Any]]


@dataclass
class ShardValidation:
    """The outcome of validating one shard for one as-of date.

    * ``sme_status``: one row per SME present in any table: ``sme_id``, ``passed`` (bool) and
      ``reasons`` (list of readable strings, empty when passed), sorted by ``sme_id``.
    * ``expectation_results``: one dict per expectation per table, with the fields of
      :class:`warehouse.models.ValidationResult` (``failing_smes`` sorted).
    * ``failures``: one row per failing record per expectation (:data:`FAILURE_COLUMNS`): the SME,
      table, source kind, record locator, field, expectation id, observed value and reason.
    * ``evidence``: with the plan, per table, what GX confirms later (:class:`TableEvidence`).
    * ``gx_results``: per table, GX's suite validation result as JSON (failing rows sampled). With
      the plan it is computed from ``evidence`` when first read (:func:`confirm_with_gx`), which
      imports GX: a shard task never reads it, :func:`build_data_docs` confirms once per date.
    """

    as_of: datetime.date
    shard: int
    sme_status: pd.DataFrame
    expectation_results: list[dict[str, Any]]
    failures: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(FAILURE_COLUMNS)))
    evidence: dict[str, TableEvidence] = field(default_factory=dict)
    gx_documents: dict[str, dict[str, Any]] | None = None

    @property
    def failing_smes(self) -> list[str]:
        return sorted(self.sme_status.loc[~self.sme_status["passed"], "sme_id"])

    @property
    def gx_results(self) -> dict[str, dict[str, Any]]:
        if self.gx_documents is None:
            confirmed = confirm_with_gx({self.shard: self.evidence}, as_of=self.as_of)
            self.gx_documents = {}
            for name, result in confirmed.items():
                result.meta["shard"] = self.shard
                self.gx_documents[name] = result.to_json_dict()
        return self.gx_documents


_DATASOURCE = "canonical"
"""Name of the in-memory pandas data source; GX names each table's batch ``canonical-<table>``."""


@dataclass(frozen=True)
class _Runtime:
    """One in-memory GX context per process, with one whole-frame batch definition per table."""

    batch_definitions: dict[str, BatchDefinition]


@functools.cache
def _runtime() -> _Runtime:
    """Build the process's GX context once: in memory, progress bars off, one asset per table."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        analytics_enabled=False,
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    source = context.data_sources.add_pandas(_DATASOURCE)
    definitions = {
        name: source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("shard")
        for name in TABLES
    }
    return _Runtime(definitions)


def _raise_if_not_evaluated(table_name: str, identifier: str, result: ExpectationValidationResult) -> None:
    """An expectation GX could not evaluate validated nothing: stop rather than pass its rows."""
    info = result.exception_info or {}
    infos = [info] if "raised_exception" in info else list(info.values())
    for entry in infos:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            raise RuntimeError(
                f"{table_name}: {identifier} could not be evaluated: {entry.get('exception_message')}"
            )


def _failing_rows(table_name: str, identifier: str, result: ExpectationValidationResult) -> np.ndarray:
    """Positions of the rows GX found failing, checked against GX's own count."""
    outcome = result.result or {}
    unexpected = int(outcome.get("unexpected_count") or 0)
    listed = outcome.get("unexpected_index_list") or []
    rows = np.asarray(listed[0][ROW_INDEX] if listed else [], dtype=np.int64)
    if len(rows) != unexpected or (unexpected == 0 and not result.success):
        raise RuntimeError(
            f"{table_name}: {identifier} reported {unexpected} failing rows but listed {len(rows)}; "
            "its rows cannot be attributed to SMEs"
        )
    return rows


def _text(values: pd.Series, original: pd.Series, arrow_type: pa.DataType) -> pd.Series:
    """Values as display text: ISO dates and UTC instants, ``null`` when missing, the given text when unreadable."""
    if pa.types.is_date(arrow_type):
        text = values.dt.strftime("%Y-%m-%d")
    elif pa.types.is_timestamp(arrow_type):
        text = values.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        text = values.astype("str")
    missing = values.isna()
    unreadable = missing & original.notna()
    text = text.where(~missing, "null")
    return text.where(~unreadable, original.astype("str"))


def _display_frame(
    table_name: str, frame: pd.DataFrame, rows: np.ndarray, columns: list[str]
) -> pd.DataFrame:
    """Text of ``columns`` (canonical or derived) for the failing ``rows``, indexed by row."""
    subset = frame.iloc[rows]
    typed = prepare(table_name, subset, columns)
    typed.index = pd.Index(rows, name=ROW_INDEX)
    original = subset.set_axis(pd.Index(rows, name=ROW_INDEX))
    types = column_types(table_name)
    return pd.DataFrame(
        {c: _text(typed[c], original[c] if c in original else typed[c], types[c]) for c in columns},
        index=typed.index,
    )


def _pairs(display: pd.DataFrame, columns: list[str]) -> pd.Series:
    """``a=1, b=2`` for each row of ``display``."""
    text = display[columns[0]].radd(f"{columns[0]}=")
    for column in columns[1:]:
        text = text + f", {column}=" + display[column]
    return text


def _shorten(text: pd.Series, limit: int) -> pd.Series:
    return text.where(text.str.len() <= limit, text.str.slice(0, limit - 1) + "…")


def _attribute(
    table_name: str, frame: pd.DataFrame, failing: list[tuple[str, str, list[str], np.ndarray]]
) -> pd.DataFrame:
    """One row per failing record per expectation, with its SME, record, field, observed value and reason.

    ``failing`` holds (expectation id, note, columns read, failing row positions) per failing
    expectation. A derived column is reported through the canonical columns it is computed from.
    """
    table = TABLES[table_name]
    derived = derived_inputs(table_name)
    locator = [c for c in table.key if c != "sme_id"] + ["source_record"]
    parts: list[pd.DataFrame] = []
    for identifier, note, columns, rows in failing:
        fields = [c for column in columns for c in derived.get(column, (column,))]
        fields = list(dict.fromkeys(fields))
        shown = list(dict.fromkeys([*fields, *columns]))
        display = _display_frame(table_name, frame, rows, list(dict.fromkeys([*locator, *shown])))
        record = _pairs(display, locator)
        observed = _pairs(display, shown)
        field_text = ", ".join(fields)
        reason = (
            f"{table_name} record "
            + record
            + f" field {field_text}: {note} [{identifier}] observed "
            + observed
        )
        parts.append(
            pd.DataFrame(
                {
                    "row": rows,
                    "sme_id": frame["sme_id"].iloc[rows].to_numpy(),
                    "table_name": table_name,
                    "source": table.source,
                    "record": _shorten(record, _LIMITS["record"]).to_numpy(),
                    "field": field_text[: _LIMITS["field"]],
                    "expectation": identifier,
                    "observed": observed.to_numpy(),
                    "reason": _shorten(reason, _LIMITS["reason"]).to_numpy(),
                    "raw_sha256": frame["raw_sha256"].iloc[rows].to_numpy(),
                }
            )
        )
    failures = pd.concat(parts, ignore_index=True)
    unattributable = failures["sme_id"].isna()
    if unattributable.any():
        records = failures.loc[unattributable, "record"].head(5).tolist()
        raise ValueError(
            f"{table_name}: {int(unattributable.sum())} failing rows have no sme_id and cannot be "
            f"attributed to an SME (records {records})"
        )
    return failures


def _docs_fields(
    table_name: str, frame: pd.DataFrame, columns: list[str], rows: np.ndarray
) -> dict[str, Any]:
    """A few readable failing records for the Data Docs, in place of GX's bare list of positions.

    Each record holds the expectation's columns (the values Data Docs tabulates) and the SME, key
    and source record that locate it; the full list of failing records lives in the warehouse.
    """
    table = TABLES[table_name]
    locator = [c for c in dict.fromkeys([*table.key, "source_record"]) if c not in columns]
    fields: dict[str, Any] = {"unexpected_index_column_names": locator, "unexpected_index_list": []}
    sample = rows[:DOCS_SAMPLE_ROWS]
    if not len(sample):
        return fields
    display = _display_frame(table_name, frame, sample, [*columns, *locator])
    values = display[columns[0]] if len(columns) == 1 else display[columns].agg(tuple, axis=1).map(str)
    fields["unexpected_index_list"] = display.to_dict("records")
    fields["partial_unexpected_list"] = values.tolist()
    return fields


def _merged_docs(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The docs fields of several shards as one: their records in shard order, the first few kept."""
    merged = {**parts[0], "unexpected_index_list": [], "partial_unexpected_list": []}
    for part in parts:
        merged["unexpected_index_list"] += part["unexpected_index_list"]
        merged["partial_unexpected_list"] += part.get("partial_unexpected_list", [])
    merged["unexpected_index_list"] = merged["unexpected_index_list"][:DOCS_SAMPLE_ROWS]
    merged["partial_unexpected_list"] = merged["partial_unexpected_list"][:DOCS_SAMPLE_ROWS]
    if not merged["partial_unexpected_list"]:
        del merged["partial_unexpected_list"]
    return merged


def _apply_docs(result: ExpectationValidationResult, fields: dict[str, Any]) -> None:
    """Put the readable sample (:func:`_docs_fields`) into GX's result, with its value counts."""
    outcome = result.result
    outcome.pop("partial_unexpected_index_list", None)
    outcome.update(fields)
    if "partial_unexpected_list" in fields:
        counts = pd.Series(fields["partial_unexpected_list"], dtype=object).value_counts(sort=True)
        outcome["partial_unexpected_counts"] = [{"value": v, "count": int(c)} for v, c in counts.items()]


USE_PLAN = True
"""Decide failing rows and counts with the compiled plan (:mod:`expectations.plan`) and run GX
only for the failing expectations, over their rows and a sample of passing ones; ``False`` runs
GX for every expectation over every row (the plan's equivalence test compares the two)."""

DOCS_PASSING_ROWS = 100
"""Passing rows added to the failing ones in the frame GX validates when the plan decides."""

_COUNT_KEYS = (
    "element_count",
    "unexpected_count",
    "unexpected_percent",
    "missing_count",
    "missing_percent",
    "unexpected_percent_total",
    "unexpected_percent_nonmissing",
)


def _gx_validate(
    table_name: str, prepared: pd.DataFrame, suite: ExpectationSuite, parameters: dict[str, pd.Timestamp]
) -> ExpectationSuiteValidationResult:
    """GX's validation of one prepared frame (one batch) against ``suite``."""
    batch = _runtime().batch_definitions[table_name].get_batch(batch_parameters={"dataframe": prepared})
    return batch.validate(suite, result_format=RESULT_FORMAT, expectation_parameters=parameters)


def _gx_failing_rows(
    table_name: str, prepared: pd.DataFrame, suite: ExpectationSuite, parameters: dict[str, pd.Timestamp]
) -> tuple[dict[str, np.ndarray], ExpectationSuiteValidationResult]:
    """Every expectation's failing rows as GX finds them over ``prepared``, by expectation id."""
    suite_result = _gx_validate(table_name, prepared, suite, parameters)
    rows: dict[str, np.ndarray] = {}
    for result in suite_result.results:
        identifier = expectation_id(result.expectation_config)
        _raise_if_not_evaluated(table_name, identifier, result)
        rows[identifier] = _failing_rows(table_name, identifier, result)
    return rows, suite_result


def _sample_positions(outcomes: list[Outcome], size: int) -> np.ndarray:
    """Every failing row of any check and up to :data:`DOCS_PASSING_ROWS` passing rows, in order."""
    failing = np.unique(np.concatenate([o.rows for o in outcomes])) if outcomes else np.zeros(0, np.int64)
    passing = np.setdiff1d(np.arange(min(size, len(failing) + DOCS_PASSING_ROWS)), failing)
    return np.union1d(failing, passing[:DOCS_PASSING_ROWS]).astype(np.int64)


def _whole_frame_counts(result: ExpectationValidationResult, outcome: Outcome) -> None:
    """Replace the counts GX computed over the sample by the plan's counts over the whole frame.

    The same formulas as GX's map expectations: percentages of the rows looked at, or of the
    non-null ones among them; ``None`` when there is nothing to divide by.
    """
    outcome_result = result.result
    elements, unexpected, nonnull = outcome.element_count, len(outcome.rows), outcome.nonnull_count
    total = unexpected / elements * 100 if elements else None
    counts: dict[str, Any] = {"element_count": elements, "unexpected_count": unexpected}
    if nonnull is None or "missing_count" not in outcome_result:
        counts["unexpected_percent"] = total
    else:
        nonmissing = (unexpected / nonnull * 100 if nonnull else None) if elements else None
        counts |= {
            "unexpected_percent": nonmissing,
            "missing_count": elements - nonnull,
            "missing_percent": (elements - nonnull) / elements * 100 if elements else None,
            "unexpected_percent_total": total,
            "unexpected_percent_nonmissing": nonmissing,
        }
    outcome_result.update({k: v for k, v in counts.items() if k in _COUNT_KEYS})
    result.success = outcome.success


def _passing_result(
    table_name: str,
    configuration: ExpectationConfiguration,
    outcome: Outcome,
    parameters: dict[str, pd.Timestamp],
) -> ExpectationValidationResult:
    """The result GX reports for an expectation no row fails, with the whole frame's counts.

    Its configuration is the suite's with the suite parameters filled in and the batch named, as
    in GX's own results.
    """
    from great_expectations.core import ExpectationValidationResult
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    kwargs = {k: resolve_parameter(v, parameters) for k, v in configuration.kwargs.items()}
    resolved = ExpectationConfiguration(
        type=configuration.type,
        kwargs={"batch_id": f"{_DATASOURCE}-{table_name}", **kwargs},
        meta=configuration.meta,
        notes=configuration.notes,
        severity=configuration.severity,
    )
    counts: dict[str, Any] = {"element_count": 0, "unexpected_count": 0, "unexpected_percent": None}
    if outcome.nonnull_count is not None:
        counts |= dict.fromkeys(
            ("missing_count", "missing_percent", "unexpected_percent_total", "unexpected_percent_nonmissing")
        )
    result = ExpectationValidationResult(
        success=True,
        expectation_config=resolved,
        result={
            **counts,
            "unexpected_index_column_names": [ROW_INDEX],
            "partial_unexpected_index_list": [],
            "unexpected_index_list": [],
        },
        meta={},
        exception_info={"raised_exception": False, "exception_traceback": None, "exception_message": None},
    )
    _whole_frame_counts(result, outcome)
    return result


def _plan_evidence(
    table_name: str,
    frame: pd.DataFrame,
    prepared: pd.DataFrame,
    plan: Plan,
    parameters: dict[str, pd.Timestamp],
) -> TableEvidence:
    """The plan's outcome of every expectation over the whole frame, and what GX needs to confirm it.

    GX is not imported here: :func:`confirm_with_gx` later validates only the expectations the plan
    fails, over the failing rows and a sample of passing ones.
    """
    outcomes = {o.identifier: o for o in plan.run(prepared, parameters)}
    sample = _sample_positions(list(outcomes.values()), len(prepared))
    docs = {
        check.identifier: _docs_fields(
            table_name, frame, list(check.columns), outcomes[check.identifier].rows
        )
        for check in plan.checks
    }
    return TableEvidence(sample=prepared.iloc[sample], outcomes=outcomes, docs=docs)


def _merged_outcomes(
    loaded: LoadedSuite, parts: list[TableEvidence]
) -> tuple[pd.DataFrame, dict[str, Outcome]]:
    """The shards' samples as one frame (indexed by position) and their outcomes in its positions.

    Counts add up; failing rows are the rows of each shard's sample, offset by the samples before it.
    """
    rows: dict[str, list[np.ndarray]] = {i: [] for i in loaded.ids}
    elements = dict.fromkeys(loaded.ids, 0)
    nonnull: dict[str, int | None] = dict.fromkeys(loaded.ids, 0)
    offset = 0
    for part in parts:
        index = part.sample.index.to_numpy()
        for identifier in loaded.ids:
            outcome = part.outcomes[identifier]
            rows[identifier].append(np.searchsorted(index, outcome.rows) + offset)
            elements[identifier] += outcome.element_count
            counted = nonnull[identifier]
            nonnull[identifier] = (
                None if counted is None or outcome.nonnull_count is None else counted + outcome.nonnull_count
            )
        offset += len(part.sample)
    frame = pd.concat([part.sample for part in parts], ignore_index=True)
    frame.index = pd.RangeIndex(len(frame), name=ROW_INDEX)
    merged = {
        i: Outcome(i, np.concatenate(rows[i]).astype(np.int64), elements[i], nonnull[i]) for i in loaded.ids
    }
    return frame, merged


def _confirm_table(
    table_name: str,
    parts: list[TableEvidence],
    loaded: LoadedSuite,
    parameters: dict[str, pd.Timestamp],
) -> ExpectationSuiteValidationResult:
    """GX's suite result for one table over the evidence of one or more shards.

    GX validates the expectations the plan fails over the samples, and its failing rows there must
    equal the plan's, or this raises ``RuntimeError`` naming the expectations; every other
    expectation gets the result GX reports for an expectation no row fails (:func:`_passing_result`).
    Every result carries the whole frames' counts and a readable sample of failing records.
    """
    from great_expectations import ExpectationSuite

    if table_plan(table_name).ids != loaded.ids:
        raise RuntimeError(f"{table_name}: the compiled plan does not list the suite's expectations")
    frame, outcomes = _merged_outcomes(loaded, parts)
    failing = [
        e.configuration.to_domain_obj()
        for e, identifier in zip(loaded.suite.expectations, loaded.ids, strict=True)
        if not outcomes[identifier].success
    ]
    suite = ExpectationSuite(name=loaded.suite.name, expectations=failing)
    gx_rows, suite_result = _gx_failing_rows(table_name, frame, suite, parameters)
    differing = [i for i, rows in gx_rows.items() if not np.array_equal(rows, outcomes[i].rows)]
    if differing:
        raise RuntimeError(
            f"{table_name}: the compiled plan and GX disagree on the failing rows of {differing}"
        )
    by_id = {expectation_id(r.expectation_config): r for r in suite_result.results}
    results = []
    for expectation, identifier in zip(loaded.suite.expectations, loaded.ids, strict=True):
        result = by_id.get(identifier)
        if result is None:
            result = _passing_result(table_name, expectation.configuration, outcomes[identifier], parameters)
        else:
            _whole_frame_counts(result, outcomes[identifier])
        _apply_docs(result, _merged_docs([part.docs[identifier] for part in parts]))
        results.append(result)
    successful = sum(bool(r.success) for r in results)
    suite_result.results = results
    suite_result.success = successful == len(results)
    suite_result.statistics = {
        "evaluated_expectations": len(results),
        "successful_expectations": successful,
        "unsuccessful_expectations": len(results) - successful,
        "success_percent": successful / len(results) * 100 if results else None,
    }
    return suite_result


def confirm_with_gx(
    evidence: dict[int, dict[str, TableEvidence]], *, as_of: datetime.date
) -> dict[str, ExpectationSuiteValidationResult]:
    """GX's suite result per table over the plan's evidence of the given shards (shard -> table -> evidence).

    One GX validation per table for all the shards together: this is where GX confirms the plan's
    failing rows (raising ``RuntimeError`` where they differ) and writes what the Data Docs show.
    A table no shard validated on the date (every SME carried from an earlier date) has no
    evidence and no result here.
    """
    confirmed: dict[str, ExpectationSuiteValidationResult] = {}
    if not any(evidence.values()):
        return confirmed  # no table has new evidence: nothing for GX to confirm (GX is not imported)
    suites = loaded_suites()
    parameters = suite_parameters(as_of)
    for name in TABLES:
        parts = [tables[name] for _, tables in sorted(evidence.items()) if name in tables]
        if parts:
            result = _confirm_table(name, parts, suites[name], parameters)
            result.meta["as_of"] = as_of.isoformat()
            result.meta["shards"] = sorted(shard for shard, tables in evidence.items() if name in tables)
            confirmed[name] = result
    return confirmed


def _validate_table(
    table_name: str,
    frame: pd.DataFrame,
    parameters: dict[str, pd.Timestamp],
    shard: int,
    *,
    use_plan: bool | None = None,
) -> tuple[list[dict[str, Any]], pd.DataFrame | None, TableEvidence | ExpectationSuiteValidationResult]:
    """Validate one table's frame as one batch; return per-expectation results and failing records.

    With the plan (:data:`USE_PLAN`), the plan decides every expectation's failing rows and counts
    over the whole frame and the third value is its :class:`TableEvidence` for GX to confirm later
    (GX is not imported); otherwise GX validates every row here and the third value is GX's suite
    result.
    """
    use_plan = USE_PLAN if use_plan is None else use_plan
    outcome: TableEvidence | ExpectationSuiteValidationResult
    if use_plan:
        plan = table_plan(table_name)
        prepared = prepare(table_name, frame, plan.columns)
        outcome = _plan_evidence(table_name, frame, prepared, plan, parameters)
        found = outcome.outcomes
        decided = [
            (
                c.identifier,
                c.note,
                list(c.columns),
                found[c.identifier].success,
                found[c.identifier].element_count,
            )
            for c in plan.checks
        ]
        gx_rows = {i: o.rows for i, o in outcome.outcomes.items()}
        order = plan.ids
    else:
        loaded = loaded_suites()[table_name]
        prepared = prepare(table_name, frame, loaded.columns)
        gx_rows, outcome = _gx_failing_rows(table_name, prepared, loaded.suite, parameters)
        decided = []
        for result in outcome.results:
            configuration = result.expectation_config
            identifier = expectation_id(configuration)
            columns = expectation_columns(configuration.kwargs)
            _apply_docs(result, _docs_fields(table_name, frame, columns, gx_rows[identifier]))
            notes = configuration.notes
            note = notes if isinstance(notes, str) else " ".join(notes or [])
            count = int((result.result or {}).get("element_count") or 0)
            decided.append((identifier, note, columns, bool(result.success), count))
        order = loaded.ids
    sme_ids = frame["sme_id"]
    summaries: list[dict[str, Any]] = []
    failing: list[tuple[str, str, list[str], np.ndarray]] = []
    for identifier, note, columns, success, element_count in decided:
        rows = gx_rows[identifier]
        if len(rows):
            failing.append((identifier, note, columns, rows))
        summaries.append(
            {
                "table_name": table_name,
                "shard": shard,
                "suite": table_name,
                "expectation": identifier,
                "success": success,
                "element_count": element_count,
                "unexpected_count": len(rows),
                "failing_smes": sorted(sme_ids.iloc[rows].dropna().unique().tolist()) if len(rows) else [],
            }
        )
    position = {identifier: i for i, identifier in enumerate(order)}
    summaries.sort(key=lambda summary: position[summary["expectation"]])
    failing.sort(key=lambda entry: position[entry[0]])
    failures = _attribute(table_name, frame, failing) if failing else None
    return summaries, failures, outcome


def _no_failures() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in ("row", *FAILURE_COLUMNS)})


def _sme_status(sme_ids: pd.Index, failures: pd.DataFrame) -> pd.DataFrame:
    """One row per SME: passed when it has no failing record, else its reasons in a stable order."""
    reasons = failures.groupby("sme_id", sort=False)["reason"].agg(list)
    status = pd.DataFrame({"sme_id": sme_ids.sort_values()})
    status["reasons"] = status["sme_id"].map(reasons)
    status["passed"] = status["reasons"].isna()
    status["reasons"] = [r if isinstance(r, list) else [] for r in status["reasons"]]
    return status[["sme_id", "passed", "reasons"]].reset_index(drop=True)


def validate_shard(tables: dict[str, pd.DataFrame], *, as_of: datetime.date, shard: int) -> ShardValidation:
    """Validate each canonical table of one shard once and attribute failing rows to their SMEs.

    ``tables`` maps canonical table names to frames holding all SMEs of the shard (a source an SME
    did not connect simply has no rows; a table may be missing altogether). Raises ``ValueError``
    for an unknown table, a frame without a canonical column, or a failing row without ``sme_id``.
    """
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        raise ValueError(f"not canonical tables: {unknown}")
    parameters = suite_parameters(as_of)
    results: list[dict[str, Any]] = []
    failure_parts: list[pd.DataFrame] = []
    documents: dict[str, dict[str, Any]] = {}
    evidence: dict[str, TableEvidence] = {}
    present: list[np.ndarray] = []
    for name in (n for n in TABLES if n in tables):
        frame = tables[name].reset_index(drop=True)
        summaries, failures, outcome = _validate_table(name, frame, parameters, shard, use_plan=USE_PLAN)
        results += summaries
        if failures is not None:
            failure_parts.append(failures)
        if isinstance(outcome, TableEvidence):
            evidence[name] = outcome
        else:
            outcome.meta["as_of"] = as_of.isoformat()
            outcome.meta["shard"] = shard
            documents[name] = outcome.to_json_dict()
        present.append(frame["sme_id"].dropna().unique())
    failures = pd.concat(failure_parts, ignore_index=True) if failure_parts else _no_failures()
    table_order = failures["table_name"].map({name: i for i, name in enumerate(TABLES)})
    failures = failures.assign(table_order=table_order).sort_values(
        ["sme_id", "table_order", "row"], kind="stable"
    )
    sme_ids = pd.Index(np.unique(np.concatenate(present)) if present else [], dtype="str")
    return ShardValidation(
        as_of=as_of,
        shard=shard,
        sme_status=_sme_status(sme_ids, failures),
        expectation_results=results,
        failures=failures[list(FAILURE_COLUMNS)].reset_index(drop=True),
        evidence=evidence,
        gx_documents=None if evidence else documents,
    )


def gx_results_path(store: Store, as_of: datetime.date, shard: int) -> str:
    """Where one shard's GX validation results are kept: ``staging/gx_validation/as_of=<d>/shard=<NNNN>.json``."""
    return posixpath.join(
        store.layout.staging_dir(GX_RESULTS_STEP, as_of.isoformat()), f"shard={shard:04d}.json"
    )


def _write_evidence(store: Store, validation: ShardValidation) -> dict[str, Any]:
    """Store each table's sample as Parquet (``staging/validation_samples/...``); the rest as JSON."""
    folder = posixpath.join(
        store.layout.staging_dir(SAMPLES_STEP, validation.as_of.isoformat()), f"shard={validation.shard:04d}"
    )
    tables: dict[str, Any] = {}
    for name, evidence in validation.evidence.items():
        sample_path = posixpath.join(folder, f"{name}.parquet")
        store.write_table(sample_path, pa.Table.from_pandas(evidence.sample, preserve_index=True))
        tables[name] = {
            "sample": store_relative(store, sample_path),
            "outcomes": {
                i: {
                    "rows": o.rows.tolist(),
                    "element_count": o.element_count,
                    "nonnull_count": o.nonnull_count,
                }
                for i, o in evidence.outcomes.items()
            },
            "docs": evidence.docs,
        }
    return tables


def read_evidence(store: Store, tables: dict[str, Any]) -> dict[str, TableEvidence]:
    """The evidence :func:`_write_evidence` stored, as it was."""
    evidence: dict[str, TableEvidence] = {}
    for name, stored in tables.items():
        sample = store.read_table(store_absolute(store, stored["sample"])).to_pandas()
        outcomes = {
            i: Outcome(i, np.asarray(o["rows"], dtype=np.int64), o["element_count"], o["nonnull_count"])
            for i, o in stored["outcomes"].items()
        }
        evidence[name] = TableEvidence(sample=sample, outcomes=outcomes, docs=stored["docs"])
    return evidence


def _quarantine_rows(validation: ShardValidation) -> list[dict[str, Any]]:
    """Quarantine entries for the failing records, one per natural key (duplicates collapse)."""
    entries = validation.failures.drop_duplicates(["sme_id", "source", "record", "field", "reason"])
    digest = entries["raw_sha256"].astype(object)
    entries = entries.assign(
        as_of_date=validation.as_of,
        stage=STAGE,
        raw_sha256=digest.where(digest.notna() & digest.ne(""), None),
        resolved_at=None,
    )
    columns = ["sme_id", "as_of_date", "stage", "source", "table_name", "record", "field", "reason"]
    return entries[[*columns, "raw_sha256", "resolved_at"]].to_dict("records")


def _resolve_fixed(session: Session, validation: ShardValidation, now: datetime.datetime) -> int:
    """Resolve open validate-stage entries of the shard's SMEs that this validation no longer reports."""
    key = ["sme_id", "source", "record", "field", "reason"]
    sme_ids = validation.sme_status["sme_id"].tolist()
    open_parts: list[pd.DataFrame] = []
    for chunk in in_chunks(sme_ids):
        rows = session.execute(
            select(QuarantineEntry.id, *(getattr(QuarantineEntry, c) for c in key)).where(
                QuarantineEntry.as_of_date == validation.as_of,
                QuarantineEntry.stage == STAGE,
                QuarantineEntry.resolved_at.is_(None),
                QuarantineEntry.sme_id.in_(chunk),
            )
        ).all()
        open_parts.append(pd.DataFrame(rows, columns=["id", *key]))
    open_entries = (
        pd.concat(open_parts, ignore_index=True) if open_parts else pd.DataFrame(columns=["id", *key])
    )
    current = validation.failures[key].drop_duplicates()
    still_failing = open_entries.merge(current, on=key, how="left", indicator=True)
    fixed = still_failing.loc[still_failing["_merge"] == "left_only", "id"].astype(int).tolist()
    for chunk in in_chunks(fixed):
        session.execute(update(QuarantineEntry).where(QuarantineEntry.id.in_(chunk)).values(resolved_at=now))
    return len(fixed)


def record_validation(
    session: Session,
    validation: ShardValidation,
    *,
    store: Store | None = None,
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    """Persist one shard's validation; idempotent, so a re-run changes nothing.

    Shards hold disjoint SMEs and write disjoint rows, so shards may record concurrently.

    * upserts one ``validation_results`` row per expectation per table;
    * upserts one open ``quarantine`` entry (stage ``validate``) per failing record, re-opening an
      entry that fails again;
    * resolves the open validate-stage entries of this as-of date for the shard's SMEs that the
      validation no longer reports (the SME passes now, or that record was fixed);
    * writes the shard's GX validation results JSON to the store for :func:`build_data_docs`.

    Returns counts: ``validation_results``, ``quarantined`` (entries), ``failing_smes``,
    ``resolved`` (entries) and the ``gx_results`` path.
    """
    now = now or utcnow()
    store = store or Store.from_settings()
    result_rows = [
        {**r, "as_of_date": validation.as_of, "run_at": now} for r in validation.expectation_results
    ]
    upsert(session, ValidationResult, result_rows, key=["as_of_date", "table_name", "shard", "expectation"])
    entries = _quarantine_rows(validation)
    upsert(
        session,
        QuarantineEntry,
        entries,
        key=["sme_id", "as_of_date", "stage", "source", "record", "field", "reason"],
        update=["table_name", "raw_sha256", "resolved_at"],
    )
    resolved = _resolve_fixed(session, validation, now)
    path = gx_results_path(store, validation.as_of, validation.shard)
    document: dict[str, Any] = {"as_of": validation.as_of.isoformat(), "shard": validation.shard}
    if validation.evidence:
        document["evidence"] = _write_evidence(store, validation)
    else:
        document["results"] = validation.gx_results
    store.write_json(path, document)
    return {
        "validation_results": len(result_rows),
        "quarantined": len(entries),
        "failing_smes": len(validation.failing_smes),
        "resolved": resolved,
        "gx_results": path,
    }


def _stored_documents(store: Store, as_of: datetime.date) -> list[tuple[int, dict[str, Any]]]:
    """Every shard's stored validation JSON of ``as_of`` (:func:`record_validation`), by shard."""
    directory = store.layout.staging_dir(GX_RESULTS_STEP, as_of.isoformat())
    documents = [store.read_json(path) for path in store.list(directory, suffix=".json")]
    return sorted((int(d["shard"]), d) for d in documents)


def confirm_stored(
    as_of: datetime.date, *, store: Store | None = None
) -> dict[str, ExpectationSuiteValidationResult]:
    """GX's confirmation (:func:`confirm_with_gx`) of the evidence every shard stored for ``as_of``."""
    store = store or Store.from_settings()
    evidence = {
        shard: read_evidence(store, document["evidence"])
        for shard, document in _stored_documents(store, as_of)
        if "evidence" in document
    }
    return confirm_with_gx(evidence, as_of=as_of)


def _docs_context(directory: Path) -> Any:
    """The file-backed GX project that holds the Data Docs site (created on first use)."""
    import great_expectations as gx

    directory.mkdir(parents=True, exist_ok=True)
    return gx.get_context(mode="file", context_root_dir=directory)


def build_data_docs(as_of: datetime.date, *, store: Store | None = None) -> Path:
    """Confirm ``as_of``'s validations with GX and render the Data Docs; returns the site's ``index.html``.

    Reads every shard's stored JSON. Shards the plan decided left evidence: GX confirms it once per
    table for all of them together (:func:`confirm_with_gx`, which raises ``RuntimeError`` if GX and
    the plan disagree) and each table gets one result for the date (batch ``shards=all``). Shards GX
    validated in full left their results, one per table per shard (batch ``shard=<NNNN>``). The
    suites and results go into the GX project under ``get_settings().data_docs_dir`` (a re-run
    replaces the earlier results of the same date) and the local site is built once.
    """
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResultSchema,
    )
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    store = store or Store.from_settings()
    context = _docs_context(get_settings().data_docs_dir)
    for name in TABLES:
        context.suites.add_or_update(load_suite(name).suite)
    run_time = datetime.datetime.combine(as_of, datetime.time(), tzinfo=datetime.UTC)
    run_id = RunIdentifier(run_name=f"as_of={as_of.isoformat()}", run_time=run_time)
    schema = ExpectationSuiteValidationResultSchema()

    def keep(result: ExpectationSuiteValidationResult, batch: str) -> None:
        result.meta["run_id"] = run_id
        identifier = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=result.suite_name),
            run_id=run_id,
            batch_identifier=batch,
        )
        context.validation_results_store.set(identifier, result)

    for shard, document in _stored_documents(store, as_of):
        for document_result in document.get("results", {}).values():
            keep(schema.load(document_result), f"shard={shard:04d}")
    for result in confirm_stored(as_of, store=store).values():
        keep(result, "shards=all")
    urls = context.build_data_docs()
    index = Path(unquote(urlparse(urls["local_site"]).path))
    log.info("Data Docs of %s built at %s", as_of, index)
    return index


__all__ = [
    "FAILURE_COLUMNS",
    "ShardValidation",
    "TableEvidence",
    "build_data_docs",
    "confirm_stored",
    "confirm_with_gx",
    "gx_results_path",
    "read_evidence",
    "record_validation",
    "validate_shard",
]
