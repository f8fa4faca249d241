"""Time ``validate_shard`` on a large shard of the sandbox universe (a measurement, not a test).

    .venv/bin/python -m bench.validation_scale --smes 12500 --smes 100000

For each size it builds the universe's canonical tables in memory, warms GX up on a small slice
(import, context, suites), then times one ``validate_shard`` over all of it and prints seconds,
rows, failing SMEs and the peak resident set size of the process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import time

from connectors.sandbox.universe import Universe
from expectations.runner import validate_shard

AS_OF = dt.date(2026, 11, 1)


def measure(smes: int, repeats: int) -> dict[str, object]:
    tables = Universe(20261125, smes, AS_OF).truth()
    started = time.perf_counter()
    validate_shard({name: frame.head(100) for name, frame in tables.items()}, as_of=AS_OF, shard=0)
    warm_up = time.perf_counter() - started
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        validation = validate_shard(tables, as_of=AS_OF, shard=0)
        timings.append(time.perf_counter() - started)
    return {
        "smes": smes,
        "rows": {name: len(frame) for name, frame in tables.items()},
        "warm_up_seconds": round(warm_up, 2),
        "validate_shard_seconds": [round(t, 2) for t in timings],
        "failing_smes": len(validation.failing_smes),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smes", type=int, action="append", help="SMEs in the shard (repeatable)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    for smes in args.smes or [12500]:
        print(json.dumps(measure(smes, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
