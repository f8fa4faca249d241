"""A small warehouse world driven only through the product's actions, watched by the oracle.

:class:`World` registers SMEs and lenders, grants, revokes and erases consents, stages synthetic
canonical data for a date, runs the pipeline's ``evaluate`` and ``publish`` steps and lets lenders
pull, recording each action in its :class:`~consent_oracle.Ledger` and checking each pull with the
:class:`~consent_oracle.Oracle`. It calls the actions (``grant``, ``revoke``, ``erase``,
``subscribe``, ``evaluate``, ``publish``, ``pull``) and never the consent or entitlement checks.

A lender can also read its feed through the lender API instead of pulling files
(:meth:`World.serve`, then :meth:`World.read_feed`): ``GET /v1/feed`` with its API key, over ASGI
on the real application, page after page from the cursor its last read ended at, on the world's
clock; the events read are judged by the same oracle as a pull's files.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from consent_oracle import (
    Ledger,
    Oracle,
    Terms,
    canonical_tables,
    read_rows,
    stage_shard,
    synthetic_rows,
)
from sqlalchemy import select

from dossier import pipeline
from dossier.settings import for_home, override
from warehouse import consent, feed, keys
from warehouse.db import make_engine, session_scope
from warehouse.dossier_schema import ALL_COLUMNS
from warehouse.dossier_store import versions_as_of
from warehouse.events import rows_table
from warehouse.migrate import upgrade
from warehouse.models import DossierVersion, Lender, Sme
from warehouse.storage import Store

FEED_PAGE = 4
"""Events per feed page the lenders ask for (small, so that a read spans several pages)."""
DOSSIER_ROW = pa.schema([pa.field(c.name, c.type) for c in ALL_COLUMNS])

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
        self.client: Any = None
        self.clock = dt.datetime.now(dt.UTC)
        self.tokens: dict[str, str] = {}
        self.cursors: dict[str, str] = {}

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
        """Register the lenders, each with an API key (for reading the feed over HTTP)."""
        with session_scope(self.engine) as session:
            for lender in lender_ids:
                session.add(Lender(lender_id=lender, name=lender.title()))
                session.flush()
                self.tokens[lender], _key = keys.issue_key(session, lender, at=self.clock)

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
        """Evaluate and publish ``as_of`` from what is staged; the oracle learns who had data, and
        for which as-of date the store holds each one's dossier (:meth:`version_dates`)."""
        pipeline.evaluate(0, as_of, now=at)
        summary = pipeline.publish(as_of, now=at)
        having = {s: frozenset(d) for s, d in data_sources.items() if d}
        for day, smes in sorted(self.version_dates(as_of, having).items()):
            self.oracle.published(day, at, {s: having[s] for s in sorted(smes)})
        return summary

    def version_dates(self, as_of: dt.date, sme_ids: Iterable[str]) -> dict[dt.date, set[str]]:
        """Per as-of date, the SMEs of ``sme_ids`` whose dossiers on ``as_of`` go back to that date:
        the oldest first as-of date among the versions the publish of ``as_of`` published or kept
        for the SME (one per scope; an SME whose dossier did not change keeps its version of an
        earlier date), or ``as_of`` when it has none (nothing published: the oracle judges why)."""
        wanted = set(sme_ids)
        with session_scope(self.engine) as session:
            versions = versions_as_of(session, as_of)
        self._check_kept(versions, as_of)
        oldest = versions[versions["sme_id"].isin(wanted)].groupby("sme_id")["as_of_date"].min()
        dates: dict[dt.date, set[str]] = {}
        for sme_id in wanted:
            dates.setdefault(oldest.get(sme_id, as_of), set()).add(sme_id)
        return dates

    def _check_kept(self, versions: pd.DataFrame, as_of: dt.date) -> None:
        """A version kept from an earlier date must score as the dossier staged for ``as_of`` does
        (same PD and grade, per SME and scope), so the oracle is never told that a changed dossier
        goes back to an earlier date. Compared on the catalog's figures and the staged scores, not
        on the publish's content key."""
        kept = versions[pd.to_datetime(versions["as_of_date"]) < pd.Timestamp(as_of)]
        if kept.empty:
            return
        with session_scope(self.engine) as session:
            pds = dict(
                session.execute(
                    select(DossierVersion.id, DossierVersion.pd_12m).where(
                        DossierVersion.id.in_([int(i) for i in kept["id"]])
                    )
                ).all()
            )
        kept = kept.assign(pd_12m=kept["id"].map(lambda i: pds[int(i)]))[
            ["sme_id", "scope", "grade", "pd_12m"]
        ]
        staged = pd.concat(list(pipeline.staged_scores(self._store(), as_of)), ignore_index=True)
        both = kept.merge(staged, on=["sme_id", "scope"], how="left", suffixes=("_kept", "_staged"))
        differ = both[
            (both["grade_kept"] != both["grade_staged"])
            | ~np.isclose(both["pd_12m_kept"], both["pd_12m_staged"], rtol=0, atol=1e-12)
        ]
        assert differ.empty, (
            f"kept versions that no longer score as staged on {as_of}: {differ.to_dict('records')}"
        )

    # --- lenders pulling --------------------------------------------------------------------------

    def pull(self, lender: str, *, at: dt.datetime) -> Pulled:
        """One pull by ``lender`` at ``at``; the oracle checks it (breaches are returned, not raised)."""
        with session_scope(self.engine) as session:
            summary = feed.pull(session, self._store(), lender_id=lender, out_dir=self.out_dir, now=at)
        dossiers = read_rows(summary.get("file"))
        withdrawals = read_rows(summary.get("withdrawals_file"))
        breaches = self.oracle.pulled(lender, at, dossiers, withdrawals, str(summary.get("pull_id", "")))
        return Pulled(summary, dossiers, withdrawals, breaches)

    # --- lenders reading the feed over HTTP -------------------------------------------------------

    def serve(self) -> None:
        """Start the web service (the real application, over ASGI) whose feed :meth:`read_feed` reads;
        its clock is the world's (each read happens at the instant it is given)."""
        from fastapi.testclient import TestClient

        from dossier.web import deps
        from dossier.web.app import create_app

        app = create_app(dataclasses.replace(self.settings, rate_limit_per_minute=0))
        app.dependency_overrides[deps.now] = lambda: self.clock
        self.client = TestClient(app)

    def read_feed(self, lender: str, *, at: dt.datetime) -> Pulled:
        """``lender`` reads ``GET /v1/feed`` at ``at`` from where its last read ended until no more
        events follow; the oracle checks what it read as one pull (breaches are returned)."""
        self.clock = at
        cursor = self.cursors.get(lender, "")
        auth = {"Authorization": f"Bearer {self.tokens[lender]}"}
        read: list[dict[str, Any]] = []
        breaches: list[str] = []
        while True:
            answer = self.client.get("/v1/feed", params={"cursor": cursor, "limit": FEED_PAGE}, headers=auth)
            if answer.status_code != 200:
                return Pulled({}, [], [], [f"GET /v1/feed of {lender}: {answer.status_code} {answer.text}"])
            page = answer.json()
            read += page["events"]
            if len(page["events"]) > FEED_PAGE:
                breaches.append(f"a page of {lender} holds {len(page['events'])} events, asked {FEED_PAGE}")
            cursor = page["next_cursor"]
            if not page["has_more"]:
                break
        self.cursors[lender] = cursor
        seqs = [e["seq"] for e in read]
        if seqs != sorted(set(seqs)):
            breaches.append(f"feed of {lender}: events out of order or repeated: {seqs}")
        delivered = [e for e in read if e["event"] == "delivered"]
        breaches += [
            f"feed of {lender}: delivered event {e['seq']} ({e['dossier_id']}) came without its row"
            for e in delivered
            if e["dossier"] is None
        ]
        dossiers = events_rows([e["dossier"] for e in delivered if e["dossier"] is not None])
        withdrawals = [
            {"dossier_id": e["dossier_id"], "sme_id": e["sme_id"], "reason": e["reason"]}
            for e in read
            if e["event"] == "withdrawn"
        ]
        where = f"feed {seqs[0]}-{seqs[-1]}" if seqs else "feed (nothing new)"
        breaches += self.oracle.pulled(lender, at, dossiers, withdrawals, where)
        return Pulled({"events": len(read), "cursor": cursor}, dossiers, withdrawals, breaches)

    def close(self) -> None:
        if self.client is not None:
            self.client.app.state.engine.dispose()
        self.engine.dispose()


def events_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dossier rows as a feed page carries them (JSON), typed as the dossier schema types them."""
    return rows_table(rows, DOSSIER_ROW).to_pylist() if rows else []


@contextmanager
def opened(url: str, home: Path, *, migrate: bool = True) -> Iterator[World]:
    """A :class:`World` whose settings are active for the block."""
    world = World(url, home, migrate=migrate)
    try:
        with override(world.settings):
            yield world
    finally:
        world.close()
