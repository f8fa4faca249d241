"""Scoring: features in, probability of default and its explanation out.

The pipeline sees only the narrow :class:`ScoringModel` interface (a ``version`` and
``predict(features) -> Prediction``), so a trained model can replace the first version without
touching anything else. The first version is :data:`SCORECARD`, a documented logistic scorecard:

    badness_i  = clip((t_i(x_i) - good_i) / (bad_i - good_i), 0, 1)      one per factor, 0 = fine
    logit      = intercept + sum_i weight_i * badness_i + sum_s absent_s * penalty_s
    pd_12m     = 1 / (1 + exp(-logit))

where ``t_i`` is the identity, ``log10`` (revenue level) or ``|ln x|`` (cross-source ratios, whose
best value is 1), a missing value is first replaced by the factor's documented ``missing_as``, and
a factor whose source is absent gives way to that source's absence penalty instead. Every weight
is non-negative and every badness rises as its feature worsens, so a worse feature never lowers
the PD. The contribution of each factor, ``weight_i * badness_i`` in logit units, is what the
reason codes rank.

After the model come pure functions of the PD (and, for the limit, the features):
:func:`score_points`, :func:`grade`, :func:`reason_codes`, :func:`credit_limit` and
:func:`indicative_rate`. ``evaluation/SCORING.md`` writes down every constant used here.

>>> round(float(indicative_rate(pd.Series([0.02])).iloc[0]), 4)
0.094
>>> list(grade(pd.Series([0.005, 0.2])))
['A', 'E']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import pyarrow as pa


@dataclass(frozen=True)
class Prediction:
    """A model's output for a frame of features (both indexed like the features).

    ``contributions`` has one column per reason code: how much that factor raised the logit of the
    PD (0 when it did not), in logit units.
    """

    pd_12m: pd.Series
    contributions: pd.DataFrame
    pd_low: pd.Series | None = None
    """Lower end of the PD's interval (what the missing inputs could at best have said); a model
    without one gives None and the interval is the PD itself."""
    pd_high: pd.Series | None = None
    """Upper end of the PD's interval."""


@runtime_checkable
class ScoringModel(Protocol):
    """What the pipeline needs from a model: a version for the dossier and a prediction."""

    version: str

    def predict(self, features: pd.DataFrame) -> Prediction:
        """PD in 12 months and per-reason-code contributions for each row of ``features``."""
        ...


@dataclass(frozen=True)
class Factor:
    """One scorecard factor: a feature, how it is read, and what it weighs.

    ``good`` and ``bad`` are anchors on the transformed scale: at ``good`` or better the factor
    adds nothing, at ``bad`` or worse it adds its full ``weight``, linearly in between.
    ``missing_as`` stands in for a null feature while the sources it needs are present; when one
    of ``sources`` is absent the factor adds nothing (the absence penalty speaks instead).
    """

    code: str
    feature: str
    good: float
    bad: float
    weight: float
    missing_as: float
    sources: tuple[str, ...]
    transform: str = "identity"
    text: str = ""

    def transformed(self, values: np.ndarray) -> np.ndarray:
        """The feature on the scale of the anchors (``identity``, ``log10`` or ``abs_log``)."""
        if self.transform == "identity":
            return values
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.transform == "log10":
                return np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), -np.inf)
            if self.transform == "abs_log":
                return np.where(values > 0, np.abs(np.log(np.where(values > 0, values, 1.0))), np.inf)
        raise ValueError(f"factor {self.code}: unknown transform {self.transform!r}")

    def badness(self, values: np.ndarray) -> np.ndarray:
        """0 at ``good`` or better, 1 at ``bad`` or worse, linear in between (monotone)."""
        scaled = (self.transformed(values) - self.good) / (self.bad - self.good)
        return np.clip(scaled, 0.0, 1.0)


@dataclass(frozen=True)
class AbsencePenalty:
    """Logit added when an SME did not share a source at all."""

    code: str
    source: str
    weight: float
    text: str


def source_presence(features: pd.DataFrame) -> pd.DataFrame:
    """Which sources an SME shared, read from the features alone (one boolean column per source).

    The count features are null exactly when their source gave no row: accounting shows as
    ``months_of_accounts > 0``, tax as ``vat_returns_due``, utility as ``utility_bills_due`` and
    survey as ``survey_visits`` being present.
    """
    return pd.DataFrame(presence_arrays(features), index=features.index)


def presence_arrays(features: pd.DataFrame) -> dict[str, np.ndarray]:
    """:func:`source_presence` as one boolean array per source."""
    return {
        "accounting": features["months_of_accounts"].fillna(0).to_numpy() > 0,
        "tax": features["vat_returns_due"].notna().to_numpy(),
        "utility": features["utility_bills_due"].notna().to_numpy(),
        "survey": features["survey_visits"].notna().to_numpy(),
    }


@dataclass(frozen=True)
class Scorecard:
    """The logistic scorecard described in the module docstring (implements :class:`ScoringModel`)."""

    version: str
    intercept: float
    factors: tuple[Factor, ...]
    absence_penalties: tuple[AbsencePenalty, ...]

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.factors] + [p.code for p in self.absence_penalties]

    @property
    def texts(self) -> dict[str, str]:
        return {f.code: f.text for f in self.factors} | {p.code: p.text for p in self.absence_penalties}

    def predict(self, features: pd.DataFrame) -> Prediction:
        """PD and contributions; needs only the factor features and the four count features."""
        frame = self.contributions(features)
        logit = self.intercept + frame.sum(axis=1)
        return Prediction(pd_12m=(1.0 / (1.0 + np.exp(-logit))).rename("pd_12m"), contributions=frame)

    def contributions(
        self, features: pd.DataFrame, present: dict[str, np.ndarray] | None = None
    ) -> pd.DataFrame:
        """The contributions of :meth:`predict` (one column per code, indexed like ``features``);
        ``present`` is :func:`presence_arrays` of ``features`` when the caller has it."""
        present = presence_arrays(features) if present is None else present
        contributions = {}
        for factor in self.factors:
            shared = np.logical_and.reduce([present[source] for source in factor.sources])
            values = features[factor.feature].to_numpy(dtype=np.float64, na_value=np.nan)
            values = np.where(np.isnan(values), factor.missing_as, values)
            contributions[factor.code] = np.where(shared, factor.weight * factor.badness(values), 0.0)
        for penalty in self.absence_penalties:
            contributions[penalty.code] = np.where(present[penalty.source], 0.0, penalty.weight)
        return pd.DataFrame(contributions, index=features.index)


BOOKS = ("accounting",)
BOOKS_AND_TAX = ("accounting", "tax")
BOOKS_AND_UTILITY = ("accounting", "utility")
BOOKS_AND_SURVEY = ("accounting", "survey")
LN = np.log

REASON_TEXTS: dict[str, str] = {
    "SHORT_BOOKS_HISTORY": "Fewer than 12 months of bookkeeping are available.",
    "LOW_REVENUE": "Revenue over the last 12 months is low or absent.",
    "REVENUE_DECLINING": "Revenue is lower than in the same months a year earlier.",
    "REVENUE_TREND_DOWN": "Monthly revenue has been falling over the last 12 months.",
    "REVENUE_VOLATILE": "Monthly revenue swings widely from month to month.",
    "LOW_GROSS_MARGIN": "Sales barely cover the direct cost of what is sold.",
    "LOW_OPERATING_MARGIN": "Operations earn little or lose money before interest and tax.",
    "LOSS_MAKING": "Net profit over the last 12 months is thin or negative.",
    "LOW_LIQUIDITY": "Current assets cover short-term liabilities poorly.",
    "LOW_QUICK_RATIO": "Without selling inventory, short-term liabilities are poorly covered.",
    "LOW_CASH_RUNWAY": "Cash in hand covers few months of running costs.",
    "HIGH_LEVERAGE": "Liabilities are high relative to assets.",
    "LOW_INTEREST_COVER": "Operating profit covers interest payments thinly or not at all.",
    "VAT_FILED_LATE": "VAT returns were filed late or are overdue.",
    "VAT_BOOKS_MISMATCH": "Sales declared to the tax authority do not match revenue in the books.",
    "UTILITY_PAID_LATE": "Utility bills were paid late or are unpaid.",
    "UTILITY_USAGE_FALLING": "Metered energy use at the premises has fallen from a year earlier.",
    "USAGE_BELOW_BOOKS_GROWTH": "Energy use at the premises fell while revenue in the books grew.",
    "SURVEY_NOT_VERIFIED": "Field visits did not find the business trading at its address.",
    "SURVEY_REVENUE_MISMATCH": "Revenue the owner stated to the field agent differs from the books.",
    "NO_BOOKS": "No bookkeeping data was shared.",
    "NO_TAX_DATA": "No VAT filings were shared to confirm the books.",
    "NO_UTILITY_DATA": "No utility account was shared to confirm activity.",
    "NO_SURVEY": "No field visit has confirmed the business.",
}
"""Plain-language text of every reason code of the scorecard."""

# fmt: off
_FACTORS = (
    # code                        feature                        good            bad             weight missing_as sources            transform
    ("SHORT_BOOKS_HISTORY",       "months_of_accounts",          12,             0,              0.6,   0,         BOOKS,             "identity"),
    ("LOW_REVENUE",               "revenue_12m",                 np.log10(5e5),  np.log10(2e4),  0.3,   0.0,       BOOKS,             "log10"),
    ("REVENUE_DECLINING",         "revenue_growth_yoy",          0.05,           -0.30,          0.5,   0.0,       BOOKS,             "identity"),
    ("REVENUE_TREND_DOWN",        "revenue_trend_slope",         0.0,            -0.05,          0.3,   0.0,       BOOKS,             "identity"),
    ("REVENUE_VOLATILE",          "revenue_volatility",          0.15,           0.80,           0.2,   0.30,      BOOKS,             "identity"),
    ("LOW_GROSS_MARGIN",          "gross_margin",                0.15,           0.0,            0.2,   0.05,      BOOKS,             "identity"),
    ("LOW_OPERATING_MARGIN",      "operating_margin",            0.10,           -0.10,          0.4,   -0.10,     BOOKS,             "identity"),
    ("LOSS_MAKING",               "net_margin",                  0.05,           -0.15,          0.3,   -0.15,     BOOKS,             "identity"),
    ("LOW_LIQUIDITY",             "current_ratio",               1.5,            0.5,            0.3,   1.0,       BOOKS,             "identity"),
    ("LOW_QUICK_RATIO",           "quick_ratio",                 1.0,            0.3,            0.2,   0.7,       BOOKS,             "identity"),
    ("LOW_CASH_RUNWAY",           "cash_to_monthly_costs",       3.0,            0.0,            0.5,   0.5,       BOOKS,             "identity"),
    ("HIGH_LEVERAGE",             "debt_to_assets",              0.5,            1.0,            0.4,   0.8,       BOOKS,             "identity"),
    ("LOW_INTEREST_COVER",        "interest_coverage",           4.0,            1.0,            0.3,   50.0,      BOOKS,             "identity"),
    ("VAT_FILED_LATE",            "vat_on_time_rate",            1.0,            0.5,            0.6,   1.0,       ("tax",),          "identity"),
    ("VAT_BOOKS_MISMATCH",        "vat_books_revenue_ratio",     LN(1 / 0.92),   LN(1 / 0.75),   2.5,   1.0,       BOOKS_AND_TAX,     "abs_log"),
    ("UTILITY_PAID_LATE",         "utility_on_time_rate",        1.0,            0.5,            0.6,   1.0,       ("utility",),      "identity"),
    ("UTILITY_USAGE_FALLING",     "utility_usage_trend",         0.0,            -0.4,           0.3,   0.0,       ("utility",),      "identity"),
    ("USAGE_BELOW_BOOKS_GROWTH",  "utility_books_revenue_ratio", 0.85,           0.5,            1.0,   1.0,       BOOKS_AND_UTILITY, "identity"),
    ("SURVEY_NOT_VERIFIED",       "survey_verified_rate",        1.0,            0.0,            1.2,   1.0,       ("survey",),       "identity"),
    ("SURVEY_REVENUE_MISMATCH",   "survey_revenue_ratio",        LN(1.3),        LN(2.5),        0.8,   1.0,       BOOKS_AND_SURVEY,  "abs_log"),
)
_ABSENCE_PENALTIES = (
    # code               source        weight
    ("NO_BOOKS",         "accounting", 2.5),
    ("NO_TAX_DATA",      "tax",        0.4),
    ("NO_UTILITY_DATA",  "utility",    0.2),
    ("NO_SURVEY",        "survey",     0.2),
)
# fmt: on

SCORECARD = Scorecard(
    version="scorecard-1.0.0",
    intercept=-4.6,
    factors=tuple(
        Factor(
            code,
            feature,
            float(good),
            float(bad),
            weight,
            float(missing),
            sources,
            transform,
            REASON_TEXTS[code],
        )
        for code, feature, good, bad, weight, missing, sources, transform in _FACTORS
    ),
    absence_penalties=tuple(
        AbsencePenalty(code, source, weight, REASON_TEXTS[code])
        for code, source, weight in _ABSENCE_PENALTIES
    ),
)

"""The first scoring model; every constant is justified in ``evaluation/SCORING.md``."""

MIN_REASON_CONTRIBUTION = 0.05
"""A factor is a reason only if it raised the logit by more than this (about 5% in odds)."""

SCORE_MIN, SCORE_MAX = 300, 850
SCORE_ANCHOR_POINTS = 650
SCORE_ANCHOR_PD = 0.02
POINTS_TO_DOUBLE_ODDS = 40.0

GRADE_BANDS: tuple[tuple[str, float], ...] = (("A", 0.01), ("B", 0.03), ("C", 0.07), ("D", 0.15))
"""Grade and the PD it must stay below; at or above the last bound the grade is E."""


@dataclass(frozen=True)
class LendingTerms:
    """The constants of the recommended limit and the indicative rate (``evaluation/SCORING.md`` §4).

    The application passes them in from its settings (``DOSSIER_LENDING_*``); these defaults are the
    documented ones.
    """

    dscr: float = 1.25
    """Debt-service coverage required: annual debt service may be at most EBITDA / dscr."""
    term_months: int = 36
    """Term of the loan the limit is sized for (monthly annuity)."""
    revenue_cap: float = 0.20
    """The limit never exceeds this share of the last 12 months' revenue."""
    loss_given_default: float = 0.45
    """Share of the amount lost when the SME defaults."""
    funding_cost: float = 0.05
    """Lender's annual cost of the money lent."""
    operating_cost: float = 0.02
    """Annual cost of originating and servicing the loan, per unit lent."""
    capital_charge: float = 0.015
    """Annual cost of the capital held against the loan, per unit lent."""
    max_rate: float = 0.35
    """Cap of the indicative rate."""
    max_pd: float = 0.30
    """No limit is recommended at or above this PD."""
    step: float = 100.0
    """The limit is rounded down to a multiple of this."""


LENDING_TERMS = LendingTerms()
"""The documented defaults."""


def _logit(pd_12m: pd.Series) -> np.ndarray:
    p = np.clip(pd_12m.to_numpy(dtype=np.float64), 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def score_points(pd_12m: pd.Series) -> pd.Series:
    """Points on 300-850, higher is safer: a monotone transform of the PD's log-odds.

    ``score = clip(round(650 - 40/ln2 * (logit(pd) - logit(0.02))), 300, 850)``: 650 points at a
    PD of 2%, and 40 points fewer each time the odds of default double.
    """
    anchor = np.log(SCORE_ANCHOR_PD / (1 - SCORE_ANCHOR_PD))
    points = SCORE_ANCHOR_POINTS - POINTS_TO_DOUBLE_ODDS / np.log(2) * (_logit(pd_12m) - anchor)
    return pd.Series(
        np.clip(np.round(points), SCORE_MIN, SCORE_MAX).astype(np.int32), index=pd_12m.index, name="score"
    )


def grade(pd_12m: pd.Series) -> pd.Series:
    """Risk grade: A if pd < 1%, B if < 3%, C if < 7%, D if < 15%, else E."""
    bounds = np.array([bound for _, bound in GRADE_BANDS])
    letters = np.array([letter for letter, _ in GRADE_BANDS] + ["E"], dtype=object)
    band = np.searchsorted(bounds, pd_12m.to_numpy(dtype=np.float64), side="right")
    return pd.Series(pd.array(letters[band], dtype="str"), index=pd_12m.index, name="grade")


def reason_codes(
    contributions: pd.DataFrame, top: int = 4, texts: Mapping[str, str] = REASON_TEXTS
) -> pd.DataFrame:
    """The codes (and texts) of the ``top`` factors that raised each row's PD most, strongest first.

    A factor counts only if its contribution exceeds ``MIN_REASON_CONTRIBUTION``; ties keep the
    column order. Returns ``reason_codes`` and ``reason_texts`` as list columns.
    """
    unknown = [c for c in contributions.columns if c not in texts]
    if unknown:
        raise ValueError(f"reason codes without a text: {unknown}")
    values = contributions.to_numpy(dtype=np.float64)
    order = np.argsort(-values, axis=1, kind="stable")[:, :top]
    strongest = np.take_along_axis(values, order, axis=1)
    chosen = strongest > MIN_REASON_CONTRIBUTION
    offsets = pa.array(np.concatenate([[0], chosen.sum(axis=1).cumsum()]).astype(np.int32))
    codes = np.array(contributions.columns, dtype=object)[order][chosen]
    code_texts = np.array([texts[c] for c in contributions.columns], dtype=object)[order][chosen]

    def as_lists(values: np.ndarray) -> pd.arrays.ArrowExtensionArray:
        return pd.arrays.ArrowExtensionArray(
            pa.ListArray.from_arrays(offsets, pa.array(values, type=pa.string()))
        )

    return pd.DataFrame(
        {"reason_codes": as_lists(codes), "reason_texts": as_lists(code_texts)}, index=contributions.index
    )


def indicative_rate(pd_12m: pd.Series, terms: LendingTerms = LENDING_TERMS) -> pd.Series:
    """Risk-based annual rate: expected loss + funding + operating cost + capital charge, capped.

    ``rate = min(pd * lgd + funding_cost + operating_cost + capital_charge, max_rate)``; with the
    defaults ``0.45 pd + 0.085``, at most 35%.
    """
    rate = (
        pd_12m.to_numpy(dtype=np.float64) * terms.loss_given_default
        + terms.funding_cost
        + terms.operating_cost
        + terms.capital_charge
    )
    return pd.Series(np.minimum(rate, terms.max_rate), index=pd_12m.index, name="indicative_rate")


def annuity_factor(annual_rate: np.ndarray, months: int) -> np.ndarray:
    """Present value of 1 a month for ``months`` months at ``annual_rate / 12`` a month.

    >>> round(float(annuity_factor(np.array([0.0]), 36)[0]), 6), round(float(annuity_factor(np.array([0.12]), 12)[0]), 4)
    (36.0, 11.2551)
    """
    monthly = np.asarray(annual_rate, dtype=np.float64) / 12.0
    safe = np.where(monthly > 0, monthly, 1.0)
    return np.where(monthly > 0, (1.0 - (1.0 + safe) ** -months) / safe, float(months))


def credit_limit(
    features: pd.DataFrame, pd_12m: pd.Series, rate: pd.Series, terms: LendingTerms = LENDING_TERMS
) -> pd.Series:
    """Recommended limit from cash flow: the amount whose annuity the EBITDA can service.

    ``max annual debt service = max(ebitda_12m, 0) / dscr``; the limit is the present value of that
    service paid monthly over ``term_months`` at ``rate`` (the indicative rate), capped at
    ``revenue_cap * revenue_12m``, rounded down to ``step``. Zero without books (no months of
    accounts, no positive revenue or no EBITDA) and at or above ``max_pd``.
    """
    has_books = features["months_of_accounts"].fillna(0).to_numpy() > 0
    revenue = features["revenue_12m"].to_numpy(dtype=np.float64, na_value=np.nan)
    ebitda = features["ebitda_12m"].to_numpy(dtype=np.float64, na_value=np.nan)
    usable = has_books & (revenue > 0) & (ebitda > 0) & (pd_12m.to_numpy(dtype=np.float64) < terms.max_pd)
    service = np.where(usable, ebitda, 0.0) / terms.dscr
    amount = service / 12.0 * annuity_factor(rate.to_numpy(dtype=np.float64), terms.term_months)
    limit = np.minimum(amount, terms.revenue_cap * np.where(usable, revenue, 0.0))
    return pd.Series(np.floor(limit / terms.step) * terms.step, index=features.index, name="credit_limit")


HINT_TEXTS: dict[str, str] = {
    "LOW_RETURN_ON_ASSETS": "raise profit relative to the assets employed",
    "LOW_MARGINS": "keep more of each sale as profit (prices, costs)",
    "HIGH_LEVERAGE": "reduce liabilities or add equity",
    "LOW_LIQUIDITY": "hold more current assets (cash, receivables) against short-term liabilities",
    "LOW_DEBT_SERVICE": "grow earnings relative to debt, or repay debt",
    "LOW_INTEREST_COVER": "raise operating profit relative to interest, or refinance expensive debt",
    "REVENUE_DECLINING": "restore revenue to last year's level",
    "SHORT_TERM_DEBT_HEAVY": "turn short-term debt into long-term funding, or pay it down",
    "WEAK_LONG_TERM_FUNDING": "fund fixed assets with equity or long-term loans",
    "STATEMENT_DATA_MISSING": "share books for a longer period (24 months or more) so every ratio can be computed",
    "SHORT_BOOKS_HISTORY": "share at least 12 months of books",
    "LOW_REVENUE": "grow revenue",
    "REVENUE_TREND_DOWN": "reverse the fall in monthly revenue",
    "REVENUE_VOLATILE": "steady monthly revenue",
    "LOW_GROSS_MARGIN": "raise the gross margin",
    "LOW_OPERATING_MARGIN": "raise the operating margin",
    "LOSS_MAKING": "return to net profit",
    "LOW_QUICK_RATIO": "hold more cash or receivables against short-term liabilities",
    "LOW_CASH_RUNWAY": "hold more cash against monthly costs",
    "VAT_FILED_LATE": "file VAT returns on time",
    "VAT_BOOKS_MISMATCH": "reconcile the books with the VAT returns",
    "UTILITY_PAID_LATE": "pay utility bills by their due date",
    "UTILITY_USAGE_FALLING": "(activity at the premises has fallen; no single action)",
    "USAGE_BELOW_BOOKS_GROWTH": "reconcile the books' revenue growth with activity at the premises",
    "SURVEY_NOT_VERIFIED": "arrange a field visit that finds the business trading at its address",
    "SURVEY_REVENUE_MISMATCH": "reconcile the revenue stated at the field visit with the books",
    "NO_BOOKS": "share bookkeeping data",
    "NO_TAX_DATA": "share VAT filings",
    "NO_UTILITY_DATA": "share a utility account",
    "NO_SURVEY": "agree to a field visit",
}
"""What the SME could do about each reason code: the start of the improvement hint."""


@cache
def _hint_texts(known: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The hints of :func:`improvement_hints` for contributions with the columns ``known``: one text
    per (grade band, code, enough), band 0 being grade A and code ``len(known)`` the broad hint;
    and the logit of each band's target PD (none for grade A)."""
    bounds = np.array([0.0, *(b for _, b in GRADE_BANDS)])
    letters = [letter for letter, _ in GRADE_BANDS] + ["E"]
    targets = [(letters[b - 1], bounds[b]) for b in range(1, len(bounds))]
    texts = np.empty((len(bounds), len(known) + 1, 2), dtype=object)
    texts[0] = "Grade A is the best grade."
    for b, (letter, target) in enumerate(targets, start=1):
        for code, name in enumerate(known):
            for enough, said in enumerate(("this alone would not be enough", "this alone would be enough")):
                texts[b, code, enough] = (
                    f"To reach grade {letter} (PD below {target:.0%}): {HINT_TEXTS[name]}; {said}."
                )
        texts[b, len(known)] = (
            f"To reach grade {letter} (PD below {target:.0%}) the evidence must improve broadly."
        )
    texts.setflags(write=False)
    target_logit = np.array([np.nan] + [float(np.log(target / (1 - target))) for _, target in targets])
    target_logit.setflags(write=False)
    return texts, target_logit


def improvement_hints(pd_12m: pd.Series, contributions: pd.DataFrame) -> pd.Series:
    """A short hint per row of what would improve the grade.

    The next better grade needs the logit to fall below that grade's PD bound; the hint names the
    action of the largest contribution (:data:`HINT_TEXTS`) and whether removing that contribution
    alone would be enough. Grade A gets ``"Grade A is the best grade."``.
    """
    bounds = np.array([0.0, *(b for _, b in GRADE_BANDS)])
    values = pd_12m.to_numpy(dtype=np.float64)
    band = np.searchsorted(bounds[1:], values, side="right")
    logit = _logit(pd_12m)
    known = [c for c in contributions.columns if c in HINT_TEXTS]
    table = contributions[known].to_numpy(dtype=np.float64) if known else np.zeros((len(values), 0))
    texts, target_logit = _hint_texts(tuple(known))
    needed = logit - target_logit[band]
    code = np.full(len(values), len(known))
    enough = np.zeros(len(values), dtype=np.int64)
    if table.shape[1]:
        rows = np.flatnonzero(~(table.max(axis=1) <= MIN_REASON_CONTRIBUTION))
        top = np.argmax(table[rows], axis=1)
        code[rows] = top
        enough[rows] = table[rows, top] >= needed[rows]
    hints = texts[band, code, enough]
    return pd.Series(pd.array(hints, dtype="str"), index=pd_12m.index, name="improvement_hint")


__all__ = [
    "HINT_TEXTS",
    "LENDING_TERMS",
    "REASON_TEXTS",
    "SCORECARD",
    "AbsencePenalty",
    "Factor",
    "LendingTerms",
    "Prediction",
    "Scorecard",
    "ScoringModel",
    "annuity_factor",
    "credit_limit",
    "grade",
    "improvement_hints",
    "indicative_rate",
    "presence_arrays",
    "reason_codes",
    "score_points",
    "source_presence",
]
