"""Collusion detector benchmark: precision and recall on the sandbox's copying agents, and speed.

For each sandbox universe (seed, size, copier set) the detector (``evaluation.collusion.detect``)
runs over the clean canonical ``survey_visits`` and ``monthly_financials``; an agent is a positive
when recommended for suspension, a true positive when the universe's ``copier_agents`` includes
them. Precision and recall are computed per universe and pooled over all of them (agents counted
once per universe); ``honest_agents_with_any_flag`` counts honest agents raising even one flag
(short of a recommendation). ``speed`` times the detector on a universe of 20,000 SMEs.

Writes ``bench/results/collusion.json``. Run: ``python -m bench.collusion``.
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
AS_OF = dt.date(2026, 11, 1)
UNIVERSES: tuple[tuple[int, int, tuple[int, ...]], ...] = (
    (20261125, 400, (13,)),
    (1, 400, (13,)),
    (2, 400, (13,)),
    (3, 400, (13,)),
    (4, 1000, (5, 13, 27)),
    (5, 1000, ()),
)
"""(seed, SMEs, copying agents) of each universe measured."""


def _agent(number: int) -> str:
    return f"agent_{number:03d}"


def measure(seed: int, size: int, copiers: tuple[int, ...]) -> dict[str, Any]:
    """Confusion counts, precision and recall of the detector on one sandbox universe."""
    from connectors.sandbox.population import PopulationMix
    from connectors.sandbox.universe import Universe
    from evaluation.collusion import detect

    truth = Universe(seed, size, AS_OF, mix=PopulationMix(copier_agents=copiers)).truth()
    started = time.perf_counter()
    report = detect(truth["survey_visits"], truth["monthly_financials"])
    seconds = time.perf_counter() - started
    actual = {_agent(a) for a in copiers}
    agents = set(report.agents["agent_id"])
    flagged = set(report.recommended)
    tp, fp, fn = len(flagged & actual), len(flagged - actual), len((actual & agents) - flagged)
    return {
        "seed": seed,
        "smes": size,
        "copiers": sorted(actual),
        "recommended": sorted(flagged),
        "agents": len(agents),
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "honest_agents_with_any_flag": int(
            (~report.agents["agent_id"].isin(actual) & (report.agents["score"] > 0)).sum()
        ),
        "seconds": round(seconds, 3),
    }


def speed(size: int = 20_000) -> dict[str, Any]:
    from connectors.sandbox.universe import Universe
    from evaluation.collusion import detect

    truth = Universe(11, size, AS_OF).truth()
    visits = truth["survey_visits"]
    started = time.perf_counter()
    detect(visits, truth["monthly_financials"])
    seconds = time.perf_counter() - started
    return {
        "smes": size,
        "visits": len(visits),
        "seconds": round(seconds, 2),
        "visits_per_second": round(len(visits) / seconds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--no-speed", action="store_true", help="skip the 20,000-SME timing")
    args = parser.parse_args(argv)
    universes = [measure(*u) for u in UNIVERSES]
    tp = sum(u["true_positives"] for u in universes)
    fp = sum(u["false_positives"] for u in universes)
    fn = sum(u["false_negatives"] for u in universes)
    report = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "universes": universes,
        "pooled": {
            "true_positives": tp,
            "false_positives": fp,
            "false_negatives": fn,
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
        },
        "speed": None if args.no_speed else speed(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / "collusion.json"
    target.write_text(json.dumps(report, indent=2) + "\n")
    print(f"[bench] results written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
