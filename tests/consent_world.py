"""A small warehouse world driven only through the product's actions, watched by the oracle.

:class:`World` registers SMEs and lenders, grants, revokes and erases consents, stages synthetic
canonical data for a date, runs the pipeline's ``evaluate`` and ``publish`` steps and lets lenders
pull, recording each action in its :class:`~consent_oracle.Ledger` and checking each pull with the
:class:`~consent_oracle.Oracle`. It calls the actions (``grant``, ``revoke``, ``erase``,
``subscribe``, ``evaluate``, ``publish``, ``pull``) and never the consent or entitlement checks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consent_oracle import (
    Ledger,
    Oracle,
    Terms,
    canonical_tables,
    read_rows,
    stage_shard,
    synthetic_rows,
)

from dossier import pipeline
from dossier.settings import for_home, override
from warehouse import consent, feed
from warehouse.db import make_engine, session_scope
from warehouse.migrate import upgrade
from warehouse.models import Lender, Sme
from warehouse.storage import Store

INDUSTRIES = ("retail", "food_service", "construction", "manufacturing", "transport")
REGIONS = ("North West", "London", "Wales", "Scotland")


@dataclass(frozen=True)
class Data:
    """The synthetic data one SME has for a date: which sources, how many months, at what level."""

    sources: frozenset[str]
    months: int
    level: float = 1000.0


@dataclass
class Pulled:
    summary: dict[str, Any]
    dossiers: list[dict[str, Any]]
    withdrawals: list[dict[str, Any]]
    breaches: list[str]


class World:
    """One warehouse (SQLite or PostgreSQL) and one store, with the test's own records of consent."""

    def __init__(self, url: str, home: Path, *, migrate: bool = True) -> None:
        self.url = url
        self.home = home
        self.settings = for_home(home / "var", warehouse_url=url, shard_count=1, sandbox_fault_rate=0.0)
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(url)
        if migrate:
            upgrade(self.engine)
        self.ledger = Ledger()
        self.oracle = Oracle(self.ledger)
        self.out_dir = home / "pulls"
        self.store: Store | None = None

    # --- parties ----------------------------------------------------------------------------------

    def add_smes(self, sme_ids: Iterable[str]) -> None:
        with session_scope(self.engine) as session:
            for i, sme_id in enumerate(sme_ids):
                session.add(
                    Sme(
                        sme_id=sme_id,
                        name=f"Firm {sme_id}",
                        industry=INDUSTRIES[i % len(INDUSTRIES)],
                        region=REGIONS[i % len(REGIONS)],
                        size_band="micro",
                        founded_year=2000 + i,
                    )
                )

    def add_lenders(self, lender_ids: Iterable[str]) -> None:
        with session_scope(self.engine) as session:
            session.add_all(Lender(lender_id=lender, name=lender.title()) for lender in lender_ids)

    def subscribe(self, lender: str, purpose: str, filters: Mapping[str, list[str]] | None = None) -> None:
        with session_scope(self.engine) as session:
            feed.subscribe(session, lender, filters=filters, purpose=purpose)
        self.oracle.subscribed(lender, purpose)

    # --- consent actions --------------------------------------------------------------------------

    def grant(
        self,
        consent_id: str,
        sme_id: str,
        *,
        sources: Iterable[str],
        recipients: Iterable[str],
        purpose: str,
        months: int,
        granted_at: dt.datetime,
        expires_at: dt.datetime,
        at: dt.datetime | None = None,
    ) -> None:
        """Grant (or replace the terms of) ``consent_id``; ``at`` is when the grant is made."""
        terms = Terms(
            consent_id,
            sme_id,
            frozenset(sources),
            frozenset(recipients),
            purpose,
            months,
            granted_at,
            expires_at,
        )
        with session_scope(self.engine) as session:
            consent.grant(
                session,
                consent_id=consent_id,
                sme_id=sme_id,
                sources=sorted(terms.sources),
                recipients=sorted(terms.recipients),
                purpose=purpose,
                history_months=months,
                granted_at=granted_at,
                expires_at=expires_at,
            )
        self.ledger.grant(terms, at=at or granted_at)

    def reconfirm(self, consent_id: str, *, at: dt.datetime) -> bool:
        """The SME reconfirms ``consent_id`` at ``at``; False (nothing recorded) when the law refuses."""
        try:
            with session_scope(self.engine) as session:
                consent.reconfirm(session, consent_id, at=at)
        except consent.ConsentError:
            return False
        self.ledger.reconfirm(consent_id, at=at)
        return True

    def revoke(self, consent_id: str, *, at: dt.datetime) -> None:
        with session_scope(self.engine) as session:
            consent.revoke(session, consent_id, at=at)
        self.ledger.revoke(consent_id, at=at)

    def erase(self, sme_id: str, *, at: dt.datetime) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            summary = consent.erase(session, self._store(), sme_id, at=at)
        self.oracle.erased(sme_id, at)
        return summary

    # --- the pipeline -----------------------------------------------------------------------------

    def _store(self) -> Store:
        if self.store is None:
            self.store = Store.from_settings()
        return self.store

    def stage(self, as_of: dt.date, data: Mapping[str, Data]) -> None:
        """Write the canonical tables of ``as_of`` (one shard) and a validation everyone passed."""
        tables = canonical_tables(
            synthetic_rows(sme_id, d.sources, d.months, as_of, level=d.level)
            for sme_id, d in sorted(data.items())
        )
        stage_shard(self._store(), as_of, tables, [s for s, d in data.items() if d.sources])

    def publish(self, as_of: dt.date, data: Mapping[str, Data], *, at: dt.datetime) -> dict[str, Any]:
        """Stage ``data`` for ``as_of``, then evaluate and publish it at ``at``."""
        self.stage(as_of, data)
        return self.run_steps(as_of, at=at, data_sources={s: d.sources for s, d in data.items()})

    def run_steps(
        self, as_of: dt.date, *, at: dt.datetime, data_sources: Mapping[str, frozenset[str]]
    ) -> dict[str, Any]:
        """Evaluate and publish ``as_of`` from what is staged; the oracle learns who had data."""
        pipeline.evaluate(0, as_of, now=at)
        summary = pipeline.publish(as_of, now=at)
        self.oracle.published(as_of, at, {s: frozenset(d) for s, d in data_sources.items() if d})
        return summary

    # --- lenders pulling --------------------------------------------------------------------------

    def pull(self, lender: str, *, at: dt.datetime) -> Pulled:
        """One pull by ``lender`` at ``at``; the oracle checks it (breaches are returned, not raised)."""
        with session_scope(self.engine) as session:
            summary = feed.pull(session, self._store(), lender_id=lender, out_dir=self.out_dir, now=at)
        dossiers = read_rows(summary.get("file"))
        withdrawals = read_rows(summary.get("withdrawals_file"))
        breaches = self.oracle.pulled(lender, at, dossiers, withdrawals, str(summary.get("pull_id", "")))
        return Pulled(summary, dossiers, withdrawals, breaches)

    def close(self) -> None:
        self.engine.dispose()


@contextmanager
def opened(url: str, home: Path, *, migrate: bool = True) -> Iterator[World]:
    """A :class:`World` whose settings are active for the block."""
    world = World(url, home, migrate=migrate)
    try:
        with override(world.settings):
            yield world
    finally:
        world.close()
