"""Statement model benchmark: held-out metrics with baselines, sandbox ranking, scoring speed.

* ``held_out``: re-runs the training measurement (``evaluation.train.measure``: same seed, split,
  folds and baselines as ``make train``) when the labelled file is present, else reports the metrics
  stored in the committed artifact (``"source": "artifact"``);
* ``sandbox``: ROC AUC of ``pd_12m`` against the sandbox's ``defaults_within_12m`` for the dossier's
  model and for the first scorecard, on several sandbox universes;
* ``sandbox_psi``: population stability (PSI) of each statement ratio and of the PD between the
  sandbox firms (reference seed, 400 SMEs) and the training data (the artifact's reference bins);
* ``speed``: rows of ratios scored per second by the statement model (TreeSHAP contributions
  included).

Writes ``bench/results/statement_model.json``. Run: ``python -m bench.statement_model``.

``python -m bench.statement_model --levers`` instead measures what might close the gap between the
monotone model and unconstrained boosting (issue 10's 0.96 target), by 5-fold cross-validation on
the training part only (the held-out part is split off exactly as in ``make train`` and never
scored): prior-year masking against none and against augmentation (each row also copied with its
prior year masked), LightGBM hyper-parameters and constraint methods, reading ``attr22``/``attr42``
zeros as missing, and the AUC each single ratio would add if it were left unconstrained, beside the
unconstrained model on the same ratios and on all 64; and, by the same protocol, the binned
weight-of-evidence scorecard ``make train`` compares the trees with (``evaluation.train.Scorecard``)
and the average of the two Platt-calibrated logits (``candidates``). Last, ``random_splits``: how much
the held-out figure itself depends on which rows are held out. The whole labelled file is split
again with :data:`SPLIT_SEEDS` (each a stratified 25% held out, like ``make train``'s own split), and
on each the model as trained (monotone, prior years masked), unconstrained boosting on the same
ratios and unconstrained boosting on all 64 ratios are fitted on the training part and scored on the
held-out part. Those held-out parts overlap ``make train``'s, so this section measures whether the
target is within reach of each kind of model, and is never used to choose one. Writes
``bench/results/statement_model_levers.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "credit" / "polish_bankruptcy_1y_train.csv"
AS_OF = dt.date(2026, 11, 1)
UNIVERSES = ((20261125, 400), (1, 400), (2, 400), (3, 2000))


def held_out(data: Path) -> dict[str, Any]:
    """The training run's report, measured now, or the committed artifact's when there is no data."""
    from evaluation.statement_model import default_statement_model

    if not data.is_file():
        meta = default_statement_model().meta
        return {
            "source": "artifact",
            **{k: meta[k] for k in ("data", "cross_validation", "held_out", "bands")},
        }
    from evaluation.train import measure

    started = time.perf_counter()
    report = measure(data)["report"]
    return {"source": str(data.name), "seconds": round(time.perf_counter() - started, 1), **report}


def sandbox() -> list[dict[str, Any]]:
    """AUC of the dossier's model and of the first scorecard against the sandbox's default labels."""
    from sklearn.metrics import roc_auc_score

    from connectors.sandbox.universe import Universe
    from evaluation import evaluate
    from evaluation.scoring import SCORECARD
    from evaluation.statement_scoring import default_statement_scoring

    model = default_statement_scoring()
    rows = []
    for seed, size in UNIVERSES:
        universe = Universe(seed=seed, size=size, as_of=AS_OF)
        profiles = universe.profiles()
        smes = profiles[["sme_id"]].assign(history_months=universe.max_months)
        truth = universe.truth()
        defaulted = profiles["defaults_within_12m"].astype(bool)
        new = evaluate(truth, smes, as_of=AS_OF, model=model)
        old = evaluate(truth, smes, as_of=AS_OF, model=SCORECARD)
        rows.append(
            {
                "seed": seed,
                "smes": size,
                "default_rate": round(float(defaulted.mean()), 4),
                model.version: {
                    "roc_auc": round(float(roc_auc_score(defaulted, new["pd_12m"])), 4),
                    "mean_pd": round(float(new["pd_12m"].mean()), 4),
                },
                SCORECARD.version: {
                    "roc_auc": round(float(roc_auc_score(defaulted, old["pd_12m"])), 4),
                    "mean_pd": round(float(old["pd_12m"].mean()), 4),
                },
            }
        )
    return rows


def sandbox_psi(seed: int = 20261125, size: int = 400) -> dict[str, Any]:
    """PSI of every ratio and of the PD, sandbox firms against the training reference, worst first."""
    import numpy as np

    from connectors.sandbox.universe import Universe
    from evaluation import evaluate
    from evaluation.monitoring import bin_counts, stability
    from evaluation.statement_model import default_statement_model

    reference = default_statement_model().meta["reference"]["psi"]
    universe = Universe(seed=seed, size=size, as_of=AS_OF)
    smes = universe.profiles()[["sme_id"]].assign(history_months=universe.max_months)
    scored = evaluate(universe.truth(), smes, as_of=AS_OF, with_ratios=True)
    psi = stability(bin_counts(scored, reference), reference)
    ranked = dict(sorted(psi.items(), key=lambda item: -(item[1] or 0.0)))
    ratios = [v for k, v in psi.items() if k != "pd_12m" and v is not None]
    return {
        "seed": seed,
        "smes": size,
        "mean_ratio_psi": round(float(np.mean(ratios)), 4),
        "median_ratio_psi": round(float(np.median(ratios)), 4),
        "grades": scored["grade"].value_counts().sort_index().to_dict(),
        "psi": ranked,
    }


def speed(rows: int = 100_000) -> dict[str, Any]:
    """Rows of ratios per second through the statement model (contributions included)."""
    import numpy as np
    import pandas as pd

    from evaluation.statement_model import RATIOS, default_statement_model

    model = default_statement_model()
    generator = np.random.default_rng(1)
    frame = pd.DataFrame({r.attr: generator.normal(0.2, 0.5, rows) for r in RATIOS})
    started = time.perf_counter()
    model.score(frame)
    seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds)}


LEVER_PARAMS: dict[str, dict[str, Any]] = {
    "as trained": {},
    "15 leaves": {"num_leaves": 15},
    "31 leaves, 20-row leaves": {"num_leaves": 31, "min_child_samples": 20},
    "15 leaves, 10-row leaves": {"num_leaves": 15, "min_child_samples": 10},
    "1500 trees at 0.01, 15 leaves": {"n_estimators": 1500, "learning_rate": 0.01, "num_leaves": 15},
    "column share 0.3": {"colsample_bytree": 0.3},
    "method basic": {"monotone_constraints_method": "basic"},
    "method advanced": {"monotone_constraints_method": "advanced"},
    "monotone penalty 2": {"monotone_penalty": 2.0},
}
"""Hyper-parameter variants of the monotone model measured by :func:`levers` (over ``make train``'s)."""

SPLIT_SEEDS = tuple(range(10))
"""Seeds of the random stratified splits of ``random_splits`` in :func:`levers`."""


def levers(data: Path) -> dict[str, Any]:
    """Out-of-fold ROC AUC on the training part of each lever (see the module docstring).

    ``roc_auc`` scores the rows as filed; ``roc_auc_short`` the same rows with ``attr21`` and
    ``attr24`` missing (a history under 18 months)."""
    import lightgbm
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, train_test_split

    from evaluation.statement_model import RATIOS
    from evaluation.train import (
        FOLDS,
        HELD_OUT_SHARE,
        LIGHTGBM_PARAMS,
        SEED,
        Scorecard,
        _platt,
        mask_prior_years,
        prepared,
        read_labelled,
    )

    raw_x, y = read_labelled(data)
    x_all = prepared(raw_x)
    x, _, y_train, _ = train_test_split(x_all, y, test_size=HELD_OUT_SHARE, stratify=y, random_state=SEED)
    full = raw_x.loc[x.index].replace([np.inf, -np.inf], np.nan).astype(np.float64)
    directions = [r.direction for r in RATIOS]

    def cross_validate(
        frame: pd.DataFrame, masking: str, constraints: list[int] | None, **params: Any
    ) -> dict:
        options = dict(LIGHTGBM_PARAMS, random_state=SEED) | params
        if constraints is None:
            options.pop("monotone_constraints_method")
        else:
            options["monotone_constraints"] = constraints
        oof, oof_short = np.zeros(len(y_train)), np.zeros(len(y_train))
        short = frame.assign(attr21=np.nan, attr24=np.nan) if "attr21" in frame else frame
        for fit_rows, score_rows in StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(
            frame, y_train
        ):
            fit_x, fit_y = frame.iloc[fit_rows], y_train[fit_rows]
            if masking == "mask":
                fit_x = mask_prior_years(fit_x, SEED)
            elif masking == "augment":
                fit_x = pd.concat(
                    [fit_x, fit_x.assign(attr21=np.nan, attr24=np.nan), fit_x.assign(attr24=np.nan)]
                )
                fit_y = np.concatenate([fit_y, fit_y, fit_y])
            model = lightgbm.LGBMClassifier(**options).fit(fit_x.to_numpy(), fit_y)
            oof[score_rows] = model.predict(frame.iloc[score_rows].to_numpy(), raw_score=True)
            oof_short[score_rows] = model.predict(short.iloc[score_rows].to_numpy(), raw_score=True)
        return {
            "roc_auc": round(float(roc_auc_score(y_train, oof)), 4),
            "roc_auc_short": round(float(roc_auc_score(y_train, oof_short)), 4),
        }

    def candidates(frame: pd.DataFrame) -> dict:
        """The trees as trained, the WoE scorecard and the average of their Platt-calibrated logits,
        each fitted on the masked fold and scored as filed and short (the Platt fits on the
        out-of-fold values)."""
        options = dict(LIGHTGBM_PARAMS, random_state=SEED, monotone_constraints=directions)
        short = frame.assign(attr21=np.nan, attr24=np.nan)
        trees, card = (
            (np.zeros(len(y_train)), np.zeros(len(y_train))),
            (np.zeros(len(y_train)), np.zeros(len(y_train))),
        )
        for fit_rows, score_rows in StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(
            frame, y_train
        ):
            fit_x, fit_y = mask_prior_years(frame.iloc[fit_rows], SEED), y_train[fit_rows]
            model = lightgbm.LGBMClassifier(**options).fit(fit_x.to_numpy(), fit_y)
            scorecard = Scorecard().fit(fit_x, fit_y)
            for i, rows in enumerate((frame.iloc[score_rows], short.iloc[score_rows])):
                trees[i][score_rows] = model.predict(rows.to_numpy(), raw_score=True)
                card[i][score_rows] = scorecard.logit(rows)
        (ta, tb), (ca, cb) = _platt(trees[0], y_train), _platt(card[0], y_train)
        scores = {
            "monotone_lightgbm": [trees[i] for i in (0, 1)],
            "woe_scorecard": [card[i] for i in (0, 1)],
            "average": [(ta + tb * trees[i] + ca + cb * card[i]) / 2 for i in (0, 1)],
        }
        return {
            name: {
                "roc_auc": round(float(roc_auc_score(y_train, s[0])), 4),
                "roc_auc_short": round(float(roc_auc_score(y_train, s[1])), 4),
            }
            for name, s in scores.items()
        }

    def random_splits() -> dict[str, Any]:
        """Held-out ROC AUC on each split of :data:`SPLIT_SEEDS` (see the module docstring)."""
        every_ratio = raw_x.replace([np.inf, -np.inf], np.nan).astype(np.float64)
        models: dict[str, tuple[pd.DataFrame, list[int] | None, bool]] = {
            "monotone_as_trained": (x_all, directions, True),
            "unconstrained_same_ratios": (x_all, None, True),
            "unconstrained_all_64": (every_ratio, None, False),
        }
        aucs: dict[str, list[float]] = {name: [] for name in models}
        for seed in SPLIT_SEEDS:
            for name, (frame, constraints, masked) in models.items():
                fit_x, test_x, fit_y, test_y = train_test_split(
                    frame, y, test_size=HELD_OUT_SHARE, stratify=y, random_state=seed
                )
                options = dict(LIGHTGBM_PARAMS, random_state=seed)
                if constraints is None:
                    options.pop("monotone_constraints_method")
                else:
                    options["monotone_constraints"] = constraints
                if masked:
                    fit_x = mask_prior_years(fit_x, seed)
                model = lightgbm.LGBMClassifier(**options).fit(fit_x.to_numpy(), fit_y)
                raw = model.predict(test_x.to_numpy(), raw_score=True)
                aucs[name].append(round(float(roc_auc_score(test_y, raw)), 4))
        return {
            "seeds": list(SPLIT_SEEDS),
            **{
                name: {
                    "held_out_roc_auc": values,
                    "mean": round(float(np.mean(values)), 4),
                    "min": min(values),
                    "max": max(values),
                }
                for name, values in aucs.items()
            },
        }

    started = time.perf_counter()
    base = cross_validate(x, "mask", directions)
    zeros = x.copy()
    zeros.loc[zeros["attr22"] == 0, ["attr22", "attr42"]] = np.nan
    single = {}
    for i, ratio in enumerate(RATIOS):
        freed = list(directions)
        freed[i] = 0
        single[ratio.attr] = round(cross_validate(x, "mask", freed)["roc_auc"] - base["roc_auc"], 4)
    return {
        "source": data.name,
        "training_rows": len(y_train),
        "training_bankrupt": int(y_train.sum()),
        "masking": {m: cross_validate(x, m, directions) for m in ("mask", "none", "augment")},
        "params": {name: cross_validate(x, "mask", directions, **p) for name, p in LEVER_PARAMS.items()},
        "attr22_zero_as_missing": cross_validate(zeros, "mask", directions),
        "unconstrained_same_ratios": cross_validate(x, "mask", None),
        "unconstrained_all_64": cross_validate(full, "none", None),
        "candidates": candidates(x),
        "gain_if_unconstrained": dict(sorted(single.items(), key=lambda item: -item[1])),
        "random_splits": random_splits(),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA, help="labelled CSV (default: the shared one)")
    parser.add_argument(
        "--levers", action="store_true", help="measure the AUC levers instead (training part only)"
    )
    args = parser.parse_args(argv)
    if args.levers:
        if not args.data.is_file():
            print(
                f"bench.statement_model: {args.data}: no such file (--levers needs the labelled data)",
                file=sys.stderr,
            )
            return 2
        RESULTS.mkdir(parents=True, exist_ok=True)
        target = RESULTS / "statement_model_levers.json"
        target.write_text(json.dumps(levers(args.data), indent=2) + "\n")
        print(f"[bench] results written to {target}")
        return 0
    report = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "held_out": held_out(args.data),
        "sandbox": sandbox(),
        "sandbox_psi": sandbox_psi(),
        "speed": speed(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / "statement_model.json"
    target.write_text(json.dumps(report, indent=2) + "\n")
    print(f"[bench] results written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
