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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA, help="labelled CSV (default: the shared one)")
    args = parser.parse_args(argv)
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
