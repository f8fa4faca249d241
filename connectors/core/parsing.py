"""What every parser shares: batches, typed coercion that reports bad fields, de-duplication, the cast.

Parsers are pure functions of raw bytes. They read a *batch* - the landed pages of many SMEs at
once, each page tagged with its SME (:class:`SmePages`) - into one wide frame (one row per record,
with ``sme_id``, ``source_record`` and ``raw_sha256`` beside it), coerce whole columns at once, and
collect every field that fails into a *rejects* frame (``sme_id``, ``record``, ``field``,
``reason``, ``raw_sha256``) instead of stopping at the first. Working on a batch keeps the pandas
overhead per shard, not per SME.

:func:`build_result` then holds back every row of an SME with a reject (that SME and source go to
quarantine and contribute nothing), drops exact duplicates (logged, ``ignorable``), keeps
conflicting ones for validation to catch, and casts to the canonical schema.

>>> frame = pd.DataFrame({"amount": ["1.5", "x", None], "sme_id": "SME-1",
...                       "source_record": ["r[0]", "r[1]", "r[2]"], "raw_sha256": "h"})
>>> values, rejects = to_number(frame, "amount", "amount")
>>> values.tolist()[:2], rejects["record"].tolist(), rejects["reason"].tolist()
([1.5, nan], ['r[1]', 'r[2]'], ["not a number: 'x'", 'missing'])
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from connectors.core.errors import ParseReject
from connectors.core.streams import RawPage
from warehouse.canonical import TABLES, TABLES_BY_SOURCE, CanonicalTable

log = logging.getLogger(__name__)

REJECT_COLUMNS = ["sme_id", "record", "field", "reason", "raw_sha256"]
LINEAGE_COLUMNS = ("source_record", "raw_sha256")


@dataclass(frozen=True)
class SmePages:
    """The raw pages one SME's pull landed, in the order they were received."""

    sme_id: str
    pages: Sequence[RawPage]


def single(sme_id: str, body: bytes, *, source: str, label: str, media_type: str) -> list[SmePages]:
    """A batch of one file for one SME (what ``parse_bytes`` of every parser reads)."""
    return [SmePages(sme_id, [RawPage(source, label, "", body, media_type)])]


# --- rejects -------------------------------------------------------------------------------------------


def no_rejects() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype="str") for name in REJECT_COLUMNS})


def rejects_where(frame: pd.DataFrame, mask: pd.Series, field: str, reasons: pd.Series | str) -> pd.DataFrame:
    """One reject for every row of ``frame`` where ``mask`` holds, naming ``field``.

    ``frame`` needs ``sme_id``, ``source_record`` and ``raw_sha256`` columns; ``reasons`` is one
    text for all, or a Series indexed like ``frame`` (at least on the masked rows).
    """
    mask = mask.fillna(False).astype(bool)
    if not mask.any():
        return no_rejects()
    reason = reasons.reindex(frame.index[mask]).astype("str") if isinstance(reasons, pd.Series) else reasons
    return pd.DataFrame(
        {
            "sme_id": frame.loc[mask, "sme_id"].astype("str"),
            "record": frame.loc[mask, "source_record"].astype("str"),
            "field": field,
            "reason": reason,
            "raw_sha256": frame.loc[mask, "raw_sha256"].astype("str"),
        }
    ).reset_index(drop=True)


def page_reject(
    sme_id: str, page: RawPage, field: str, reason: str, record: str | None = None
) -> pd.DataFrame:
    """A reject for a whole payload (not JSON, no record list) or one entry of it."""
    return pd.DataFrame(
        {
            "sme_id": [sme_id],
            "record": [page.label if record is None else record],
            "field": [field],
            "reason": [reason],
            "raw_sha256": [page.sha256],
        }
    )


def combine_rejects(parts: Iterable[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else no_rejects()


# --- typed coercion, a column at a time ---------------------------------------------------------------


def _column(frame: pd.DataFrame, column: str) -> pd.Series:
    if column in frame:
        return frame[column]
    return pd.Series(None, index=frame.index, dtype="object")


def _missing(raw: pd.Series) -> pd.Series:
    """Null, or a string that is empty after trimming."""
    return raw.isna() | (raw.astype("str").str.strip() == "")


_NO_BOOLEANS = frozenset({"string", "empty", "floating", "integer", "mixed-integer-float", "decimal"})
"""What :func:`pandas.api.types.infer_dtype` says of an object column that holds no booleans."""


def as_numbers(raw: pd.Series) -> pd.Series:
    """``raw`` as float64, NaN where it is not a number (as :func:`pandas.to_numeric` coerces).

    A column of plain decimal strings (what XML and CSV give) is parsed by Arrow's cast in one
    pass; anything it will not take whole (spaces, odd spellings, mixed types) goes to pandas.

    >>> as_numbers(pd.Series(["1.5", None, "-2e3"], dtype="object")).tolist()
    [1.5, nan, -2000.0]
    >>> as_numbers(pd.Series([" 7 ", "x"], dtype="object")).tolist()
    [7.0, nan]
    """
    if isinstance(raw.dtype, pd.StringDtype) or (
        raw.dtype == object and pd.api.types.infer_dtype(raw, skipna=True) == "string"
    ):
        try:
            parsed = pc.cast(
                pa.array(raw.to_numpy(dtype=object, na_value=None), type=pa.string()), pa.float64()
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
        else:
            return pd.Series(parsed.to_numpy(zero_copy_only=False), index=raw.index, dtype="float64")
    return pd.to_numeric(raw, errors="coerce").astype("float64")


def _missing_where(raw: pd.Series, candidates: pd.Series) -> pd.Series:
    """:func:`_missing` computed only on the ``candidates`` rows (False elsewhere): a parsed value is never missing."""
    missing = pd.Series(False, index=raw.index, dtype=bool)
    if candidates.any():
        missing[candidates] = _missing(raw[candidates])
    return missing


def _shown(raw: pd.Series) -> pd.Series:
    """How a bad value is quoted in a reason (``'12O4.50'``), computed for the given rows only."""
    return pd.Series([repr(value)[:60] for value in raw], index=raw.index, dtype="str")


def to_number(
    frame: pd.DataFrame, column: str, field: str, *, required: bool = True
) -> tuple[pd.Series, pd.DataFrame]:
    """``frame[column]`` as float64; rejects name ``field`` for text that is not a finite number.

    Decimal strings and JSON numbers are both accepted; booleans are not amounts. A missing value
    is a reject only when ``required``.
    """
    raw = _column(frame, column)
    if raw.dtype == object and pd.api.types.infer_dtype(raw, skipna=True) not in _NO_BOOLEANS:
        raw = raw.where(~raw.map(lambda value: isinstance(value, bool | np.bool_)), "<boolean>")
    numbers = as_numbers(raw)
    missing = _missing_where(raw, numbers.isna())
    bad = ~missing & ~np.isfinite(numbers)
    rejects = [rejects_where(frame, bad, field, "not a number: " + _shown(raw[bad]))]
    if required:
        rejects.append(rejects_where(frame, missing, field, "missing"))
    return numbers.where(~bad), combine_rejects(rejects)


def to_datetime(
    frame: pd.DataFrame,
    column: str,
    field: str,
    *,
    fmt: str | None = None,
    unit: str | None = None,
    required: bool = True,
) -> tuple[pd.Series, pd.DataFrame]:
    """``frame[column]`` as UTC timestamps (by ``fmt``, ISO 8601, or epoch ``unit``), with rejects."""
    raw = _column(frame, column)
    if unit is not None:
        numbers = as_numbers(raw)
        missing = _missing_where(raw, numbers.isna())
        values = pd.to_datetime(numbers.where(~missing), unit=unit, utc=True, errors="coerce")
        expected = f"an epoch in {unit}"
    else:
        missing = _missing(raw)
        text = raw.where(~missing).astype("object")
        values = pd.to_datetime(text, format=fmt or "ISO8601", utc=True, errors="coerce")
        expected = f"a {fmt} date" if fmt else "an ISO 8601 time"
    bad = ~missing & values.isna()
    rejects = [rejects_where(frame, bad, field, f"not {expected}: " + _shown(raw[bad]))]
    if required:
        rejects.append(rejects_where(frame, missing, field, "missing"))
    return values, combine_rejects(rejects)


def to_date(frame: pd.DataFrame, column: str, field: str, **options: Any) -> tuple[pd.Series, pd.DataFrame]:
    """Like :func:`to_datetime`, as zone-less midnight timestamps (they become ``date32`` columns)."""
    values, rejects = to_datetime(frame, column, field, **options)
    return values.dt.tz_localize(None).dt.normalize(), rejects


def to_text(
    frame: pd.DataFrame, column: str, field: str, *, required: bool = True
) -> tuple[pd.Series, pd.DataFrame]:
    """``frame[column]`` as trimmed text (empty -> missing), with rejects for missing required values."""
    raw = _column(frame, column)
    missing = _missing(raw)
    values = raw.astype("str").str.strip().where(~missing)
    rejects = rejects_where(frame, missing, field, "missing") if required else no_rejects()
    return values, rejects


def to_choice(
    frame: pd.DataFrame, column: str, field: str, allowed: Iterable[str], *, required: bool = True
) -> tuple[pd.Series, pd.DataFrame]:
    """Text that must be one of ``allowed`` (compared as written)."""
    allowed = list(allowed)
    values, rejects = to_text(frame, column, field, required=required)
    bad = values.notna() & ~values.isin(allowed)
    reasons = "not one of " + ", ".join(allowed) + ": " + _shown(values[bad])
    return values.where(~bad), combine_rejects([rejects, rejects_where(frame, bad, field, reasons)])


def money(values: pd.Series) -> pd.Series:
    """Amounts rounded to cents, as the canonical tables keep money."""
    return values.astype("float64").round(2)


# --- reading JSON payloads ----------------------------------------------------------------------------


@dataclass
class JsonRecords:
    """Collects the objects under ``list_key`` of many JSON pages, then builds one frame.

    Each record gets ``sme_id``, ``source_record`` (``<page label>/<list_key>[i]``), ``raw_sha256``
    and, for ``page_fields``, the page-level value under ``page.<name>``. ``flatten`` turns nested
    objects into ``group.field`` columns; without it each top-level key is one column.
    """

    list_key: str
    page_fields: tuple[str, ...] = ()
    flatten: bool = True
    objects: list[dict[str, Any]] = field(default_factory=list)
    lineage: list[tuple[str, str, str]] = field(default_factory=list)
    page_values: list[tuple[Any, ...]] = field(default_factory=list)
    rejects: list[pd.DataFrame] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, sme_id: str, page: RawPage, document: Any | None = None) -> None:
        """Read one page (``document``: its already-decoded JSON, if the caller has it)."""
        if document is None:
            try:
                document = json.loads(page.body)
            except ValueError as error:
                self.rejects.append(page_reject(sme_id, page, "", f"not JSON: {error}"))
                return
        items = document.get(self.list_key) if isinstance(document, dict) else None
        if not isinstance(items, list):
            self.rejects.append(page_reject(sme_id, page, self.list_key, "missing or not a list"))
            return
        self.counts[sme_id] = self.counts.get(sme_id, 0) + len(items)
        prefix = f"{page.label}/" if page.label else ""
        values = tuple(document.get(name) for name in self.page_fields)
        for position, item in enumerate(items):
            record = f"{prefix}{self.list_key}[{position}]"
            if not isinstance(item, dict):
                self.rejects.append(page_reject(sme_id, page, "", "not an object", record))
                continue
            self.objects.append(item)
            self.lineage.append((sme_id, record, page.sha256))
            self.page_values.append(values)

    def frame(self) -> pd.DataFrame:
        if not self.objects:
            return pd.DataFrame(columns=["sme_id", "source_record", "raw_sha256"])
        frame = pd.json_normalize(self.objects, sep=".") if self.flatten else pd.DataFrame(self.objects)
        lineage = pd.DataFrame(self.lineage, columns=["sme_id", "source_record", "raw_sha256"])
        frame[lineage.columns] = lineage
        for position, name in enumerate(self.page_fields):
            frame[f"page.{name}"] = [values[position] for values in self.page_values]
        return frame

    def all_rejects(self) -> pd.DataFrame:
        return combine_rejects(self.rejects)


# --- results ------------------------------------------------------------------------------------------


def drop_exact_duplicates(frame: pd.DataFrame, table: CanonicalTable) -> tuple[pd.DataFrame, pd.Series]:
    """Drop rows equal to an earlier row in every column but lineage; log each drop (``ignorable``).

    Rows that share the table's key but differ in content are *conflicting* duplicates: they stay,
    so validation sees the conflict and quarantines the SME. Returns the frame and the number of
    rows dropped per SME.
    """
    content = [c for c in table.column_names if c not in LINEAGE_COLUMNS]
    duplicated = frame.duplicated(subset=content, keep="first")
    if duplicated.any():
        first_seen = frame.groupby(content, dropna=False, sort=False)["source_record"].transform("first")
        dropped = frame[duplicated]
        for sme_id, record, original in zip(
            dropped["sme_id"], dropped["source_record"], first_seen[duplicated], strict=True
        ):
            notice = ParseReject(
                f"exact duplicate of {original}: dropped",
                sme_id=sme_id,
                source=table.source,
                record=record,
                kind="ignorable",
            )
            log.info("%s", notice)
    counts = frame.loc[duplicated, "sme_id"].value_counts()
    return frame[~duplicated].reset_index(drop=True), counts


def finish_table(frame: pd.DataFrame, table: CanonicalTable) -> tuple[pd.DataFrame, pd.Series]:
    """Canonical frame: exact duplicates dropped, sorted by key, exactly the table's columns and types.

    Returns the frame (as ``table.to_arrow(...).to_pandas()`` gives it) and the duplicates dropped
    per SME. Raises ``ValueError`` if a column cannot be cast - a parser bug, not bad data.
    """
    deduplicated, dropped = drop_exact_duplicates(frame[table.column_names], table)
    ordered = deduplicated.sort_values([*table.key, "source_record"], kind="stable")
    return table.to_arrow(ordered).to_pandas(), dropped


@dataclass
class ParseResult:
    """What a parser made of a batch of SMEs' pages.

    ``tables`` hold the rows of every SME without a reject; an SME with any reject contributes no
    row at all and is listed in :attr:`quarantined`. Counts are per SME.
    """

    source: str
    tables: dict[str, pd.DataFrame]
    rejects: pd.DataFrame
    records_raw: dict[str, int]
    duplicates_dropped: dict[str, int]

    @property
    def ok(self) -> bool:
        return len(self.rejects) == 0

    @functools.cached_property
    def quarantined(self) -> frozenset[str]:
        return frozenset(self.rejects["sme_id"])

    @functools.cached_property
    def _row_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for frame in self.tables.values():
            for sme_id, count in frame["sme_id"].value_counts().items():
                counts[sme_id] = counts.get(sme_id, 0) + int(count)
        return counts

    def records_canonical(self, sme_id: str) -> int:
        return self._row_counts.get(sme_id, 0)

    @functools.cached_property
    def _rejects_by_sme(self) -> dict[str, pd.DataFrame]:
        return {sme_id: group for sme_id, group in self.rejects.groupby("sme_id", sort=False)}

    def rejects_of(self, sme_id: str) -> pd.DataFrame:
        return self._rejects_by_sme.get(sme_id, no_rejects())

    def errors(self, sme_id: str) -> list[ParseReject]:
        """Each reject of ``sme_id`` as a :class:`ParseReject` naming SME, source, record and field."""
        return [
            ParseReject(row.reason, sme_id=sme_id, source=self.source, record=row.record, field=row.field)
            for row in self.rejects_of(sme_id).itertuples(index=False)
        ]

    def rows_of(self, sme_id: str) -> dict[str, pd.DataFrame]:
        """The canonical rows of one SME (a convenience for tests and single files)."""
        return {
            name: frame[frame["sme_id"] == sme_id].reset_index(drop=True)
            for name, frame in self.tables.items()
        }


def build_result(
    source: str, frames: dict[str, pd.DataFrame], rejects: pd.DataFrame, records_raw: dict[str, int]
) -> ParseResult:
    """Hold back the rows of SMEs with rejects, then finish every table."""
    rejects = rejects.drop_duplicates().reset_index(drop=True)
    held_back = set(rejects["sme_id"])
    tables: dict[str, pd.DataFrame] = {}
    dropped: dict[str, int] = {}
    for table in TABLES_BY_SOURCE[source]:
        frame = frames.get(table.name)
        if frame is None or frame.empty:
            tables[table.name] = table.empty_frame()
            continue
        if held_back:
            frame = frame[~frame["sme_id"].isin(held_back)]
        tables[table.name], dropped_here = finish_table(frame, TABLES[table.name])
        for sme_id, count in dropped_here.items():
            dropped[sme_id] = dropped.get(sme_id, 0) + int(count)
    return ParseResult(source, tables, rejects, records_raw, dropped)
