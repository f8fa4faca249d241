"""``make train``: fit the statement model on the public Polish statements and write its artifact.

    python -m evaluation.train --data ../shared/data/credit/polish_bankruptcy_1y_train.csv

What it does, with one fixed seed (:data:`SEED`), so a second run writes the same files:

1. Splits the labelled statements into a training part and a stratified held-out part
   (:data:`HELD_OUT_SHARE`). The held-out part takes no part in fitting, choosing or calibrating
   anything; it is scored once, at the end.
2. On the training part, 5-fold stratified cross-validation gives out-of-fold raw scores of the
   monotone LightGBM model (directions from :data:`evaluation.statement_model.RATIOS`); Platt
   scaling (a one-variable logistic regression) is fitted on them, and isotonic regression beside
   it for comparison.
3. Fits the final model on the whole training part and measures on the held-out part: ROC AUC,
   Brier score and log loss of the calibrated model, and in the same run the baselines: Altman's
   Z'' score, a logistic regression on the same ratios and an unconstrained LightGBM (what the
   monotone constraints cost).
3b. Measures, on the same out-of-fold scores and then on the held-out part, a binned
   weight-of-evidence scorecard (:class:`Scorecard`, ``optbinning``, monotone bins in the same
   directions) and the average of its calibrated logit with the trees', and chooses by
   cross-validation (:func:`_candidates`). The comparison goes into the model card, not into the
   artifact.
4. Writes ``evaluation/artifacts/<version>.lgb.txt`` (the trees), ``<version>.json`` (ratios,
   directions, calibration, metrics), the calibration plot ``<version>-calibration.png`` and the
   model card ``evaluation/MODEL_CARD.md``.
5. With ``--outcomes FILE`` (``dossier outcomes export``; ``make train OUTCOMES=FILE``), refits the
   behavioural adjustments on the lenders' outcomes (:func:`refit_adjustments`) and writes them to
   ``<version>-adjustments.json``, which then scores dossiers; below :data:`MIN_OUTCOMES` outcomes or
   :data:`MIN_DEFAULTS` defaults the expert rules are kept. Without it that file is removed, so the
   artifact is what the labelled statements alone give. The model card reports both.

Only this module needs the training data; the product loads the committed artifact.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.scoring import GRADE_BANDS, grade
from evaluation.statement_model import (
    ARTIFACTS,
    RATIOS,
    STATEMENT_MODEL_VERSION,
    STATEMENT_TEXTS,
    artifact_paths,
    prepared,
)

SEED = 20261201
"""The one seed of the split, the folds and the trees."""

HELD_OUT_SHARE = 0.25
"""Stratified share of the labelled rows kept out of all fitting, tuning and calibration."""

FOLDS = 5
"""Cross-validation folds on the training part (out-of-fold scores for calibration)."""

LIGHTGBM_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.03,
    "n_estimators": 400,
    "num_leaves": 7,
    "min_child_samples": 40,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.7,
    "reg_lambda": 1.0,
    "monotone_constraints_method": "intermediate",
    "deterministic": True,
    "force_row_wise": True,
    "n_jobs": 1,
    "verbose": -1,
}
"""Hyper-parameters of the monotone model, chosen by 5-fold cross-validation on the training part
among 48 combinations (leaves 7/15/31, 400/1000 trees, minimum leaf 10/40 rows, column share
0.3/0.7, constraint method basic/intermediate): out-of-fold AUC ranged 0.899-0.912 with no clear
winner, so the smallest trees among the best (fastest TreeSHAP, smallest artifact) were taken."""

MODEL_CARD = Path(__file__).parent / "MODEL_CARD.md"

PRIOR_YEAR_MASKS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("attr21", "attr24"), 0.25),
    (("attr24",), 0.25),
)
"""Shares of the training rows whose prior-year ratios are masked (set missing) before any fitting:
a quarter lose both ``attr21`` (needs the year before) and ``attr24`` (needs three years), as our
books do with under 18 months of history, and another quarter only ``attr24``, as with 18 to 30
months. The training file's own missing ``attr21`` almost always marks an incomplete statement of a
firm about to fail; in our books it marks a short history. Masking a label-blind share of rows
teaches the trees what a missing prior year means here, so short histories are in distribution and
are handled as trained (LightGBM's missing-value branch), never imputed."""

REFERENCE_ROWS = 48
"""Training rows (a stratified sample) kept in the artifact for the PD interval of firms with missing ratios."""

PSI_BINS = 10
"""Quantile bins of each ratio's and of the PD's training distribution kept as the PSI reference."""

ALTMAN_Z2 = {"attr3": 6.56, "attr6": 3.26, "attr7": 6.72, "attr8": 1.05}
"""Altman's Z'' (1995, non-manufacturers and emerging markets): 6.56 X1 + 3.26 X2 + 6.72 X3 + 1.05 X4
with X1 = working capital / TA (attr3), X2 = retained earnings / TA (attr6), X3 = EBIT / TA (attr7)
and X4 = book equity / total liabilities (attr8); a lower Z'' is riskier."""


def read_labelled(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The ratio columns and the 0/1 ``bankrupt`` label of a file laid out like the public one."""
    frame = pd.read_csv(path)
    if "bankrupt" not in frame.columns:
        raise ValueError(f"{path}: no 'bankrupt' column")
    return frame.drop(columns=["bankrupt"]), frame["bankrupt"].to_numpy(dtype=np.int64)


def mask_prior_years(x: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``x`` with the prior-year ratios of a label-blind, seeded share of rows set missing
    (:data:`PRIOR_YEAR_MASKS`); the masked groups are disjoint."""
    generator = np.random.default_rng([seed, 21])
    draw = generator.random(len(x))
    masked = x.copy()
    start = 0.0
    for columns, share in PRIOR_YEAR_MASKS:
        rows = (draw >= start) & (draw < start + share)
        masked.loc[rows, list(columns)] = np.nan
        start += share
    return masked


def psi_reference(values: pd.Series, bins: int = PSI_BINS) -> dict[str, Any]:
    """Quantile bin edges of ``values`` (missing left out) and the share of rows in each bin and missing."""
    present = values.dropna().to_numpy(dtype=np.float64)
    edges = (
        np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])) if len(present) else np.array([])
    )
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    total = len(values)
    return {
        "edges": [float(f"{e:.6g}") for e in edges],
        "shares": [round(float(c) / total, 6) for c in counts],
        "missing": round(float(values.isna().sum()) / total, 6),
    }


def _lightgbm(monotone: bool, seed: int) -> Any:
    import lightgbm

    params = dict(LIGHTGBM_PARAMS, random_state=seed)
    if monotone:
        params["monotone_constraints"] = [r.direction for r in RATIOS]
    else:
        params.pop("monotone_constraints_method")
    return lightgbm.LGBMClassifier(**params)


def _raw(model: Any, x: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict(x.to_numpy(), raw_score=True))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _altman_z2(x: pd.DataFrame, medians: pd.Series) -> np.ndarray:
    """Z'' with a missing input replaced by its training-part median (baseline only)."""
    filled = x[list(ALTMAN_Z2)].astype(np.float64).fillna(medians)
    return sum(weight * filled[column].to_numpy() for column, weight in ALTMAN_Z2.items())


@dataclass
class _Logistic:
    """Logistic regression baseline on the same ratios: winsorised at the training part's 1st and
    99th percentiles, missing values at the median plus a missing flag, standardised."""

    seed: int

    def fit(self, x: pd.DataFrame, y: np.ndarray) -> _Logistic:
        from sklearn.linear_model import LogisticRegression

        self.low, self.high = x.quantile(0.01), x.quantile(0.99)
        self.median = x.clip(self.low, self.high, axis=1).median()
        design = self._design(x)
        self.mean, self.std = design.mean(), design.std().replace(0, 1.0)
        self.model = LogisticRegression(C=1.0, max_iter=5000, random_state=self.seed)
        self.model.fit(((design - self.mean) / self.std).to_numpy(), y)
        return self

    def _design(self, x: pd.DataFrame) -> pd.DataFrame:
        clipped = x.clip(self.low, self.high, axis=1)
        flags = x.isna().astype(np.float64).add_suffix("_missing")
        return pd.concat([clipped.fillna(self.median), flags], axis=1)

    def predict(self, x: pd.DataFrame) -> np.ndarray:
        design = (self._design(x) - self.mean) / self.std
        return self.model.predict_proba(design.to_numpy())[:, 1]


SCORECARD_BINNING: dict[str, Any] = {"max_n_prebins": 20, "min_prebin_size": 0.05}
"""Pre-binning of the weight-of-evidence scorecard (``optbinning``'s defaults): up to 20 quantile
pre-bins of at least 5% of the rows each, merged by the solver into the optimal bins under each
ratio's monotone trend. Cross-validation on the training part preferred them (out-of-fold AUC
0.8783) to 30 pre-bins of at least 2% (0.8776)."""

SCORECARD_C = 0.1
"""Inverse L2 strength of the scorecard's logistic regression on the WoE values (out-of-fold AUC
0.8783 against 0.8777 at 1.0)."""

CANDIDATE_ROUNDS = 1000
"""Paired bootstrap resamples of the training part's out-of-fold scores when candidates are compared."""


def monotonic_trends() -> dict[str, str]:
    """Each ratio's event-rate trend for ``optbinning``, from the same direction table the LightGBM
    model is constrained by (:data:`RATIOS`): ``ascending`` where a higher value raises the risk."""
    return {r.attr: "ascending" if r.direction > 0 else "descending" for r in RATIOS}


def _bounded_logistic(design: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    """Intercept and weights of ``logit = intercept - design @ weights`` by L2-penalised maximum
    likelihood (the intercept unpenalised) with every weight >= 0 (L-BFGS-B; deterministic)."""
    from scipy.optimize import minimize

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        weights = theta[1:]
        eta = theta[0] - design @ weights
        residual = _sigmoid(eta) - y
        value = float(np.sum(np.logaddexp(0.0, eta) - y * eta) + 0.5 / c * weights @ weights)
        gradient = np.concatenate([[residual.sum()], -(design.T @ residual) + weights / c])
        return value, gradient

    start = np.zeros(design.shape[1] + 1)
    bounds = [(None, None)] + [(0.0, None)] * design.shape[1]
    return np.asarray(minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds).x)


@dataclass
class Scorecard:
    """Binned weight-of-evidence scorecard on the statement model's ratios (``optbinning``).

    Each ratio is cut into optimal bins whose bankruptcy rate is monotone in the ratio's direction
    (:func:`monotonic_trends`); a missing value is a bin of its own with the WoE it had in training
    (handled as trained, like the trees' missing-value branch). The logit is a logistic regression
    on the bins' WoE (``WoE = ln(share of non-bankrupt / share of bankrupt)``, so a higher WoE is
    safer) whose weights are held at 0 or above: a ratio's points can then only follow its
    direction, and the score is as defensible as the monotone trees. A weight the fit would have
    made negative (collinear ratios) is 0, dropping that ratio."""

    c: float = SCORECARD_C

    def fit(self, x: pd.DataFrame, y: np.ndarray) -> Scorecard:
        import warnings

        from optbinning import BinningProcess

        trends = monotonic_trends()
        self.binning = BinningProcess(
            list(x.columns),
            binning_fit_params={attr: {"monotonic_trend": trends[attr]} for attr in x.columns},
            **SCORECARD_BINNING,
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="optbinning")
            self.binning.fit(x, y)
        theta = _bounded_logistic(self._woe(x), np.asarray(y, dtype=np.float64), self.c)
        self.intercept, self.weights = float(theta[0]), theta[1:]
        return self

    def _woe(self, x: pd.DataFrame) -> np.ndarray:
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="optbinning")
            woe = self.binning.transform(
                x, metric="woe", metric_missing="empirical", metric_special="empirical"
            )
        return woe.to_numpy(dtype=np.float64)

    def logit(self, x: pd.DataFrame) -> np.ndarray:
        return self.intercept - self._woe(x) @ self.weights

    def bins(self, attr: str) -> pd.DataFrame:
        """The fitted bins of one ratio, low to high, without the special and missing bins: their
        rows, bankruptcy rate and WoE."""
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="optbinning")
            table = self.binning.get_binned_variable(attr).binning_table.build()
        table = table.drop(index="Totals")
        table = table[~table["Bin"].astype(str).isin(["Special", "Missing"])]
        return pd.DataFrame(
            {
                "bin": table["Bin"].astype(str).to_numpy(),
                "rows": table["Count"].to_numpy(dtype=np.int64),
                "bankrupt_rate": table["Event rate"].to_numpy(dtype=np.float64),
                "woe": table["WoE"].to_numpy(dtype=np.float64),
            }
        )


def _paired_auc_difference(
    y: np.ndarray, candidate: np.ndarray, current: np.ndarray, seed: int, rounds: int = CANDIDATE_ROUNDS
) -> list[float]:
    """2.5th and 97.5th percentiles of ``AUC(candidate) - AUC(current)`` over paired bootstrap
    resamples of the rows."""
    from sklearn.metrics import roc_auc_score

    generator = np.random.default_rng([seed, 7])
    differences = []
    for _ in range(rounds):
        rows = generator.integers(0, len(y), len(y))
        if 0 < y[rows].sum() < len(rows):
            differences.append(
                roc_auc_score(y[rows], candidate[rows]) - roc_auc_score(y[rows], current[rows])
            )
    return [round(float(q), 4) for q in np.percentile(differences, [2.5, 97.5])]


def _platt(raw: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Intercept and slope of the logistic regression of the label on the raw score."""
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(C=1e6, max_iter=1000).fit(raw.reshape(-1, 1), y)
    return float(fit.intercept_[0]), float(fit.coef_[0, 0])


def _metrics(y: np.ndarray, pd_: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    return {
        "roc_auc": round(float(roc_auc_score(y, pd_)), 4),
        "brier": round(float(brier_score_loss(y, pd_)), 4),
        "log_loss": round(float(log_loss(y, np.clip(pd_, 1e-6, 1 - 1e-6))), 4),
    }


def _bootstrap_auc(y: np.ndarray, pd_: np.ndarray, seed: int, rounds: int = 1000) -> list[float]:
    """2.5th and 97.5th percentiles of the ROC AUC over bootstrap resamples of the rows."""
    from sklearn.metrics import roc_auc_score

    generator = np.random.default_rng(seed)
    aucs = []
    for _ in range(rounds):
        rows = generator.integers(0, len(y), len(y))
        if 0 < y[rows].sum() < len(rows):
            aucs.append(roc_auc_score(y[rows], pd_[rows]))
    return [round(float(q), 4) for q in np.percentile(aucs, [2.5, 97.5])]


def _bands(y: np.ndarray, pd_: np.ndarray) -> list[dict[str, Any]]:
    """Held-out rows per grade: how many, their mean PD and the share that went bankrupt."""
    grades = grade(pd.Series(pd_)).to_numpy()
    bounds = [0.0, *(b for _, b in GRADE_BANDS), 1.0]
    rows = []
    for i, letter in enumerate([g for g, _ in GRADE_BANDS] + ["E"]):
        chosen = grades == letter
        rows.append(
            {
                "grade": letter,
                "pd_from": bounds[i],
                "pd_below": bounds[i + 1],
                "rows": int(chosen.sum()),
                "mean_pd": round(float(pd_[chosen].mean()), 4) if chosen.any() else None,
                "bankrupt_rate": round(float(y[chosen].mean()), 4) if chosen.any() else None,
            }
        )
    return rows


def _calibration_plot(y: np.ndarray, pd_: np.ndarray, path: Path, title: str) -> list[dict[str, float]]:
    """Reliability diagram (deciles of PD) as PNG; returns the points it draws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(pd_, kind="stable")
    points = []
    for chunk in np.array_split(order, 10):
        points.append(
            {
                "mean_pd": round(float(pd_[chunk].mean()), 4),
                "bankrupt_rate": round(float(y[chunk].mean()), 4),
                "rows": len(chunk),
            }
        )
    figure, axis = plt.subplots(figsize=(5, 5), dpi=100)
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    axis.plot(
        [p["mean_pd"] for p in points],
        [p["bankrupt_rate"] for p in points],
        marker="o",
        label="held-out deciles",
    )
    axis.set_xlabel("predicted PD (decile mean)")
    axis.set_ylabel("observed bankruptcy rate")
    axis.set_title(title, fontsize=10)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)
    return points


def measure(data: Path, seed: int = SEED) -> dict[str, Any]:
    """Split, cross-validate, calibrate, fit and measure; returns the fitted booster and the report."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import brier_score_loss
    from sklearn.model_selection import StratifiedKFold, train_test_split

    raw_x, y = read_labelled(data)
    x = prepared(raw_x)
    x_train_as_filed, x_test, y_train, y_test = train_test_split(
        x, y, test_size=HELD_OUT_SHARE, stratify=y, random_state=seed
    )
    x_train = mask_prior_years(x_train_as_filed, seed)
    x_test_short = x_test.assign(attr21=np.nan, attr24=np.nan)
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    oof = np.zeros(len(y_train))
    oof_unconstrained = np.zeros(len(y_train))
    oof_logistic = np.zeros(len(y_train))
    oof_scorecard = np.zeros(len(y_train))
    for fit_rows, score_rows in folds.split(x_train, y_train):
        fold = _lightgbm(True, seed).fit(x_train.iloc[fit_rows].to_numpy(), y_train[fit_rows])
        oof[score_rows] = _raw(fold, x_train.iloc[score_rows])
        free = _lightgbm(False, seed).fit(x_train.iloc[fit_rows].to_numpy(), y_train[fit_rows])
        oof_unconstrained[score_rows] = _raw(free, x_train.iloc[score_rows])
        logistic = _Logistic(seed).fit(x_train.iloc[fit_rows], y_train[fit_rows])
        oof_logistic[score_rows] = logistic.predict(x_train.iloc[score_rows])
        scorecard = Scorecard().fit(x_train.iloc[fit_rows], y_train[fit_rows])
        oof_scorecard[score_rows] = scorecard.logit(x_train.iloc[score_rows])
    platt_a, platt_b = _platt(oof, y_train)
    isotonic = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(oof, y_train)
    oof_platt = _sigmoid(platt_a + platt_b * oof)
    oof_isotonic = isotonic.predict(oof)

    final = _lightgbm(True, seed).fit(x_train.to_numpy(), y_train)
    reference_logit = float(np.median(platt_a + platt_b * _raw(final, x_train_as_filed)))
    raw_test = _raw(final, x_test)
    pd_test = _sigmoid(platt_a + platt_b * raw_test)
    pd_test_short = _sigmoid(platt_a + platt_b * _raw(final, x_test_short))
    pd_train = _sigmoid(platt_a + platt_b * _raw(final, x_train_as_filed))
    shap_train = np.asarray(final.booster_.predict(x_train.to_numpy(), pred_contrib=True))[:, :-1]
    importance = np.abs(shap_train).mean(axis=0)
    sample = (
        pd.DataFrame({"y": y_train}, index=x_train_as_filed.index)
        .groupby("y", group_keys=False)
        .apply(lambda g: g.sample(n=max(1, round(REFERENCE_ROWS * len(g) / len(y_train))), random_state=seed))
        .index
    )
    unconstrained = _lightgbm(False, seed).fit(x_train.to_numpy(), y_train)
    logistic = _Logistic(seed).fit(x_train, y_train)
    raw_train_x = raw_x.loc[x_train.index]
    z2_medians = raw_train_x[list(ALTMAN_Z2)].median()
    z2_train = _altman_z2(raw_train_x, z2_medians)
    z2_a, z2_b = _platt(-z2_train, y_train)
    z2_test = _sigmoid(z2_a + z2_b * -_altman_z2(raw_x.loc[x_test.index], z2_medians))

    from sklearn.metrics import roc_auc_score

    cross_validation = {
        "monotone_lightgbm_roc_auc": round(float(roc_auc_score(y_train, oof)), 4),
        "unconstrained_lightgbm_roc_auc": round(float(roc_auc_score(y_train, oof_unconstrained)), 4),
        "logistic_regression_roc_auc": round(float(roc_auc_score(y_train, oof_logistic)), 4),
        "platt_brier": round(float(brier_score_loss(y_train, oof_platt)), 4),
        "isotonic_brier": round(float(brier_score_loss(y_train, oof_isotonic)), 4),
    }
    held_out = {
        "statement_model": _metrics(y_test, pd_test) | {"roc_auc_95": _bootstrap_auc(y_test, pd_test, seed)},
        "statement_model_without_prior_year": _metrics(y_test, pd_test_short),
        "unconstrained_lightgbm": _metrics(y_test, _sigmoid(_raw(unconstrained, x_test))),
        "logistic_regression": _metrics(y_test, logistic.predict(x_test)),
        "altman_z2": _metrics(y_test, z2_test),
    }
    candidates = _candidates(
        y_train,
        y_test,
        platt_a + platt_b * oof,
        platt_a + platt_b * raw_test,
        oof_scorecard,
        Scorecard().fit(x_train, y_train),
        x_test,
        seed,
    )
    return {
        "booster": final.booster_,
        "platt": (platt_a, platt_b),
        "reference_logit": reference_logit,
        "y_test": y_test,
        "pd_test": pd_test,
        "reference": {
            "psi": {r.attr: psi_reference(x_train_as_filed[r.attr]) for r in RATIOS}
            | {"pd_12m": psi_reference(pd.Series(pd_train))},
            "importance": {r.attr: round(float(v), 6) for r, v in zip(RATIOS, importance, strict=True)},
            "rows": [
                [None if np.isnan(v) else float(f"{v:.6g}") for v in row]
                for row in x_train_as_filed.loc[sample].to_numpy()
            ],
        },
        "report": {
            "data": {
                "file": data.name,
                "rows": len(y),
                "bankrupt": int(y.sum()),
                "bankrupt_rate": round(float(y.mean()), 4),
                "training_rows": len(y_train),
                "training_bankrupt": int(y_train.sum()),
                "held_out_rows": len(y_test),
                "held_out_bankrupt": int(y_test.sum()),
                "held_out_share": HELD_OUT_SHARE,
                "seed": seed,
                "prior_year_masks": [{"ratios": list(c), "share": share} for c, share in PRIOR_YEAR_MASKS],
            },
            "cross_validation": cross_validation,
            "held_out": held_out,
            "bands": _bands(y_test, pd_test),
            "trees": int(final.booster_.num_trees()),
            "candidates": candidates,
        },
    }


CURRENT_MODEL = "monotone_lightgbm"
"""The candidate that scores dossiers today; another replaces it only by the rule of :func:`_candidates`."""

CANDIDATE_NAMES = {
    "monotone_lightgbm": "monotone LightGBM, Platt-calibrated (the statement model)",
    "woe_scorecard": "binned WoE scorecard (optbinning, monotone bins, weights >= 0), Platt-calibrated",
    "average": "average of the two calibrated logits, Platt-calibrated",
}


def _candidates(
    y_train: np.ndarray,
    y_test: np.ndarray,
    lightgbm_oof: np.ndarray,
    lightgbm_test: np.ndarray,
    scorecard_oof: np.ndarray,
    scorecard: Scorecard,
    x_test: pd.DataFrame,
    seed: int,
) -> dict[str, Any]:
    """The monotone LightGBM, the WoE scorecard and the average of their calibrated logits, compared
    on the same out-of-fold scores of the training part and then on the held-out part, and the
    choice by cross-validation: the current model (:data:`CURRENT_MODEL`) is kept unless a
    candidate's out-of-fold AUC is higher with the 95% paired bootstrap interval of the difference
    wholly above 0; among such candidates the highest out-of-fold AUC wins.

    ``lightgbm_oof``/``lightgbm_test`` are calibrated logits; ``scorecard_oof`` the scorecard's
    out-of-fold logits, Platt-calibrated here like the trees' raw scores; the average's Platt
    scaling is fitted on its out-of-fold values too (both stay monotone: positive slopes)."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    card_a, card_b = _platt(scorecard_oof, y_train)
    oof = {"monotone_lightgbm": lightgbm_oof, "woe_scorecard": card_a + card_b * scorecard_oof}
    test = {"monotone_lightgbm": lightgbm_test, "woe_scorecard": card_a + card_b * scorecard.logit(x_test)}
    average_oof = (oof["monotone_lightgbm"] + oof["woe_scorecard"]) / 2
    average_test = (test["monotone_lightgbm"] + test["woe_scorecard"]) / 2
    mean_a, mean_b = _platt(average_oof, y_train)
    oof["average"] = mean_a + mean_b * average_oof
    test["average"] = mean_a + mean_b * average_test
    cross_validation = {}
    for name, logit in oof.items():
        row = {
            "roc_auc": round(float(roc_auc_score(y_train, logit)), 4),
            "brier": round(float(brier_score_loss(y_train, _sigmoid(logit))), 4),
        }
        if name != CURRENT_MODEL:
            row["auc_difference_95"] = _paired_auc_difference(y_train, logit, oof[CURRENT_MODEL], seed)
        cross_validation[name] = row
    better = [
        name
        for name, row in cross_validation.items()
        if name != CURRENT_MODEL
        and row["roc_auc"] > cross_validation[CURRENT_MODEL]["roc_auc"]
        and row["auc_difference_95"][0] > 0
    ]
    chosen = max(better, key=lambda name: cross_validation[name]["roc_auc"]) if better else CURRENT_MODEL
    used = [
        attr for attr, w in zip(scorecard.binning.variable_names, scorecard.weights, strict=True) if w > 0
    ]
    return {
        "rule": (
            f"`{CURRENT_MODEL}` is kept unless a candidate's out-of-fold ROC AUC is higher with the 95% "
            f"paired bootstrap interval ({CANDIDATE_ROUNDS} resamples) of the difference wholly above 0"
        ),
        "cross_validation": cross_validation,
        "held_out": {
            name: _metrics(y_test, _sigmoid(logit))
            | {"roc_auc_95": _bootstrap_auc(y_test, _sigmoid(logit), seed)}
            for name, logit in test.items()
        },
        "chosen": chosen,
        "scorecard": {
            "calibration": {"platt_a": round(card_a, 6), "platt_b": round(card_b, 6)},
            "average_calibration": {"platt_a": round(mean_a, 6), "platt_b": round(mean_b, 6)},
            "ratios_used": used,
            "bins": {attr: len(scorecard.bins(attr)) for attr in scorecard.binning.variable_names},
        },
    }


# --- behavioural adjustments refitted on lender outcomes ----------------------------------------

MIN_OUTCOMES = 200
"""Dossiers with a known 12-month outcome needed before the adjustments are refitted."""

MIN_DEFAULTS = 20
"""Defaults among them needed before the adjustments are refitted."""

MIN_FIRING = 20
"""An adjustment is refitted only if it fires (its signal is above 0) for at least this many of
those dossiers; otherwise its expert value is kept, fixed, in the fit."""

OUTCOME_HORIZON_MONTHS = 12
"""A default counts when reported within this many months of the dossier's as-of date (the PD's
horizon); a repayment, or a report of ``current`` or ``defaulted`` after it, counts as no default."""

OUTCOME_COLUMNS = ("dossier_id", "outcome", "outcome_date", "as_of_date", "model_version", "pd_12m")
"""Columns ``--outcomes`` needs besides the adjustment inputs (``dossier outcomes export`` writes them)."""


class OutcomesError(ValueError):
    """An outcomes file ``make train`` cannot use; the message names the file, row and field."""


def read_outcomes(path: Path) -> pd.DataFrame:
    """An outcomes export (CSV or Parquet, as ``dossier outcomes export`` writes it), checked.

    Needs :data:`OUTCOME_COLUMNS` and :data:`~evaluation.statement_scoring.ADJUSTMENT_INPUTS`; empty
    adjustment inputs are missing values (the dossier had no such source). Raises
    :class:`OutcomesError` naming the file, and the row and field of the first bad value.
    """
    from evaluation.statement_scoring import ADJUSTMENT_INPUTS

    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError) as error:  # unreadable text or Parquet, one line
        raise OutcomesError(f"{path}: not a readable outcomes export ({type(error).__name__})") from None
    missing = [c for c in (*OUTCOME_COLUMNS, *ADJUSTMENT_INPUTS) if c not in frame.columns]
    if missing:
        raise OutcomesError(
            f"{path}: header: missing column {', '.join(missing)} (write it with: dossier outcomes export)"
        )
    row_offset = 2 if path.suffix.lower() != ".parquet" else 1

    def checked(column: str, convert: Any, expected: str, allow_empty: bool = False) -> pd.Series:
        text = frame[column].astype("string").fillna("").str.strip()
        values = convert(text.where(text != ""))
        bad = values.isna() & ((text != "") | (not allow_empty))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise OutcomesError(
                f"{path}: row {row + row_offset}: field {column}: {text.iloc[row]!r} is not {expected}"
            )
        return values

    def same(text: pd.Series) -> pd.Series:
        return text

    def outcome(text: pd.Series) -> pd.Series:
        return text.str.lower().where(text.str.lower().isin(_OUTCOMES))

    out = pd.DataFrame(
        {
            "dossier_id": checked("dossier_id", same, "a dossier id"),
            "outcome": checked("outcome", outcome, f"one of {', '.join(_OUTCOMES)}"),
            "outcome_date": checked("outcome_date", _dates, "a date YYYY-MM-DD"),
            "as_of_date": checked("as_of_date", _dates, "a date YYYY-MM-DD"),
            "model_version": checked("model_version", same, "a model version"),
            "pd_12m": checked("pd_12m", _numbers, "a number"),
        }
    )
    bad_pd = ~out["pd_12m"].between(0.0, 1.0)
    if bad_pd.any():
        row = int(np.flatnonzero(bad_pd.to_numpy())[0])
        raise OutcomesError(
            f"{path}: row {row + row_offset}: field pd_12m: {out['pd_12m'].iloc[row]} is not in [0, 1]"
        )
    for column in ADJUSTMENT_INPUTS:
        out[column] = checked(column, _numbers, "a number", allow_empty=True)
    return out


_OUTCOMES = ("repaid", "defaulted", "current")


def _numbers(text: pd.Series) -> pd.Series:
    return pd.to_numeric(text, errors="coerce").astype(np.float64)


def _dates(text: pd.Series) -> pd.Series:
    return pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")


def outcome_labels(outcomes: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per dossier with a known outcome at the horizon, ``defaulted`` 0/1, and the counts.

    A dossier defaulted when some lender reported ``defaulted`` within :data:`OUTCOME_HORIZON_MONTHS`
    of its as-of date; it did not when, without such a report, a repayment was reported (at any
    date) or any report is dated after the horizon; otherwise (only ``current`` within the horizon)
    its outcome is not known yet and it is left out.
    """
    horizon = outcomes["as_of_date"] + pd.DateOffset(months=OUTCOME_HORIZON_MONTHS)
    within = outcomes["outcome_date"] <= horizon
    frame = outcomes.assign(
        _default=(outcomes["outcome"] == "defaulted") & within,
        _settled=(outcomes["outcome"] == "repaid") | ~within,
    )
    grouped = frame.groupby("dossier_id", sort=True)
    flags = grouped[["_default", "_settled"]].any()
    first = grouped.first().drop(columns=["outcome", "outcome_date", "_default", "_settled"])
    known = flags["_default"] | flags["_settled"]
    labelled = first[known].assign(defaulted=flags.loc[known, "_default"].astype(np.int64)).reset_index()
    counts = {
        "reports": len(outcomes),
        "dossiers": len(flags),
        "not_yet_known": int((~known).sum()),
        "labelled": len(labelled),
        "defaults": int(labelled["defaulted"].sum()),
    }
    return labelled, counts


def fit_offset_logistic(
    design: np.ndarray, y: np.ndarray, offset: np.ndarray, start: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood logistic regression ``logit P(y=1) = offset + design @ beta`` by Newton's
    method with step halving (deterministic, no seed needed); returns ``beta`` and its covariance
    (the inverse Fisher information). Raises ``ArithmeticError`` when it does not converge (e.g. a
    signal separates the outcomes perfectly)."""
    beta = np.zeros(design.shape[1]) if start is None else np.asarray(start, dtype=np.float64).copy()

    def loglik(b: np.ndarray) -> float:
        eta = offset + design @ b
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    current = loglik(beta)
    for _ in range(200):
        p = _sigmoid(offset + design @ beta)
        gradient = design.T @ (y - p)
        hessian = design.T @ (design * (p * (1 - p))[:, None])
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-10:
            trial = beta + scale * step
            value = loglik(trial)
            if value >= current - 1e-12:
                break
            scale /= 2
        beta, current = trial, value
        if np.max(np.abs(scale * step)) < 1e-9:
            p = _sigmoid(offset + design @ beta)
            hessian = design.T @ (design * (p * (1 - p))[:, None])
            if np.max(np.abs(beta)) > 30:
                break
            return beta, np.linalg.inv(hessian)
    raise ArithmeticError("the logistic regression did not converge (a signal may separate the outcomes)")


Z_95 = 1.959963984540054
"""Two-sided 95% quantile of the standard normal (Wald intervals of the refit)."""


def refit_adjustments(
    outcomes: pd.DataFrame, statement: Any, known: dict[str, dict[str, float]], source: str = ""
) -> dict[str, Any]:
    """The adjustments refitted on ``outcomes`` (:func:`read_outcomes`), as written to the artifact.

    Each labelled dossier's statement logit is recovered from its PD and adjustment inputs under the
    adjustment set its model version names (``known``, :func:`evaluation.statement_scoring.adjustment_sets`;
    dossiers of another statement model or an unknown set are left out, and so are those whose
    books the VAT returns contradicted wholly). Then ``defaulted ~ offset(statement logit) +
    intercept + Σ weight_k · signal_k + share · withdrawn credit`` is fitted by maximum likelihood.
    The constraints of the expert rules are kept (weights ≥ 0, share in [0, 1], so the PD stays
    monotone): a coefficient fitted outside them is fixed at its bound and the rest refitted.
    Below :data:`MIN_OUTCOMES` labelled dossiers or :data:`MIN_DEFAULTS` defaults, or if the fit
    does not converge, the expert rules are kept (``status`` ``"expert"``) and ``why`` says so.
    """
    from evaluation.statement_scoring import (
        EXPERT_CODES,
        EXPERT_VERSION,
        UNTRUSTED_BOOKS_CODE,
        UNTRUSTED_SHARE,
        adjustment_signals,
        scoring_with,
    )

    labelled, counts = outcome_labels(outcomes)
    parts = labelled["model_version"].str.partition("+")
    offsets = np.full(len(labelled), np.nan)
    other_statement = (parts[0] != statement.version).to_numpy()
    unknown_set = ~other_statement & ~parts[2].isin(list(known)).to_numpy()
    for version in sorted(set(parts[2][~other_statement & ~unknown_set])):
        rows = ((parts[2] == version).to_numpy()) & ~other_statement
        scorer = scoring_with(statement, version, known[version])
        offsets[rows] = scorer.statement_logit_of(labelled[rows], labelled.loc[rows, "pd_12m"].to_numpy())
    unrecoverable = ~other_statement & ~unknown_set & np.isnan(offsets)
    usable = ~np.isnan(offsets)
    counts |= {
        "left_out_other_statement_model": int(other_statement.sum()),
        "left_out_unknown_adjustments": int(unknown_set.sum()),
        "left_out_books_wholly_contradicted": int(unrecoverable.sum()),
    }
    data = labelled[usable].reset_index(drop=True)
    y = data["defaulted"].to_numpy(dtype=np.float64)
    offset = offsets[usable]
    counts |= {"used": len(data), "used_defaults": int(y.sum())}
    expert = known[EXPERT_VERSION]
    base = float(np.log(statement.base_rate / (1 - statement.base_rate)))
    signals = adjustment_signals(data)
    signals[UNTRUSTED_SHARE] = signals[UNTRUSTED_BOOKS_CODE].to_numpy() * np.maximum(base - offset, 0.0)
    names = [*EXPERT_CODES, UNTRUSTED_SHARE]
    firing = {name: int((signals[name].to_numpy() > 0).sum()) for name in names}
    result: dict[str, Any] = {
        "statement_model": statement.version,
        "source": source,
        "minimum": {"outcomes": MIN_OUTCOMES, "defaults": MIN_DEFAULTS, "firing": MIN_FIRING},
        "horizon_months": OUTCOME_HORIZON_MONTHS,
        "outcomes": counts,
    }

    def kept(why: str) -> dict[str, Any]:
        rows = [
            {
                "code": n,
                "expert": expert[n],
                "refit": None,
                "ci_95": None,
                "used": expert[n],
                "firing": firing[n],
            }
            for n in names
        ]
        return result | {
            "status": "expert",
            "version": EXPERT_VERSION,
            "why": why,
            "intercept": {"expert": 0.0, "refit": None, "ci_95": None, "used": 0.0},
            "table": rows,
            "coefficients": dict(expert),
        }

    if len(data) < MIN_OUTCOMES or y.sum() < MIN_DEFAULTS:
        return kept(
            f"too few outcomes: {len(data)} dossiers with a known outcome and {int(y.sum())} defaults "
            f"(at least {MIN_OUTCOMES} and {MIN_DEFAULTS} needed)"
        )
    free = [n for n in names if firing[n] >= MIN_FIRING]
    fixed = {n: expert[n] for n in names if n not in free}
    lower = {n: 0.0 for n in names}
    upper = {n: (1.0 if n == UNTRUSTED_SHARE else np.inf) for n in names}

    def fit(free_names: list[str], fixed_values: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        extra = sum(signals[n].to_numpy() * v for n, v in fixed_values.items())
        design = np.column_stack([np.ones(len(data)), *(signals[n].to_numpy() for n in free_names)])
        start = np.array([0.0, *(expert[n] for n in free_names)])
        return fit_offset_logistic(design, y, offset + extra, start)

    try:
        beta, covariance = fit(free, fixed)
        unconstrained = dict(zip(["intercept", *free], beta, strict=True))
        errors = dict(zip(["intercept", *free], np.sqrt(np.diag(covariance)), strict=True))
        active, bounded = list(free), dict(fixed)
        while True:
            values = dict(zip(["intercept", *active], beta, strict=True))
            outside = [n for n in active if not lower[n] <= values[n] <= upper[n]]
            if not outside:
                break
            worst = max(outside, key=lambda n: max(lower[n] - values[n], values[n] - upper[n]))
            bounded[worst] = float(np.clip(values[worst], lower[worst], upper[worst]))
            active.remove(worst)
            beta, _ = fit(active, bounded)
    except (ArithmeticError, np.linalg.LinAlgError) as error:
        return kept(f"the refit failed ({error}); expert rules kept")
    values = dict(zip(["intercept", *active], beta, strict=True)) | bounded

    def interval(name: str) -> list[float]:
        return [
            round(float(unconstrained[name] - Z_95 * errors[name]), 4),
            round(float(unconstrained[name] + Z_95 * errors[name]), 4),
        ]

    rows = []
    for n in names:
        row = {"code": n, "expert": expert[n], "firing": firing[n], "used": round(float(values[n]), 6)}
        if n in free:
            row |= {"refit": round(float(unconstrained[n]), 4), "ci_95": interval(n)}
            if n in bounded:
                row["note"] = "fitted outside its bound; fixed there and the rest refitted"
        else:
            row |= {
                "refit": None,
                "ci_95": None,
                "note": f"fires for fewer than {MIN_FIRING} dossiers: expert value kept",
            }
        rows.append(row)
    coefficients = {n: round(float(values[n]), 6) for n in names} | {
        "intercept": round(float(values["intercept"]), 6)
    }
    digest = hashlib.sha256(
        json.dumps([statement.version, coefficients], sort_keys=True).encode()
    ).hexdigest()
    return result | {
        "status": "refit",
        "version": f"refit-{digest[:8]}",
        "why": f"refitted on {len(data)} dossiers with a known outcome, {int(y.sum())} of them defaults",
        "intercept": {
            "expert": 0.0,
            "refit": round(float(unconstrained["intercept"]), 4),
            "ci_95": interval("intercept"),
            "used": coefficients["intercept"],
        },
        "table": rows,
        "coefficients": coefficients,
    }


def write_adjustments(outcomes: Path | None, artifacts: Path = ARTIFACTS) -> dict[str, Any] | None:
    """Refit the adjustments on ``outcomes`` and write them beside the statement artifact
    (``<statement version>-adjustments.json``; the refits it replaces are kept under ``previous``,
    so dossiers they scored can still be read). Without outcomes the file is removed: the expert
    rules apply, and the artifact is what the labelled data alone gives."""
    from evaluation.statement_model import load_statement_model
    from evaluation.statement_scoring import adjustment_sets, read_adjustments

    path = artifacts / f"{STATEMENT_MODEL_VERSION}-adjustments.json"
    if outcomes is None:
        path.unlink(missing_ok=True)
        return None
    frame = read_outcomes(outcomes)
    statement = load_statement_model(STATEMENT_MODEL_VERSION, artifacts)
    result = refit_adjustments(frame, statement, adjustment_sets(path), source=outcomes.name)
    old = read_adjustments(path) or {}
    previous = dict(old.get("previous", {}))
    if old.get("status") == "refit":
        previous[old["version"]] = old["coefficients"]
    previous.pop(result["version"], None)
    result["previous"] = dict(sorted(previous.items()))
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


EFFECTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "evaluation_adjustments.json"
"""The measured sandbox effect of each adjustment (``python -m bench.evaluation_adjustments``)."""

EFFECT_START = "<!-- sandbox effect: generated from bench/results/evaluation_adjustments.json -->"
EFFECT_END = "<!-- end of sandbox effect -->"


def effect_table(effects: dict[str, Any] | None) -> str:
    """The sandbox effect of each adjustment as Markdown, between :data:`EFFECT_START` and
    :data:`EFFECT_END` (the bench refreshes that span in the card and in ``SCORING.md``)."""
    if effects is None:
        body = "Not measured yet: run `python -m bench.evaluation_adjustments`."
    else:
        rows = "\n".join(
            f"| `{a['code']}` | {a['weight']:g} | {a['fires_for']} | {_pp(a['mean_pd_change'])} | "
            f"{_pp(a['max_pd_change'])} | {a['grade_changes']} |"
            for a in effects["adjustments"]
        )
        scopes = ", ".join(f"`{k}` {v}" for k, v in effects["scopes"].items())
        body = f"""Model `{effects["model_version"]}` on the sandbox population of the demo (seed {effects["seed"]}, {effects["smes"]} SMEs,
as of {effects["as_of"]}): the {effects["scored"]} SMEs with an active consent in the demo's seeding, each under the
sources and {effects["history_months"]}-month window it granted ({scopes}); mean PD {effects["mean_pd"]:.3f}
against a default rate of {effects["default_rate"]:.3f}. Every SME is scored with all adjustments and again
without one (its weight set to 0): for how many SMEs it fires (its signal is above 0), the mean and
the largest rise in PD it causes among them (percentage points), and how many grades it changes.

| adjustment | weight | fires for | mean PD change | max PD change | grade changes |
|---|---|---|---|---|---|
{rows}"""
    return f"{EFFECT_START}\n{body}\n{EFFECT_END}"


def _pp(value: float) -> str:
    return f"{100 * value:+.2f} pp"


def replace_effect_table(text: str, effects: dict[str, Any] | None) -> str:
    """``text`` with its span between the markers replaced by :func:`effect_table`."""
    start, end = text.index(EFFECT_START), text.index(EFFECT_END) + len(EFFECT_END)
    return text[:start] + effect_table(effects) + text[end:]


def train(
    data: Path,
    artifacts: Path = ARTIFACTS,
    card: Path = MODEL_CARD,
    outcomes: Path | None = None,
    effects: Path = EFFECTS,
) -> dict[str, Any]:
    """Measure, then write the artifact, its metadata, the calibration plot and the model card; with
    ``outcomes`` (a ``dossier outcomes export``), refit the behavioural adjustments too. Returns the
    metadata with the candidate comparison (``candidates``, not written to the artifact) and any
    refit (``adjustments``)."""
    result = measure(data)
    report = result["report"]
    candidates = report.pop("candidates")
    platt_a, platt_b = result["platt"]
    artifacts.mkdir(parents=True, exist_ok=True)
    model_path, meta_path = artifact_paths(STATEMENT_MODEL_VERSION, artifacts)
    model_text = result["booster"].model_to_string()
    model_path.write_text(_without_volatile_lines(model_text))
    plot_path = artifacts / f"{STATEMENT_MODEL_VERSION}-calibration.png"
    held = report["held_out"]["statement_model"]
    report["calibration_curve"] = _calibration_plot(
        result["y_test"],
        result["pd_test"],
        plot_path,
        f"{STATEMENT_MODEL_VERSION}, held-out part (AUC {held['roc_auc']:.3f}, Brier {held['brier']:.4f})",
    )
    meta = {
        "version": STATEMENT_MODEL_VERSION,
        "trained_on": report["data"]["file"],
        "library": f"lightgbm {_lightgbm_version()}",
        "params": {k: v for k, v in LIGHTGBM_PARAMS.items() if k not in ("n_jobs", "verbose")},
        "ratios": [{"attr": r.attr, "direction": r.direction, "code": r.code} for r in RATIOS],
        "calibration": {
            "method": "platt",
            "platt_a": round(platt_a, 6),
            "platt_b": round(platt_b, 6),
            "reference_logit": round(result["reference_logit"], 6),
        },
        **report,
        "reference": result["reference"],
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    adjustments = write_adjustments(outcomes, artifacts)
    measured = json.loads(effects.read_text()) if effects.is_file() else None
    card.write_text(model_card(meta, plot_path.relative_to(card.parent), adjustments, measured, candidates))
    meta = meta | {"candidates": candidates}
    if adjustments is not None:
        meta = meta | {"adjustments": adjustments}
    return meta


def _lightgbm_version() -> str:
    import lightgbm

    return lightgbm.__version__


def _without_volatile_lines(model_text: str) -> str:
    """The model text without the parameter echo at its end (paths and thread counts of the run)."""
    head, _, _ = model_text.partition("\nparameters:\n")
    return head + "\n"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def adjustments_section(adjustments: dict[str, Any] | None) -> str:
    """The card's account of the refit: what ``make train`` was given and, per adjustment, the
    expert value against the refitted one with its 95% interval."""
    if adjustments is None:
        return (
            "**Refit on outcomes: not run.** This `make train` was given no lender outcomes "
            "(`make train OUTCOMES=FILE`, a `dossier outcomes export`), so the expert rules above are in force."
        )
    n = adjustments["outcomes"]
    minimum = adjustments["minimum"]
    counts = (
        f"`{adjustments['source']}`: {n['reports']} reports on {n['dossiers']} dossiers; {n['not_yet_known']} "
        f"without a known outcome at {adjustments['horizon_months']} months yet, "
        f"{n['left_out_other_statement_model']} scored by another statement model, "
        f"{n['left_out_unknown_adjustments']} by adjustments not on record and "
        f"{n['left_out_books_wholly_contradicted']} whose books the VAT returns wholly contradicted "
        f"(statement logit not recoverable) left out; **{n['used']} used, {n['used_defaults']} defaults** "
        f"(minimum {minimum['outcomes']} and {minimum['defaults']}; an adjustment is refitted only if it "
        f"fires for at least {minimum['firing']} of them)."
    )
    if adjustments["status"] == "expert":
        head = f"**Refit on outcomes: expert rules kept** ({adjustments['why']}). {counts}"
    else:
        head = (
            f"**Refit on outcomes: in force, version `{adjustments['version']}`** ({adjustments['why']}). "
            f"{counts} Fitted by maximum likelihood: `defaulted ~ offset(statement logit) + intercept + "
            f"Σ weight × signal + share × withdrawn credit`, the statement logit recovered from each "
            f"dossier's PD and inputs under the adjustments it was scored with; 95% Wald intervals. A "
            f"coefficient fitted below 0 (or a share above 1) is fixed at that bound and the rest refitted, "
            f"so the PD stays monotone; `used` is what scores dossiers "
            f"(`evaluation/artifacts/{adjustments['statement_model']}-adjustments.json`)."
        )

    def number(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    def ci(value: list[float] | None) -> str:
        return "—" if value is None else f"{value[0]:.3f} – {value[1]:.3f}"

    rows = "\n".join(
        f"| `{r['code']}` | {number(r['expert'])} | {number(r['refit'])} | {ci(r['ci_95'])} | "
        f"{number(r['used'])} | {r['firing']} | {r.get('note', '')} |"
        for r in adjustments["table"]
    )
    i = adjustments["intercept"]
    rows += f"\n| intercept | 0.000 | {number(i['refit'])} | {ci(i['ci_95'])} | {number(i['used'])} | | |"
    return f"""{head}

| adjustment | expert | refit | 95% interval | used | fires for | note |
|---|---|---|---|---|---|---|
{rows}"""


def candidates_section(candidates: dict[str, Any] | None, ratios: int) -> str:
    """The card's account of the choice between the monotone trees, the WoE scorecard and their
    average (:func:`_candidates`)."""
    if candidates is None:
        return "**Trees or scorecard:** not measured in this run."
    cv, held = candidates["cross_validation"], candidates["held_out"]
    card = candidates["scorecard"]

    def difference(row: dict[str, Any]) -> str:
        if "auc_difference_95" not in row:
            return "—"
        low, high = row["auc_difference_95"]
        return f"{low:+.4f} – {high:+.4f}"

    table = "\n".join(
        f"| {CANDIDATE_NAMES[name]} | {cv[name]['roc_auc']:.4f} | {cv[name]['brier']:.4f} | {difference(cv[name])} "
        f"| {held[name]['roc_auc']:.4f} | {held[name]['brier']:.4f} |"
        for name in CANDIDATE_NAMES
    )
    current, chosen = cv[CURRENT_MODEL], candidates["chosen"]
    scorecard, average = cv["woe_scorecard"], cv["average"]

    def verdict(name: str) -> str:
        row = cv[name]
        gap = row["roc_auc"] - current["roc_auc"]
        if gap <= 0:
            return f"the {'scorecard' if name == 'woe_scorecard' else 'average'} ranks worse ({gap:+.4f})"
        return (
            f"the {'scorecard' if name == 'woe_scorecard' else 'average'} gains {gap:+.4f}, "
            f"but its interval ({difference(row)}) does not exclude no gain"
            if row["auc_difference_95"][0] <= 0
            else f"the {'scorecard' if name == 'woe_scorecard' else 'average'} gains {gap:+.4f} ({difference(row)})"
        )

    if chosen == CURRENT_MODEL:
        why = (
            f"**Chosen: the monotone LightGBM**, by cross-validation: {verdict('woe_scorecard')} and "
            f"{verdict('average')}. A second model to carry, calibrate, explain and keep in step with the "
            "first would buy no gain the training part can tell from noise, so the trees stay."
        )
    else:
        why = (
            f"**Chosen by cross-validation: {CANDIDATE_NAMES[chosen]}** ({verdict('woe_scorecard')}; "
            f"{verdict('average')}). This version still scores dossiers with the monotone LightGBM: the "
            "chosen model needs its own artifact and reason codes before it can replace it."
        )
    return f"""**Trees or scorecard, chosen by measurement.** The same run fits, beside the trees, a binned
weight-of-evidence scorecard (`optbinning`; `evaluation.train.Scorecard`): the same {ratios} ratios,
the same masked training rows and the same {FOLDS} folds; each ratio cut into optimal bins (up to
{SCORECARD_BINNING["max_n_prebins"]} pre-bins of at least {_pct(SCORECARD_BINNING["min_prebin_size"])} of the rows) whose bankruptcy rate is monotone in the
direction of the table below, the same table the trees are constrained by; a missing value its own
bin with its training WoE; and a logistic regression on the WoE values (L2, C = {SCORECARD_C}) with
every weight held at 0 or above, so each ratio's points can only follow its direction (the fitted
scorecard on the whole training part keeps {len(card["ratios_used"])} of the {ratios} ratios,
{", ".join(f"`{attr}`" for attr in card["ratios_used"])}: the others would have needed a weight of
the wrong sign beside their collinear neighbours, and their weight is 0). Its logit
is Platt-calibrated on its out-of-fold values like the trees'. The third candidate is the average of
the two calibrated logits, Platt-calibrated again (a sum of functions monotone in the same
direction is monotone, so it is as defensible). Rule: {candidates["rule"]}. It was written
after a first cross-validation run had shown the out-of-fold numbers below, but before any
candidate was scored on the held-out part; the held-out columns are reported, not used.

| candidate | out-of-fold ROC AUC | out-of-fold Brier | AUC minus the trees' (95% paired bootstrap) | held-out ROC AUC | held-out Brier |
|---|---|---|---|---|---|
{table}

{why} (Out-of-fold: scorecard {scorecard["roc_auc"]:.4f}, average {average["roc_auc"]:.4f}, trees {current["roc_auc"]:.4f}.)"""


def model_card(
    meta: dict[str, Any],
    plot: Path,
    adjustments: dict[str, Any] | None = None,
    effects: dict[str, Any] | None = None,
    candidates: dict[str, Any] | None = None,
) -> str:
    """The model card's Markdown, from the metadata :func:`train` writes, the refit of the
    adjustments (:func:`write_adjustments`, None without outcomes), their measured sandbox effect
    and the comparison of candidate models (:func:`_candidates`; kept out of the artifact)."""
    from evaluation.scoring import HINT_TEXTS, LENDING_TERMS
    from evaluation.statement_scoring import COVERAGE_WEIGHTS
    from evaluation.triangulation import COMPARISONS, DISCREPANCY_TEXTS

    data, cv, held = meta["data"], meta["cross_validation"], meta["held_out"]
    terms = LENDING_TERMS
    masks = "; ".join(
        f"{_pct(m['share'])} of the rows lose {' and '.join(f'`{r}`' for r in m['ratios'])}"
        for m in data["prior_year_masks"]
    )
    weights = ", ".join(f"{source} {weight:.2f}" for source, weight in COVERAGE_WEIGHTS.items())
    comparisons = "\n".join(
        f"| `{c.feature}` | {c.tolerance:.3f} | {c.limit:.3f} | `{c.books_higher}` / `{c.books_lower}` |"
        for c in COMPARISONS
    )
    discrepancies = "\n".join(f"| `{code}` | {text} |" for code, text in DISCREPANCY_TEXTS.items())
    hints = "\n".join(f"| `{code}` | {text} |" for code, text in HINT_TEXTS.items())
    rows = "\n".join(
        f"| `{r.attr}` | {r.definition} | {'higher raises risk' if r.direction > 0 else 'higher lowers risk'} "
        f"| {r.why} | `{r.code}` |"
        for r in RATIOS
    )
    candidate_rows: tuple[tuple[str, dict[str, Any]], ...] = ()
    if candidates is not None:
        candidate_rows = (
            (
                f"{CANDIDATE_NAMES['woe_scorecard']} (candidate, not used)",
                candidates["held_out"]["woe_scorecard"],
            ),
            (f"{CANDIDATE_NAMES['average']} (candidate, not used)", candidates["held_out"]["average"]),
        )
    metrics = "\n".join(
        f"| {name} | {m['roc_auc']:.4f} | {m['brier']:.4f} | {m['log_loss']:.4f} |"
        for name, m in (
            ("**statement model** (monotone LightGBM, Platt-calibrated)", held["statement_model"]),
            *candidate_rows,
            (
                "statement model, prior year masked (`attr21`, `attr24` missing: a history under 18 months)",
                held["statement_model_without_prior_year"],
            ),
            ("logistic regression, same ratios (baseline)", held["logistic_regression"]),
            ("Altman Z'' (baseline, Platt-scaled on the training part)", held["altman_z2"]),
            ("unconstrained LightGBM, same ratios (reference, not used)", held["unconstrained_lightgbm"]),
        )
    )
    bands = "\n".join(
        f"| {b['grade']} | {_pct(b['pd_from'])} – {_pct(b['pd_below'])} | {b['rows']} | {_pct(b['mean_pd'])} "
        f"| {_pct(b['bankrupt_rate'])} |"
        for b in meta["bands"]
    )
    texts = "\n".join(f"| `{code}` | {text} |" for code, text in STATEMENT_TEXTS.items())
    target = "met" if held["statement_model"]["roc_auc"] >= 0.96 else "**not met**"
    return f"""# Model card: `{meta["version"]}`

Written by `make train` (`python -m evaluation.train`); every number below comes from that run (seed {data["seed"]}). The artifact is `evaluation/artifacts/{meta["version"]}.lgb.txt`
(the trees, {meta["trees"]} of them) and `evaluation/artifacts/{meta["version"]}.json` (ratios,
directions, calibration, these metrics). The product loads them; it never needs the training data.

## What it predicts

The probability that a firm goes bankrupt within twelve months of a set of annual financial
statements (`pd_12m`), from {len(RATIOS)} ratios of those statements. It is the statement core of the
dossier's PD; the behavioural signals of the other sources are expert adjustments on top (below).

## Data

`{data["file"]}`: {data["rows"]:,} statements of Polish companies (mostly small and medium
manufacturers), {data["bankrupt"]} of which went bankrupt within a year ({_pct(data["bankrupt_rate"])}); a
stratified part of the "5th year" file of the UCI *Polish companies bankruptcy* data (Tomczak 2016,
CC BY 4.0). A stratified {_pct(data["held_out_share"])} ({data["held_out_rows"]:,} rows, {data["held_out_bankrupt"]}
bankrupt) is held out of all fitting, tuning and calibration; the model is fitted on the other
{data["training_rows"]:,} rows ({data["training_bankrupt"]} bankrupt).

**Short histories in distribution.** Before any fitting, the prior-year ratios of a label-blind,
seeded share of the training rows are masked (set missing): {masks}. Our books leave `attr21`
(sales of the year before) missing with under 18 months of history and `attr24` (three years of
profit) with under 30, while in the training file a missing `attr21` almost always marked the
incomplete statement of a firm about to fail (94% of such rows went bankrupt). Masked rows teach the
trees' missing-value branch what a missing prior year means in our data, so a short consent window
is scored as trained, never imputed: a sound firm of the tests goes from 0.9% to 1.9% without
`attr21` (it went to about 30% before masking). The cost is measured on the held-out part below (the
row with the prior year masked); cross-validation and calibration use the masked training rows.

## Model and why

LightGBM ({meta["library"]}), {meta["trees"]} trees of at most {LIGHTGBM_PARAMS["num_leaves"]} leaves, learning rate
{LIGHTGBM_PARAMS["learning_rate"]}, row and column subsampling, with a **monotone constraint on every ratio**
(method `intermediate`; `advanced` is known to break the constraint in some trees, LightGBM issues 5358 and 6155) in the direction of the table below. Calibrated by Platt scaling
(`logit = {meta["calibration"]["platt_a"]:.4f} + {meta["calibration"]["platt_b"]:.4f} × raw`) fitted on
{FOLDS}-fold out-of-fold raw scores of the training part. Platt was chosen over isotonic regression
because it keeps the log-odds additive (each ratio's TreeSHAP value times the slope is its exact
share of the calibrated logit, which is what the reason codes rank) at an out-of-fold Brier score of
{cv["platt_brier"]:.4f} against isotonic's {cv["isotonic_brier"]:.4f}.

Cross-validation on the training part (out-of-fold ROC AUC): monotone LightGBM {cv["monotone_lightgbm_roc_auc"]:.4f},
unconstrained LightGBM {cv["unconstrained_lightgbm_roc_auc"]:.4f}, logistic regression
{cv["logistic_regression_roc_auc"]:.4f}. The boosted model ranks better than the logistic regression
in cross-validation and on the held-out part.

{candidates_section(candidates, len(RATIOS))}

Honesty about the held-out part: the hyper-parameters were chosen on cross-validation of the
training part only, but while the set of ratios and the constraint method were being settled the
held-out numbers of earlier candidates were looked at, so they are not perfectly untouched.

In the training file an exact 0 in `attr22`/`attr42` (profit on operating activities) marks 398
statements that did not report that line (none bankrupt). Reading those zeros as missing gains
about 0.01 AUC, but makes the PD jump at a break-even firm, so the model does not: it stays
monotone everywhere, at the cost of that point.

## Ratios, directions and reasons

Every ratio the model reads, with the training data's definition. "Higher lowers risk" means the
model's PD can never rise when that ratio rises and every other stays put (and the reverse).

| ratio | definition | direction | why | reason code |
|---|---|---|---|---|
{rows}

Not used, and why: `attr5`, `attr6`, `attr11`, `attr25` need items our statements do not carry
(short-term securities, retained earnings, extraordinary items, share capital); `attr29` and
`attr55` are amounts (log total assets, working capital) that depend on the currency and unit of the
books; `attr15`, `attr41`, `attr59` divide by something that can be negative (a loss, negative
equity), so risk is not monotone in them; the turnover ratios `attr9`, `attr20`, `attr34`, `attr36`,
`attr43`, `attr44`, `attr47`, `attr60`, `attr61`, `attr64` have no direction economics vouches for.
How each ratio is computed from our monthly statements: `evaluation/RATIOS.md`.

## Held-out metrics (same split, same run)

| model | ROC AUC | Brier | log loss |
|---|---|---|---|
{metrics}

95% bootstrap interval of the statement model's held-out ROC AUC (1,000 resamples of the held-out
rows): {held["statement_model"]["roc_auc_95"][0]:.3f} – {held["statement_model"]["roc_auc_95"][1]:.3f}.

Target: held-out ROC AUC ≥ 0.96 for the monotone calibrated model: {target}. The unconstrained model
on the same ratios shows what the monotone constraints cost: part of its edge comes from patterns no
credit officer could defend (a PD that falls again at the worst profitability, or rises with the
best). The held-out part has only {data["held_out_bankrupt"]} bankruptcies, hence the width of the interval.
How much the figure depends on which rows are held out, and how far each kind of model is from the
target on other splits, is measured apart from this card: `python -m bench.statement_model --levers`
fits the model as trained, unconstrained boosting on the same ratios and unconstrained boosting on
all 64 ratios on ten more random stratified splits of the whole file and reports each held-out ROC
AUC (`random_splits` in `bench/results/statement_model_levers.json`; those splits overlap this
card's held-out part, so they are never used to choose a model).

## Coverage and the PD interval

Every dossier carries `coverage` (0 to 1) and an interval `pd_low` – `pd_high` around `pd_12m`;
nothing is invented for the point PD, which always takes the trees' missing-value branch.

* **Coverage** = Σ over sources of weight × what that source gave ({weights}). The books count by
  the share of the statement model's ratios that could be computed, each ratio weighted by its mean
  absolute TreeSHAP contribution on the training part (stored in the artifact, `reference.importance`);
  the tax, utility and survey sources count whole when shared.
* **Interval**, in logit units, then mapped through the logistic function:
  1. the statement part ranges over what the firm's missing ratios could have been: all of them are
     filled, together, with the values of each of {len(meta["reference"]["rows"])} reference training statements
     (a stratified sample kept in the artifact, `reference.rows`), its other ratios kept, and the 5th
     and 95th percentiles of those logits (widened to include the firm's own) bound it; a firm without
     books ranges over whole reference statements;
  2. the expert adjustments are added to both ends (the VAT distrust term is non-decreasing in the
     statement logit, so bounds map to bounds);
  3. each source not shared widens both ends by its absence penalty (`NO_TAX_DATA` 0.4,
     `NO_UTILITY_DATA` 0.2, `NO_SURVEY` 0.2 in logit): the evidence it would have given could have
     helped or hurt by about what its absence is charged.

  A firm with every ratio and every source has `pd_low = pd_12m = pd_high`: the interval measures
  what is missing, not the model's sampling error (see the bootstrap interval of the AUC above).

## Limit and price

Constants (`evaluation.scoring.LendingTerms`, set by `DOSSIER_LENDING_*`; the defaults):

| constant | value | setting |
|---|---|---|
| debt-service coverage (DSCR) | {terms.dscr} | `DOSSIER_LENDING_DSCR` |
| loan term | {terms.term_months} months | `DOSSIER_LENDING_TERM_MONTHS` |
| cap: share of annual revenue | {terms.revenue_cap} | `DOSSIER_LENDING_REVENUE_CAP` |
| loss given default | {terms.loss_given_default} | `DOSSIER_LENDING_LOSS_GIVEN_DEFAULT` |
| funding cost | {terms.funding_cost} | `DOSSIER_LENDING_FUNDING_COST` |
| operating cost | {terms.operating_cost} | `DOSSIER_LENDING_OPERATING_COST` |
| capital charge | {terms.capital_charge} | `DOSSIER_LENDING_CAPITAL_CHARGE` |
| rate cap | {terms.max_rate} | `DOSSIER_LENDING_MAX_RATE` |
| no limit at or above PD | {terms.max_pd} | `DOSSIER_LENDING_MAX_PD` |

* `indicative_rate = min(pd_12m × LGD + funding cost + operating cost + capital charge, rate cap)`.
* `credit_limit`: maximum annual debt service = `ebitda_12m` (revenue − cost of sales − operating
  expenses over the booked months of the last 12) / DSCR; the limit is the present value of that
  service paid monthly over the term at the indicative rate (`service / 12 × (1 − (1 + r/12)^−n) / (r/12)`),
  capped at the revenue share of `revenue_12m`, rounded down to 100; zero without books, without
  positive EBITDA or revenue, and at or above the PD ceiling.

## Improvement hint

`improvement_hint` names the next better grade and its PD bound, the action of the strongest reason
(below), and whether removing that reason's contribution alone would bring the logit under the
bound; grade A says it is the best grade.

| code | action |
|---|---|
{hints}

## Triangulation

`consistency_score` = 1 − the mean badness of the cross-source comparisons the dossier's sources
allow (null when there is none); each comparison's badness is 0 within its tolerance and 1 at its
limit, on either side (`|ln ratio|`, linear in between). `discrepancy_codes` lists every comparison
outside its tolerance, naming which side is higher (`evaluation/triangulation.py`):

| ratio (other source / books) | tolerance | limit | codes (books higher / lower) |
|---|---|---|---|
{comparisons}

| code | meaning |
|---|---|
{discrepancies}

On the sandbox (reference seed, 400 SMEs) every firm with inflated books carries `BOOKS_ABOVE_VAT`
and fewer than 5% of honest firms do (`tests/evaluation/test_evaluation_sandbox.py`). The score is
reported beside the PD, not added to it: the `VAT_BOOKS_MISMATCH` and `USAGE_BELOW_BOOKS_GROWTH`
expert factors already price the same contradictions.

## Monitoring: population stability

The artifact keeps, for the PD and for every ratio, the training part's decile bin edges and the
share of rows in each bin and missing (`reference.psi`). Each evaluate step counts its dossiers
into those bins (`evaluation.monitoring.bin_counts`), and each publish adds the shards' counts and
writes `PSI = Σ (p − q) ln(p / q)` per input (shares floored at 0.0001) to
`monitoring/psi/as_of=<date>.json` in the store; the demo summary shows the PD's and the worst
inputs' PSI (below 0.10 stable, 0.10-0.25 watch, above 0.25 shifted). The PD's reference is the
statement model's PD on the training statements, so the expert adjustments alone move it.

## Sandbox realism

The trained model scores sandbox firms, so the sandbox's statements were brought towards real ones
(`connectors/sandbox/universe.py`: ranges only, the default labels are drawn as before). Measured
by `make bench` (`bench/results/statement_model.json`, `sandbox_psi`) at the reference seed:

* before: mean PSI of the ratios against the training data 1.01 (median 0.83, 200 SMEs); the worst
  were `attr37` (current assets less inventory / long-term liabilities) 4.96, `attr21` 2.51,
  `attr40` (cash / short-term liabilities) 2.50, `attr24` 2.40, `attr27` 1.73; a tenth of the firms
  lost more than their total assets in a year (`attr1` 10th percentile −1.6 against −0.085);
* changes: premises and investments worth 0.6-4.4 months of revenue (total assets were 2-4 months of
  revenue, against about 10 in the training data), opening cash 0.1-0.7 months of revenue (was
  0.2-2), other debtors of 25 days, loans all due within a year for a third of the firms and half due
  within a year for the rest (was a tenth: short-term liabilities were half the training level), a
  planned margin of 0-12% (was −2% to 12%), overheads 70% variable with the revenue trend (a firm
  whose sales collapse cuts costs), and a wider spread of steady firms' growth;
* after: mean PSI 0.44 (median 0.36, 400 SMEs); what remains is mostly `attr24` and `attr21`
  (missing for histories under 30 months, 47% of the sandbox against 2% of the training file),
  `attr27` and `attr40`.

The dossier's model against the sandbox's own default labels (ROC AUC; the first scorecard on the
same firms in brackets), after the change: 0.808 (0.792) at the reference seed, 0.870 (0.870),
0.796 (0.793) and 0.826 (0.826) at seeds 1, 2 and 3 (2,000 SMEs); before it, with model 1.0.0:
0.817 (0.807), 0.882 (0.885), 0.795 (0.800). Its mean PD is 0.19-0.24 against default rates of
0.11-0.135 (0.23-0.28 before): still high, because the sandbox's failing and declining firms
(default rates 40% and 23%) keep statements worse than most real firms that failed. Grades at the
reference seed: A 110, B 107, C 44, D 19, E 120 of 400. Per seed: `bench/results/statement_model.json`.

## Calibration

![calibration curve]({plot.as_posix()})

Held-out deciles of predicted PD against the observed bankruptcy rate.

## PD bands (grades) on the held-out part

| grade | PD band | rows | mean PD | observed rate |
|---|---|---|---|---|
{bands}

## Reason codes

For each firm, the TreeSHAP contributions of its ratios (LightGBM `pred_contrib`, times the Platt
slope, i.e. in logit units) are summed per reason code, those of its missing ratios under
`STATEMENT_DATA_MISSING`; the codes that raised the logit most (by more than 0.05) are its
reasons, strongest first, four at most.

| code | text |
|---|---|
{texts}

## Behavioural signals: expert adjustments, not trained

There are no labelled outcomes yet for VAT, utility and field-survey data, so they enter as
documented expert adjustments added to the statement model's log-odds: the scorecard factors
`SHORT_BOOKS_HISTORY`, `VAT_FILED_LATE`, `VAT_BOOKS_MISMATCH`, `UTILITY_PAID_LATE`,
`UTILITY_USAGE_FALLING`, `USAGE_BELOW_BOOKS_GROWTH`, `SURVEY_NOT_VERIFIED`,
`SURVEY_REVENUE_MISMATCH` and the absence penalties `NO_TAX_DATA`, `NO_UTILITY_DATA`, `NO_SURVEY`,
with the anchors and weights of `evaluation/SCORING.md` §3. An SME without books gets the training
population's bankruptcy rate as its statement part (reason `NO_BOOKS`). Books that the VAT returns
contradict earn no credit: the statement model's credit (how far its logit lies below the no-books
logit) is withdrawn in proportion to the `VAT_BOOKS_MISMATCH` badness (none within 8% of the
books, all of it from a 25% gap; `VAT_BOOKS_UNTRUSTED` below is the share withdrawn at a full gap),
because inflated revenue improves every ratio and only the VAT return, which follows real turnover,
says otherwise. These are expert rules (`evaluation/statement_scoring.py`, version `expert-1`);
`make train OUTCOMES=FILE` refits them on lender outcomes. The dossier's model version is
`<statement model>+<adjustments version>`.

{adjustments_section(adjustments)}

### Measured effect on the sandbox

{effect_table(effects)}

On the sandbox the dossier's model ranks the sandbox's own default labels a little better than the
first scorecard (see "Sandbox realism").

## Field agents: collusion and exit

`evaluation/collusion.py` scores every field agent on three independent lines of evidence: visits
whose stated revenue is more than 1.5× off (either way) the books of the visit's month, counted
against the population's contradiction rate by a one-sided binomial test at a family-wise 1%
(Bonferroni over the agents; flag `CONTRADICTS_BOOKS`); one GPS point (within 10 m) or one photo
used for visits of different firms (`REUSED_GPS`, `REUSED_PHOTO`); near-identical answer sets
(same stated revenue, at most one other answer different) for different firms (`COPIED_ANSWERS`).
A flag needs at least 3 firms; two flags recommend suspension. A suspended agent's visits still
count as visits but verify nothing (`survey_verified_rate` falls, their stated revenue leaves
`survey_revenue_ratio`), and every SME they visited is re-scored and published again
(`dossier agents suspend|reinstate|detect`).

On the sandbox (`bench/results/collusion.json`, `python -m bench.collusion`): four universes of
400 SMEs (seeds 20261125, 1, 2, 3) with the copying agent `agent_013`, one of 1,000 SMEs with three
copiers (5, 13, 27) and one of 1,000 SMEs without any: **precision 1.00 and recall 1.00** (7 of 7
copiers recommended, no honest agent recommended). Each copier raises `CONTRADICTS_BOOKS`,
`REUSED_GPS` and `COPIED_ANSWERS`; one honest agent in 240 raised a single flag
(`CONTRADICTS_BOOKS`, p = 9e-5, six firms with inflated books), short of a recommendation. The
sandbox's copier pastes one template, so these numbers are an upper bound: an agent copying
with variation would lose `COPIED_ANSWERS` first. Photo reuse is read only when a `photo_hashes`
column is supplied; the canonical tables carry photo counts, not hashes.

## Known limits

* Trained on Polish manufacturers' annual statements (2000-2013); our SMEs are other industries and
  countries, reported monthly. Ratios are computed from the last 12 months of books
  (`evaluation/RATIOS.md`); financial expenses are read as interest, and where the training file
  departs from its written definitions (gross profit is EBIT, cost of products sold is nearly all
  costs, `attr52` has no × 365) the file is followed, since its values are what the model learned.
* Missing ratios follow the branch the trees learned for missing values, as trained, never
  replaced by a constant. The training file's own missing `attr21` (94% bankrupt) still sits in
  that branch beside the masked rows, so a missing prior year costs a weak firm more than a sound
  one (0.53 to 0.90 for the weak firm of the tests). Such contributions are reported under
  `STATEMENT_DATA_MISSING`, never under the missing ratio's own code. Retraining on outcomes of
  firms like ours is the cure.
* The PD interval covers missing evidence only, by the method above; it is not a confidence
  interval of the model.
* The interval scores each firm with a missing ratio once per reference statement (raw scores, no
  TreeSHAP): on 10,000 such firms it took 6.2 s against 4.3 s for the scoring itself, on the
  shared 2-core machine.
* PSI over a few dozen dossiers (the demo) is inflated by sampling noise in ten bins; read it over
  hundreds of dossiers or more.
* Held-out size: {data["held_out_bankrupt"]} bankruptcies; the metrics carry sampling error of a few points.
* {"The behavioural adjustments are refitted on lender outcomes; those outcomes come from loans lenders chose to make, so they describe the approved population, not every applicant." if adjustments and adjustments["status"] == "refit" else "The behavioural adjustments are expert judgement, not fitted."}
* The refit reads each dossier as its date's latest publish holds it (a re-published dossier keeps
  its id), counts several dossiers of one SME as separate observations, and cannot use dossiers
  whose books the VAT returns wholly contradicted (their statement logit cannot be told from the
  PD); its Wald intervals treat every dossier as independent.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, type=Path, help="labelled CSV laid out like the public file")
    parser.add_argument(
        "--outcomes",
        type=Path,
        help="lender outcomes (CSV or Parquet written by dossier outcomes export): refit the adjustments",
    )
    args = parser.parse_args(argv)
    for path in (args.data, args.outcomes):
        if path is not None and not path.is_file():
            print(f"train: {path}: no such file", file=sys.stderr)
            return 2
    if args.outcomes is not None:
        try:
            read_outcomes(args.outcomes)
        except OutcomesError as error:
            print(f"train: {error}", file=sys.stderr)
            return 2
    meta = train(args.data, outcomes=args.outcomes)
    held = meta["held_out"]
    cv = meta["candidates"]["cross_validation"]
    print(
        f"[train] chosen by cross-validation: {meta['candidates']['chosen']} (out-of-fold ROC AUC: "
        + ", ".join(f"{name} {row['roc_auc']:.4f}" for name, row in cv.items())
        + ")"
    )
    print(
        f"[train] {meta['version']}: held-out ROC AUC {held['statement_model']['roc_auc']:.4f}, "
        f"Brier {held['statement_model']['brier']:.4f} (logistic {held['logistic_regression']['roc_auc']:.4f}, "
        f"Altman Z'' {held['altman_z2']['roc_auc']:.4f}); card in {MODEL_CARD}"
    )
    if "adjustments" in meta:
        adjustments = meta["adjustments"]
        print(f"[train] adjustments {adjustments['version']}: {adjustments['why']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
