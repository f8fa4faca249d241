"""The offers market on the sandbox population: how many offers, at what spread, and whether price follows risk.

The demo's sandbox population (``connectors.sandbox.universe.Universe`` at the demo's seed and
size) is scored as the demo publishes it (each SME with an active consent in the demo's seeding,
under the scope that consent grants: ``evaluation.evaluate_scopes``), and every lender the SME's
consent names prices it with its sandbox policy (``connectors.sandbox.lenders.SEEDED_POLICIES``,
:func:`connectors.sandbox.lenders.quote`, the same function ``make demo`` posts through the API).
Each offer's schedule and APR are computed by :func:`evaluation.credit_cost.schedule`, with a
revenue-share schedule assuming ``revenue_12m / 12`` exactly as ``warehouse.offers`` does, and
the market's figures by :func:`evaluation.market.market_stats` (all offers posted at one instant,
so the time to the first offer is not measured here: the demo's is its own round).

Besides the market's figures, two checks that the market prices risk: the ROC AUC of the best
offer's APR against the sandbox's own default labels (1.0: the dearer the best offer, the likelier
a default), beside the AUC of the dossier's PD on the same SMEs; and the default rate of the SMEs
with no offer against those with one.

Writes ``bench/results/offers_market.json``. Run: ``python -m bench.offers_market`` (``--smes``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
AS_OF = dt.date(2026, 11, 1)
SEED, SMES = 20261125, 300
PUBLISHED = ("full_one_lender", "full_two_lenders", "partial_sources")


def _auc(score: Any, label: Any) -> float | None:
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score(label, score)), 4) if 0 < label.sum() < len(label) else None


def measure(seed: int = SEED, size: int = SMES) -> dict[str, Any]:
    """Score the population, let each named lender quote, compute every schedule; the figures back."""
    import pandas as pd

    from connectors.sandbox.lenders import POLICIES, SEEDED_POLICIES, quote
    from connectors.sandbox.seed import HISTORY_MONTHS, consent_plan
    from connectors.sandbox.universe import Universe
    from evaluation import evaluate_scopes
    from evaluation.credit_cost import OfferTerms, schedule
    from evaluation.market import market_stats
    from warehouse.consent import Scope

    started = time.perf_counter()
    universe = Universe(seed=seed, size=size, as_of=AS_OF)
    profiles = universe.profiles().set_index("sme_id")
    plans = [consent_plan(seed, sme_id) for sme_id in profiles.index]
    granted = {p.sme_id: p for p in plans if p.category in PUBLISHED}
    smes = pd.DataFrame(
        {
            "sme_id": list(granted),
            "scope": [Scope(frozenset(p.sources), HISTORY_MONTHS).key for p in granted.values()],
            "history_months": HISTORY_MONTHS,
            "sources": [tuple(p.sources) for p in granted.values()],
        }
    )
    dossiers = evaluate_scopes(universe.truth(), smes, as_of=AS_OF)
    scored_at = time.perf_counter()
    delivered = pd.Timestamp(dt.datetime.combine(AS_OF, dt.time(), tzinfo=dt.UTC))
    offers, passed = [], {}
    for row in dossiers.to_dict("records"):
        row["dossier_id"] = f"{row['sme_id']}:{AS_OF}:{row['scope']}"
        for lender in granted[row["sme_id"]].recipients:
            body = quote(POLICIES[SEEDED_POLICIES[lender]], row, today=AS_OF)
            if body is None:
                passed[lender] = passed.get(lender, 0) + 1
                continue
            revenue = None
            if body["profile"] == "revenue_share":
                revenue = (Decimal(str(row["revenue_12m"])) / 12).quantize(Decimal("0.01"), ROUND_HALF_UP)
            terms = OfferTerms(
                amount=Decimal(body["amount"]),
                term_months=body["term_months"],
                nominal_rate=Decimal(body["nominal_rate"]),
                upfront_fee=Decimal(body["upfront_fee"]),
                periodic_fee=Decimal(body["periodic_fee"]),
                profile=body["profile"],
                revenue_share=Decimal(body["revenue_share"]) if body.get("revenue_share") else None,
                repayment_cap=Decimal(body["repayment_cap"]) if body.get("repayment_cap") else None,
                expected_monthly_revenue=revenue,
            )
            offers.append(
                {
                    "dossier_id": row["dossier_id"],
                    "sme_id": row["sme_id"],
                    "lender_id": lender,
                    "apr": float(schedule(terms).apr),
                    "created_at": delivered,
                }
            )
    priced_at = time.perf_counter()
    offers_frame = pd.DataFrame(offers, columns=["dossier_id", "sme_id", "lender_id", "apr", "created_at"])
    dossier_frame = pd.DataFrame(
        {
            "dossier_id": [
                f"{s}:{AS_OF}:{c}" for s, c in zip(dossiers["sme_id"], dossiers["scope"], strict=True)
            ],
            "sme_id": dossiers["sme_id"],
            "grade": dossiers["grade"],
            "indicative_rate": dossiers["indicative_rate"],
            "delivered_at": delivered,
        }
    )
    stats = market_stats(offers_frame, dossier_frame)
    defaulted = profiles.loc[dossiers["sme_id"], "defaults_within_12m"].astype(bool).to_numpy()
    best = offers_frame.groupby("sme_id")["apr"].min().reindex(dossiers["sme_id"]).to_numpy()
    has_offer = ~pd.isna(best)
    per_lender = offers_frame.groupby("lender_id").size().to_dict()
    return {
        "seed": seed,
        "smes": size,
        "as_of": AS_OF.isoformat(),
        "dossiers": len(dossiers),
        "offers_by_lender": {k: int(v) for k, v in sorted(per_lender.items())},
        "passed_by_lender": dict(sorted(passed.items())),
        "policies": {lender: POLICIES[name].name for lender, name in SEEDED_POLICIES.items()},
        "market": stats,
        "price_follows_risk": {
            "auc_best_apr_vs_defaults": _auc(best[has_offer], defaulted[has_offer]),
            "auc_pd_vs_defaults_same_smes": _auc(
                dossiers["pd_12m"].to_numpy()[has_offer], defaulted[has_offer]
            ),
            "smes_with_offer": int(has_offer.sum()),
            "default_rate_with_offer": round(float(defaulted[has_offer].mean()), 4)
            if has_offer.any()
            else None,
            "default_rate_without_offer": round(float(defaulted[~has_offer].mean()), 4)
            if (~has_offer).any()
            else None,
        },
        "seconds": {
            "score": round(scored_at - started, 2),
            "quote_and_schedule": round(priced_at - scored_at, 3),
            "per_offer_ms": round((priced_at - scored_at) / max(len(offers), 1) * 1000, 3),
        },
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smes", type=int, default=SMES, help=f"universe size (default {SMES})")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    result = measure(args.seed, args.smes)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "offers_market.json").write_text(json.dumps(result, indent=2) + "\n")
    m, risk = result["market"], result["price_follows_risk"]
    print(
        f"offers market: {m['offers']} offers on {m['smes']} SMEs ({result['offers_by_lender']}); "
        f"{(m['share_smes_2plus'] or 0) * 100:.0f}% with two or more; best APR vs defaults AUC "
        f"{risk['auc_best_apr_vs_defaults']} (PD {risk['auc_pd_vs_defaults_same_smes']})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
