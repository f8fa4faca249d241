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
        untrusted = self._vat_distrust(expert) * np.maximum(base - logit, 0.0)
        expert[UNTRUSTED_BOOKS_CODE] = expert[UNTRUSTED_BOOKS_CODE] + untrusted
        contributions = pd.concat(
            [statement, pd.DataFrame({"NO_BOOKS": no_books}, index=features.index), expert], axis=1
        )
        total = logit + expert.sum(axis=1).to_numpy()
        return Prediction(
            pd_12m=pd.Series(1.0 / (1.0 + np.exp(-total)), index=features.index, name="pd_12m"),
            contributions=contributions[self.codes],
        )

    def _vat_distrust(self, expert: pd.DataFrame) -> np.ndarray:
        """How far the VAT returns contradict the books: the VAT_BOOKS_MISMATCH badness, 0 to 1."""
        factor = next(f for f in self.expert.factors if f.code == UNTRUSTED_BOOKS_CODE)
        return expert[UNTRUSTED_BOOKS_CODE].to_numpy() / factor.weight


def default_statement_scoring() -> StatementScoring:
    """The dossier's model built on the committed statement artifact."""
    return StatementScoring(default_statement_model())


__all__ = [
    "EXPERT_CODES",
    "EXPERT_VERSION",
    "UNTRUSTED_BOOKS_CODE",
    "StatementScoring",
    "default_statement_scoring",
    "expert_adjustments",
]
