"""The pipeline's steps as plain functions: what each Airflow task calls, and what the bench times.

Each step is a transaction over one partition (a shard of SMEs for one as-of date): it reads files
from the store, writes its output atomically to one path and records what happened in the
warehouse. Steps return small JSON-serialisable summaries (paths and counts), never frames, so
they can travel through XCom.

    ingest(source, shard)  ->  canonical/<table>/as_of=<d>/shard=<k>.parquet
    validate(shard)        ->  staging/validation/...   (+ validation_results, quarantine)
    evaluate(shard)        ->  staging/scores/...       (validate_and_evaluate: both, files read once)
    publish()              ->  dossiers/schema=<v>/as_of=<d>/part-*.parquet, then the manifest

**A run for some SMEs** (:func:`run_for_smes`, what a grant starts) uses the same steps with
``sme_ids``: ingest pulls only those SMEs and keeps the other SMEs' rows in the shard's canonical
files; validate checks the shard as always (incrementally: see :func:`validate`); evaluate scores
only those SMEs and keeps the other SMEs' staged scores; publish republishes the date, so only the
new or changed versions take a new ``feed_seq`` and every other version stays as it was. Its
consents are read at the run's instant (``consent_at``), not at the start of the as-of day: the
consent that starts the run did not exist then.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import select, update

from dossier.monitoring import publish_stability, stage_counts
from dossier.settings import get_settings
from dossier.tasks import whole_numbers
from warehouse import consent, shard_plans
from warehouse.agents import mark_suspended_visits, suspended_ids
from warehouse.canonical import SOURCES
from warehouse.consent import as_of_instant
from warehouse.db import in_chunks, select_frame, session_scope, upsert
from warehouse.models import IngestionRun, QuarantineEntry, Sme, StageRun
from warehouse.shards import in_shard
from warehouse.storage import Store

if TYPE_CHECKING:
    from warehouse.canonical_files import CanonicalShard

log = logging.getLogger(__name__)

VALIDATION_STEP = "validation"
SCORES_STEP = "scores"


def parse_as_of(value: str | dt.date | dt.datetime | None) -> dt.date:
    """The as-of date of a run: an explicit date, else today (UTC).

    A string must be a whole ISO date, nothing before or after it:

    >>> parse_as_of("2026-12-01")
    datetime.date(2026, 12, 1)
    >>> parse_as_of("2026-02-30")
    Traceback (most recent call last):
    ...
    warehouse.errors.InputError: as-of date '2026-02-30' is not a date of the calendar (day is out of range for month); give YYYY-MM-DD
    """
    if value is None or value == "":
        return dt.datetime.now(dt.UTC).date()
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).date()
    if isinstance(value, dt.date):
        return value
    import re

    from warehouse.errors import InputError

    text = str(value)
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise InputError(f"as-of date {text!r} is not an ISO date; give YYYY-MM-DD, e.g. 2026-12-01")
    try:
        return dt.date.fromisoformat(text)
    except ValueError as error:
        raise InputError(
            f"as-of date {text!r} is not a date of the calendar ({error}); give YYYY-MM-DD"
        ) from None


WHOLE_DATE = -1
"""``stage_runs.shard`` of a step over the whole as-of date (publish)."""

STAGE_ORDER = ("ingest", "validate", "evaluate", "publish")


def step_counts(result: Any) -> dict[str, int]:
    """The whole numbers of a step's summary, nested ones flattened with ``.`` (what ``stage_runs`` keeps).

    >>> step_counts({"shard": 2, "pulled": 5, "ok": True, "path": "x", "withheld": {"count": 1, "examples": []}})
    {'pulled': 5, 'withheld.count': 1}
    """
    if not isinstance(result, dict):
        return {}
    return {key: value for key, value in whole_numbers(result).items() if key != "shard"}


def record_stage(
    session: Any,
    *,
    as_of: dt.date,
    stage: str,
    source: str = "",
    shard: int = WHOLE_DATE,
    status: str,
    started_at: dt.datetime,
    seconds: float,
    counts: dict[str, int],
    error: str = "",
) -> None:
    """Write (or, for a re-run, replace) the ``stage_runs`` row of one step; ``attempts`` counts the runs."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = session.get_bind().dialect.name
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
    key = {"as_of_date": as_of, "stage": stage, "source": source, "shard": shard}
    row = {
        "status": status,
        "started_at": started_at,
        "finished_at": started_at + dt.timedelta(seconds=seconds),
        "seconds": round(seconds, 3),
        "counts": counts,
        "error": error[:2000],
    }
    statement = insert(StageRun).values({**key, **row, "attempts": 1})
    session.execute(
        statement.on_conflict_do_update(
            index_elements=list(key),
            set_={**{k: statement.excluded[k] for k in row}, "attempts": StageRun.__table__.c.attempts + 1},
        )
    )


def recorded(stage: str) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    """Decorate a step so that each call writes its ``stage_runs`` row: timing, status and counts.

    The step's ``as_of`` (and ``shard`` and ``source`` where it has them) name the row. A failed
    step is recorded with its error and the error is raised as before; a scoped run (``sme_ids``)
    adds ``scoped_smes`` to the counts. The date's shard plan is made first if no step of the date
    made it yet (:func:`shard_plan`), so every step of a date runs under its one count. Recording
    never hides the step's own outcome: when the warehouse refuses the row, that is logged and the
    step's result (or error) stands.
    """

    def decorate(step: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        signature = inspect.signature(step)

        @functools.wraps(step)
        def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
            arguments = signature.bind(*args, **kwargs).arguments
            where = {
                "as_of": arguments["as_of"],
                "stage": stage,
                "source": arguments.get("source", ""),
                "shard": arguments.get("shard", WHOLE_DATE),
            }
            scoped = arguments.get("sme_ids")
            extra = {} if scoped is None else {"scoped_smes": len(set(scoped))}
            started_at, began = dt.datetime.now(dt.UTC), time.perf_counter()
            try:
                shard_plan(where["as_of"])  # the date's plan comes before any of its steps
                result = step(*args, **kwargs)
            except BaseException as error:
                _write_stage(where, "failed", started_at, time.perf_counter() - began, extra, str(error))
                raise
            counts = {**step_counts(result), **extra}
            _write_stage(where, "succeeded", started_at, time.perf_counter() - began, counts)
            return result

        return run

    return decorate


def _write_stage(
    where: dict[str, Any],
    status: str,
    started_at: dt.datetime,
    seconds: float,
    counts: dict[str, int],
    error: str = "",
) -> None:
    try:
        with session_scope() as session:
            record_stage(
                session,
                **where,
                status=status,
                started_at=started_at,
                seconds=seconds,
                counts=counts,
                error=error,
            )
    except Exception:
        log.exception("stage run of %s not recorded", where)


def stage_runs(session: Any, as_of: dt.date) -> list[dict[str, Any]]:
    """The ``stage_runs`` rows of ``as_of`` (every column but ``id``), in pipeline order."""
    order = {name: i for i, name in enumerate(STAGE_ORDER)}
    columns = [c.key for c in StageRun.__table__.columns if c.key != "id"]
    rows = session.scalars(select(StageRun).where(StageRun.as_of_date == as_of)).all()
    found = [{c: getattr(row, c) for c in columns} for row in rows]
    return sorted(
        found, key=lambda r: (order.get(r["stage"], len(order)), r["stage"], r["source"], r["shard"])
    )


def stage_summary(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per step (and source): tasks, failed tasks, total and slowest seconds, and the counts added up.

    >>> runs = [{"stage": "validate", "source": "", "shard": k, "status": s, "seconds": t, "counts": {"smes": 5}}
    ...         for k, (s, t) in enumerate([("succeeded", 1.5), ("failed", 0.25)])]
    >>> stage_summary(runs)  # doctest: +NORMALIZE_WHITESPACE
    [{'stage': 'validate', 'source': '', 'tasks': 2, 'failed': 1, 'seconds': 1.75, 'slowest': 1.5,
      'counts': {'smes': 10}}]
    """
    summary: dict[tuple[str, str], dict[str, Any]] = {}
    for run in runs:
        entry = summary.setdefault(
            (run["stage"], run["source"]),
            {
                "stage": run["stage"],
                "source": run["source"],
                "tasks": 0,
                "failed": 0,
                "seconds": 0.0,
                "slowest": 0.0,
                "counts": {},
            },
        )
        entry["tasks"] += 1
        entry["failed"] += int(run["status"] != "succeeded")
        entry["seconds"] = round(entry["seconds"] + run["seconds"], 3)
        entry["slowest"] = max(entry["slowest"], run["seconds"])
        for name, value in run["counts"].items():
            entry["counts"][name] = entry["counts"].get(name, 0) + value
    return list(summary.values())


def _without_pandas_metadata(frame: pd.DataFrame) -> pa.Table:
    """Arrow table of ``frame`` typed by its values alone (pandas' dtype notes do not survive list columns)."""
    return pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)


def _dossier_integers(table: pa.Table) -> pa.Table:
    """``table`` with the columns the dossier schema types as integers cast to that type where its
    values made them floating point or null-typed (a count missing for every SME of a shard), so
    every shard stages the same types."""
    from warehouse.dossier_schema import ALL_COLUMNS

    integers = {c.name: c.type for c in ALL_COLUMNS if pa.types.is_integer(c.type)}
    for index, field in enumerate(table.schema):
        wanted = integers.get(field.name)
        if wanted is not None and (pa.types.is_floating(field.type) or pa.types.is_null(field.type)):
            table = table.set_column(
                index, pa.field(field.name, wanted), pc.cast(table.column(index), wanted)
            )
    return table


def shard_plan(as_of: dt.date) -> shard_plans.Plan:
    """The shard plan of ``as_of`` (:func:`warehouse.shard_plans.plan_date`): recorded by the date's
    first step, else decided now from the SMEs and recorded; every step of the date uses its count."""
    with session_scope() as session:
        return shard_plans.plan_date(session, as_of, get_settings().shard_policy())


def plan_shards(as_of: dt.date) -> list[int]:
    """Shard numbers to map over on ``as_of`` (its shard plan)."""
    return shard_plan(as_of).shards


def shards_of(sme_ids: Iterable[str], as_of: dt.date) -> list[int]:
    """The shards of ``as_of``'s plan that hold ``sme_ids``."""
    from warehouse.shards import shard_of

    count = shard_plan(as_of).shard_count
    return sorted({shard_of(sme_id, count) for sme_id in sme_ids})


@recorded("ingest")
def ingest(
    source: str,
    shard: int,
    as_of: dt.date,
    *,
    sme_ids: Iterable[str] | None = None,
    consent_at: dt.datetime | None = None,
    full: bool = False,
) -> dict[str, Any]:
    """Pull one source for every consenting SME of one shard (or only ``sme_ids`` of it) and write
    its canonical table(s); an SME that uploaded files for the source instead has its rows read
    from them (:mod:`connectors.uploads`). An SME pulled successfully before is pulled only from
    its cursor on (:mod:`connectors.ingest`), unless ``full``."""
    from connectors.ingest import ingest_shard

    wanted = None if sme_ids is None else sorted(sme_ids)
    return ingest_shard(source, shard, as_of, sme_ids=wanted, consent_at=consent_at, full=full)


def previous_run_date(session: Any, stage: str, shard: int, as_of: dt.date) -> dt.date | None:
    """The latest date before ``as_of`` whose ``stage`` step of ``shard`` succeeded (None: none)."""
    from sqlalchemy import func

    return session.scalar(
        select(func.max(StageRun.as_of_date)).where(
            StageRun.stage == stage,
            StageRun.shard == shard,
            StageRun.source == "",
            StageRun.status == "succeeded",
            StageRun.as_of_date < as_of,
        )
    )


def _previous_staged(
    store: Store, step: str, stage: str, shard: int, as_of: dt.date
) -> tuple[str, pa.Table] | None:
    """The path and staged rows (with fingerprints and carry dates) of the last successful ``stage``
    of ``shard`` before ``as_of`` (None: none, or staged before rows carried them)."""
    from dossier.fingerprints import CARRY_UNTIL, FINGERPRINT

    with session_scope() as session:
        previous = previous_run_date(session, stage, shard, as_of)
        if previous is not None and not shard_plans.same_layout(
            session, previous, as_of, get_settings().shard_policy()
        ):
            return None  # that date's shard holds other SMEs: nothing is carried (a full run)
    if previous is None:
        return None
    path = store.layout.staging(step, previous.isoformat(), shard)
    if not store.exists(path):
        return None
    table = store.read_table(path)
    return (path, table) if {FINGERPRINT, CARRY_UNTIL} <= set(table.column_names) else None


def _carried(previous: pa.Table, keys: list[str], current: pd.DataFrame, as_of: dt.date) -> np.ndarray:
    """Which rows of ``previous`` are carried: ``keys`` (fingerprint included) equal a row of
    ``current`` and its carry date is after ``as_of``."""
    from dossier.fingerprints import CARRY_UNTIL

    earlier = previous.select(keys).to_pandas()
    same = pd.MultiIndex.from_frame(earlier.astype(str)).isin(
        pd.MultiIndex.from_frame(current[keys].astype(str))
    )
    until = previous.column(CARRY_UNTIL).to_numpy(zero_copy_only=False)
    due = np.array([d is None or d <= as_of for d in until], dtype=bool)
    return np.asarray(same, dtype=bool) & ~due


VALIDATION_SCHEMA = pa.schema(
    [
        pa.field("sme_id", pa.string()),
        pa.field("passed", pa.bool_()),
        pa.field("reasons", pa.list_(pa.string())),
        pa.field("input_fingerprint", pa.string()),
        pa.field("carry_until", pa.date32()),
    ]
)
"""Columns of a staged validation file: one row per SME of the shard."""


class SharedReads:
    """The canonical shards the steps of one task share (validate, then evaluate): each is opened
    by the first step that needs it (so its failure is that step's, recorded as such) and keeps
    the rows it reads (:attr:`~warehouse.canonical_files.CanonicalShard.keep_rows`), so the next
    step reads no file again for the SMEs it already read."""

    def __init__(self, also: Iterable[str] = ()) -> None:
        self._opened: dict[tuple[dt.date, int], CanonicalShard] = {}
        self.also = frozenset(also)
        """SMEs a later step will read too: an incremental validation reads their rows with its own."""

    def shard(self, store: Store, as_of: dt.date, shard: int) -> CanonicalShard:
        """The :class:`~warehouse.canonical_files.CanonicalShard` of ``shard`` on ``as_of``, opened once."""
        from warehouse.canonical_files import CanonicalShard

        key = (as_of, shard)
        if key not in self._opened:
            opened = CanonicalShard.open(store, as_of, shard)
            opened.keep_rows = True
            self._opened[key] = opened
        return self._opened[key]


def _open_shard(store: Store, as_of: dt.date, shard: int, reads: SharedReads | None) -> CanonicalShard:
    from warehouse.canonical_files import CanonicalShard

    return CanonicalShard.open(store, as_of, shard) if reads is None else reads.shard(store, as_of, shard)


@recorded("validate")
def validate(
    shard: int, as_of: dt.date, *, full: bool = False, reads: SharedReads | None = None
) -> dict[str, Any]:
    """Run every suite once on the shard's tables; quarantine failing SMEs; stage the outcome.

    Incremental unless ``full``: an SME that passed on the last successful validation of this shard
    before ``as_of``, whose input fingerprint (:mod:`dossier.fingerprints`: its canonical rows'
    digests, read from the canonical files' sidecars, the as-of month and the suites) is the one
    recorded then, and whose carry date (the first as-of date its rows' dates compare otherwise
    with the suites' bounds) is after ``as_of`` keeps that outcome; only the other SMEs' rows are
    read and validated (and recorded) again. A failing SME is always validated again, so its
    quarantine entries are those of the date. A shard with nothing to validate again copies its
    previous staged file. ``reads`` shares the shard's rows with the evaluation that follows
    (:func:`validate_and_evaluate`).
    """
    from dossier import fingerprints as fp
    from expectations.runner import record_validation, validate_shard

    store = Store.from_settings()
    path = store.layout.staging(VALIDATION_STEP, as_of.isoformat(), shard)
    shard_in = _open_shard(store, as_of, shard, reads)
    smes = shard_in.smes()
    current = pd.DataFrame({"sme_id": pd.Series(smes, dtype=object)})
    prints = fp.fingerprints(shard_in.digests(smes), current, context=fp.validation_context(as_of))
    current[fp.FINGERPRINT] = prints.to_numpy()
    carried = VALIDATION_SCHEMA.empty_table()
    previous = None if full else _previous_staged(store, VALIDATION_STEP, "validate", shard, as_of)
    if previous is not None:
        previous_path, earlier = previous
        keep = _carried(earlier, ["sme_id", fp.FINGERPRINT], current, as_of)
        keep &= earlier.column("passed").to_numpy(zero_copy_only=False).astype(bool)
        carried = earlier.filter(pa.array(keep)).select(VALIDATION_SCHEMA.names).cast(VALIDATION_SCHEMA)
        if carried.num_rows == earlier.num_rows == len(smes):
            store.write_bytes(path, store.read_bytes(previous_path))
            return _validated(shard, as_of, carried, 0, path)
    again = sorted(set(smes) - set(carried.column("sme_id").to_pylist()))
    staged = carried
    if again or carried.num_rows == 0:
        if reads is not None and reads.also and carried.num_rows:
            shard_in.frames(sorted(set(again) | reads.also))  # one read for the evaluation too
        checked = shard_in.frames(again if carried.num_rows else None)
        if carried.num_rows:
            checked = {name: frame for name, frame in checked.items() if len(frame)}
        validation = validate_shard(checked, as_of=as_of, shard=shard)
        with session_scope() as session:
            record_validation(session, validation)
        status = validation.sme_status
        ids = status["sme_id"].astype(str).tolist()
        until = fp.carry_until(checked, ids, as_of, fp.validation_bounds)
        by_sme = dict(zip(current["sme_id"], current[fp.FINGERPRINT], strict=True))
        fresh = pa.Table.from_pydict(
            {
                "sme_id": ids,
                "passed": status["passed"].astype(bool).tolist(),
                "reasons": [list(r) for r in status["reasons"]],
                "input_fingerprint": [by_sme[s] for s in ids],
                "carry_until": until.reindex(ids).tolist(),
            },
            schema=VALIDATION_SCHEMA,
        )
        staged = pa.concat_tables([fresh, carried]).sort_by("sme_id") if carried.num_rows else fresh
    store.write_table(path, staged)
    return _validated(shard, as_of, staged, staged.num_rows - carried.num_rows, path)


def _validated(shard: int, as_of: dt.date, staged: pa.Table, validated: int, path: str) -> dict[str, Any]:
    failed = staged.num_rows - int(pc.sum(staged.column("passed")).as_py() or 0)
    return {
        "shard": shard,
        "as_of": as_of.isoformat(),
        "smes": staged.num_rows,
        "passed": staged.num_rows - failed,
        "failed": failed,
        "validated": validated,
        "carried": staged.num_rows - validated,
        "path": path,
    }


HOLD_STAGE = "evaluate"
"""Quarantine stage of a dossier held because a source its scope covers could not be pulled."""

FAILED_PULLS = ("failed", "quarantined")


def failed_pulls(
    session: Any, as_of: dt.date, sme_ids: Iterable[str] | None = None
) -> dict[str, dict[str, str]]:
    """Per SME (of ``sme_ids``, default every SME): source -> why its pull for ``as_of`` failed
    (a provider error or a bad payload). Failed pulls are few, so the default reads them all."""
    query = select(
        IngestionRun.sme_id, IngestionRun.source, IngestionRun.status, IngestionRun.error_message
    ).where(IngestionRun.as_of_date == as_of, IngestionRun.status.in_(FAILED_PULLS))
    if sme_ids is None:
        rows = list(session.execute(query))
    else:
        rows = [
            row
            for chunk in in_chunks(sme_ids)
            for row in session.execute(query.where(IngestionRun.sme_id.in_(chunk)))
        ]
    failures: dict[str, dict[str, str]] = {}
    for sme_id, source, status, message in rows:
        failures.setdefault(sme_id, {})[source] = f"{status}: {message or 'no message'}"
    return failures


def validation_status(store: Store, as_of: dt.date, shard: int) -> pd.DataFrame:
    """The staged validation outcome of one shard (sme_id, passed), empty when validation did not run."""
    path = store.layout.staging(VALIDATION_STEP, as_of.isoformat(), shard)
    if not store.exists(path):
        return pd.DataFrame({"sme_id": pd.Series(dtype=str), "passed": pd.Series(dtype=bool)})
    return store.read_table(path, columns=["sme_id", "passed"]).to_pandas()


@dataclass
class EvaluationPlan:
    """What :func:`evaluate` does for one shard: the (SME, scope) rows to score and the holds."""

    smes: pd.DataFrame
    """sme_id, scope, history_months, sources, industry, region, size_band, founded_year."""
    holds: list[dict[str, Any]]
    """sme_id, scope, source, reason of every dossier held for a failed pull."""
    considered: list[str]
    """The shard's SMEs that had data or a failed pull on the date (whose holds this run decides)."""


def smes_to_evaluate(
    session: Any,
    store: Store,
    as_of: dt.date,
    shard: int,
    *,
    now: dt.datetime,
    sme_ids: Iterable[str] | None = None,
    then: dt.datetime | None = None,
) -> EvaluationPlan:
    """The (SME, consent scope) pairs of the shard to evaluate, and the dossiers held back.

    A pair is evaluated when the SME passed validation and its consents (one active both at the
    as-of instant and ``now``) give that scope to some lender (:func:`warehouse.consent.evaluation_scopes`).
    It is **held** instead when a source of the scope could not be pulled that day (a failed or
    quarantined pull): failure is not absence, so no dossier is made that would read the source as
    missing, and the SME's previous dossier stays current.

    With ``sme_ids`` only those SMEs are considered; ``then`` (default: the as-of instant) is the
    other instant consents must be active at.
    """
    status = validation_status(store, as_of, shard)
    wanted = None if sme_ids is None else set(sme_ids)
    if wanted is not None:
        status = status[status["sme_id"].isin(wanted)]
    passed = set(status.loc[status["passed"].astype(bool), "sme_id"])
    failures = failed_pulls(session, as_of, None if wanted is None else sorted(wanted))
    count = shard_plans.plan_date(session, as_of, get_settings().shard_policy()).shard_count
    considered = sorted(set(status["sme_id"]) | set(in_shard(failures, shard, count)))
    then = then or as_of_instant(as_of)
    scopes = consent.scope_frame(session, considered, then=then, now=now)
    failed = pd.DataFrame(
        [
            (sme_id, source, why)
            for sme_id, by_source in failures.items()
            for source, why in by_source.items()
        ],
        columns=["sme_id", "source", "reason"],
    )
    held = scopes.merge(failed, on="sme_id")  # failed pulls are few: this frame stays small
    covered = [source in sources for source, sources in zip(held["source"], held["sources"], strict=True)]
    held = held.loc[np.array(covered, dtype=bool)]
    held = held.sort_values(["sme_id", "scope", "source"], ignore_index=True)
    holds = held[["sme_id", "scope", "source", "reason"]].to_dict("records")
    held_pairs = pd.MultiIndex.from_frame(held[["sme_id", "scope"]])
    pairs = pd.MultiIndex.from_frame(scopes[["sme_id", "scope"]])
    frame = scopes[~pairs.isin(held_pairs) & scopes["sme_id"].isin(passed)]
    frame = frame[["sme_id", "scope", "history_months", "sources"]]
    profile = select_frame(
        session,
        select(Sme.sme_id, Sme.industry, Sme.region, Sme.size_band, Sme.founded_year),
        ["sme_id", "industry", "region", "size_band", "founded_year"],
        where_in=(Sme.sme_id, frame["sme_id"]),
    )
    frame = frame.merge(profile, on="sme_id", how="left").sort_values(["sme_id", "scope"], ignore_index=True)
    return EvaluationPlan(frame, holds, considered)


def record_holds(
    session: Any, as_of: dt.date, sme_ids: Iterable[str], holds: list[dict[str, Any]], *, at: dt.datetime
) -> None:
    """Open a quarantine entry per held dossier; resolve the shard's earlier holds that no longer apply."""
    still = {(h["sme_id"], h["scope"], h["source"]) for h in holds}
    lifted = [
        entry_id
        for chunk in in_chunks(sme_ids)
        for entry_id, sme_id, scope, source in session.execute(
            select(
                QuarantineEntry.id, QuarantineEntry.sme_id, QuarantineEntry.record, QuarantineEntry.source
            ).where(
                QuarantineEntry.as_of_date == as_of,
                QuarantineEntry.stage == HOLD_STAGE,
                QuarantineEntry.resolved_at.is_(None),
                QuarantineEntry.sme_id.in_(chunk),
            )
        )
        if (sme_id, scope, source) not in still
    ]
    for chunk in in_chunks(lifted):
        session.execute(update(QuarantineEntry).where(QuarantineEntry.id.in_(chunk)).values(resolved_at=at))
    upsert(
        session,
        QuarantineEntry,
        [
            {
                "sme_id": h["sme_id"],
                "as_of_date": as_of,
                "stage": HOLD_STAGE,
                "source": h["source"],
                "table_name": "",
                "record": h["scope"],
                "field": "",
                "reason": f"dossier held: the {h['source']} pull failed ({h['reason']})"[:512],
                "raw_sha256": None,
                "resolved_at": None,
            }
            for h in holds
        ],
        key=("sme_id", "as_of_date", "stage", "source", "record", "field", "reason"),
        update=("resolved_at",),
    )


@recorded("evaluate")
def evaluate(
    shard: int,
    as_of: dt.date,
    *,
    now: dt.datetime | None = None,
    sme_ids: Iterable[str] | None = None,
    consent_at: dt.datetime | None = None,
    full: bool = False,
    reads: SharedReads | None = None,
) -> dict[str, Any]:
    """Score the shard's validated SMEs (or only ``sme_ids`` of them) once per consent scope and
    stage their rows; with ``sme_ids`` the other SMEs' staged rows are kept. ``reads`` serves the
    rows the validation before it read (:func:`validate_and_evaluate`).

    ``now`` (default: the current instant) is when consents are read, together with ``consent_at``
    (default: the as-of instant). Dossiers held for a failed pull are recorded in the quarantine
    (stage ``evaluate``).

    Incremental unless ``full`` (or ``sme_ids``): an (SME, scope) row whose input fingerprint
    (:mod:`dossier.fingerprints`: the SME's canonical rows and their dates against the as-of
    bounds, the as-of month, the scope, the SME's profile, the model version and the lending terms)
    equals the one staged by the last successful evaluation of this shard before ``as_of`` keeps
    that row; only the others are scored. A new model version changes every fingerprint.
    """
    import evaluation
    from dossier import fingerprints as fp

    store = Store.from_settings()
    at = now or dt.datetime.now(dt.UTC)
    wanted = None if sme_ids is None else set(sme_ids)
    with session_scope() as session:
        plan = smes_to_evaluate(session, store, as_of, shard, now=at, sme_ids=wanted, then=consent_at)
        record_holds(session, as_of, plan.considered, plan.holds, at=at)
        suspended = suspended_ids(session)
    shard_in = _open_shard(store, as_of, shard, reads)
    terms = lending_terms(get_settings())
    ids = plan.smes["sme_id"]
    inputs = plan.smes.assign(agent_marks=_visit_marks(shard_in, suspended, ids).reindex(ids).to_numpy())
    smes = plan.smes.assign(
        **{
            fp.FINGERPRINT: fp.fingerprints(
                shard_in.digests(ids),
                inputs,
                context=fp.scoring_context(as_of, evaluation.MODEL_VERSION, terms),
            )
        }
    )
    columns = [*evaluation.SCOPED_COLUMNS, *evaluation.RATIO_COLUMNS, fp.FINGERPRINT, fp.CARRY_UNTIL]
    path = store.layout.staging(SCORES_STEP, as_of.isoformat(), shard)
    carried = None
    if not full and wanted is None:
        previous = _previous_staged(store, SCORES_STEP, "evaluate", shard, as_of)
        if previous is not None and all(name in previous[1].column_names for name in columns):
            previous_path, earlier = previous
            keep = _carried(earlier, ["sme_id", "scope", fp.FINGERPRINT], smes, as_of)
            carried = earlier.filter(pa.array(keep)).select(columns)
    todo = smes
    if carried is not None and carried.num_rows:
        done = pd.MultiIndex.from_frame(carried.select(["sme_id", "scope"]).to_pandas())
        todo = smes[~pd.MultiIndex.from_frame(smes[["sme_id", "scope"]]).isin(done)]
    no_data = pd.Series([], dtype=bool)
    copied = False
    if carried is not None and carried.num_rows and todo.empty:
        scored, staged = None, carried
        if carried.num_rows == earlier.num_rows:  # every row carried: the same file
            store.write_bytes(path, store.read_bytes(previous_path))
            copied = True
    else:
        # evaluate_scopes selects each scope's SMEs itself: rows of others kept from validation may stay
        tables = shard_in.frames(sorted(set(todo["sme_id"])) if carried is not None else ids, others=True)
        # a suspended field agent's visits verify nothing (warehouse.agents, evaluation.features)
        tables["survey_visits"] = mark_suspended_visits(tables["survey_visits"], suspended)
        scored = evaluation.evaluate_scopes(
            tables, todo.drop(columns=[fp.FINGERPRINT]), as_of=as_of, terms=terms, with_ratios=True
        )
        no_data = scored["sources_used"].map(len) == 0
        scored = scored[~no_data].reset_index(drop=True)
        prints = pd.Series(
            todo[fp.FINGERPRINT].to_numpy(), index=pd.MultiIndex.from_frame(todo[["sme_id", "scope"]])
        )
        scored[fp.FINGERPRINT] = pd.array(
            prints.reindex(pd.MultiIndex.from_frame(scored[["sme_id", "scope"]])).to_numpy(), dtype="str"
        )
        until = fp.carry_until(tables, todo["sme_id"], as_of, fp.scoring_bounds)
        scored[fp.CARRY_UNTIL] = until.reindex(scored["sme_id"].astype(object)).to_numpy()
        staged = _dossier_integers(_without_pandas_metadata(scored[columns]))
        if carried is not None and carried.num_rows:
            carried = _dossier_integers(carried)  # staged before the counts were typed
            staged = pa.concat_tables([staged, carried], promote_options="permissive")
        staged = staged.sort_by([("sme_id", "ascending"), ("scope", "ascending")])
    kept = 0 if carried is None else carried.num_rows
    stage_counts(store, as_of, shard, staged.to_pandas() if kept or scored is None else scored)
    counts = {
        "evaluated": staged.num_rows,
        "scored": 0 if scored is None else len(scored),
        "carried": kept,
        "smes": len(pc.unique(staged.column("sme_id"))),
        "scopes": len(pc.unique(staged.column("scope"))),
    }
    if wanted is not None and store.exists(path):
        staged = _beside_others(store.read_table(path), staged, wanted)
    if not copied:
        store.write_table(path, staged)
    return {
        "shard": shard,
        "as_of": as_of.isoformat(),
        **counts,
        "held": len({(h["sme_id"], h["scope"]) for h in plan.holds}),
        "no_data_in_scope": int(no_data.sum()),
        "model_version": evaluation.MODEL_VERSION,
        "path": path,
    }


def scores_due(store: Store, shard: int, as_of: dt.date) -> list[str]:
    """The SMEs of ``shard`` whose rows staged by the last successful evaluation before ``as_of``
    may not be carried to it (their carry date is ``as_of`` or earlier), sorted: they are scored
    again whatever their inputs."""
    from dossier.fingerprints import CARRY_UNTIL

    previous = _previous_staged(store, SCORES_STEP, "evaluate", shard, as_of)
    if previous is None:
        return []
    table = previous[1]
    until = table.column(CARRY_UNTIL)
    due = pc.fill_null(pc.less_equal(until, pa.scalar(as_of, until.type)), True)
    return sorted(set(table.column("sme_id").filter(due).to_pylist()))


def validate_and_evaluate(
    shard: int,
    as_of: dt.date,
    *,
    full: bool = False,
    now: dt.datetime | None = None,
    sme_ids: Iterable[str] | None = None,
    consent_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """:func:`validate` the shard, then :func:`evaluate` it, reading its canonical files once: the
    rows validation reads are kept for the evaluation (each step still records its own
    ``stage_runs`` row, and a failed validation stops before any scoring). What one task per shard
    runs. Returns both summaries (``validate``, ``evaluate``) and each step's ``seconds``.

    An incremental validation reads, with the SMEs it checks again, those whose staged scores are
    due again on ``as_of`` (:func:`scores_due`), so the evaluation finds their rows read too."""
    store = Store.from_settings()
    due = () if full or sme_ids is not None else scores_due(store, shard, as_of)
    reads = SharedReads(also=due)
    began = time.perf_counter()
    validated = validate(shard, as_of, full=full, reads=reads)
    middle = time.perf_counter()
    evaluated = evaluate(
        shard, as_of, now=now, sme_ids=sme_ids, consent_at=consent_at, full=full, reads=reads
    )
    opened = reads.shard(store, as_of, shard)
    return {
        "shard": shard,
        "as_of": as_of.isoformat(),
        "validate": validated,
        "evaluate": evaluated,
        "file_reads": opened.file_reads,
        "seconds": {
            "validate": round(middle - began, 3),
            "evaluate": round(time.perf_counter() - middle, 3),
        },
    }


def _visit_marks(shard_in: Any, suspended: Iterable[str], sme_ids: Iterable[str]) -> pd.Series:
    """Per SME: the suspended agents among those who visited it, sorted and joined ("" for none):
    with its rows unchanged, what decides which of its visits are marked (:func:`mark_suspended_visits`)."""
    wanted = sorted(set(sme_ids))
    agents = set(suspended)
    if not agents or not wanted:
        return pd.Series("", index=pd.Index(wanted, dtype=object), dtype=object)
    visits = shard_in.table("survey_visits", wanted, columns=["sme_id", "agent_id"])
    visits = visits[visits["agent_id"].isin(agents)]
    marks = visits.groupby("sme_id")["agent_id"].agg(lambda a: ",".join(sorted(set(a))))
    return marks.reindex(pd.Index(wanted, dtype=object)).fillna("").astype(object)


def _beside_others(previous: pa.Table, fresh: pa.Table, sme_ids: set[str]) -> pa.Table:
    """``fresh`` with the rows of ``previous`` that belong to other SMEs, sorted by SME and scope."""
    import pyarrow.compute as pc

    others = previous.filter(pc.invert(pc.is_in(previous.column("sme_id"), pa.array(sorted(sme_ids)))))
    if fresh.num_rows == 0:
        return others
    if others.num_rows == 0:
        return fresh
    merged = pa.concat_tables([others, fresh.select(others.column_names)], promote_options="permissive")
    return merged.sort_by([("sme_id", "ascending"), ("scope", "ascending")])


def lending_terms(settings: Any) -> Any:
    """The limit and rate constants of ``settings`` (``DOSSIER_LENDING_*``) for evaluation."""
    from evaluation.scoring import LendingTerms

    return LendingTerms(
        dscr=settings.lending_dscr,
        term_months=settings.lending_term_months,
        revenue_cap=settings.lending_revenue_cap,
        loss_given_default=settings.lending_loss_given_default,
        funding_cost=settings.lending_funding_cost,
        operating_cost=settings.lending_operating_cost,
        capital_charge=settings.lending_capital_charge,
        max_rate=settings.lending_max_rate,
        max_pd=settings.lending_max_pd,
    )


def staged_scores(store: Store, as_of: dt.date) -> Iterator[pd.DataFrame]:
    """The staged score frames of every shard, one at a time (bounded memory)."""
    import evaluation

    for path in store.list(store.layout.staging_dir(SCORES_STEP, as_of.isoformat()), suffix=".parquet"):
        yield store.read_table(path, columns=list(evaluation.SCOPED_COLUMNS)).to_pandas()


@recorded("publish")
def publish(as_of: dt.date, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Publish the staged dossiers of every shard to lenders' store, manifest last, then the catalog."""
    import evaluation
    from warehouse.dossier_store import publish as publish_dossiers

    store = Store.from_settings()
    with session_scope() as session:
        summary = publish_dossiers(
            session,
            store,
            as_of=as_of,
            scored=staged_scores(store, as_of),
            model_version=evaluation.MODEL_VERSION,
            now=now or dt.datetime.now(dt.UTC),
        )
    summary["psi"] = publish_stability(store, as_of)["psi"]
    refresh_feeds(store)
    return summary


def refresh_feeds(store: Store, lender_ids: Iterable[str] | None = None) -> None:
    """Once a change is committed, sync the feeds of the lenders reading theirs over the API, so
    that their next reads only read (:func:`warehouse.feed.refresh_lenders`; a read is correct
    without it, so a failure here is only logged)."""
    from warehouse.db import get_engine
    from warehouse.feed import refresh_lenders

    try:
        refresh_lenders(get_engine(), store, lender_ids=lender_ids)
    except Exception:
        log.exception("lender feeds not refreshed; their next reads plan them")


def push_webhooks() -> dict[str, Any]:
    """Push lenders' feeds to their webhook endpoints once (:func:`warehouse.webhooks.run_once`): the
    feed's delivery for every lender with an enabled endpoint, the new feed events queued, and one
    send pass over what is due. For deployments without the web service's worker; what fails now is
    retried on the schedule by the next pass (the next publish, ``dossier webhooks send`` or a worker)."""
    from warehouse import webhooks
    from warehouse.db import get_engine

    return webhooks.run_once(get_engine(), Store.from_settings(), get_settings().webhook_config())


def build_data_docs(as_of: dt.date) -> dict[str, Any]:
    """Render the Great Expectations Data Docs of ``as_of``'s validations into the home folder."""
    from expectations.runner import build_data_docs as build

    index = build(as_of=as_of)
    return {"as_of": as_of.isoformat(), "data_docs": str(index)}


def ingestion_summary(as_of: dt.date) -> dict[str, dict[str, int]]:
    """Counts of ingestion outcomes per source for ``as_of``: {source: {status: n}}."""
    counts: dict[str, dict[str, int]] = {s: {} for s in SOURCES}
    with session_scope() as session:
        for source, status in session.execute(
            select(IngestionRun.source, IngestionRun.status).where(IngestionRun.as_of_date == as_of)
        ):
            counts.setdefault(source, {})
            counts[source][status] = counts[source].get(status, 0) + 1
    return counts


def run_for_smes(
    sme_ids: Iterable[str],
    *,
    as_of: dt.date | None = None,
    consent_at: dt.datetime | None = None,
    on_step: Any = None,
) -> dict[str, Any]:
    """Ingest, validate, evaluate and publish ``sme_ids`` now, with the steps above (in this process).

    ``as_of`` defaults to today (UTC) and ``consent_at`` to the current instant; ``on_step(name)``
    is called before each step (``ingest``, ``validate``, ``evaluate``, ``publish``). The other SMEs'
    canonical rows, staged scores and published versions stay as they were.
    """
    wanted = sorted(set(sme_ids))
    if not wanted:
        raise ValueError("run_for_smes needs at least one SME id")
    as_of = as_of or parse_as_of(None)
    consent_at = consent_at or dt.datetime.now(dt.UTC)
    shards = shards_of(wanted, as_of)
    seconds: dict[str, float] = {}
    current: list[tuple[str, float]] = []

    def step(name: str) -> None:
        """Close the timing of the step running, then start ``name`` (empty: the end)."""
        now = time.perf_counter()
        if current:
            done, since = current.pop()
            seconds[done] = round(now - since, 2)
        if name:
            current.append((name, now))
            if on_step is not None:
                on_step(name)

    step("ingest")
    pulled = {
        source: [ingest(source, shard, as_of, sme_ids=wanted, consent_at=consent_at) for shard in shards]
        for source in SOURCES
    }
    reads = SharedReads()  # each shard's files are read once, by validate and evaluate together
    step("validate")
    validated = [validate(shard, as_of, reads=reads) for shard in shards]
    step("evaluate")
    evaluated = [
        evaluate(shard, as_of, sme_ids=wanted, consent_at=consent_at, reads=reads) for shard in shards
    ]
    step("publish")
    published = publish(as_of)
    step("")
    return {
        "sme_ids": wanted,
        "as_of": as_of.isoformat(),
        "shards": shards,
        "pulled": {source: sum(r["pulled"] for r in results) for source, results in pulled.items()},
        "uploaded": {source: sum(r["uploaded"] for r in results) for source, results in pulled.items()},
        "failed_validation": sum(v["failed"] for v in validated),
        "evaluated": sum(e["evaluated"] for e in evaluated),
        "held": sum(e["held"] for e in evaluated),
        "new_or_changed": published["new_or_changed"],
        "kept": published["kept"],
        "published_rows": published["rows"],
        "seconds": seconds,
    }


def run_scope(sme_ids: Any = None, consent_at: Any = None) -> dict[str, Any]:
    """The scope of a DAG run from its conf: every SME (``sme_ids`` None), or these SMEs with the
    instant their consents are read at (``consent_at``, default now).

    >>> run_scope()
    {'sme_ids': None, 'consent_at': None}
    >>> run_scope(["SME-2", "SME-1", "SME-2"], "2026-12-01T14:00:00+00:00")
    {'sme_ids': ['SME-1', 'SME-2'], 'consent_at': '2026-12-01T14:00:00+00:00'}
    >>> run_scope("SME-1")
    Traceback (most recent call last):
    ...
    warehouse.errors.InputError: conf sme_ids must be a list of SME ids, not 'SME-1'
    """
    from warehouse.errors import InputError

    if sme_ids is None:
        return {"sme_ids": None, "consent_at": None}
    if (
        not isinstance(sme_ids, list | tuple)
        or not sme_ids
        or not all(isinstance(s, str) and s for s in sme_ids)
    ):
        raise InputError(f"conf sme_ids must be a list of SME ids, not {sme_ids!r}")
    if consent_at in (None, ""):
        instant = dt.datetime.now(dt.UTC)
    else:
        try:
            instant = dt.datetime.fromisoformat(str(consent_at))
        except ValueError:
            raise InputError(f"conf consent_at {consent_at!r} is not an ISO 8601 instant") from None
        if instant.tzinfo is None:
            raise InputError(f"conf consent_at {consent_at!r} needs a time zone, e.g. +00:00")
    return {"sme_ids": sorted(set(sme_ids)), "consent_at": instant.astimezone(dt.UTC).isoformat()}


def carried_scope(extras: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    """The scope the Asset events that triggered a run carry: the union of their SMEs and the
    latest ``consent_at``, or every SME as soon as one event is not scoped (or none carries a scope).

    >>> carried_scope([{"sme_ids": ["SME-2"], "consent_at": "2026-12-01T10:00:00+00:00"},
    ...                {"sme_ids": ["SME-1"], "consent_at": "2026-12-01T11:00:00+00:00"}])
    {'sme_ids': ['SME-1', 'SME-2'], 'consent_at': '2026-12-01T11:00:00+00:00'}
    >>> carried_scope([{"sme_ids": ["SME-2"]}, {"as_of": "2026-12-01"}])
    {'sme_ids': None, 'consent_at': None}
    """
    extras = list(extras)
    if not extras or any(not extra or not extra.get("sme_ids") for extra in extras):
        return run_scope()
    smes = sorted({s for extra in extras for s in extra["sme_ids"]})
    instants = sorted(dt.datetime.fromisoformat(e["consent_at"]) for e in extras if e.get("consent_at"))
    return run_scope(smes, instants[-1].isoformat() if instants else None)


def scoped_shards(scope: dict[str, Any], as_of: dt.date) -> list[int]:
    """The shards a run of ``scope`` maps over on ``as_of``: every shard of the date's plan, or those
    holding its SMEs. Logs the date's count and why (what the DAGs' ``plan_shards`` task shows)."""
    plan = shard_plan(as_of)
    log.info("shard plan of %s: %s", as_of, plan.describe())
    if scope.get("sme_ids") is None:
        return plan.shards
    return shards_of(scope["sme_ids"], as_of)


def scope_arguments(scope: dict[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments of :func:`ingest`, :func:`evaluate` and :func:`validate_and_evaluate` for a run of ``scope``."""
    if not scope or scope.get("sme_ids") is None:
        return {}
    return {"sme_ids": scope["sme_ids"], "consent_at": dt.datetime.fromisoformat(scope["consent_at"])}
