"""The dossier's PD: the trained statement model plus documented expert adjustments.

:class:`StatementScoring` implements :class:`~evaluation.scoring.ScoringModel`. For each SME it reads
the statement ratios (``attrN`` columns, from :func:`evaluation.ratios.statement_ratios`, which
:func:`evaluation.evaluate` joins to the features) and the behavioural features:

    logit  = statement_logit + sum of expert adjustments
    pd_12m = 1 / (1 + exp(-logit))

* ``statement_logit`` is the calibrated logit of :mod:`evaluation.statement_model` when the SME
  shared books; without books it is the logit of the training population's bankruptcy rate (what
  one knows of a firm whose statements are unknown), and the reason ``NO_BOOKS`` carries how far
  that lies above a typical firm (the training median).
* The expert adjustments are the scorecard's behavioural factors and absence penalties
  (:data:`EXPERT_CODES`, anchors and weights in ``evaluation/SCORING.md`` §3). No labelled outcomes
  exist for VAT, utility or field-survey data yet, so these are judgement, not fitted, and the
  model card says so. Each is >= 0 and rises as its signal worsens, so the PD stays monotone.

* Books the tax authority contradicts are not credited: the statement model's credit, how far its
  logit lies below the no-books logit, is withdrawn in proportion to the ``VAT_BOOKS_MISMATCH``
  badness (0 when VAT-declared sales match the books within 8%, all of it from a 25% gap), and the
  withdrawn amount is added to that reason's contribution. Inflated revenue makes every statement
  ratio look better; only the VAT return, which follows real turnover, says otherwise. For a fixed
  VAT badness the PD still rises with worse statements, and a worse mismatch never lowers it.

Contributions: the statement model's per-reason-code TreeSHAP shares (in logit units, >= 0), the
``NO_BOOKS`` term and each expert adjustment; the reason codes rank them.

Refit from outcomes. Once lenders have reported enough outcomes, ``make train --outcomes FILE``
refits the adjustments (``evaluation.train.refit_adjustments``) and writes them, versioned, to
:data:`ADJUSTMENTS_FILE`: a weight per code, the share of the books' credit the VAT mismatch
withdraws (:data:`UNTRUSTED_SHARE`, 1 in the expert rules) and an intercept (0 in the expert rules).
:func:`default_statement_scoring` uses that file when it holds a refit of the committed statement
model, else the expert rules; the dossier's model version names which.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.scoring import REASON_TEXTS, SCORECARD, Prediction, Scorecard, presence_arrays
from evaluation.statement_model import (
    ARTIFACTS,
    RATIOS,
    STATEMENT_CODES,
    STATEMENT_MODEL_VERSION,
    STATEMENT_TEXTS,
    StatementModel,
    default_statement_model,
    ratio_block,
)

EXPERT_CODES: tuple[str, ...] = (
    "SHORT_BOOKS_HISTORY",
    "VAT_FILED_LATE",
    "VAT_BOOKS_MISMATCH",
    "UTILITY_PAID_LATE",
    "UTILITY_USAGE_FALLING",
    "USAGE_BELOW_BOOKS_GROWTH",
    "SURVEY_NOT_VERIFIED",
    "SURVEY_REVENUE_MISMATCH",
    "NO_TAX_DATA",
    "NO_UTILITY_DATA",
    "NO_SURVEY",
)
"""Scorecard terms kept as expert adjustments to the statement model's log-odds."""

UNTRUSTED_BOOKS_CODE = "VAT_BOOKS_MISMATCH"
"""The expert factor whose badness also withdraws the credit the books earn (see the module doc)."""

EXPERT_VERSION = "expert-1"
"""Version of the expert adjustments (bumped whenever an anchor or weight changes)."""


UNTRUSTED_SHARE = "VAT_BOOKS_UNTRUSTED"
"""Name of the coefficient that scales the withdrawn credit of books the VAT returns contradict (1 in
the expert rules; not a reason code: what it withdraws is reported under ``VAT_BOOKS_MISMATCH``)."""

ADJUSTMENTS_FILE = ARTIFACTS / f"{STATEMENT_MODEL_VERSION}-adjustments.json"
"""Where ``make train --outcomes`` writes the adjustments refitted on lender outcomes."""


def expert_adjustments(
    codes: tuple[str, ...] = EXPERT_CODES,
    weights: dict[str, float] | None = None,
    intercept: float = 0.0,
    version: str = EXPERT_VERSION,
) -> Scorecard:
    """The scorecard's factors and absence penalties named by ``codes``, with no intercept; with
    ``weights`` (code to weight, every code of ``codes``) and ``intercept``, a refitted set."""
    factors = tuple(f for f in SCORECARD.factors if f.code in codes)
    penalties = tuple(p for p in SCORECARD.absence_penalties if p.code in codes)
    if weights is not None:
        factors = tuple(replace(f, weight=float(weights[f.code])) for f in factors)
        penalties = tuple(replace(p, weight=float(weights[p.code])) for p in penalties)
    return Scorecard(version=version, intercept=intercept, factors=factors, absence_penalties=penalties)


def adjustment_signals(
    features: pd.DataFrame,
    codes: tuple[str, ...] = EXPERT_CODES,
    present: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Each adjustment at weight 1: a factor's badness (0 to 1, 0 when its sources are not all
    shared), an absence penalty's 0/1 for the source missing. The adjustment is weight x signal.
    ``present`` is :func:`~evaluation.scoring.presence_arrays` of ``features`` when the caller has it."""
    return _unit_adjustments(tuple(codes)).contributions(features, present)[list(codes)]


@cache
def _unit_adjustments(codes: tuple[str, ...]) -> Scorecard:
    """The adjustments of ``codes`` at weight 1 (built once per set of codes)."""
    return expert_adjustments(codes, weights=dict.fromkeys(codes, 1.0))


ADJUSTMENT_INPUTS: tuple[str, ...] = tuple(
    dict.fromkeys(
        (
            "months_of_accounts",
            "vat_returns_due",
            "utility_bills_due",
            "survey_visits",
            *(f.feature for f in expert_adjustments().factors),
        )
    )
)
"""Feature columns the adjustments read (with the four counts that tell which sources were shared);
``dossier outcomes export`` carries them beside each outcome."""


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


COVERAGE_WEIGHTS: dict[str, float] = {"accounting": 0.55, "tax": 0.15, "utility": 0.15, "survey": 0.15}
"""Weight of each source in the coverage score: the books carry the trained statement model, the
other three the expert adjustments and the cross-checks."""


@dataclass(frozen=True)
class StatementScoring:
    """Statement model + expert adjustments (implements :class:`~evaluation.scoring.ScoringModel`)."""

    statement: StatementModel
    expert: Scorecard = field(default_factory=expert_adjustments)
    untrusted_share: float = 1.0
    """Share of the books' credit withdrawn at a full VAT mismatch (in [0, 1]; 1 in the expert rules)."""

    @property
    def version(self) -> str:
        """``<statement model version>+<expert version>``, written to every dossier."""
        return f"{self.statement.version}+{self.expert.version}"

    @cached_property
    def codes(self) -> list[str]:
        return [*STATEMENT_CODES, "NO_BOOKS", *self.expert.codes]

    @property
    def texts(self) -> dict[str, str]:
        """Plain-language text of every reason code this model can give."""
        return STATEMENT_TEXTS | {c: REASON_TEXTS[c] for c in ("NO_BOOKS", *self.expert.codes)}

    def predict(self, features: pd.DataFrame) -> Prediction:
        """PD and contributions; ``features`` needs the feature columns and every ``attrN`` ratio."""
        absent = [r.attr for r in RATIOS if r.attr not in features.columns]
        if absent:
            raise ValueError(f"model {self.version}: features lack the statement ratios {absent[:5]}")
        present = presence_arrays(features)
        books = present["accounting"]
        block = ratio_block(features)
        statement = np.zeros((len(features), len(STATEMENT_CODES)))
        base = _logit(self.statement.base_rate)
        logit = np.full(len(features), base)
        if books.any():
            scored = self.statement.block_score(np.ascontiguousarray(block[:, books]), features.index[books])
            logit[books] = scored.logit.to_numpy()
            statement[books] = scored.contributions.to_numpy()
        no_books = np.where(books, 0.0, max(base - self.statement.reference_logit, 0.0))
        total, expert, distrust, untrusted = self._adjusted(features, logit, present)
        contributions = pd.concat(
            [
                pd.DataFrame(statement, index=features.index, columns=list(STATEMENT_CODES)),
                pd.DataFrame({"NO_BOOKS": no_books}, index=features.index),
                expert,
            ],
            axis=1,
        )
        low, high = self._interval(
            present,
            block,
            logit,
            self.expert.intercept + expert.sum(axis=1).to_numpy() - untrusted,
            distrust,
        )
        return Prediction(
            pd_12m=pd.Series(_sigmoid(total), index=features.index, name="pd_12m"),
            contributions=contributions[self.codes],
            pd_low=pd.Series(_sigmoid(np.minimum(low, total)), index=features.index, name="pd_low"),
            pd_high=pd.Series(_sigmoid(np.maximum(high, total)), index=features.index, name="pd_high"),
        )

    def _interval(
        self,
        present: dict[str, np.ndarray],
        block: np.ndarray,
        logit: np.ndarray,
        expert: np.ndarray,
        distrust: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logit bounds over what the missing inputs could have said (``evaluation/MODEL_CARD.md``).

        The statement part ranges over its missing ratios filled from the reference statements
        (:meth:`~evaluation.statement_model.StatementModel.logit_range` of the ratio ``block``;
        without books, over whole reference statements); each source not shared widens both sides
        by its absence penalty."""
        ratios = block.copy()
        ratios[:, ~present["accounting"]] = np.nan
        low, high = self.statement.block_logit_range(ratios)
        low, high = np.minimum(low, logit), np.maximum(high, logit)
        base = _logit(self.statement.base_rate)

        def total(statement_logit: np.ndarray) -> np.ndarray:
            # Non-decreasing in the statement logit (distrust <= 1), so bounds map to bounds.
            return statement_logit + expert + distrust * np.maximum(base - statement_logit, 0.0)

        spread = np.zeros(len(logit))
        for penalty in self.expert.absence_penalties:
            spread += np.where(present[penalty.source], 0.0, penalty.weight)
        return total(low) - spread, total(high) + spread

    def coverage(self, features: pd.DataFrame) -> pd.Series:
        """How much of the evidence the model can read was there, 0 to 1 (:data:`COVERAGE_WEIGHTS`).

        Books count by the importance-weighted share of the statement ratios that could be computed
        (:meth:`~evaluation.statement_model.StatementModel.ratio_coverage`); each other source counts
        whole when shared."""
        present = presence_arrays(features)
        ratios = self.statement.block_coverage(ratio_block(features))
        value = COVERAGE_WEIGHTS["accounting"] * np.where(present["accounting"], ratios, 0.0)
        for source in ("tax", "utility", "survey"):
            value = value + COVERAGE_WEIGHTS[source] * present[source]
        return pd.Series(np.round(value, 4), index=features.index, name="coverage")

    def adjusted(
        self, features: pd.DataFrame, statement_logit: np.ndarray
    ) -> tuple[np.ndarray, pd.DataFrame, np.ndarray, np.ndarray]:
        """The logit after the adjustments, given each SME's statement logit (the training
        population's logit for an SME without books): ``(logit, contributions, distrust,
        withdrawn)``, the contributions one column per adjustment code, the withdrawn credit of
        contradicted books included under ``VAT_BOOKS_MISMATCH``."""
        return self._adjusted(features, statement_logit, None)

    def _adjusted(
        self, features: pd.DataFrame, statement_logit: np.ndarray, present: dict[str, np.ndarray] | None
    ) -> tuple[np.ndarray, pd.DataFrame, np.ndarray, np.ndarray]:
        signals = adjustment_signals(features, tuple(self.expert.codes), present)
        weights = np.array(
            [f.weight for f in self.expert.factors] + [p.weight for p in self.expert.absence_penalties]
        )
        expert = signals * weights
        distrust = self.untrusted_share * signals[UNTRUSTED_BOOKS_CODE].to_numpy()
        untrusted = distrust * np.maximum(_logit(self.statement.base_rate) - statement_logit, 0.0)
        expert[UNTRUSTED_BOOKS_CODE] = expert[UNTRUSTED_BOOKS_CODE] + untrusted
        total = statement_logit + self.expert.intercept + expert.sum(axis=1).to_numpy()
        return total, expert, distrust, untrusted

    def statement_logit_of(self, features: pd.DataFrame, pd_12m: np.ndarray) -> np.ndarray:
        """The statement logit a PD of this model came from (inverse of :meth:`adjusted`).

        NaN where it cannot be told: books the VAT returns contradict so far that all their credit
        was withdrawn (any statement logit below the no-books one gives the same PD)."""
        p = np.clip(np.asarray(pd_12m, dtype=np.float64), 1e-12, 1 - 1e-12)
        zero = np.zeros(len(features))
        total, _, distrust, _ = self.adjusted(features, zero + _logit(self.statement.base_rate))
        base = _logit(self.statement.base_rate)
        rest = np.log(p / (1 - p)) - (total - base)
        whole = distrust >= 1 - 1e-6
        with np.errstate(divide="ignore", invalid="ignore"):
            below = np.where(whole, np.nan, (rest - distrust * base) / (1 - distrust))
        return np.where(whole & (rest <= base + 1e-9), np.nan, np.where(rest >= base, rest, below))


def read_adjustments(path: Path = ADJUSTMENTS_FILE) -> dict[str, Any] | None:
    """The refitted adjustments file ``make train --outcomes`` wrote, or None when there is none."""
    return json.loads(path.read_text()) if path.is_file() else None


def adjustment_sets(path: Path = ADJUSTMENTS_FILE) -> dict[str, dict[str, float]]:
    """Every adjustment set a dossier may have been scored with, by version: the expert rules, the
    refit in ``path`` and the refits it replaced; each maps code to weight, plus
    :data:`UNTRUSTED_SHARE` and ``intercept``."""
    expert = expert_adjustments()
    sets = {
        EXPERT_VERSION: {f.code: f.weight for f in expert.factors}
        | {p.code: p.weight for p in expert.absence_penalties}
        | {UNTRUSTED_SHARE: 1.0, "intercept": 0.0}
    }
    written = read_adjustments(path)
    if written is not None:
        sets |= written.get("previous", {})
        if written.get("status") == "refit":
            sets[written["version"]] = written["coefficients"]
    return sets


def scoring_with(statement: StatementModel, version: str, coefficients: dict[str, float]) -> StatementScoring:
    """The dossier's model with an adjustment set of :func:`adjustment_sets`."""
    if version == EXPERT_VERSION:
        return StatementScoring(statement)
    weights = {code: coefficients[code] for code in EXPERT_CODES}
    expert = expert_adjustments(weights=weights, intercept=float(coefficients["intercept"]), version=version)
    return StatementScoring(statement, expert, untrusted_share=float(coefficients[UNTRUSTED_SHARE]))


def _refit(path: Path) -> dict[str, Any] | None:
    written = read_adjustments(path)
    if written is None or written.get("status") != "refit":
        return None
    return written if written.get("statement_model") == STATEMENT_MODEL_VERSION else None


def adjustments_version(path: Path = ADJUSTMENTS_FILE) -> str:
    """Version of the adjustments :func:`default_statement_scoring` uses (the refit's, else expert)."""
    refit = _refit(path)
    return EXPERT_VERSION if refit is None else refit["version"]


def default_statement_scoring(path: Path = ADJUSTMENTS_FILE) -> StatementScoring:
    """The dossier's model built on the committed statement artifact, with the adjustments refitted
    on outcomes when ``path`` holds a refit of that statement model, else the expert rules."""
    statement = default_statement_model()
    refit = _refit(path)
    if refit is None:
        return StatementScoring(statement)
    return scoring_with(statement, refit["version"], refit["coefficients"])


__all__ = [
    "ADJUSTMENTS_FILE",
    "ADJUSTMENT_INPUTS",
    "COVERAGE_WEIGHTS",
    "EXPERT_CODES",
    "EXPERT_VERSION",
    "UNTRUSTED_BOOKS_CODE",
    "UNTRUSTED_SHARE",
    "StatementScoring",
    "adjustment_sets",
    "adjustment_signals",
    "adjustments_version",
    "default_statement_scoring",
    "expert_adjustments",
    "read_adjustments",
    "scoring_with",
]
