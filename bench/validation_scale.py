"""Time ``validate_shard`` on a large shard of the sandbox universe (a measurement, not a test).

    .venv/bin/python -m bench.validation_scale --smes 12500 --smes 100000

For each size it builds the universe's canonical tables in memory, warms GX up on a small slice
(import, context, suites, compiled plan), then times ``validate_shard`` over all of it in two
configurations, in the same run: ``gx`` (GX validates every expectation over every row) and
``plan`` (the compiled plan of :mod:`expectations.plan` decides the failing rows, and GX
validates only the failing expectations over those rows and a sample of passing ones;
:data:`expectations.runner.USE_PLAN`). Both run on the universe as generated (nearly clean) and
on a copy with 1% of each table's rows missing one value (``--fault-share``). It also times the
plan's checks alone (prepare and run, no GX), stops if the two configurations report different
outcomes, and prints seconds, rows, failing SMEs and records, the plan/GX ratio (best of each)
and the peak resident set size of the process. With the default arguments the figures go to
``bench/results/validation_scale.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

from connectors.sandbox.universe import Universe
from expectations import runner
from expectations.plan import table_plan
from expectations.prepare import prepare
from expectations.suites import loaded_suites, suite_parameters

AS_OF = dt.date(2026, 11, 1)
DEFAULT_SMES = [12500]
DEFAULT_FAULT_SHARE = 0.01
RESULTS = Path(__file__).resolve().parent / "results" / "validation_scale.json"


def _timed_shard(tables: dict[str, pd.DataFrame], use_plan: bool) -> tuple[float, runner.ShardValidation]:
    default, runner.USE_PLAN = runner.USE_PLAN, use_plan
    try:
        started = time.perf_counter()
        validation = runner.validate_shard(tables, as_of=AS_OF, shard=0)
        return time.perf_counter() - started, validation
    finally:
        runner.USE_PLAN = default


def _plan_checks_seconds(tables: dict[str, pd.DataFrame]) -> float:
    """The plan's part of a shard: prepare each table and run its checks, without GX."""
    parameters = suite_parameters(AS_OF)
    suites = loaded_suites()
    started = time.perf_counter()
    for name, frame in tables.items():
        table_plan(name).run(prepare(name, frame, suites[name].columns), parameters)
    return time.perf_counter() - started


def with_faults(tables: dict[str, pd.DataFrame], share: float, seed: int) -> dict[str, pd.DataFrame]:
    """A copy of ``tables`` in which ``share`` of each table's rows lose one value (a random
    column other than ``sme_id``), so that many expectations fail on scattered rows."""
    rng = np.random.default_rng(seed)
    faulty = {}
    for name, frame in tables.items():
        frame = frame.copy()
        columns = [c for c in frame.columns if c != "sme_id"]
        rows = rng.choice(len(frame), size=int(len(frame) * share), replace=False)
        chosen = rng.integers(len(columns), size=len(rows))
        for index, column in enumerate(columns):
            hit = rows[chosen == index]
            if not len(hit):
                continue
            values = frame[column]
            values = values.astype(object) if values.dtype.kind in "biu" else values.copy()
            values.iloc[hit] = None
            frame[column] = values
        faulty[name] = frame
    return faulty


def measure(smes: int, repeats: int, fault_share: float) -> list[dict[str, object]]:
    universe = Universe(20261125, smes, AS_OF).truth()
    started = time.perf_counter()
    head = {name: frame.head(100) for name, frame in universe.items()}
    _timed_shard(head, use_plan=False)
    _timed_shard(head, use_plan=True)
    warm_up = time.perf_counter() - started
    runs = []
    for data, tables in (
        ("universe", universe),
        (
            f"universe, {fault_share:.0%} of rows with a value removed",
            with_faults(universe, fault_share, smes),
        ),
    ):
        timings: dict[str, list[float]] = {"gx": [], "plan": []}
        outcomes: dict[str, runner.ShardValidation] = {}
        for _ in range(repeats):
            for name, use_plan in (("gx", False), ("plan", True)):
                seconds, outcomes[name] = _timed_shard(tables, use_plan)
                timings[name].append(seconds)
        gx, plan = outcomes["gx"], outcomes["plan"]
        same = (
            gx.expectation_results == plan.expectation_results
            and gx.failures.equals(plan.failures)
            and gx.sme_status.equals(plan.sme_status)
        )
        if not same:
            raise SystemExit(f"{smes} SMEs, {data}: the plan and GX configurations report different outcomes")
        best = {name: min(values) for name, values in timings.items()}
        runs.append(
            {
                "smes": smes,
                "data": data,
                "rows": {name: len(frame) for name, frame in tables.items()},
                "warm_up_seconds": round(warm_up, 2),
                "validate_shard_seconds": {
                    name: [round(t, 2) for t in values] for name, values in timings.items()
                },
                "plan_checks_seconds": round(_plan_checks_seconds(tables), 3),
                "plan_over_gx": round(best["plan"] / best["gx"], 3),
                "failing_smes": len(plan.failing_smes),
                "failing_records": len(plan.failures),
                "same_outcome": same,
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
        )
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smes", type=int, action="append", help="SMEs in the shard (repeatable)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fault-share", type=float, default=DEFAULT_FAULT_SHARE)
    args = parser.parse_args(argv)
    sizes = args.smes or DEFAULT_SMES
    runs = []
    for smes in sizes:
        for run in measure(smes, args.repeats, args.fault_share):
            print(json.dumps(run), flush=True)
            runs.append(run)
    if sizes == DEFAULT_SMES and args.repeats == 2 and args.fault_share == DEFAULT_FAULT_SHARE:
        document = {
            "benchmark": "validation_scale",
            "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count()},
            "note": "seconds per validate_shard over one shard; plan_over_gx compares the best of each",
            "runs": runs,
        }
        RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
