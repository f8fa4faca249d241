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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from evaluation.scoring import REASON_TEXTS, SCORECARD, Prediction, Scorecard, source_presence
from evaluation.statement_model import (
    RATIOS,
    STATEMENT_CODES,
    STATEMENT_TEXTS,
    StatementModel,
    default_statement_model,
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


def expert_adjustments(codes: tuple[str, ...] = EXPERT_CODES) -> Scorecard:
    """The scorecard's factors and absence penalties named by ``codes``, with no intercept."""
    return Scorecard(
        version=EXPERT_VERSION,
        intercept=0.0,
        factors=tuple(f for f in SCORECARD.factors if f.code in codes),
        absence_penalties=tuple(p for p in SCORECARD.absence_penalties if p.code in codes),
    )


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
        books = source_presence(features)["accounting"].to_numpy()
        statement = pd.DataFrame(0.0, index=features.index, columns=list(STATEMENT_CODES))
        base = _logit(self.statement.base_rate)
        logit = np.full(len(features), base)
        if books.any():
            scored = self.statement.score(features.loc[books, [r.attr for r in RATIOS]])
            logit[books] = scored.logit.to_numpy()
            statement.loc[books] = scored.contributions.to_numpy()
        no_books = np.where(books, 0.0, max(base - self.statement.reference_logit, 0.0))
        expert = self.expert.predict(features).contributions.copy()
        distrust = self._vat_distrust(expert)
        untrusted = distrust * np.maximum(base - logit, 0.0)
        expert[UNTRUSTED_BOOKS_CODE] = expert[UNTRUSTED_BOOKS_CODE] + untrusted
        contributions = pd.concat(
            [statement, pd.DataFrame({"NO_BOOKS": no_books}, index=features.index), expert], axis=1
        )
        total = logit + expert.sum(axis=1).to_numpy()
        low, high = self._interval(
            features, books, logit, expert.sum(axis=1).to_numpy() - untrusted, distrust
        )
        return Prediction(
            pd_12m=pd.Series(_sigmoid(total), index=features.index, name="pd_12m"),
            contributions=contributions[self.codes],
            pd_low=pd.Series(_sigmoid(np.minimum(low, total)), index=features.index, name="pd_low"),
            pd_high=pd.Series(_sigmoid(np.maximum(high, total)), index=features.index, name="pd_high"),
        )

    def _interval(
        self,
        features: pd.DataFrame,
        books: np.ndarray,
        logit: np.ndarray,
        expert: np.ndarray,
        distrust: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logit bounds over what the missing inputs could have said (``evaluation/MODEL_CARD.md``).

        The statement part ranges over its missing ratios filled from the reference statements
        (:meth:`~evaluation.statement_model.StatementModel.logit_range`; without books, over whole
        reference statements); each source not shared widens both sides by its absence penalty."""
        ratios = features[[r.attr for r in RATIOS]].copy()
        ratios.loc[~books] = np.nan
        low, high = self.statement.logit_range(ratios)
        low, high = np.minimum(low, logit), np.maximum(high, logit)
        base = _logit(self.statement.base_rate)

        def total(statement_logit: np.ndarray) -> np.ndarray:
            # Non-decreasing in the statement logit (distrust <= 1), so bounds map to bounds.
            return statement_logit + expert + distrust * np.maximum(base - statement_logit, 0.0)

        present = source_presence(features)
        spread = np.zeros(len(features))
        for penalty in self.expert.absence_penalties:
            spread += np.where(present[penalty.source].to_numpy(), 0.0, penalty.weight)
        return total(low) - spread, total(high) + spread

    def coverage(self, features: pd.DataFrame) -> pd.Series:
        """How much of the evidence the model can read was there, 0 to 1 (:data:`COVERAGE_WEIGHTS`).

        Books count by the importance-weighted share of the statement ratios that could be computed
        (:meth:`~evaluation.statement_model.StatementModel.ratio_coverage`); each other source counts
        whole when shared."""
        present = source_presence(features)
        ratios = self.statement.ratio_coverage(features[[r.attr for r in RATIOS]]).to_numpy()
        value = COVERAGE_WEIGHTS["accounting"] * np.where(present["accounting"].to_numpy(), ratios, 0.0)
        for source in ("tax", "utility", "survey"):
            value = value + COVERAGE_WEIGHTS[source] * present[source].to_numpy()
        return pd.Series(np.round(value, 4), index=features.index, name="coverage")

    def _vat_distrust(self, expert: pd.DataFrame) -> np.ndarray:
        """How far the VAT returns contradict the books: the VAT_BOOKS_MISMATCH badness, 0 to 1."""
        factor = next(f for f in self.expert.factors if f.code == UNTRUSTED_BOOKS_CODE)
        return expert[UNTRUSTED_BOOKS_CODE].to_numpy() / factor.weight


def default_statement_scoring() -> StatementScoring:
    """The dossier's model built on the committed statement artifact."""
    return StatementScoring(default_statement_model())


__all__ = [
    "COVERAGE_WEIGHTS",
    "EXPERT_CODES",
    "EXPERT_VERSION",
    "UNTRUSTED_BOOKS_CODE",
    "StatementScoring",
    "default_statement_scoring",
    "expert_adjustments",
]
