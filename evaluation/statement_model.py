"""The statement model: financial-statement ratios in, a calibrated 12-month PD and its reasons out.

The model is a gradient-boosted tree ensemble (LightGBM) trained on the public Polish bankruptcy
statements (``make train``, see ``evaluation/MODEL_CARD.md``), constrained to be monotone in every
ratio it reads, in the direction written in :data:`RATIOS` (more profit per asset never raises the
risk), and calibrated with Platt scaling on out-of-fold predictions:

    raw    = sum of the trees' outputs (log-odds scale)
    logit  = platt_a + platt_b * raw
    pd_12m = 1 / (1 + exp(-logit))

Because Platt scaling is linear in the raw score, the TreeSHAP contribution of each ratio
(LightGBM's ``pred_contrib``) times ``platt_b`` is its exact share of the logit. Contributions are
summed per reason code (several ratios say the same thing in plain language), those of missing
ratios under :data:`MISSING_CODE`, and the codes that raised the logit most are the reasons.

The trained artifact is a LightGBM text model plus a JSON file with the version, the ratios, the
calibration and the held-out metrics, both committed under ``evaluation/artifacts/``; nothing here
needs the training data.

>>> [r.attr for r in RATIOS][:4]
['attr1', 'attr2', 'attr3', 'attr4']
>>> RATIO_BY_ATTR["attr2"].direction
1
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ARTIFACTS = Path(__file__).parent / "artifacts"
"""Where the committed model artifacts live."""

STATEMENT_MODEL_VERSION = "statement-model-1.1.0"
"""Version of the committed statement model; ``make train`` writes the artifact of this name."""


@dataclass(frozen=True)
class Ratio:
    """One ratio the model reads: its training-data name and definition, direction and reason code.

    ``direction`` is +1 when a higher value can only raise the risk, -1 when it can only lower it.
    """

    attr: str
    definition: str
    direction: int
    code: str
    why: str


_PROFIT = "profit earns a firm the means to pay its debts; more of it never makes default likelier"
_LEVERAGE = "each unit of debt against the same assets or equity leaves less cushion before insolvency"
_LIQUIDITY = "liquid assets are what pays the bills due within the year"
_SHORT_DEBT = "the longer current debt would take to pay out of sales or costs, the tighter the firm"
_FUNDING = "fixed assets funded by equity or long-term money cannot be called in within the year"

# fmt: off
RATIOS: tuple[Ratio, ...] = tuple(Ratio(*row) for row in (
    # attr     training definition                                              dir  reason code              why
    ("attr1",  "net profit / total assets",                                     -1, "LOW_RETURN_ON_ASSETS",  _PROFIT),
    ("attr2",  "total liabilities / total assets",                              +1, "HIGH_LEVERAGE",         _LEVERAGE),
    ("attr3",  "working capital / total assets",                                -1, "LOW_LIQUIDITY",         _LIQUIDITY),
    ("attr4",  "current assets / short-term liabilities",                       -1, "LOW_LIQUIDITY",         _LIQUIDITY),
    ("attr7",  "EBIT / total assets",                                           -1, "LOW_RETURN_ON_ASSETS",  _PROFIT),
    ("attr8",  "book value of equity / total liabilities",                      -1, "HIGH_LEVERAGE",         _LEVERAGE),
    ("attr10", "equity / total assets",                                         -1, "HIGH_LEVERAGE",         _LEVERAGE),
    ("attr12", "gross profit / short-term liabilities",                         -1, "LOW_DEBT_SERVICE",      "profit set against the debt due within the year is what repays it"),
    ("attr13", "(gross profit + depreciation) / sales",                         -1, "LOW_MARGINS",           _PROFIT),
    ("attr14", "(gross profit + interest) / total assets",                      -1, "LOW_RETURN_ON_ASSETS",  _PROFIT),
    ("attr16", "(gross profit + depreciation) / total liabilities",             -1, "LOW_DEBT_SERVICE",      "cash earnings set against all debt is how fast the debt could be repaid"),
    ("attr17", "total assets / total liabilities",                              -1, "HIGH_LEVERAGE",         _LEVERAGE),
    ("attr18", "gross profit / total assets",                                   -1, "LOW_RETURN_ON_ASSETS",  _PROFIT),
    ("attr19", "gross profit / sales",                                          -1, "LOW_MARGINS",           _PROFIT),
    ("attr21", "sales (n) / sales (n-1)",                                       -1, "REVENUE_DECLINING",     "shrinking sales shrink the means to pay; growth never adds risk here"),
    ("attr22", "profit on operating activities / total assets",                 -1, "LOW_RETURN_ON_ASSETS",  _PROFIT),
    ("attr23", "net profit / sales",                                            -1, "LOW_MARGINS",           _PROFIT),
    ("attr24", "gross profit (in 3 years) / total assets",                      -1, "LOW_RETURN_ON_ASSETS",  "three years of profit show whether earning is a habit; more never raises risk"),
    ("attr26", "(net profit + depreciation) / total liabilities",               -1, "LOW_DEBT_SERVICE",      "cash earnings set against all debt is how fast the debt could be repaid"),
    ("attr27", "profit on operating activities / financial expenses",           -1, "LOW_INTEREST_COVER",    "operating profit is what pays the interest; the more times over, the safer"),
    ("attr28", "working capital / fixed assets",                                -1, "LOW_LIQUIDITY",         _LIQUIDITY),
    ("attr30", "(total liabilities - cash) / sales",                            +1, "HIGH_LEVERAGE",         "net debt measured in years of sales: more of it is harder to carry"),
    ("attr31", "(gross profit + interest) / sales",                             -1, "LOW_MARGINS",           _PROFIT),
    ("attr32", "(current liabilities * 365) / cost of products sold",           +1, "SHORT_TERM_DEBT_HEAVY", _SHORT_DEBT),
    ("attr33", "operating expenses / short-term liabilities",                   -1, "SHORT_TERM_DEBT_HEAVY", _SHORT_DEBT),
    ("attr35", "profit on sales / total assets",                                -1, "LOW_RETURN_ON_ASSETS",  _PROFIT),
    ("attr37", "(current assets - inventories) / long-term liabilities",        -1, "LOW_LIQUIDITY",         _LIQUIDITY),
    ("attr38", "constant capital / total assets",                               -1, "WEAK_LONG_TERM_FUNDING", _FUNDING),
    ("attr39", "profit on sales / sales",                                       -1, "LOW_MARGINS",           _PROFIT),
    ("attr40", "(current assets - inventory - receivables) / short-term liabilities", -1, "LOW_LIQUIDITY",  _LIQUIDITY),
    ("attr42", "profit on operating activities / sales",                        -1, "LOW_MARGINS",           _PROFIT),
    ("attr45", "net profit / inventory",                                        -1, "LOW_RETURN_ON_ASSETS",  _PROFIT),
    ("attr46", "(current assets - inventory) / short-term liabilities",         -1, "LOW_LIQUIDITY",         _LIQUIDITY),
    ("attr48", "EBITDA (profit on operating activities - depreciation) / total assets", -1, "LOW_RETURN_ON_ASSETS", _PROFIT),
    ("attr49", "EBITDA (profit on operating activities - depreciation) / sales", -1, "LOW_MARGINS",          _PROFIT),
    ("attr50", "current assets / total liabilities",                            -1, "LOW_LIQUIDITY",         _LIQUIDITY),
    ("attr51", "short-term liabilities / total assets",                         +1, "SHORT_TERM_DEBT_HEAVY", _LEVERAGE),
    ("attr52", "(short-term liabilities * 365) / cost of products sold",        +1, "SHORT_TERM_DEBT_HEAVY", _SHORT_DEBT),
    ("attr53", "equity / fixed assets",                                         -1, "WEAK_LONG_TERM_FUNDING", _FUNDING),
    ("attr54", "constant capital / fixed assets",                               -1, "WEAK_LONG_TERM_FUNDING", _FUNDING),
    ("attr56", "(sales - cost of products sold) / sales",                       -1, "LOW_MARGINS",           _PROFIT),
    ("attr57", "(current assets - inventory - short-term liabilities) / (sales - gross profit - depreciation)", -1, "LOW_LIQUIDITY", _LIQUIDITY),
    ("attr58", "total costs / total sales",                                     +1, "LOW_MARGINS",           "costs that eat more of each sale leave less to pay debts with"),
    ("attr62", "(short-term liabilities * 365) / sales",                        +1, "SHORT_TERM_DEBT_HEAVY", _SHORT_DEBT),
    ("attr63", "sales / short-term liabilities",                                -1, "SHORT_TERM_DEBT_HEAVY", _SHORT_DEBT),
))
# fmt: on
"""Every ratio the model reads, in model order, with its direction and why.

Left out, and why (also in the model card): ``attr5``, ``attr6``, ``attr11``, ``attr25`` need items
our statements do not have (short-term securities, retained earnings, extraordinary items, share
capital); ``attr29`` (log of total assets) and ``attr55`` (working capital) are amounts, so they
depend on the currency and unit of the books; ``attr15``, ``attr41`` and ``attr59`` divide by a
quantity that can be negative (a loss, negative equity), so their risk is not monotone in them;
the turnover ratios ``attr9``, ``attr20``, ``attr34``, ``attr36``, ``attr43``, ``attr44``, ``attr47``,
``attr60``, ``attr61`` and ``attr64`` have no direction economics vouches for (fast or slow turnover
is a matter of industry), so a monotone model cannot use them honestly.
"""

RATIO_BY_ATTR: dict[str, Ratio] = {r.attr: r for r in RATIOS}

STATEMENT_TEXTS: dict[str, str] = {
    "LOW_RETURN_ON_ASSETS": "Profit is low or negative relative to the assets employed.",
    "LOW_MARGINS": "Little of each sale is left as profit after costs.",
    "HIGH_LEVERAGE": "Liabilities are high relative to assets.",
    "LOW_LIQUIDITY": "Current assets cover short-term liabilities poorly.",
    "LOW_DEBT_SERVICE": "Earnings would repay the firm's debts only slowly.",
    "LOW_INTEREST_COVER": "Operating profit covers interest payments thinly or not at all.",
    "REVENUE_DECLINING": "Revenue is lower than in the same months a year earlier.",
    "SHORT_TERM_DEBT_HEAVY": "Debt due within a year is large relative to sales and costs.",
    "WEAK_LONG_TERM_FUNDING": "Equity and long-term funding cover the fixed assets poorly.",
    "STATEMENT_DATA_MISSING": (
        "Some statement ratios could not be computed (for example, no sales for the year before); "
        "in the training data missing figures went with higher risk."
    ),
}
"""Plain-language text of each reason code of the statement model."""

MISSING_CODE = "STATEMENT_DATA_MISSING"
"""Reason code that collects the contributions of the ratios that are missing for a firm: the trees
learned what a missing value meant in the training file, which is not what the ratio's own text
says, so a missing ratio never speaks under its ratio's code."""

STATEMENT_CODES: tuple[str, ...] = (*dict.fromkeys(r.code for r in RATIOS), MISSING_CODE)
"""The statement model's reason codes, in the order of their first ratio, then the missing-data code."""


def _as_floats(column: pd.Series) -> np.ndarray:
    """A ratio column as float64 values, anything not a number as NaN (float64 columns as they are)."""
    if column.dtype == np.float64:
        return column.to_numpy()
    return pd.to_numeric(column, errors="coerce").astype(np.float64).to_numpy()


def ratio_block(ratios: pd.DataFrame) -> np.ndarray:
    """The :data:`RATIOS` columns of ``ratios`` as one ``(ratios, rows)`` float block, infinities as
    missing; its transpose is the model's input (what ``prepared(ratios).to_numpy()`` gives, in the
    same memory layout). Missing columns raise ``KeyError`` naming them."""
    absent = [r.attr for r in RATIOS if r.attr not in ratios.columns]
    if absent:
        raise KeyError(f"ratio columns missing: {absent}")
    block = np.empty((len(RATIOS), len(ratios)), dtype=np.float64)
    for row, ratio in enumerate(RATIOS):
        block[row] = _as_floats(ratios[ratio.attr])
    block[np.isinf(block)] = np.nan
    return block


def prepared(ratios: pd.DataFrame) -> pd.DataFrame:
    """The model's input: the :data:`RATIOS` columns as floats, in model order, infinities as
    missing. Missing columns raise ``KeyError`` naming them."""
    return pd.DataFrame(ratio_block(ratios).T, columns=[r.attr for r in RATIOS], index=ratios.index)


@dataclass(frozen=True)
class StatementOutput:
    """The statement model's answer for a frame of ratios (indexed like it)."""

    logit: pd.Series
    contributions: pd.DataFrame
    """One column per code of :data:`STATEMENT_CODES`: how much it raised the logit (>= 0)."""

    @property
    def pd_12m(self) -> pd.Series:
        return (1.0 / (1.0 + np.exp(-self.logit))).rename("pd_12m")


@dataclass(frozen=True)
class StatementModel:
    """A trained statement model: the LightGBM booster and its Platt calibration.

    ``base_rate`` is the training data's bankruptcy rate (the PD of a firm whose statements are
    unknown) and ``reference_logit`` the median calibrated logit of the training firms (a typical
    firm's)."""

    version: str
    booster: object
    platt_a: float
    platt_b: float
    base_rate: float
    reference_logit: float
    meta: dict

    def raw(self, ratios: pd.DataFrame) -> np.ndarray:
        """The trees' summed output (log-odds scale, before calibration)."""
        return np.asarray(self.booster.predict(ratio_block(ratios).T, raw_score=True))

    @property
    def importance(self) -> np.ndarray:
        """Mean absolute TreeSHAP contribution of each ratio on the training part (model order),
        normalised to sum to 1: the weight of each ratio in the statement's coverage."""
        values = np.array([self.meta["reference"]["importance"][r.attr] for r in RATIOS], dtype=np.float64)
        return values / values.sum()

    @property
    def reference_rows(self) -> np.ndarray:
        """The stratified sample of training statements kept in the artifact (rows x ratios)."""
        return self._reference_rows.copy()

    @cached_property
    def _reference_rows(self) -> np.ndarray:
        rows = self.meta["reference"]["rows"]
        return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)

    def ratio_coverage(self, ratios: pd.DataFrame) -> pd.Series:
        """Importance-weighted share of the model's ratios that are present for each firm (0 to 1)."""
        return pd.Series(self.block_coverage(ratio_block(ratios)), index=ratios.index, name="ratio_coverage")

    def block_coverage(self, block: np.ndarray) -> np.ndarray:
        """:meth:`ratio_coverage` of a ratio block (:func:`ratio_block`)."""
        return (~np.isnan(block)).T @ self.importance

    def logit_range(
        self, ratios: pd.DataFrame, low: float = 5.0, high: float = 95.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Range of the calibrated logit over what each firm's missing ratios could have been.

        Every missing ratio of a firm is filled, all together, with the values of each reference
        training statement in turn (:attr:`reference_rows`, its other ratios kept); the ``low`` and
        ``high`` percentiles of those logits, widened to include the firm's own logit, bound it.
        A firm with no missing ratio gets its own logit twice. The point PD never uses these
        fills: it takes the trees' missing-value branch, as trained.
        """
        return self.block_logit_range(ratio_block(ratios), low, high)

    def block_logit_range(
        self, block: np.ndarray, low: float = 5.0, high: float = 95.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`logit_range` of a ratio block (:func:`ratio_block`).

        The trees see every distinct row once: the firm's own rows and its fills go to LightGBM in
        one call, and firms whose ratios are alike to the bit (firms without books, all missing)
        share their fills. Each row's output depends on that row alone, so this changes nothing."""
        values = block.T
        n = len(values)
        gaps = np.flatnonzero(np.isnan(values).any(axis=1))
        reference = self._reference_rows
        if len(gaps):
            distinct, which = _distinct_rows(values[gaps])
            # row i * len(reference) + j: firm i's ratios, its missing ones taken from reference j
            holes = np.isnan(distinct)[:, None, :]
            filled = np.where(holes, reference[None, :, :], distinct[:, None, :])
            rows = np.concatenate([values, filled.reshape(-1, values.shape[1])])
        else:
            rows = values
        outputs = np.zeros(0)
        if n:
            outputs = self.platt_a + self.platt_b * np.asarray(self.booster.predict(rows, raw_score=True))
        logit = outputs[:n]
        lower, upper = logit.copy(), logit.copy()
        if len(gaps):
            fills = outputs[n:].reshape(len(distinct), len(reference))
            lower[gaps] = np.minimum(np.percentile(fills, low, axis=1)[which], logit[gaps])
            upper[gaps] = np.maximum(np.percentile(fills, high, axis=1)[which], logit[gaps])
        return lower, upper

    def score(self, ratios: pd.DataFrame) -> StatementOutput:
        """Calibrated logit and per-reason-code contributions for each row of ``ratios``."""
        return self.block_score(ratio_block(ratios), ratios.index)

    def block_score(self, block: np.ndarray, index: pd.Index) -> StatementOutput:
        """:meth:`score` of a ratio block (:func:`ratio_block`) whose firms are ``index``."""
        values = block.T
        if len(values) == 0:
            empty = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in STATEMENT_CODES}, index=index)
            return StatementOutput(pd.Series(dtype=np.float64, index=index), empty)
        shap = np.asarray(self.booster.predict(values, pred_contrib=True))
        raw = shap.sum(axis=1)
        logit = self.platt_a + self.platt_b * raw
        per_ratio = self.platt_b * shap[:, :-1]
        missing = np.isnan(values)
        present = pd.DataFrame(np.where(missing, 0.0, per_ratio), columns=[r.attr for r in RATIOS])
        by_code = present.T.groupby([r.code for r in RATIOS], sort=False).sum().T
        by_code[MISSING_CODE] = np.where(missing, per_ratio, 0.0).sum(axis=1)
        contributions = by_code.clip(lower=0.0)[list(STATEMENT_CODES)]
        contributions.index = index
        return StatementOutput(pd.Series(logit, index=index, name="logit"), contributions)


def _distinct_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a float matrix that differ in at least one bit, in first-seen order, and for each
    row of ``values`` the position of its row among them."""
    rows = np.ascontiguousarray(values)
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first, which = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rows[first[order]], rank[which.ravel()]


def artifact_paths(version: str, directory: Path = ARTIFACTS) -> tuple[Path, Path]:
    """The LightGBM text model and the JSON metadata of a model version."""
    return directory / f"{version}.lgb.txt", directory / f"{version}.json"


def load_metadata(version: str = STATEMENT_MODEL_VERSION, directory: Path = ARTIFACTS) -> dict[str, Any]:
    """The JSON metadata of a committed artifact (bands, calibration, the monitoring reference),
    read without loading the booster or importing LightGBM."""
    return json.loads(artifact_paths(version, directory)[1].read_text())


@cache
def default_metadata() -> dict[str, Any]:
    """The metadata of the committed model of :data:`STATEMENT_MODEL_VERSION`, read once per process."""
    return load_metadata()


def load_statement_model(
    version: str = STATEMENT_MODEL_VERSION, directory: Path = ARTIFACTS
) -> StatementModel:
    """Load a committed artifact; raises ``FileNotFoundError`` naming the file when it is absent."""
    import lightgbm

    model_path, meta_path = artifact_paths(version, directory)
    meta = load_metadata(version, directory)
    features = [r["attr"] for r in meta["ratios"]]
    if features != [r.attr for r in RATIOS]:
        raise ValueError(f"{meta_path}: the artifact's ratios differ from evaluation.statement_model.RATIOS")
    booster = lightgbm.Booster(model_str=model_path.read_text())
    return StatementModel(
        version=meta["version"],
        booster=booster,
        platt_a=float(meta["calibration"]["platt_a"]),
        platt_b=float(meta["calibration"]["platt_b"]),
        base_rate=float(meta["data"]["bankrupt_rate"]),
        reference_logit=float(meta["calibration"]["reference_logit"]),
        meta=meta,
    )


@cache
def default_statement_model() -> StatementModel:
    """The committed model of :data:`STATEMENT_MODEL_VERSION`, loaded once per process."""
    return load_statement_model()


__all__ = [
    "MISSING_CODE",
    "RATIOS",
    "RATIO_BY_ATTR",
    "STATEMENT_CODES",
    "STATEMENT_MODEL_VERSION",
    "STATEMENT_TEXTS",
    "Ratio",
    "StatementModel",
    "StatementOutput",
    "default_metadata",
    "default_statement_model",
    "load_metadata",
    "load_statement_model",
    "prepared",
    "ratio_block",
]
