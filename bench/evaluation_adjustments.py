"""Measured sandbox effect of each behavioural adjustment of the dossier's model.

The sandbox population of the demo (``connectors.sandbox.universe.Universe`` at the demo's seed and
size; each SME with an active consent in the demo's seeding, ``connectors.sandbox.seed.consent_plan``,
under the sources and history window that consent grants; no agent suspended) is scored by the
dossier's model (``evaluation.statement_scoring.default_statement_scoring``: the statement model
plus the expert rules, or their refit on outcomes), then once more per adjustment with that
adjustment's weight set to 0 (for ``VAT_BOOKS_UNTRUSTED``, the share of the books' credit withdrawn).
Per adjustment: its weight, for how many SMEs it fires (its signal is above 0), the mean and the
largest change of the PD among those SMEs, and how many SMEs change grade.

Writes ``bench/results/evaluation_adjustments.json`` and refreshes the table generated from it in
``evaluation/MODEL_CARD.md`` and ``evaluation/SCORING.md``. Run: ``python -m bench.evaluation_adjustments``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
EVALUATION = Path(__file__).resolve().parents[1] / "evaluation"
AS_OF = dt.date(2026, 11, 1)
SEED, SMES = 20261125, 300
"""The demo's sandbox seed and size (``DOSSIER_SANDBOX_SEED``, ``DOSSIER_SANDBOX_SMES`` defaults)."""
PUBLISHED = ("full_one_lender", "full_two_lenders", "partial_sources")
"""Consent categories of ``connectors.sandbox.seed`` whose dossiers are published (an active consent)."""


def without(model: Any, code: str) -> Any:
    """``model`` with the adjustment ``code`` switched off (its weight, or the withdrawn share, 0)."""
    from evaluation.statement_scoring import UNTRUSTED_SHARE

    if code == UNTRUSTED_SHARE:
        return replace(model, untrusted_share=0.0)
    expert = model.expert
    return replace(
        model,
        expert=replace(
            expert,
            factors=tuple(replace(f, weight=0.0) if f.code == code else f for f in expert.factors),
            absence_penalties=tuple(
                replace(p, weight=0.0) if p.code == code else p for p in expert.absence_penalties
            ),
        ),
    )


def measure(seed: int = SEED, size: int = SMES) -> dict[str, Any]:
    """Score the sandbox population with every adjustment and without each one in turn."""
    import numpy as np
    import pandas as pd

    from connectors.sandbox.seed import HISTORY_MONTHS, consent_plan
    from connectors.sandbox.universe import Universe
    from evaluation import RATIO_COLUMNS, evaluate_scopes
    from evaluation.scoring import grade, source_presence
    from evaluation.statement_scoring import (
        EXPERT_CODES,
        UNTRUSTED_BOOKS_CODE,
        UNTRUSTED_SHARE,
        adjustment_signals,
        default_statement_scoring,
    )
    from warehouse.consent import Scope

    started = time.perf_counter()
    universe = Universe(seed=seed, size=size, as_of=AS_OF)
    profiles = universe.profiles()
    plans = [consent_plan(seed, sme_id) for sme_id in profiles["sme_id"]]
    granted = [p for p in plans if p.category in PUBLISHED]
    smes = pd.DataFrame(
        {
            "sme_id": [p.sme_id for p in granted],
            "scope": [Scope(frozenset(p.sources), HISTORY_MONTHS).key for p in granted],
            "history_months": HISTORY_MONTHS,
            "sources": [tuple(p.sources) for p in granted],
        }
    )
    model = default_statement_scoring()
    inputs = evaluate_scopes(universe.truth(), smes, as_of=AS_OF, model=model, with_ratios=True)
    defaulted = profiles.set_index("sme_id").loc[inputs["sme_id"], "defaults_within_12m"].astype(bool)
    full = model.predict(inputs).pd_12m.to_numpy()
    full_grade = grade(pd.Series(full)).to_numpy()
    signals = adjustment_signals(inputs)
    books = source_presence(inputs)["accounting"].to_numpy()
    base = float(np.log(model.statement.base_rate / (1 - model.statement.base_rate)))
    statement_logit = np.full(len(inputs), base)
    if books.any():
        statement_logit[books] = model.statement.score(
            inputs.loc[books, list(RATIO_COLUMNS)]
        ).logit.to_numpy()
    signals[UNTRUSTED_SHARE] = signals[UNTRUSTED_BOOKS_CODE].to_numpy() * np.maximum(
        base - statement_logit, 0.0
    )
    weights = {f.code: f.weight for f in model.expert.factors} | {
        p.code: p.weight for p in model.expert.absence_penalties
    }
    rows = []
    for code in (*EXPERT_CODES, UNTRUSTED_SHARE):
        pd_without = without(model, code).predict(inputs).pd_12m.to_numpy()
        change = full - pd_without
        fires = signals[code].to_numpy() > 0
        rows.append(
            {
                "code": code,
                "weight": round(
                    float(model.untrusted_share if code == UNTRUSTED_SHARE else weights[code]), 6
                ),
                "fires_for": int(fires.sum()),
                "mean_pd_change": round(float(change[fires].mean()), 6) if fires.any() else 0.0,
                "max_pd_change": round(float(change[fires].max()), 6) if fires.any() else 0.0,
                "grade_changes": int((grade(pd.Series(pd_without)).to_numpy() != full_grade).sum()),
            }
        )
    return {
        "seed": seed,
        "smes": size,
        "as_of": AS_OF.isoformat(),
        "scored": len(inputs),
        "scopes": inputs["scope"].value_counts().sort_index().to_dict(),
        "history_months": HISTORY_MONTHS,
        "model_version": model.version,
        "mean_pd": round(float(full.mean()), 4),
        "default_rate": round(float(defaulted.mean()), 4),
        "adjustments": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }


def refresh_tables(result: dict[str, Any]) -> list[Path]:
    """Rewrite the generated effect table in the model card and in ``SCORING.md``."""
    from evaluation.train import replace_effect_table

    written = []
    for path in (EVALUATION / "MODEL_CARD.md", EVALUATION / "SCORING.md"):
        text = path.read_text()
        updated = replace_effect_table(text, result)
        if updated != text:
            path.write_text(updated)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=SEED, help=f"sandbox seed (default {SEED}, the demo's)")
    parser.add_argument("--smes", type=int, default=SMES, help=f"sandbox size (default {SMES}, the demo's)")
    args = parser.parse_args(argv)
    result = measure(args.seed, args.smes)
    report = {"machine": {"python": platform.python_version(), "platform": platform.platform()}, **result}
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / "evaluation_adjustments.json"
    target.write_text(json.dumps(report, indent=2) + "\n")
    print(f"[bench] results written to {target}")
    for path in refresh_tables(result):
        print(f"[bench] table refreshed in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
