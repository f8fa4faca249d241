"""Evaluation: canonical tables in, the dossier's feature and score columns out (pure functions).

:func:`evaluate` is the one entry point the pipeline calls; :mod:`evaluation.features` computes the
features, :mod:`evaluation.ratios` the statement ratios, :mod:`evaluation.statement_scoring` the PD
(trained statement model plus expert adjustments) and :mod:`evaluation.scoring` the score, grade,
reasons, limit and rate. Any object with a ``version`` and ``predict(features) -> Prediction`` can
replace the model; :data:`~evaluation.scoring.SCORECARD` is the first one.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from evaluation.features import _strings, compute_features
from evaluation.ratios import statement_ratios
from evaluation.scoring import (
    LENDING_TERMS,
    REASON_TEXTS,
    LendingTerms,
    Prediction,
    ScoringModel,
    credit_limit,
    grade,
    improvement_hints,
    indicative_rate,
    reason_codes,
    score_points,
)
from evaluation.statement_model import RATIOS, STATEMENT_MODEL_VERSION
from evaluation.statement_scoring import StatementScoring, adjustments_version, default_statement_scoring
from evaluation.triangulation import consistency
from warehouse.canonical import TABLES
from warehouse.dossier_schema import FEATURE_COLUMNS, SCORE_COLUMNS

MODEL_VERSION = f"{STATEMENT_MODEL_VERSION}+{adjustments_version()}"
"""Version of the default model (:func:`evaluation.statement_scoring.default_statement_scoring`: the
trained statement model plus the expert adjustments, or their refit on lender outcomes), written to
every dossier it scores."""

OUTPUT_COLUMNS: tuple[str, ...] = (
    "sme_id",
    "sources_used",
    *(c.name for c in FEATURE_COLUMNS),
    *(c.name for c in SCORE_COLUMNS),
    "model_version",
)
"""Columns of :func:`evaluate`'s result, in order."""


def _checked(prediction: Prediction, features: pd.DataFrame, version: str) -> pd.Series:
    """The prediction's PD, after checking it covers every SME with a probability."""
    pd_12m = prediction.pd_12m
    if not pd_12m.index.equals(features.index) or not prediction.contributions.index.equals(features.index):
        raise ValueError(f"model {version}: prediction is not indexed like the features")
    values = pd_12m.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~((values >= 0) & (values <= 1))
    if bad.any():
        raise ValueError(
            f"model {version}: pd_12m missing or outside [0, 1] for {list(features['sme_id'][bad][:5])}"
        )
    return pd_12m


RATIO_COLUMNS: tuple[str, ...] = tuple(r.attr for r in RATIOS)
"""The statement ratios :func:`evaluate` appends with ``with_ratios=True`` (model inputs, for PSI)."""


def _coverage(model: ScoringModel, features: pd.DataFrame) -> pd.Series:
    """The model's coverage score, or the default statement model's for a model without one."""
    scorer = model if isinstance(model, StatementScoring) else default_statement_scoring()
    return scorer.coverage(features)


def evaluate(
    tables: dict[str, pd.DataFrame],
    smes: pd.DataFrame,
    *,
    as_of: datetime.date,
    model: ScoringModel | None = None,
    terms: LendingTerms = LENDING_TERMS,
    with_ratios: bool = False,
) -> pd.DataFrame:
    """Features, scores and model version for every SME in ``smes`` (one row each, same order).

    ``tables`` maps canonical table names to frames; ``smes`` has ``sme_id`` and ``history_months``.
    ``model`` defaults to the trained statement model with its expert adjustments
    (:data:`MODEL_VERSION`); :data:`~evaluation.scoring.SCORECARD` is the first model. The model
    sees the features joined with the statement ratios (:func:`evaluation.ratios.statement_ratios`,
    ``attr1``..``attr64``); its reason texts come from its ``texts`` mapping when it has one. The result's columns are
    :data:`OUTPUT_COLUMNS`, with dtypes that cast to the dossier schema, then (``with_ratios``) the
    :data:`RATIO_COLUMNS`. ``terms`` are the constants of the limit and the rate.
    """
    model = default_statement_scoring() if model is None else model
    features = compute_features(tables, smes, as_of=as_of)
    ratios = statement_ratios(tables.get("monthly_financials"), smes, as_of=as_of)
    inputs = features.join(ratios.drop(columns=["sme_id"]))
    prediction = model.predict(inputs)
    pd_12m = _checked(prediction, features, model.version).astype(np.float64)
    reasons = reason_codes(prediction.contributions, top=4, texts=getattr(model, "texts", REASON_TEXTS))
    rate = indicative_rate(pd_12m, terms)
    low = pd_12m if prediction.pd_low is None else prediction.pd_low.astype(np.float64)
    high = pd_12m if prediction.pd_high is None else prediction.pd_high.astype(np.float64)
    checks = consistency(features)
    result = features.assign(
        pd_12m=pd_12m,
        score=score_points(pd_12m),
        grade=grade(pd_12m),
        reason_codes=reasons["reason_codes"],
        reason_texts=reasons["reason_texts"],
        credit_limit=credit_limit(features, pd_12m, rate, terms),
        indicative_rate=rate,
        pd_low=np.minimum(low, pd_12m),
        pd_high=np.maximum(high, pd_12m),
        coverage=_coverage(model, inputs),
        improvement_hint=improvement_hints(pd_12m, prediction.contributions),
        consistency_score=checks["consistency_score"],
        discrepancy_codes=checks["discrepancy_codes"],
        model_version=pd.array([model.version] * len(features), dtype="str"),
    )
    if with_ratios:
        return result[list(OUTPUT_COLUMNS)].join(ratios[list(RATIO_COLUMNS)])
    return result[list(OUTPUT_COLUMNS)]


SCOPED_COLUMNS: tuple[str, ...] = ("sme_id", "scope", "history_months", *OUTPUT_COLUMNS[1:])
"""Columns of :func:`evaluate_scopes`' result, in order."""


def tables_for_sources(tables: dict[str, pd.DataFrame], sources: Iterable[str]) -> dict[str, pd.DataFrame]:
    """Only the canonical tables of ``sources``: what a dossier under that consent scope may read."""
    allowed = set(sources)
    return {name: frame for name, frame in tables.items() if TABLES[name].source in allowed}


def evaluate_scopes(
    tables: dict[str, pd.DataFrame],
    smes: pd.DataFrame,
    *,
    as_of: datetime.date,
    model: ScoringModel | None = None,
    terms: LendingTerms = LENDING_TERMS,
    with_ratios: bool = False,
) -> pd.DataFrame:
    """One dossier row per (SME, consent scope): :func:`evaluate` run once per distinct scope.

    ``smes`` has ``sme_id``, ``scope`` (a key such as ``accounting+tax@36m``, see
    :class:`warehouse.consent.Scope`), ``history_months`` and ``sources`` (the scope's source
    kinds). Each scope sees only the tables of its sources and the months of its window, so every
    value in its rows comes from inside that scope. Columns: :data:`SCOPED_COLUMNS` (then, with
    ``with_ratios``, the :data:`RATIO_COLUMNS`).
    """
    columns = [*SCOPED_COLUMNS, *(RATIO_COLUMNS if with_ratios else ())]
    frames = []
    ids = pc.unique(_strings(smes["sme_id"]))
    positions: dict[str, np.ndarray] = {}  # each table row's SME among ``ids`` (-1: none of them)
    for scope, group in smes.groupby("scope", sort=True):
        sources = group["sources"].iloc[0]
        members = np.zeros(len(ids) + 1, dtype=bool)  # the last entry answers for -1
        members[pc.index_in(_strings(group["sme_id"]), value_set=ids).to_numpy(zero_copy_only=False)] = True
        scoped = {}
        for name, frame in tables_for_sources(tables, sources).items():
            if name not in positions:
                found = pc.index_in(_strings(frame["sme_id"]), value_set=ids)
                positions[name] = found.fill_null(-1).to_numpy().astype(np.int64)
            scoped[name] = frame[members[positions[name]]]
        scored = evaluate(
            scoped,
            group.reset_index(drop=True),
            as_of=as_of,
            model=model,
            terms=terms,
            with_ratios=with_ratios,
        )
        outside = scored["sources_used"].map(
            lambda used, allowed=frozenset(sources): not set(used) <= allowed
        )
        if outside.any():
            raise ValueError(
                f"scope {scope}: sources_used outside the scope for {list(scored['sme_id'][outside][:5])}"
            )
        frames.append(scored.assign(scope=str(scope), history_months=group["history_months"].to_numpy()))
    if not frames:
        empty = evaluate(
            {},
            pd.DataFrame({"sme_id": [], "history_months": []}),
            as_of=as_of,
            model=model,
            terms=terms,
            with_ratios=with_ratios,
        )
        return empty.assign(scope=pd.Series(dtype="str"), history_months=pd.Series(dtype="int64"))[columns]
    return pd.concat(frames, ignore_index=True)[columns]


__all__ = [
    "LENDING_TERMS",
    "MODEL_VERSION",
    "OUTPUT_COLUMNS",
    "RATIO_COLUMNS",
    "SCOPED_COLUMNS",
    "LendingTerms",
    "Prediction",
    "ScoringModel",
    "compute_features",
    "evaluate",
    "evaluate_scopes",
]
