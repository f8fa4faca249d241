"""A deterministic universe of off-platform SMEs whose books, VAT, meters and field visits agree.

Everything about SME number ``i`` comes from ``numpy.random.default_rng([seed, i])``, so one SME (or
one shard) can be generated alone and is identical in every process and on every call. A latent
*health* (0 = about to fail, 1 = thriving) and a *trajectory* drive 24-36 months of history up to
the month before ``as_of``:

* monthly accounts (P&L and month-end balance sheet, in integer pence, so totals are exact);
* quarterly VAT obligations and returns whose box 6 is the quarter's real turnover;
* an electricity meter (and for some firms a gas meter) whose consumption follows real activity,
  with monthly bills that are paid late or not at all more often as health falls;
* one to four field-agent visits.

Some SMEs carry data *defects* (gaps, duplicated or malformed records, late filings) and some
*fraud* (books inflated above what VAT and the meter show; a field agent who copies surveys).

:meth:`Universe.truth` gives the clean canonical tables a correct connector must produce;
:mod:`connectors.sandbox.providers` renders the same data as each provider's wire payloads.

>>> u = Universe(seed=7, size=3, as_of=dt.date(2026, 11, 25))
>>> u.sme_ids
['SME-000001', 'SME-000002', 'SME-000003']
>>> u.sme("SME-000002").books.months[-1]
np.datetime64('2026-10')
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from connectors.sandbox.population import (
    AGENT_COUNT,
    INDUSTRIES,
    NAME_PREFIXES,
    NAME_SUFFIXES,
    REGIONS,
    SIZE_BANDS,
    TRAJECTORIES,
    PopulationMix,
)
from warehouse.canonical import MONTHLY_FINANCIALS, TABLES, VAT_RETURNS, money_columns

CURRENCY = "GBP"
SOURCES_REFS = {"accounting": "tenant_id", "tax": "vrn", "utility": "subscription_id", "survey": "sme_code"}
"""Which profile column names each source's account at its provider."""

BOOK_FIELDS = money_columns(MONTHLY_FINANCIALS)
PNL_FIELDS = BOOK_FIELDS[:7]
BALANCE_FIELDS = BOOK_FIELDS[7:]

VAT_BOXES = money_columns(VAT_RETURNS)

MALFORMED_AMOUNTS = ("n/a", "#REF!", "12O4.50", "1.234,56", "--")
"""Non-numeric amount strings a bookkeeping export really produces (a letter O, a locale comma...)."""

# Ranges of the statements, set so that the ratios the statement model reads are distributed about
# as in real small firms' statements (the training data; see bench/statement_model.py for the PSI).
MARGIN = (0.0, 0.12)
"""Planned operating margin before depreciation: first + second * health."""
DEBT_MONTHS = (0.5, 5.0)
"""Opening loans in months of revenue: first + second * (1 - health) (times 0.6-1.4)."""
OTHER_FIXED_MONTHS = 2.5
"""Premises, land and investments (not depreciated), in months of revenue (times 0.25-1.75)."""
CASH_MONTHS = (0.1, 0.6)
"""Opening cash in months of revenue: first + second * health (times 0.7-1.3)."""
OTHER_RECEIVABLE_DAYS = 25.0
"""Other debtors and prepayments, in days of revenue, on top of the industry's trade receivables."""
SHORT_TERM_DEBT_ONLY = 0.35
"""Share of firms (by their debt draw) whose loans are all due within a year."""
SHORT_TERM_DEBT_SHARE = 0.5
"""Share of the other firms' loans due within a year."""
OVERHEAD_FIXED_SHARE = 0.3
"""Share of overheads that stays put when revenue moves; the rest follows the revenue trend (a firm
whose sales collapse cuts costs too)."""
GROWTH_SPREAD = 0.01
"""Spread (monthly standard deviation) of steady firms' growth rates around their trajectory's."""

HEATING_PROFILE = np.array([1.8, 1.7, 1.4, 1.0, 0.6, 0.35, 0.3, 0.3, 0.45, 0.9, 1.4, 1.75])
THERM_KWH = 29.3071

STOCK_LEVELS = ("none", "low", "normal", "high")
NOTES_TRADING = (
    "Busy premises, owner present, steady trade.",
    "Well stocked and tidy; several customers during the visit.",
    "Owner confident about orders for the next quarter.",
    "Staff busy; new equipment installed since last year.",
)
NOTES_STRUGGLING = (
    "Quiet during the visit; owner mentioned slow sales.",
    "Stock running low; owner waiting on supplier credit.",
    "Premises open but few customers; owner worried about rent.",
)
NOTES_CLOSED = (
    "Shutters down during trading hours; neighbours say the business stopped trading.",
    "Premises closed, signage removed.",
)
NOTES_NOT_FOUND = (
    "No business at the declared address.",
    "Address is a residential flat; no trading premises.",
)
COPIED_NOTES = "Business operating normally. Owner cooperative, records shown."


# --- identifiers --------------------------------------------------------------------------------------


def sme_id_of(index: int) -> str:
    """``SME-000042`` for index 42 (indices start at 1)."""
    return f"SME-{index:06d}"


def index_of(sme_id: str) -> int:
    """Inverse of :func:`sme_id_of`; raises ``ValueError`` naming the bad id."""
    prefix, _, digits = sme_id.partition("-")
    if prefix != "SME" or not digits.isdigit():
        raise ValueError(f"{sme_id!r} is not a sandbox SME id (expected SME-NNNNNN)")
    return int(digits)


def _affine(index: int, seed: int, salt: int, multiplier: int, modulus: int) -> int:
    """A bijection of the index onto ``range(modulus)``: unique refs without any lookup table."""
    offset = (seed * 2654435761 + salt * 40503) % modulus
    return (multiplier * index + offset) % modulus


_BASE32 = "abcdefghijkmnpqrstuvwxyz23456789"


def _base32(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 32)
        chars.append(_BASE32[digit])
    return "".join(reversed(chars))


def _mpan_check_digit(twelve_digits: str) -> int:
    primes = (3, 5, 7, 13, 17, 19, 23, 29, 31, 37, 41, 43)
    return sum(int(d) * p for d, p in zip(twelve_digits, primes, strict=True)) % 11 % 10


def account_refs(seed: int, index: int) -> dict[str, str]:
    """The SME's account at each provider: unique per universe, computed without generating the SME.

    >>> refs = account_refs(1, 1)
    >>> sorted(refs), len(refs["vrn"])
    (['sme_code', 'subscription_id', 'tenant_id', 'vrn'], 9)
    """
    return {
        "tenant_id": f"ten_{_affine(index, seed, 1, 0x9E3779B97F4B, 2**48):012x}",
        "vrn": str(100_000_000 + _affine(index, seed, 2, 386_910_137, 900_000_000)),
        "subscription_id": str(1_000_000_000 + _affine(index, seed, 3, 7_777_777_777, 9_000_000_000)),
        "sme_code": "sc" + _base32(_affine(index, seed, 4, 0x5BD1E995, 2**40), 8),
    }


def _meter_ids(seed: int, index: int, region: str) -> tuple[str, str]:
    """(MPAN core for electricity, MPRN for gas), unique per SME; the MPAN carries its check digit."""
    distributor = {
        "London": 12,
        "South East": 19,
        "South West": 22,
        "East of England": 10,
        "West Midlands": 14,
        "East Midlands": 11,
        "Yorkshire and the Humber": 23,
        "North West": 16,
        "North East": 15,
        "Wales": 21,
        "Scotland": 18,
        "Northern Ireland": 17,
    }[region]
    body = f"{distributor:02d}{_affine(index, seed, 5, 3_141_592_653, 10**10):010d}"
    mpan = body + str(_mpan_check_digit(body))
    mprn = str(1_000_000_000 + _affine(index, seed, 6, 2_718_281_829, 9_000_000_000))
    return mpan, mprn


def stable_uuid(*parts: object) -> str:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def stable_hex(length: int, *parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:length]


# --- the generated records --------------------------------------------------------------------------


@dataclass(frozen=True)
class SmeProfile:
    """Who the SME is, its latent state, its ground truth and its accounts at the providers."""

    sme_id: str
    name: str
    industry: str
    region: str
    size_band: str
    founded_year: int
    currency: str
    trajectory: str
    health: float
    defaults_within_12m: bool
    defects: tuple[str, ...]
    fraud: tuple[str, ...]
    agent_id: str
    tenant_id: str
    vrn: str
    subscription_id: str
    sme_code: str
    months_of_history: int
    latitude: float
    longitude: float


@dataclass(frozen=True)
class Duplicate:
    """A month the bookkeeping platform serves twice (``identical`` copy or ``conflicting`` values)."""

    month_index: int
    kind: str
    revenue_delta: int
    """Pence added to revenue and net profit in the conflicting copy (0 for an identical copy)."""


@dataclass(frozen=True)
class Malformed:
    """One field served as text that is not a valid value; ``record`` indexes a month, reading or visit."""

    record: int
    field: str
    text: str


@dataclass(frozen=True)
class Books:
    """Monthly accounts over every history month; money is int64 pence; ``present`` marks booked months."""

    months: np.ndarray
    present: np.ndarray
    money: dict[str, np.ndarray]
    true_revenue: np.ndarray
    duplicate: Duplicate | None
    malformed: Malformed | None


@dataclass(frozen=True)
class VatObligations:
    """Quarterly obligations, oldest first; box arrays (int64 pence) are meaningful where status is F."""

    period_key: np.ndarray
    start: np.ndarray
    end: np.ndarray
    due: np.ndarray
    received: np.ndarray
    status: np.ndarray
    boxes: dict[str, np.ndarray]


@dataclass(frozen=True)
class Meter:
    """One usage point: monthly readings and the bills issued by ``as_of``.

    ``reading_value`` is the raw ESPI integer (Wh with power of ten 0 for electricity, millitherm
    with power of ten -3 for gas); ``quantity`` is the same in ``unit`` (whole kWh or therms).
    """

    usage_point_id: str
    commodity: str
    unit: str
    uom: int
    power_of_ten: int
    reading_start: np.ndarray
    reading_seconds: np.ndarray
    reading_value: np.ndarray
    quantity: np.ndarray
    cost_pence: np.ndarray
    bill_amount_pence: np.ndarray
    bill_issued: np.ndarray
    bill_due: np.ndarray
    bill_paid: np.ndarray
    malformed: Malformed | None


@dataclass(frozen=True)
class Visit:
    """One field-agent visit as the survey form recorded it (instants are UTC epoch seconds)."""

    visit_id: str
    submission_id: int
    form_version: str
    agent_id: str
    started_at: int
    ended_at: int
    utc_offset_hours: int
    submitted_at: int
    premises_found: bool
    business_operating: bool
    employees_observed: int | None
    customers_observed: int | None
    stock_level: str | None
    reported_monthly_revenue: float | None
    latitude: float
    longitude: float
    altitude: float
    accuracy: float
    photo_count: int
    notes: str | None
    malformed: Malformed | None


@dataclass(frozen=True)
class SmeRecord:
    """Everything the universe knows about one SME."""

    index: int
    profile: SmeProfile
    books: Books
    vat: VatObligations
    meters: tuple[Meter, ...]
    visits: tuple[Visit, ...]

    @property
    def sme_id(self) -> str:
        return self.profile.sme_id


# --- helpers ----------------------------------------------------------------------------------------------


def _pence(values: np.ndarray | float) -> np.ndarray:
    return np.rint(values).astype(np.int64)


def _floor_choice(u: np.ndarray, count: int | np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1) to integers in [0, count)."""
    return np.minimum((u * count).astype(np.int64), np.asarray(count) - 1)


def _pick(u: np.ndarray, weights: dict[str, float]) -> np.ndarray:
    """Uniforms to indices into ``weights`` with those probabilities."""
    cumulative = np.cumsum(np.fromiter(weights.values(), float))
    return np.minimum(np.searchsorted(cumulative, u, side="right"), len(weights) - 1)


def _days_in(months: np.ndarray) -> np.ndarray:
    return ((months + 1).astype("datetime64[D]") - months.astype("datetime64[D]")).astype(np.int64)


def default_probability(health: np.ndarray | float) -> np.ndarray:
    """12-month default probability implied by latent health (about 2% when healthy, 55% failing)."""
    return 1.0 / (1.0 + np.exp(-(-5.12 + 6.26 * (1.0 - np.asarray(health)))))


@functools.cache
def _british_summer_time(first_year: int = 1970, last_year: int = 2200) -> tuple[np.ndarray, np.ndarray]:
    """Per year from 1970: (first day of BST, first day back on GMT) - the last Sundays of March and October."""

    def last_sunday(year: int, month: int) -> dt.date:
        last = dt.date(year, month + 1, 1) - dt.timedelta(days=1)
        return last - dt.timedelta(days=(last.weekday() + 1) % 7)

    years = range(first_year, last_year + 1)
    starts = np.array([last_sunday(y, 3) for y in years], dtype="datetime64[D]")
    ends = np.array([last_sunday(y, 10) for y in years], dtype="datetime64[D]")
    return starts, ends


def uk_utc_offset(days: np.ndarray) -> np.ndarray:
    """Hours the UK clock is ahead of UTC on each day (1 in British Summer Time, else 0)."""
    starts, ends = _british_summer_time()
    year = days.astype("datetime64[Y]").astype(np.int64)
    return ((days >= starts[year]) & (days < ends[year])).astype(np.int64)


def _uuid4_strings(raw: np.ndarray) -> np.ndarray:
    """Rows of 16 random bytes to RFC 4122 version-4 uuid strings."""
    raw = raw.copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    return np.array([str(uuid.UUID(bytes=row.tobytes())) for row in raw], dtype=object)


@functools.cache
def form_version(seed: int, number: int) -> str:
    """KoboToolbox-style id (``v`` + 21 characters) of version ``number`` of the visit form."""
    digest = hashlib.sha256(f"form-version|{seed}|{number}".encode()).digest()
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    return "v" + "".join(alphabet[b % len(alphabet)] for b in digest[:21])


@functools.cache
def _copier_template(seed: int, agent_number: int) -> dict[str, object]:
    """The one set of answers a copying agent pastes into every visit, from the agent's own stream."""
    rng = np.random.default_rng([seed, 0, agent_number])
    lat, lon = list(REGIONS.values())[int(rng.integers(len(REGIONS)))]
    return {
        "employees_observed": int(rng.integers(2, 6)),
        "customers_observed": int(rng.integers(1, 4)),
        "stock_level": "normal",
        "reported_monthly_revenue": float(rng.integers(80, 300) * 100),
        "latitude": float(np.round(lat + rng.normal(0, 0.05), 6)),
        "longitude": float(np.round(lon + rng.normal(0, 0.05), 6)),
        "altitude": float(np.round(rng.uniform(5, 150), 1)),
        "accuracy": 4.0,
        "photo_count": 1,
        "notes": COPIED_NOTES,
    }


# --- random layout ------------------------------------------------------------------------------------

VISIT_SLOTS = 4


class _Layout:
    """Where each of one SME's random numbers sits in its two draw vectors (uniform and normal).

    Every SME draws the same number of uniforms and normals from its own stream, in this order, so
    an SME's values never depend on which other SMEs share its batch.
    """

    U_SCALARS = (
        "industry",
        "region",
        "size",
        "trajectory",
        "health",
        "months",
        "age",
        "prefix",
        "noun",
        "suffix",
        "agent",
        "default",
        "gap",
        "duplicate",
        "malformed_books",
        "malformed_meter",
        "malformed_visit",
        "inflated",
        "gas",
        "collapse",
        "inflation",
        "fixed_assets",
        "debt",
        "cash",
        "stagger",
        "gap_count",
        "duplicate_month",
        "duplicate_delta",
        "duplicate_sign",
        "malformed_month",
        "malformed_field",
        "malformed_text",
        "kwh_base",
        "kwh_rate",
        "kwh_standing",
        "gas_base",
        "therm_rate",
        "gas_standing",
        "malformed_meter_which",
        "malformed_meter_reading",
        "malformed_meter_text",
        "visit_count",
        "malformed_visit_pick",
    )
    Z_SCALARS = ("base", "growth", "latitude", "longitude")
    U_MONTHS = (
        "gap_key",
        "kwh_early",
        "kwh_late",
        "kwh_late_days",
        "kwh_unpaid",
        "gas_early",
        "gas_late",
        "gas_late_days",
        "gas_unpaid",
    )
    Z_MONTHS = ("revenue", "cost_of_sales", "operating_expenses", "capex", "kwh", "gas")
    U_QUARTERS = ("early", "late", "late_days")
    U_VISITS = (
        "day",
        "start",
        "duration",
        "delay_kind",
        "delay",
        "found",
        "operating",
        "employees",
        "stock",
        "notes_none",
        "notes_pick",
        "altitude",
        "accuracy",
        "photos",
    )
    Z_VISITS = ("customers", "revenue", "latitude", "longitude")

    def __init__(self, months: int, quarters: int) -> None:
        self.months = months
        self.quarters = quarters
        self.u_size = (
            len(self.U_SCALARS)
            + len(self.U_MONTHS) * months
            + len(self.U_QUARTERS) * quarters
            + len(self.U_VISITS) * VISIT_SLOTS
        )
        self.z_size = len(self.Z_SCALARS) + len(self.Z_MONTHS) * months + len(self.Z_VISITS) * VISIT_SLOTS

    def draw(self, seed: int, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(uniforms, normals, 16 bytes per visit slot) for each SME, each from ``default_rng([seed, i])``."""
        uniforms = np.empty((len(indices), self.u_size))
        normals = np.empty((len(indices), self.z_size))
        raw = np.empty((len(indices), VISIT_SLOTS * 16), dtype=np.uint8)
        for row, index in enumerate(indices):
            rng = np.random.default_rng([seed, int(index)])
            rng.random(out=uniforms[row])
            rng.standard_normal(out=normals[row])
            raw[row] = np.frombuffer(rng.bytes(VISIT_SLOTS * 16), dtype=np.uint8)
        return uniforms, normals, raw


class _Draws:
    """Named views into a batch's draws: ``u.health`` is a column, ``um.gap_key`` a (batch, month) block."""

    def __init__(self, names: Sequence[str], block: np.ndarray, width: int) -> None:
        self._names = {name: i for i, name in enumerate(names)}
        self._block = block.reshape(len(block), len(names), width) if width > 1 else block
        self._width = width

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            position = self._names[name]
        except KeyError:
            raise AttributeError(name) from None
        return self._block[:, position] if self._width == 1 else self._block[:, position, :]


# --- batch generation ---------------------------------------------------------------------------------


class _Batch:
    """A batch of SMEs generated together: the same arithmetic, row by row, on (SME, month) arrays.

    Months sit on one calendar axis shared by the batch: column ``j`` is ``as_of`` month minus
    ``max_months`` plus ``j``, so the last column is the month before ``as_of``; an SME with ``n``
    months of history uses the last ``n`` columns.
    """

    def __init__(
        self, seed: int, indices: np.ndarray, as_of: dt.date, max_months: int, mix: PopulationMix
    ) -> None:
        self.seed, self.as_of, self.mix = seed, as_of, mix
        self.indices = np.asarray(indices, dtype=np.int64)
        self.width = max_months
        self.as_of_day = np.datetime64(as_of, "D")
        self.as_of_month = np.datetime64(as_of, "M")
        self.calendar = self.as_of_month - max_months + np.arange(max_months)
        self._quarter_calendar()
        layout = _Layout(max_months, self.quarter_width)
        uniforms, normals, self.raw = layout.draw(seed, self.indices)
        bounds = np.cumsum(
            [
                0,
                len(_Layout.U_SCALARS),
                len(_Layout.U_MONTHS) * max_months,
                len(_Layout.U_QUARTERS) * self.quarter_width,
            ]
        )
        self.u = _Draws(_Layout.U_SCALARS, uniforms[:, : bounds[1]], 1)
        self.um = _Draws(_Layout.U_MONTHS, uniforms[:, bounds[1] : bounds[2]], max_months)
        self.uq = _Draws(_Layout.U_QUARTERS, uniforms[:, bounds[2] : bounds[3]], self.quarter_width)
        self.uv = _Draws(_Layout.U_VISITS, uniforms[:, bounds[3] :], VISIT_SLOTS)
        zb = np.cumsum([0, len(_Layout.Z_SCALARS), len(_Layout.Z_MONTHS) * max_months])
        self.z = _Draws(_Layout.Z_SCALARS, normals[:, : zb[1]], 1)
        self.zm = _Draws(_Layout.Z_MONTHS, normals[:, zb[1] : zb[2]], max_months)
        self.zv = _Draws(_Layout.Z_VISITS, normals[:, zb[2] :], VISIT_SLOTS)
        self._profile()
        self._books()
        self._vat()
        self._meters()
        self._visits()
        self._labels()

    # -- calendar of VAT quarters -----------------------------------------------------------------------

    def _quarter_calendar(self) -> None:
        """Per VAT stagger (1-3), the quarters that end between the third history column and as_of + 2.

        Quarters are right-aligned into ``quarter_width`` slots (the newest last); ``end_column`` is -1
        in unused slots. Column indices refer to the calendar extended by the three months from as_of.
        """
        extended = self.as_of_month - self.width + np.arange(self.width + 3)
        month_number = extended.astype(np.int64) % 12 + 1
        per_stagger = [
            np.flatnonzero((month_number % 3 == stagger % 3) & (np.arange(self.width + 3) >= 2))
            for stagger in (1, 2, 3)
        ]
        self.quarter_width = max(len(ends) for ends in per_stagger)
        self.quarter_end_column = np.full((4, self.quarter_width), -1, dtype=np.int64)
        for stagger, ends in zip((1, 2, 3), per_stagger, strict=True):
            self.quarter_end_column[stagger, self.quarter_width - len(ends) :] = ends
        ends_month = self.as_of_month - self.width + np.maximum(self.quarter_end_column, 2)
        self.quarter_start = (ends_month - 2).astype("datetime64[D]")
        self.quarter_end = (ends_month + 1).astype("datetime64[D]") - 1
        self.quarter_due = (ends_month + 2).astype("datetime64[D]") - 1 + 7
        year = ends_month.astype("datetime64[Y]").astype(np.int64) + 1970
        quarter = ends_month.astype(np.int64) % 12 // 3 + 1
        self.quarter_key = np.char.add(
            np.char.add(np.char.zfill((year % 100).astype(str), 2), "A"), quarter.astype(str)
        ).astype(object)

    # -- who --------------------------------------------------------------------------------------------

    def _profile(self) -> None:
        u, z, mix = self.u, self.z, self.mix
        self.industry = _pick(u.industry, mix.industries)
        self.region = _pick(u.region, mix.regions)
        self.size_band = _pick(u.size, mix.size_bands)
        self.trajectory = _pick(u.trajectory, mix.trajectories)
        industries, sizes, paths = list(mix.industries), list(mix.size_bands), list(mix.trajectories)
        self.ind = [INDUSTRIES[industries[i]] for i in range(len(industries))]
        health_low = np.array([TRAJECTORIES[p].health_range[0] for p in paths])[self.trajectory]
        health_high = np.array([TRAJECTORIES[p].health_range[1] for p in paths])[self.trajectory]
        self.health = np.round(health_low + (health_high - health_low) * u.health, 4)
        shortest = min(24, self.width)
        self.history = shortest + _floor_choice(u.months, self.width - shortest + 1)
        self.first_column = self.width - self.history
        self.age = np.maximum(-(-self.history // 12), 2 + _floor_choice(u.age, 39))
        self.agent = 1 + _floor_choice(u.agent, AGENT_COUNT)
        centres = np.array([REGIONS[r] for r in mix.regions])
        self.latitude = np.round(centres[self.region, 0] + 0.12 * z.latitude, 6)
        self.longitude = np.round(centres[self.region, 1] + 0.18 * z.longitude, 6)
        self.defaults = u.default < default_probability(self.health)
        self.has_gap = (u.gap < mix.gap_rate) & (self.history >= 6)
        self.duplicate = np.where(
            u.duplicate < mix.duplicate_rate / 2, 1, np.where(u.duplicate < mix.duplicate_rate, 2, 0)
        )
        self.malformed_books = u.malformed_books < mix.malformed_accounting_rate
        self.malformed_meter = u.malformed_meter < mix.malformed_utility_rate
        self.malformed_visit = u.malformed_visit < mix.malformed_survey_rate
        self.inflated = u.inflated < mix.inflated_books_rate
        gas_share = np.array([INDUSTRIES[i].gas_share for i in industries])[self.industry]
        self.has_gas = u.gas < gas_share
        self.copier = np.isin(self.agent, mix.copier_agents)
        self._industry_table = {
            name: np.array([getattr(INDUSTRIES[i], name) for i in industries])
            for name in (
                "cost_of_sales_ratio",
                "receivable_days",
                "inventory_days",
                "payable_days",
                "fixed_asset_months",
                "kwh_per_pound",
                "standard_rated_share",
                "customer_facing",
                "holds_stock",
            )
        }
        self._size_table = {
            name: np.array([getattr(SIZE_BANDS[s], name) for s in sizes], dtype=float)
            for name in (
                "median_revenue",
                "revenue_sigma",
                "min_revenue",
                "max_revenue",
                "base_load_kwh",
                "base_gas_therms",
            )
        }
        self._employees = np.array([SIZE_BANDS[s].employees for s in sizes], dtype=float)[self.size_band]
        self.growth = np.array([TRAJECTORIES[p].monthly_growth for p in paths])[self.trajectory]
        self.collapse_rate = np.array([TRAJECTORIES[p].collapse_rate for p in paths])[self.trajectory]

    def _industry(self, name: str) -> np.ndarray:
        return self._industry_table[name][self.industry]

    def _size(self, name: str) -> np.ndarray:
        return self._size_table[name][self.size_band]

    # -- accounts ---------------------------------------------------------------------------------------

    def _books(self) -> None:
        u, um, z, zm = self.u, self.um, self.z, self.zm
        columns = np.arange(self.width)
        self.valid = columns >= self.first_column[:, None]
        valid = self.valid
        t = columns - self.first_column[:, None]
        health = self.health[:, None]
        median, sigma = self._size("median_revenue"), self._size("revenue_sigma")
        base = np.clip(
            np.exp(np.log(median) + sigma * z.base), self._size("min_revenue"), self._size("max_revenue")
        )
        base = base[:, None]
        self.collapse_column = np.where(
            self.collapse_rate > 0, self.width - (9 + _floor_choice(u.collapse, 7)), self.width
        )
        growth = (1.0 + self.growth + np.where(self.collapse_rate > 0, 0.0, GROWTH_SPREAD * z.growth))[
            :, None
        ]
        collapse = self.collapse_column[:, None]
        trend = np.where(
            self.collapse_rate[:, None] > 0,
            np.where(
                columns < collapse, 1.0, (1.0 - self.collapse_rate[:, None]) ** (columns - collapse + 1)
            ),
            growth ** np.where(valid, t, 0),
        )
        seasonality = np.array([INDUSTRIES[i].seasonality for i in self.mix.industries])[self.industry]
        season = seasonality[:, self.calendar.astype(np.int64) % 12]
        true_revenue = _pence(base * 100 * trend * season * np.exp(0.05 * zm.revenue)) * valid
        inflation = np.where(self.inflated, 1.25 + 0.45 * u.inflation, 1.0)[:, None]
        revenue = _pence(true_revenue * inflation)
        fictitious = revenue - true_revenue

        cos_ratio = self._industry("cost_of_sales_ratio")[:, None]
        cost_of_sales = _pence(true_revenue * cos_ratio * np.exp(0.02 * zm.cost_of_sales))
        margin = MARGIN[0] + MARGIN[1] * health
        overheads = base * 100 * (1.0 - cos_ratio - margin)
        operating_expenses = (
            _pence(
                overheads
                * 1.002 ** np.where(valid, t, 0)
                * (OVERHEAD_FIXED_SHARE + (1.0 - OVERHEAD_FIXED_SHARE) * trend)
                * np.exp(0.03 * zm.operating_expenses)
            )
            * valid
        )
        fixed_assets_start = (
            base[:, 0] * 100 * self._industry("fixed_asset_months") * (0.7 + 0.6 * u.fixed_assets)
        )
        depreciation = _pence(fixed_assets_start / 120)[:, None] * valid
        # Premises, land and investments: not depreciated, in months of revenue.
        other_fixed = _pence(base[:, 0] * 100 * OTHER_FIXED_MONTHS * (0.25 + 1.5 * u.fixed_assets))
        capex = _pence(depreciation * (0.3 + 0.9 * health) * np.exp(0.3 * zm.capex))
        debt_start = (
            base[:, 0] * 100 * (DEBT_MONTHS[0] + DEBT_MONTHS[1] * (1.0 - self.health)) * (0.6 + 0.8 * u.debt)
        )
        debt = _pence(debt_start[:, None] * (1.0 - (t + 1) / 120)) * valid
        interest_expense = _pence(debt * 0.08 / 12)
        profit_before_tax = revenue - cost_of_sales - operating_expenses - depreciation - interest_expense
        tax_expense = _pence(np.maximum(profit_before_tax, 0) * 0.19)
        net_profit = profit_before_tax - tax_expense

        receivable_days = self._industry("receivable_days") + OTHER_RECEIVABLE_DAYS
        receivables = _pence(true_revenue * receivable_days[:, None] / 30) + np.cumsum(fictitious, axis=1)
        inventory = _pence(cost_of_sales * self._industry("inventory_days")[:, None] / 30)
        payables = _pence(
            cost_of_sales * self._industry("payable_days")[:, None] / 30 + operating_expenses * 0.3
        )
        cash_start = base[:, 0] * 100 * (CASH_MONTHS[0] + CASH_MONTHS[1] * self.health) * (0.7 + 0.6 * u.cash)
        cos_flat = cos_ratio[:, 0]
        working_capital_start = (
            base[:, 0]
            * 100
            * (
                receivable_days / 30
                + cos_flat * (self._industry("inventory_days") - self._industry("payable_days")) / 30
                - (1.0 - cos_flat - (MARGIN[0] + MARGIN[1] * self.health)) * 0.3
            )
        )
        equity_start = _pence(
            cash_start + working_capital_start + fixed_assets_start + other_fixed - debt_start
        )
        equity_path = equity_start[:, None] + np.cumsum(net_profit, axis=1)
        fixed_assets = _pence(fixed_assets_start + other_fixed)[:, None] + np.cumsum(
            capex - depreciation, axis=1
        )
        cash_before_overdraft = equity_path + payables + debt - fixed_assets - receivables - inventory
        overdraft = np.maximum(-cash_before_overdraft, 0)
        cash = cash_before_overdraft + overdraft
        # Firms whose loans are all short-term (no long-term liabilities), as many small firms' are.
        short_share = np.where(u.debt < SHORT_TERM_DEBT_ONLY, 1.0, SHORT_TERM_DEBT_SHARE)[:, None]
        current_liabilities = payables + _pence(debt * short_share) + overdraft
        total_liabilities = payables + debt + overdraft
        current_assets = cash + receivables + inventory
        total_assets = current_assets + fixed_assets
        money = {
            "revenue": revenue,
            "cost_of_sales": cost_of_sales,
            "operating_expenses": operating_expenses,
            "depreciation": depreciation,
            "interest_expense": interest_expense,
            "tax_expense": tax_expense,
            "net_profit": net_profit,
            "cash": cash,
            "receivables": receivables,
            "inventory": inventory,
            "current_assets": current_assets,
            "total_assets": total_assets,
            "current_liabilities": current_liabilities,
            "total_liabilities": total_liabilities,
            "equity": total_assets - total_liabilities,
        }
        self.money = {name: values * valid for name, values in money.items()}
        self.true_revenue = true_revenue

        # Gaps: 1-3 months dropped, never the first or the last month of the history.
        keys = np.where(
            valid & (columns > self.first_column[:, None]) & (columns < self.width - 1), um.gap_key, 2.0
        )
        order = np.argsort(keys, axis=1, kind="stable")
        gap_count = np.where(self.has_gap, 1 + _floor_choice(u.gap_count, 3), 0)
        self.present = valid.copy()
        for rank in range(3):
            rows = np.flatnonzero(gap_count > rank)
            self.present[rows, order[rows, rank]] = False
        self.duplicate_column = self._nth_present(u.duplicate_month)
        sign = np.where(u.duplicate_sign < 0.5, -1, 1)
        chosen_revenue = revenue[np.arange(len(revenue)), self.duplicate_column]
        self.duplicate_delta = np.where(
            self.duplicate == 2, _pence(chosen_revenue * (0.05 + 0.10 * u.duplicate_delta) * sign), 0
        )
        self.malformed_column = self._nth_present(u.malformed_month)
        self.malformed_field = _floor_choice(u.malformed_field, len(BOOK_FIELDS))
        self.malformed_text = _floor_choice(u.malformed_text, len(MALFORMED_AMOUNTS))

    def _nth_present(self, uniform: np.ndarray) -> np.ndarray:
        """A column picked uniformly among each row's booked months."""
        counts = self.present.sum(axis=1)
        wanted = _floor_choice(uniform, counts)
        return np.argmax(np.cumsum(self.present, axis=1) > wanted[:, None], axis=1)

    # -- VAT ----------------------------------------------------------------------------------------------

    def _vat(self) -> None:
        u, uq = self.u, self.uq
        rows = np.arange(len(self.indices))
        stagger = 1 + _floor_choice(u.stagger, 3)
        end_column = self.quarter_end_column[stagger]
        self.quarter_valid = (end_column >= 0) & (end_column - 2 >= self.first_column[:, None])
        self.q_start = self.quarter_start[stagger]
        self.q_end = self.quarter_end[stagger]
        self.q_due = self.quarter_due[stagger]
        self.q_key = self.quarter_key[stagger]
        complete = self.q_end < self.as_of_day
        early = self.q_due - _floor_choice(uq.early, 25)
        received = np.maximum(early, self.q_end + 1)
        positions_from_newest = self.quarter_width - 1 - np.arange(self.quarter_width)
        failing = self.collapse_rate > 0
        late_chance = (
            0.01
            + 0.25 * (1.0 - self.health[:, None]) ** 2
            + np.where(failing[:, None] & (positions_from_newest < 5), 0.35, 0.0)
        )
        late = uq.late < late_chance
        received = np.where(late, self.q_due + 1 + _floor_choice(uq.late_days, 75), received)
        filed = self.quarter_valid & complete & (received <= self.as_of_day)
        self.q_received = np.where(filed, received, np.datetime64("NaT"))
        self.q_filed = filed

        padded = np.concatenate([self.true_revenue, np.zeros((len(rows), 3), dtype=np.int64)], axis=1)
        purchases_month = self.money["cost_of_sales"] + self.money["operating_expenses"] // 2
        purchases_padded = np.concatenate([purchases_month, np.zeros((len(rows), 3), dtype=np.int64)], axis=1)
        last = np.maximum(end_column, 2)
        sales = sum(np.take_along_axis(padded, last - k, axis=1) for k in range(3))
        purchases = sum(np.take_along_axis(purchases_padded, last - k, axis=1) for k in range(3))
        vat_due_sales = _pence(sales * self._industry("standard_rated_share")[:, None] * 0.20)
        vat_reclaimed = _pence(purchases * 0.85 * 0.20)
        zero = np.zeros_like(vat_due_sales)
        self.boxes = {
            "vat_due_sales": vat_due_sales,
            "vat_due_acquisitions": zero,
            "total_vat_due": vat_due_sales,
            "vat_reclaimed": vat_reclaimed,
            "net_vat_due": np.abs(vat_due_sales - vat_reclaimed),
            "total_sales_ex_vat": _pence(sales / 100) * 100,
            "total_purchases_ex_vat": _pence(purchases / 100) * 100,
            "total_goods_supplied_ex_vat": zero,
            "total_acquisitions_ex_vat": zero,
        }

    # -- utility ------------------------------------------------------------------------------------------

    def _meters(self) -> None:
        u, zm = self.u, self.zm
        valid = self.valid
        days = _days_in(self.calendar)
        self.reading_start = self.calendar.astype("datetime64[s]").astype(np.int64)
        self.reading_seconds = days * 86400
        next_month = (self.calendar + 1).astype("datetime64[D]")
        self.bill_issued = next_month + 2
        self.bill_due = next_month + 16
        self.billed = valid & (self.bill_issued <= self.as_of_day)
        activity = self.true_revenue / 100
        kwh = (
            np.maximum(
                _pence(
                    self._size("base_load_kwh")[:, None] * (0.8 + 0.45 * u.kwh_base[:, None])
                    + self._industry("kwh_per_pound")[:, None] * activity * np.exp(0.04 * zm.kwh)
                ),
                1,
            )
            * valid
        )
        mean_activity = np.maximum(activity.sum(axis=1) / self.history, 1.0)[:, None]
        heating = HEATING_PROFILE[self.calendar.astype(np.int64) % 12]
        therms = (
            np.maximum(
                _pence(
                    self._size("base_gas_therms")[:, None]
                    * (0.7 + 0.6 * u.gas_base[:, None])
                    * heating
                    * (0.7 + 0.3 * activity / mean_activity)
                    * np.exp(0.05 * zm.gas)
                ),
                1,
            )
            * valid
        )
        kwh_rate = np.round(24.0 + 6.0 * u.kwh_rate, 1)
        therm_rate = np.round((5.5 + 2.5 * u.therm_rate) * THERM_KWH, 1)
        self.electricity = self._meter(kwh, kwh_rate, _pence(40 + 30 * u.kwh_standing), days, "kwh")
        self.gas = self._meter(therms, therm_rate, _pence(25 + 15 * u.gas_standing), days, "gas")
        self.mm_which = np.where(self.has_gas, _floor_choice(u.malformed_meter_which, 2), 0)
        self.mm_column = self.first_column + _floor_choice(u.malformed_meter_reading, self.history)
        self.mm_text = _floor_choice(u.malformed_meter_text, 3)

    def _meter(
        self, quantity: np.ndarray, rate: np.ndarray, standing: np.ndarray, days: np.ndarray, prefix: str
    ) -> dict[str, np.ndarray]:
        um = self.um
        cost = _pence(quantity * rate[:, None])
        amount = _pence((cost + standing[:, None] * days) * 1.2)
        on_time = np.maximum(
            self.bill_due - _floor_choice(getattr(um, f"{prefix}_early"), 12), self.bill_issued
        )
        late_chance = 0.03 + 0.6 * (1.0 - self.health[:, None]) ** 2
        late = getattr(um, f"{prefix}_late") < late_chance
        paid = np.where(
            late, self.bill_due + 3 + _floor_choice(getattr(um, f"{prefix}_late_days"), 48), on_time
        )
        newest = np.arange(self.width) >= self.width - 4
        unpaid = (self.collapse_rate[:, None] > 0) & newest & (getattr(um, f"{prefix}_unpaid") < 0.5)
        paid = np.where(unpaid | (paid > self.as_of_day), np.datetime64("NaT"), paid)
        return {"quantity": quantity, "value": quantity * 1000, "cost": cost, "amount": amount, "paid": paid}

    # -- field survey -------------------------------------------------------------------------------------

    def _visits(self) -> None:
        u, uv, zv = self.u, self.uv, self.zv
        count = len(self.indices)
        rows = np.arange(count)
        slots = np.arange(VISIT_SLOTS)
        self.visit_count = 1 + _floor_choice(u.visit_count, VISIT_SLOTS)
        self.visit_valid = slots < self.visit_count[:, None]
        first_day = np.maximum(self.calendar[self.first_column].astype("datetime64[D]"), self.as_of_day - 540)
        span = (self.as_of_day - 1 - first_day).astype(np.int64)
        offset = np.where(self.visit_valid, _floor_choice(uv.day, span[:, None]), np.iinfo(np.int64).max)
        order = np.argsort(offset, axis=1, kind="stable")
        offset = np.take_along_axis(offset, order, axis=1)
        day = first_day[:, None] + np.where(self.visit_valid, offset, 0)
        self.visit_day = day
        self.visit_offset = uk_utc_offset(day)
        local_start = 8 * 3600 + _floor_choice(uv.start, 9 * 3600)
        self.visit_started = (
            day.astype("datetime64[s]").astype(np.int64) + local_start - self.visit_offset * 3600
        )
        self.visit_ended = self.visit_started + (10 + _floor_choice(uv.duration, 36)) * 60
        delay = np.where(
            uv.delay_kind < 0.8, 1 + _floor_choice(uv.delay, 599), 3600 + _floor_choice(uv.delay, 255_600)
        )
        self.visit_submitted = self.visit_ended + delay
        month = (day.astype("datetime64[M]") - self.calendar[0]).astype(np.int64) - 1
        column = np.clip(month, self.first_column[:, None], self.width - 1)
        collapsed = column >= self.collapse_column[:, None]
        health = self.health[:, None]
        found = uv.found < np.where(collapsed, 0.85, 0.985)
        operating = found & (uv.operating < np.where(collapsed, 0.55, 0.97))
        low, high = self._employees[:, 0:1], self._employees[:, 1:2]
        employees = np.where(
            operating,
            np.maximum(1, np.rint((low + (high - low) * uv.employees) * (0.6 + 0.5 * health))),
            np.where(found, (uv.employees < 0.3).astype(float), np.nan),
        )
        busy = np.where(self._size("median_revenue") < 50_000, 3.0, 8.0)[:, None] * (0.4 + health)
        lam = np.where(self._industry("customer_facing")[:, None], busy, 0.4)
        customers = np.where(
            operating, np.maximum(0, np.rint(lam + np.sqrt(lam) * zv.customers)), np.where(found, 0.0, np.nan)
        )
        stock_weights = np.stack(
            [0.02 + 0.1 * (1 - health), 0.1 + 0.4 * (1 - health), 0.2 + 0.5 * health, 0.15 * health], axis=-1
        )
        stock_cdf = np.cumsum(stock_weights / stock_weights.sum(axis=-1, keepdims=True), axis=-1)
        stock_index = np.minimum((uv.stock[..., None] > stock_cdf).sum(axis=-1), 3)
        holds_stock = self._industry("holds_stock")[:, None]
        stock = np.where(
            operating, np.where(holds_stock, np.array(STOCK_LEVELS, dtype=object)[stock_index], "none"), None
        ).astype(object)
        stated = self.money["revenue"][rows[:, None], column] / 100 * (1 + 0.06 * zv.revenue)
        revenue = np.where(operating, np.maximum(50.0, np.rint(stated / 50) * 50), np.nan)
        trading = (health >= 0.5) & ~collapsed
        notes = np.empty(self.visit_valid.shape, dtype=object)
        for pool, where in (
            (NOTES_TRADING, operating & trading),
            (NOTES_STRUGGLING, operating & ~trading),
            (NOTES_CLOSED, found & ~operating),
            (NOTES_NOT_FOUND, ~found),
        ):
            choice = np.array(pool, dtype=object)[_floor_choice(uv.notes_pick, len(pool))]
            notes = np.where(where, choice, notes)
        notes = np.where(uv.notes_none < 0.12, None, notes)
        self.visit = {
            "premises_found": found,
            "business_operating": operating,
            "employees_observed": employees,
            "customers_observed": customers,
            "stock_level": stock,
            "reported_monthly_revenue": revenue,
            "latitude": np.round(self.latitude[:, None] + 0.0002 * zv.latitude, 6),
            "longitude": np.round(self.longitude[:, None] + 0.0003 * zv.longitude, 6),
            "altitude": np.round(5 + 145 * uv.altitude, 1),
            "accuracy": np.round(3 + 12 * uv.accuracy, 1),
            "photo_count": np.where(found, 1 + _floor_choice(uv.photos, 6), _floor_choice(uv.photos, 3)),
            "notes": notes,
        }
        for row in np.flatnonzero(self.copier):
            template = _copier_template(self.seed, int(self.agent[row]))
            self.visit["premises_found"][row] = True
            self.visit["business_operating"][row] = True
            for name, value in template.items():
                self.visit[name][row] = value
        self.visit_id = _uuid4_strings(self.raw.reshape(-1, 16)).reshape(count, VISIT_SLOTS)
        switch = self.as_of_day - 270
        self.visit_version = np.where(
            day >= switch, form_version(self.seed, 2), form_version(self.seed, 1)
        ).astype(object)
        self.visit_malformed = np.where(
            self.malformed_visit, _floor_choice(u.malformed_visit_pick, self.visit_count), -1
        )

    # -- labels -----------------------------------------------------------------------------------------

    def _labels(self) -> None:
        filed_late = self.q_filed & (self.q_received > self.q_due)
        open_overdue = self.quarter_valid & ~self.q_filed & (self.q_due < self.as_of_day)
        self.late_filing = (filed_late | open_overdue).any(axis=1)
        industries, regions, sizes, paths = (
            list(self.mix.industries),
            list(self.mix.regions),
            list(self.mix.size_bands),
            list(self.mix.trajectories),
        )
        self.industry_name = np.array(industries, dtype=object)[self.industry]
        self.region_name = np.array(regions, dtype=object)[self.region]
        self.size_name = np.array(sizes, dtype=object)[self.size_band]
        self.trajectory_name = np.array(paths, dtype=object)[self.trajectory]
        self.sme_ids = np.array([sme_id_of(int(i)) for i in self.indices], dtype=object)
        self.meter_ids = [
            _meter_ids(self.seed, int(i), r) for i, r in zip(self.indices, self.region_name, strict=True)
        ]

    def defects(self, row: int) -> tuple[str, ...]:
        found = []
        if self.has_gap[row]:
            found.append("gap")
        if self.duplicate[row]:
            found.append("duplicate_identical" if self.duplicate[row] == 1 else "duplicate_conflicting")
        for flag, label in (
            (self.malformed_books, "malformed_accounting"),
            (self.malformed_meter, "malformed_utility"),
            (self.malformed_visit, "malformed_survey"),
            (self.late_filing, "late_filing"),
        ):
            if flag[row]:
                found.append(label)
        return tuple(found)

    def fraud(self, row: int) -> tuple[str, ...]:
        return tuple(
            label
            for flag, label in ((self.inflated, "inflated_books"), (self.copier, "copied_survey"))
            if flag[row]
        )

    # -- views ----------------------------------------------------------------------------------------------

    def profile(self, row: int) -> SmeProfile:
        u = self.u
        ind = self.ind[self.industry[row]]
        name = (
            f"{NAME_PREFIXES[_floor_choice(u.prefix[row], len(NAME_PREFIXES))]} "
            f"{ind.trade_nouns[_floor_choice(u.noun[row], len(ind.trade_nouns))]} "
            f"{NAME_SUFFIXES[_floor_choice(u.suffix[row], len(NAME_SUFFIXES))]}"
        )
        return SmeProfile(
            sme_id=self.sme_ids[row],
            name=name,
            industry=self.industry_name[row],
            region=self.region_name[row],
            size_band=self.size_name[row],
            founded_year=self.as_of.year - int(self.age[row]),
            currency=CURRENCY,
            trajectory=self.trajectory_name[row],
            health=float(self.health[row]),
            defaults_within_12m=bool(self.defaults[row]),
            defects=self.defects(row),
            fraud=self.fraud(row),
            agent_id=f"agent_{int(self.agent[row]):03d}",
            months_of_history=int(self.history[row]),
            latitude=float(self.latitude[row]),
            longitude=float(self.longitude[row]),
            **account_refs(self.seed, int(self.indices[row])),
        )

    def record(self, row: int) -> SmeRecord:
        first = int(self.first_column[row])
        months = self.calendar[first:]
        duplicate = None
        if self.duplicate[row]:
            duplicate = Duplicate(
                int(self.duplicate_column[row]) - first,
                "identical" if self.duplicate[row] == 1 else "conflicting",
                int(self.duplicate_delta[row]),
            )
        malformed = None
        if self.malformed_books[row]:
            malformed = Malformed(
                int(self.malformed_column[row]) - first,
                BOOK_FIELDS[self.malformed_field[row]],
                MALFORMED_AMOUNTS[self.malformed_text[row]],
            )
        books = Books(
            months=months,
            present=self.present[row, first:],
            money={name: values[row, first:] for name, values in self.money.items()},
            true_revenue=self.true_revenue[row, first:],
            duplicate=duplicate,
            malformed=malformed,
        )
        quarters = self.quarter_valid[row]
        vat = VatObligations(
            period_key=self.q_key[row, quarters],
            start=self.q_start[row, quarters],
            end=self.q_end[row, quarters],
            due=self.q_due[row, quarters],
            received=self.q_received[row, quarters],
            status=np.where(self.q_filed[row, quarters], "F", "O"),
            boxes={name: values[row, quarters] for name, values in self.boxes.items()},
        )
        return SmeRecord(
            int(self.indices[row]), self.profile(row), books, vat, self._meters_of(row), self._visits_of(row)
        )

    def _meters_of(self, row: int) -> tuple[Meter, ...]:
        first = int(self.first_column[row])
        billed = self.billed[row, first:]
        mpan, mprn = self.meter_ids[row]
        meters = []
        specs = [(self.electricity, mpan, "electricity", "kWh", 72, 0)]
        if self.has_gas[row]:
            specs.append((self.gas, mprn, "gas", "therm", 169, -3))
        for number, (data, meter_id, commodity, unit, uom, power) in enumerate(specs):
            malformed = None
            if self.malformed_meter[row] and self.mm_which[row] == number:
                reading = int(self.mm_column[row]) - first
                good = int(data["value"][row, first + reading])
                text = (f"{good}".replace("0", "O", 1) + "O", "NaN", f"{good / 1000:.1f}k")[self.mm_text[row]]
                malformed = Malformed(reading, "value", text)
            meters.append(
                Meter(
                    usage_point_id=meter_id,
                    commodity=commodity,
                    unit=unit,
                    uom=uom,
                    power_of_ten=power,
                    reading_start=self.reading_start[first:],
                    reading_seconds=self.reading_seconds[first:],
                    reading_value=data["value"][row, first:],
                    quantity=data["quantity"][row, first:].astype(float),
                    cost_pence=data["cost"][row, first:],
                    bill_amount_pence=data["amount"][row, first:][billed],
                    bill_issued=self.bill_issued[first:][billed],
                    bill_due=self.bill_due[first:][billed],
                    bill_paid=data["paid"][row, first:][billed],
                    malformed=malformed,
                )
            )
        return tuple(meters)

    def _visits_of(self, row: int) -> tuple[Visit, ...]:
        visits = []
        agent_id = f"agent_{int(self.agent[row]):03d}"
        for slot in range(int(self.visit_count[row])):
            answers = {name: values[row, slot] for name, values in self.visit.items()}
            for name in ("employees_observed", "customers_observed"):
                answers[name] = None if np.isnan(answers[name]) else int(answers[name])
            revenue = answers["reported_monthly_revenue"]
            answers["reported_monthly_revenue"] = None if np.isnan(revenue) else float(revenue)
            for name in ("premises_found", "business_operating"):
                answers[name] = bool(answers[name])
            for name in ("latitude", "longitude", "altitude", "accuracy"):
                answers[name] = float(answers[name])
            answers["photo_count"] = int(answers["photo_count"])
            malformed = None
            if slot == self.visit_malformed[row]:
                malformed = (
                    Malformed(slot, "employees_observed", "a few")
                    if answers["employees_observed"] is not None
                    else Malformed(slot, "location", "not captured")
                )
            visits.append(
                Visit(
                    visit_id=self.visit_id[row, slot],
                    submission_id=int(self.indices[row]) * 10 + slot + 1,
                    form_version=self.visit_version[row, slot],
                    agent_id=agent_id,
                    started_at=int(self.visit_started[row, slot]),
                    ended_at=int(self.visit_ended[row, slot]),
                    utc_offset_hours=int(self.visit_offset[row, slot]),
                    submitted_at=int(self.visit_submitted[row, slot]),
                    malformed=malformed,
                    **answers,
                )
            )
        return tuple(visits)

    # -- canonical truth ------------------------------------------------------------------------------------

    def truth_columns(self) -> dict[str, dict[str, np.ndarray]]:
        """The batch's clean canonical rows, column by column, ordered by SME then key."""
        return {
            "monthly_financials": self._financial_columns(),
            "vat_returns": self._vat_columns(),
            "utility_readings": self._reading_columns(),
            "utility_bills": self._bill_columns(),
            "survey_visits": self._visit_columns(),
        }

    def _financial_columns(self) -> dict[str, np.ndarray]:
        rows, columns = np.nonzero(self.present)
        data = {
            "sme_id": self.sme_ids[rows],
            "period_month": self.calendar[columns].astype("datetime64[D]"),
            "currency": np.full(len(rows), CURRENCY, dtype=object),
        }
        for name in BOOK_FIELDS:
            data[name] = self.money[name][rows, columns] / 100
        return data

    def _vat_columns(self) -> dict[str, np.ndarray]:
        rows, slots = np.nonzero(self.quarter_valid)
        filed = self.q_filed[rows, slots]
        data = {
            "sme_id": self.sme_ids[rows],
            "period_key": self.q_key[rows, slots],
            "period_start": self.q_start[rows, slots],
            "period_end": self.q_end[rows, slots],
            "due_date": self.q_due[rows, slots],
            "status": np.where(filed, "F", "O").astype(object),
            "received_date": self.q_received[rows, slots],
        }
        for name in VAT_BOXES:
            data[name] = np.where(filed, self.boxes[name][rows, slots] / 100, np.nan)
        return data

    def _meter_rows(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, meter number) of every meter-month under ``mask``, sorted by SME, meter id, month."""
        elec_rows, elec_cols = np.nonzero(mask)
        gas_rows, gas_cols = np.nonzero(mask & self.has_gas[:, None])
        rows = np.concatenate([elec_rows, gas_rows])
        cols = np.concatenate([elec_cols, gas_cols])
        meter = np.concatenate([np.zeros(len(elec_rows), np.int64), np.ones(len(gas_rows), np.int64)])
        gas_sorts_first = np.array([mprn < mpan for mpan, mprn in self.meter_ids], dtype=bool)
        rank = np.where(gas_sorts_first[rows], 1 - meter, meter)
        order = np.lexsort((cols, rank, rows))
        return rows[order], cols[order], meter[order]

    def _meter_values(self, name: str, rows: np.ndarray, cols: np.ndarray, meter: np.ndarray) -> np.ndarray:
        return np.where(meter == 0, self.electricity[name][rows, cols], self.gas[name][rows, cols])

    def _usage_point_ids(self, rows: np.ndarray, meter: np.ndarray) -> np.ndarray:
        ids = np.array(self.meter_ids, dtype=object).reshape(-1, 2)
        return ids[rows, meter]

    def _reading_columns(self) -> dict[str, np.ndarray]:
        rows, cols, meter = self._meter_rows(self.valid)
        return {
            "sme_id": self.sme_ids[rows],
            "usage_point_id": self._usage_point_ids(rows, meter),
            "commodity": np.where(meter == 0, "electricity", "gas").astype(object),
            "interval_start": self.reading_start[cols],
            "interval_seconds": self.reading_seconds[cols],
            "consumption": self._meter_values("quantity", rows, cols, meter).astype(float),
            "unit": np.where(meter == 0, "kWh", "therm").astype(object),
            "cost": self._meter_values("cost", rows, cols, meter) / 100,
            "currency": np.full(len(rows), CURRENCY, dtype=object),
        }

    def _bill_columns(self) -> dict[str, np.ndarray]:
        rows, cols, meter = self._meter_rows(self.billed)
        return {
            "sme_id": self.sme_ids[rows],
            "usage_point_id": self._usage_point_ids(rows, meter),
            "period_start": self.reading_start[cols],
            "period_seconds": self.reading_seconds[cols],
            "amount_due": self._meter_values("amount", rows, cols, meter) / 100,
            "currency": np.full(len(rows), CURRENCY, dtype=object),
            "due_date": self.bill_due[cols],
            "paid_date": np.where(
                meter == 0, self.electricity["paid"][rows, cols], self.gas["paid"][rows, cols]
            ),
        }

    def _visit_columns(self) -> dict[str, np.ndarray]:
        rows, slots = np.nonzero(self.visit_valid)
        data = {
            "sme_id": self.sme_ids[rows],
            "visit_id": self.visit_id[rows, slots],
            "form_version": self.visit_version[rows, slots].astype(object),
            "agent_id": np.array([f"agent_{a:03d}" for a in range(AGENT_COUNT + 1)], dtype=object)[
                self.agent[rows]
            ],
            "visited_at": self.visit_started[rows, slots],
            "submitted_at": self.visit_submitted[rows, slots],
        }
        for name in (
            "premises_found",
            "business_operating",
            "employees_observed",
            "customers_observed",
            "stock_level",
            "reported_monthly_revenue",
            "latitude",
            "longitude",
            "photo_count",
            "notes",
        ):
            data[name] = self.visit[name][rows, slots]
        return data


def generate_sme(
    seed: int, index: int, as_of: dt.date, max_months: int = 36, mix: PopulationMix | None = None
) -> SmeRecord:
    """Generate SME number ``index`` (1-based) alone, from ``default_rng([seed, index])``."""
    if index < 1:
        raise ValueError(f"SME index must be at least 1, got {index}")
    return _Batch(seed, np.array([index]), as_of, max_months, mix or PopulationMix()).record(0)


# --- canonical ground truth ------------------------------------------------------------------------------


def _arrow_column(values: np.ndarray, field: pa.Field) -> pa.Array:
    """One truth column as Arrow: NaN, NaT and None become nulls; epoch seconds become UTC timestamps."""
    kind = field.type
    if pa.types.is_timestamp(kind):
        return pa.array(values.astype(np.int64), type=pa.int64()).cast(kind)
    if pa.types.is_date32(kind):
        return pa.array(values.astype("datetime64[D]"), type=kind)
    if pa.types.is_integer(kind):
        numeric = values.astype(float)
        mask = np.isnan(numeric)
        return pa.array(np.where(mask, 0, numeric).astype(np.int64), type=kind, mask=mask)
    if pa.types.is_floating(kind):
        numeric = values.astype(float)
        return pa.array(numeric, type=kind, mask=np.isnan(numeric))
    if pa.types.is_boolean(kind):
        return pa.array(values.astype(bool), type=kind)
    return pa.array(values, type=kind)


def _truth_table(name: str, columns: dict[str, np.ndarray]) -> pa.Table:
    """One batch's rows of table ``name`` with the canonical schema (lineage columns empty)."""
    schema = TABLES[name].schema
    total = len(columns["sme_id"])
    empty = pa.array(np.full(total, "", dtype=object), type=pa.string())
    arrays = [
        empty if field.name in ("source_record", "raw_sha256") else _arrow_column(columns[field.name], field)
        for field in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


# --- the universe --------------------------------------------------------------------------------------------

BATCH_SIZE = 2048
"""SMEs generated together by :meth:`Universe.truth` and :meth:`Universe.profiles`."""
CACHE_BLOCK = 64
"""SMEs generated together when :meth:`Universe.sme` misses its cache."""


class Universe:
    """``size`` SMEs (``SME-000001`` ...) generated from ``seed`` as of ``as_of``.

    SMEs are generated on demand: :meth:`sme` keeps recently used ones in an LRU cache (the server
    pages through them); :meth:`profiles` and :meth:`truth` generate in batches without caching,
    so 100,000 SMEs fit in memory.
    """

    def __init__(
        self,
        seed: int,
        size: int,
        as_of: dt.date,
        max_months: int = 36,
        mix: PopulationMix | None = None,
        cache_size: int = 4096,
    ) -> None:
        if size < 1:
            raise ValueError(f"universe size must be at least 1, got {size}")
        if not 3 <= max_months <= 120:
            raise ValueError(f"max_months must be between 3 and 120, got {max_months}")
        if isinstance(as_of, dt.datetime):
            as_of = as_of.date()
        self.seed = int(seed)
        self.size = int(size)
        self.as_of = as_of
        self.max_months = int(max_months)
        self.mix = mix or PopulationMix()
        self._cache: OrderedDict[int, SmeRecord] = OrderedDict()
        self._cache_size = max(cache_size, CACHE_BLOCK)
        self._cache_lock = threading.Lock()
        self._profiles: pd.DataFrame | None = None

    def __repr__(self) -> str:
        return f"Universe(seed={self.seed}, size={self.size}, as_of={self.as_of.isoformat()})"

    @property
    def sme_ids(self) -> list[str]:
        return [sme_id_of(i) for i in range(1, self.size + 1)]

    def _index(self, sme: str | int) -> int:
        index = index_of(sme) if isinstance(sme, str) else int(sme)
        if not 1 <= index <= self.size:
            raise KeyError(f"{sme!r} is not in {self!r}")
        return index

    def _batch(self, indices: Sequence[int]) -> _Batch:
        return _Batch(self.seed, np.asarray(indices), self.as_of, self.max_months, self.mix)

    def generate(self, sme: str | int) -> SmeRecord:
        """One SME by id or index, generated afresh."""
        return self._batch([self._index(sme)]).record(0)

    def sme(self, sme: str | int) -> SmeRecord:
        """One SME by id or index, from an LRU cache.

        A miss generates the whole block of ``CACHE_BLOCK`` neighbours at once (a batch costs little
        more than one SME), so paging through many SMEs stays cheap.
        """
        index = self._index(sme)
        with self._cache_lock:
            record = self._cache.get(index)
            if record is not None:
                self._cache.move_to_end(index)
                return record
            start = (index - 1) // CACHE_BLOCK * CACHE_BLOCK + 1
            block = [i for i in range(start, min(start + CACHE_BLOCK, self.size + 1)) if i not in self._cache]
            batch = self._batch(block)
            for row, block_index in enumerate(block):
                self._cache[block_index] = batch.record(row)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return self._cache[index]

    def records(self, sme_ids: Iterable[str] | None = None) -> Iterable[SmeRecord]:
        """Every requested SME (all by default) in index order, generated in batches."""
        for batch in self._batches(sme_ids):
            for row in range(len(batch.indices)):
                yield batch.record(row)

    def _batches(self, sme_ids: Iterable[str] | None) -> Iterable[_Batch]:
        indices = (
            list(range(1, self.size + 1)) if sme_ids is None else sorted({self._index(s) for s in sme_ids})
        )
        for start in range(0, len(indices), BATCH_SIZE):
            yield self._batch(indices[start : start + BATCH_SIZE])

    @functools.cached_property
    def _refs_index(self) -> dict[tuple[str, str], int]:
        index: dict[tuple[str, str], int] = {}
        for i in range(1, self.size + 1):
            for source, ref in zip(SOURCES_REFS, account_refs(self.seed, i).values(), strict=True):
                index[(source, ref)] = i
        return index

    def account_index(self, source: str, account_ref: str) -> int | None:
        """Index of the SME whose account at ``source``'s provider is ``account_ref``, or None."""
        return self._refs_index.get((source, account_ref))

    def accounts(self, source: str) -> list[str]:
        """Every SME's account ref at ``source``'s provider, in index order (no SME is generated)."""
        return [ref for (kind, ref) in self._refs_index if kind == source]

    def lookup(self, source: str, account_ref: str) -> SmeRecord | None:
        """The SME whose account at ``source``'s provider is ``account_ref``, or None."""
        index = self.account_index(source, account_ref)
        return None if index is None else self.sme(index)

    def profiles(self) -> pd.DataFrame:
        """One row per SME: who it is, its latent state and ground truth, and its provider accounts."""
        if self._profiles is None:
            rows = [batch.profile(row) for batch in self._batches(None) for row in range(len(batch.indices))]
            frame = pd.DataFrame([p.__dict__ for p in rows])
            frame["defects"] = [list(p.defects) for p in rows]
            frame["fraud"] = [list(p.fraud) for p in rows]
            self._profiles = frame
        return self._profiles.copy()

    def truth_arrow(self, sme_ids: Iterable[str] | None = None) -> dict[str, pa.Table]:
        """The clean canonical tables as Arrow tables with the canonical schemas (see :meth:`truth`)."""
        parts: dict[str, list[pa.Table]] = {name: [] for name in TABLES}
        for batch in self._batches(sme_ids):
            for name, columns in batch.truth_columns().items():
                parts[name].append(_truth_table(name, columns))
        return {
            name: pa.concat_tables(tables) if tables else TABLES[name].schema.empty_table()
            for name, tables in parts.items()
        }

    def truth(self, sme_ids: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
        """The canonical tables a correct connector produces from the served data, lineage left empty.

        Exactly the columns of ``warehouse.canonical.TABLES``, ordered by SME, then by key (meter,
        then time; survey visits by start time). For SMEs whose served data has duplicate or
        malformed records this is the clean data behind them; gaps in the books are real missing rows.
        """
        return {name: table.to_pandas() for name, table in self.truth_arrow(sme_ids).items()}
