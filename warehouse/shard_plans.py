"""How many shards an as-of date is split into: counted from the data, decided once per date.

A shard is one mapped Airflow task per step, and each task pays a fixed overhead (scheduling,
process start, imports; ``bench/RESULTS.md``, "Airflow per-task overhead"), so a shard should hold
enough SMEs for that overhead to stay small, and the number of mapped tasks must stay well under
Airflow's mapping limit (``max_map_length``, 1024 by default). The count is therefore

* ``DOSSIER_SHARD_COUNT`` when it is set (an explicit count: tests, benchmarks, an operator's
  choice), else
* the SMEs with an active consent divided by ``DOSSIER_SHARD_SIZE``, rounded up, at least 1 and
  at most ``DOSSIER_MAX_SHARDS``, except that
* the previous planned date's count is **kept** while the SMEs per shard it gives stay within
  ``HYSTERESIS`` times the shard size (so the count does not flap as SMEs come and go).

The first step of a date (normally the ingest DAG's ``plan_shards`` task) decides the count and
records it in ``shard_plans``; every later step of that date - the other ingest tasks, validate,
evaluate, publish, a grant's run, a backfill, a re-run - reads the recorded count, so one date's
files are always written under one layout. A date already run before plans were recorded keeps
the count its steps ran with (``stage_runs``), whatever the settings say now.

>>> policy = ShardPolicy(shard_size=10_000, max_shards=256)
>>> decide(25_000, policy)
(3, 'size')
>>> decide(25_000, policy, previous=2)  # 12,500 per shard: within [0.5, 2] x 10,000
(2, 'kept')
>>> decide(50_000, policy, previous=2)  # 25,000 per shard: past 2 x 10,000
(5, 'size')
>>> decide(10_000_000, policy)
(256, 'cap')
>>> decide(25_000, ShardPolicy(shard_size=10_000, max_shards=256, fixed=8), previous=2)
(8, 'override')
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from warehouse.models import ShardPlan, StageRun, utcnow

HYSTERESIS = (0.5, 2.0)
"""The previous date's count is kept while SMEs / count stays within these multiples of the shard size."""

SIZE, CAP, KEPT, OVERRIDE, EARLIER_RUNS = "size", "cap", "kept", "override", "earlier_runs"


@dataclass(frozen=True)
class ShardPolicy:
    """The settings a count is decided with (``DOSSIER_SHARD_SIZE``, ``_MAX_SHARDS``, ``_SHARD_COUNT``)."""

    shard_size: int = 10_000
    max_shards: int = 256
    fixed: int | None = None
    """An explicit count (``DOSSIER_SHARD_COUNT``), or None: counted from the data."""


@dataclass(frozen=True)
class Plan:
    """One date's recorded plan (a ``shard_plans`` row)."""

    as_of_date: dt.date
    shard_count: int
    basis: str
    smes: int
    shard_size: int
    max_shards: int
    previous_as_of: dt.date | None
    previous_count: int | None
    planned_at: dt.datetime

    @property
    def shards(self) -> list[int]:
        """The shard numbers to map over."""
        return list(range(self.shard_count))

    def describe(self) -> str:
        """Why the date has its count, in one line.

        >>> at = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
        >>> Plan(dt.date(2026, 12, 2), 2, "kept", 25_000, 10_000, 256, dt.date(2026, 12, 1), 2, at).describe()
        '2 shards: kept the 2026-12-01 count (25,000 SMEs, 12,500 per shard, within 0.5-2 x the size 10,000)'
        """
        count = f"{self.shard_count} shard{'s' if self.shard_count != 1 else ''}"
        low, high = HYSTERESIS
        why = {
            SIZE: f"planned from {self.smes:,} SMEs, size {self.shard_size:,}",
            CAP: f"planned from {self.smes:,} SMEs, size {self.shard_size:,}, capped at {self.max_shards}",
            KEPT: f"kept the {self.previous_as_of} count ({self.smes:,} SMEs, "
            f"{self.smes // max(1, self.shard_count):,} per shard, within {low:g}-{high:g} x the size "
            f"{self.shard_size:,})",
            OVERRIDE: f"DOSSIER_SHARD_COUNT={self.shard_count} ({self.smes:,} SMEs)",
            EARLIER_RUNS: "the count the date's steps ran with before shard plans were recorded",
        }.get(self.basis, self.basis)
        return f"{count}: {why}"


def decide(smes: int, policy: ShardPolicy, *, previous: int | None = None) -> tuple[int, str]:
    """The shard count for ``smes`` SMEs, and its basis (see the module's docstring)."""
    if policy.fixed is not None:
        return policy.fixed, OVERRIDE
    low, high = HYSTERESIS
    if (
        previous is not None
        and previous <= policy.max_shards
        and low * policy.shard_size * previous <= smes <= high * policy.shard_size * previous
    ):
        return previous, KEPT
    wanted = max(1, -(-smes // policy.shard_size))
    if wanted > policy.max_shards:
        return policy.max_shards, CAP
    return wanted, SIZE


def _plan(row: ShardPlan) -> Plan:
    return Plan(**{f.name: getattr(row, f.name) for f in fields(Plan)})


def recorded(session: Session, as_of: dt.date) -> Plan | None:
    """The plan recorded for ``as_of``, or None (no step of the date has run since plans are recorded)."""
    row = session.get(ShardPlan, as_of)
    return None if row is None else _plan(row)


def previous_plan(session: Session, as_of: dt.date) -> Plan | None:
    """The plan of the latest planned date before ``as_of`` (None: none)."""
    row = session.scalars(
        select(ShardPlan).where(ShardPlan.as_of_date < as_of).order_by(ShardPlan.as_of_date.desc()).limit(1)
    ).first()
    return None if row is None else _plan(row)


def _earlier_runs(session: Session, as_of: dt.date) -> int | None:
    """The shard count ``as_of``'s recorded steps ran with (the highest shard + 1), None when none ran."""
    highest = session.scalar(
        select(func.max(StageRun.shard)).where(StageRun.as_of_date == as_of, StageRun.shard >= 0)
    )
    return None if highest is None else int(highest) + 1


def plan_date(
    session: Session, as_of: dt.date, policy: ShardPolicy, *, at: dt.datetime | None = None
) -> Plan:
    """The plan of ``as_of``: the recorded one, else decided now (SMEs consenting at ``at``, default
    now) and recorded. Steps running at once agree: the first plan written wins and is returned to all.
    """
    found = recorded(session, as_of)
    if found is not None:
        return found
    from warehouse.consent import consenting_smes

    at = at or utcnow()
    smes = consenting_smes(session, at=at)
    previous = previous_plan(session, as_of)
    earlier = _earlier_runs(session, as_of)
    if earlier is not None:  # one date, one layout: its files were written under that count
        count, basis = earlier, EARLIER_RUNS
    else:
        count, basis = decide(smes, policy, previous=None if previous is None else previous.shard_count)
    row = {
        "as_of_date": as_of,
        "shard_count": count,
        "basis": basis,
        "smes": smes,
        "shard_size": policy.shard_size,
        "max_shards": policy.max_shards,
        "previous_as_of": None if previous is None else previous.as_of_date,
        "previous_count": None if previous is None else previous.shard_count,
        "planned_at": at,
    }
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[session.get_bind().dialect.name]
    session.execute(insert(ShardPlan).values(row).on_conflict_do_nothing(index_elements=["as_of_date"]))
    planned = recorded(session, as_of)
    assert planned is not None
    return planned


def same_layout(session: Session, earlier: dt.date, later: dt.date, policy: ShardPolicy) -> bool:
    """Whether shard ``k`` of ``earlier`` holds the same SMEs as shard ``k`` of ``later`` (the same
    recorded count). A date planned before plans were recorded counts as another layout."""
    before = recorded(session, earlier)
    return before is not None and before.shard_count == plan_date(session, later, policy).shard_count
