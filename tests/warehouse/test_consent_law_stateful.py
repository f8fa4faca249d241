"""The consent law as a stateful property: random consents, publishes and pulls, on SQLite and PostgreSQL.

A hypothesis ``RuleBasedStateMachine`` plays SMEs (3-5, each with synthetic data in a few sources
over 6-30 months), lenders (2-3, subscribing with different purposes, some late), consents
(random sources, recipients, purposes, windows, grant and expiry instants), re-grants that replace
terms, revocations, the clock moving past expiries, erasures, publishes over several as-of dates
and pulls. After every pull the independent oracle (``tests/consent_oracle.py``) checks, from the
test's own records and the pull files alone, that no delivered row breaks the rule, that every
delivered dossier that lost its cover is withdrawn in that lender's very next pull, and that no
entitled current version is left undelivered.

The same machine runs a second time with every lender reading its feed through the lender API
instead of pulling files (``GET /v1/feed`` with its API key, over ASGI on the real application,
page after page from its last cursor, on the machine's clock): each read's events, the delivered
rows and the tombstones, are judged by the same oracle as a pull's files.

CI runs ``DOSSIER_CONSENT_LAW_EXAMPLES`` examples per backend (default 75) of at most
``DOSSIER_CONSENT_LAW_STEPS`` steps (default 20), and ``DOSSIER_CONSENT_LAW_HTTP_EXAMPLES``
(default 15) through the HTTP feed; ``make test-deep`` runs many more.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from consent_oracle import SOURCE_KINDS
from consent_world import FEED_PAGE, Data, Pulled, World, opened
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import MetaData, Table, delete

from dossier.settings import override

EXAMPLES = int(os.environ.get("DOSSIER_CONSENT_LAW_EXAMPLES", "75"))
STEPS = int(os.environ.get("DOSSIER_CONSENT_LAW_STEPS", "20"))
HTTP_EXAMPLES = int(os.environ.get("DOSSIER_CONSENT_LAW_HTTP_EXAMPLES", "15"))

START = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
AS_OF_DATES = tuple(dt.date(2026, month, 1) for month in range(1, 7))
PURPOSES = ("credit_decision", "facility_monitoring")
LENDER_NAMES = ("northwind", "harbor", "kestrel")

sources_st = st.sets(st.sampled_from(SOURCE_KINDS), min_size=1, max_size=4).map(frozenset)
granted_offsets = st.sampled_from(
    [
        dt.timedelta(0),
        dt.timedelta(hours=1),
        dt.timedelta(days=3),
        dt.timedelta(days=40),
        dt.timedelta(days=88),  # reconfirmation falls due two days later
        dt.timedelta(days=130),
    ]
)
expiry_offsets = st.sampled_from(
    [
        dt.timedelta(hours=2),
        dt.timedelta(days=1),
        dt.timedelta(days=6),
        dt.timedelta(days=45),
        dt.timedelta(days=400),
        dt.timedelta(days=400),
    ]
)
lasting_expiry_offsets = st.sampled_from(
    [dt.timedelta(days=6), dt.timedelta(days=45), dt.timedelta(days=400)]
)
advances = st.sampled_from(
    [
        dt.timedelta(minutes=30),
        dt.timedelta(hours=5),
        dt.timedelta(days=2),
        dt.timedelta(days=9),
        dt.timedelta(days=31),
    ]
)


_TABLES: dict[str, list[Table]] = {}


def clear(world: World) -> None:
    """Empty every table of the warehouse (the schema stays, migrated), children first."""
    if world.url not in _TABLES:
        metadata = MetaData()
        metadata.reflect(world.engine)
        _TABLES[world.url] = [t for t in reversed(metadata.sorted_tables) if t.name != "alembic_version"]
    with world.engine.begin() as connection:
        for table in _TABLES[world.url]:
            connection.execute(delete(table))


class ConsentLaw(RuleBasedStateMachine):
    """One example: a fresh world on the backend of ``url``; every pull is judged by the oracle."""

    url: str = ""
    through_http: bool = False
    """Lenders read the HTTP feed (``GET /v1/feed``) instead of pulling files."""

    def __init__(self) -> None:
        super().__init__()
        self.home = Path(tempfile.mkdtemp(prefix="consent-law-"))
        self.world = World(self.url, self.home, migrate=False)
        clear(self.world)
        if self.through_http:
            self.world.serve()
        self.settings_scope = override(self.world.settings)
        self.settings_scope.__enter__()
        self.now = START
        self.smes: dict[str, Data] = {}
        self.lenders: dict[str, str] = {}
        self.subscribed: set[str] = set()
        self.consents: dict[str, str] = {}
        self.next_consent = 0
        self.published_dates: set[dt.date] = set()
        self.pulls = 0

    def teardown(self) -> None:
        self.settings_scope.__exit__(None, None, None)
        self.world.close()
        shutil.rmtree(self.home, ignore_errors=True)

    # --- the cast -----------------------------------------------------------------------------

    @initialize(
        data=st.lists(st.tuples(sources_st, st.integers(min_value=6, max_value=30)), min_size=3, max_size=5),
        purposes=st.lists(st.sampled_from(PURPOSES), min_size=2, max_size=3),
        late_subscriber=st.booleans(),
        first_consents=st.lists(
            st.tuples(
                sources_st,
                st.sets(st.sampled_from(LENDER_NAMES), min_size=1, max_size=3),
                st.booleans(),
                st.sampled_from([1, 6, 12, 24, 36]),
                lasting_expiry_offsets,
                st.sampled_from([dt.timedelta(days=40), dt.timedelta(days=85)]),
            ),
            min_size=5,
            max_size=5,
        ),
    )
    def cast(
        self,
        data: list[tuple[frozenset[str], int]],
        purposes: list[str],
        late_subscriber: bool,
        first_consents: list[tuple[frozenset[str], set[str], bool, int, dt.timedelta, dt.timedelta]],
    ) -> None:
        """SMEs with their data, lenders (all but maybe the last subscribed), one consent per SME."""
        self.smes = {
            f"SME-{n:06d}": Data(sources, months) for n, (sources, months) in enumerate(data, start=1)
        }
        self.lenders = dict(zip(LENDER_NAMES, purposes, strict=False))
        self.world.add_smes(self.smes)
        self.world.add_lenders(self.lenders)
        for i, lender in enumerate(self.lenders):
            if not (late_subscriber and i == len(self.lenders) - 1):
                self.subscribe_lender(lender)
        for sme_id, (sources, recipients, off_purpose, months, expires, granted) in zip(
            self.smes, first_consents, strict=False
        ):
            # The first consents state the purpose of a lender they name (unless ``off_purpose``) and
            # cover some of the SME's data.
            named = [r for r in sorted(recipients) if r in self.lenders] or [next(iter(self.lenders))]
            purpose = self.lenders[named[0]]
            if off_purpose:
                purpose = next(p for p in PURPOSES if p != purpose)
            sources = (sources & self.smes[sme_id].sources) or self.smes[sme_id].sources
            self.give(sme_id, None, sources, recipients, purpose, months, granted, expires)

    def give(
        self,
        sme_id: str,
        consent_id: str | None,
        sources: frozenset[str],
        recipients: set[str],
        purpose: str,
        months: int,
        granted: dt.timedelta,
        expires: dt.timedelta,
    ) -> None:
        """Grant ``consent_id`` (None: a new one) to lenders of the cast, granted and expiring around now."""
        self.tick()
        if consent_id is None:
            self.next_consent += 1
            consent_id = f"C-{self.next_consent:03d}"
        self.world.grant(
            consent_id,
            sme_id,
            sources=sources,
            recipients=sorted(r for r in recipients if r in self.lenders) or [next(iter(self.lenders))],
            purpose=purpose,
            months=months,
            granted_at=self.now - granted,
            expires_at=self.now + expires,
            at=self.now,
        )
        self.consents[consent_id] = sme_id

    def subscribe_lender(self, lender: str) -> None:
        self.world.subscribe(lender, self.lenders[lender])
        self.subscribed.add(lender)

    def read(self, lender: str) -> Pulled:
        """``lender`` takes what it may now hold: a pull, or a read of its HTTP feed."""
        if self.through_http:
            return self.world.read_feed(lender, at=self.now)
        return self.world.pull(lender, at=self.now)

    def tick(self) -> None:
        """Each action happens at its own instant, after everything before it."""
        self.now += dt.timedelta(seconds=1)

    def live_smes(self) -> list[str]:
        return [s for s in self.smes if s not in self.world.ledger.erased]

    def live_consents(self) -> list[str]:
        return sorted(
            c
            for c, sme_id in self.consents.items()
            if sme_id not in self.world.ledger.erased and self.world.ledger.episodes[c][-1].ended_at is None
        )

    # --- consent ------------------------------------------------------------------------------

    @precondition(lambda self: self.live_smes())
    @rule(
        data=st.data(),
        sources=sources_st,
        recipients=st.sets(st.sampled_from(LENDER_NAMES), min_size=1, max_size=3),
        purpose=st.sampled_from(PURPOSES),
        months=st.sampled_from([1, 3, 6, 12, 18, 24, 36]),
        granted=granted_offsets,
        expires=expiry_offsets,
        again=st.booleans(),
    )
    def grant(
        self,
        data: st.DataObject,
        sources: frozenset[str],
        recipients: set[str],
        purpose: str,
        months: int,
        granted: dt.timedelta,
        expires: dt.timedelta,
        again: bool,
    ) -> None:
        """A new consent, or new terms for one of the SME's consents (which replaces them)."""
        sme_id = data.draw(st.sampled_from(self.live_smes()), label="sme")
        own = sorted(c for c, s in self.consents.items() if s == sme_id)
        consent_id = data.draw(st.sampled_from(own), label="consent") if again and own else None
        self.give(sme_id, consent_id, sources, recipients, purpose, months, granted, expires)

    @precondition(lambda self: self.live_consents())
    @rule(data=st.data(), really=st.booleans())
    def revoke(self, data: st.DataObject, really: bool) -> None:
        """Now and then (one draw in two), an SME withdraws one of its consents."""
        if not really:
            return
        consent_id = data.draw(st.sampled_from(self.live_consents()), label="consent")
        self.tick()
        self.world.revoke(consent_id, at=self.now)

    @precondition(lambda self: self.live_consents())
    @rule(data=st.data())
    def reconfirm(self, data: st.DataObject) -> None:
        """An SME reconfirms one of its consents (the law refuses, and nothing is recorded, once it
        has lapsed, expired or not yet started)."""
        consent_id = data.draw(st.sampled_from(self.live_consents()), label="consent")
        self.tick()
        self.world.reconfirm(consent_id, at=self.now)

    @rule(step=advances)
    def advance(self, step: dt.timedelta) -> None:
        """Time passes (consents expire on their own)."""
        self.now += step

    @precondition(lambda self: self.subscribed)
    @rule(data=st.data())
    def every_lender_pulls(self, data: st.DataObject) -> None:
        """Every subscribed lender pulls, in a random order."""
        for lender in data.draw(st.permutations(sorted(self.subscribed)), label="order"):
            self.now += dt.timedelta(minutes=1)
            pulled = self.read(lender)
            assert pulled.breaches == [], "\n".join(pulled.breaches)

    @precondition(lambda self: len(self.live_smes()) > 2)
    @rule(data=st.data(), really=st.integers(min_value=0, max_value=3))
    def erase(self, data: st.DataObject, really: int) -> None:
        """Now and then (one draw in four), an SME has all its data erased."""
        if really:
            return
        sme_id = data.draw(st.sampled_from(self.live_smes()), label="sme")
        self.tick()
        self.world.erase(sme_id, at=self.now)

    # --- data and publishing ------------------------------------------------------------------

    @rule(data=st.data(), revised=st.booleans())
    def publish(self, data: st.DataObject, revised: bool) -> None:
        """Stage every live SME's data for an as-of date up to today, then evaluate and publish.

        ``revised``: one SME's figures changed since (so its dossiers differ from the last ones).
        """
        dates = [d for d in AS_OF_DATES if d <= self.now.date()]
        as_of = data.draw(st.sampled_from(dates), label="as_of")
        if revised and self.live_smes():
            sme_id = data.draw(st.sampled_from(self.live_smes()), label="revised")
            old = self.smes[sme_id]
            self.smes[sme_id] = Data(old.sources, old.months, old.level + 250.0)
        self.now += dt.timedelta(minutes=1)
        self.world.publish(as_of, {s: self.smes[s] for s in self.live_smes()}, at=self.now)
        self.published_dates.add(as_of)

    # --- lenders ------------------------------------------------------------------------------

    @precondition(lambda self: set(self.lenders) - self.subscribed)
    @rule(data=st.data())
    def subscribe(self, data: st.DataObject) -> None:
        lender = data.draw(st.sampled_from(sorted(set(self.lenders) - self.subscribed)), label="lender")
        self.subscribe_lender(lender)

    @precondition(lambda self: self.subscribed)
    @rule(data=st.data(), later=st.sampled_from([dt.timedelta(minutes=1), dt.timedelta(hours=3)]))
    def pull(self, data: st.DataObject, later: dt.timedelta) -> None:
        """A subscribed lender pulls, a minute or a few hours after the last action."""
        lender = data.draw(st.sampled_from(sorted(self.subscribed)), label="lender")
        self.now += later
        pulled = self.read(lender)
        self.pulls += 1
        assert pulled.breaches == [], "\n".join(pulled.breaches)


def run_consent_law(url: str, examples: int, *, through_http: bool = False) -> None:
    machine = type("ConsentLawMachine", (ConsentLaw,), {"url": url, "through_http": through_http})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@pytest.mark.slow
def test_no_lender_ever_holds_what_its_consents_do_not_cover(warehouse_url: str) -> None:
    run_consent_law(warehouse_url, EXAMPLES)


@pytest.mark.slow
def test_no_lender_ever_reads_from_the_http_feed_what_its_consents_do_not_cover(warehouse_url: str) -> None:
    run_consent_law(warehouse_url, HTTP_EXAMPLES, through_http=True)


def test_the_http_feed_mode_reads_the_rows_a_pull_gives_and_the_tombstones(
    warehouse_url: str, tmp_path: Path
) -> None:
    """The HTTP mode is not vacuous: it reads, over several pages, the same rows a file pull gives
    another lender under the same terms, then the tombstone of a revoked consent, and its reads
    pass the oracle."""
    with opened(warehouse_url, tmp_path, migrate=False) as world:
        world.serve()
        smes = {f"SME-00000{n}": Data(frozenset({"accounting", "tax"}), 24) for n in range(1, 6)}
        world.add_smes(smes)
        world.add_lenders(["northwind", "harbor"])
        for lender in ("northwind", "harbor"):
            world.subscribe(lender, "credit_decision")
        granted, expires = START - dt.timedelta(days=60), START + dt.timedelta(days=365)
        for n, sme_id in enumerate(smes, start=1):
            world.grant(
                f"C-{n}",
                sme_id,
                sources=("accounting", "tax"),
                recipients=("northwind", "harbor"),
                purpose="credit_decision",
                months=24,
                granted_at=granted,
                expires_at=expires,
            )
        world.publish(AS_OF_DATES[2], smes, at=START)

        read = world.read_feed("northwind", at=START + dt.timedelta(hours=1))
        pulled = world.pull("harbor", at=START + dt.timedelta(hours=1))
        assert (read.breaches, pulled.breaches) == ([], [])
        assert read.summary["events"] == len(smes) > FEED_PAGE
        assert sorted(read.dossiers, key=lambda r: r["dossier_id"]) == sorted(
            pulled.dossiers, key=lambda r: r["dossier_id"]
        )

        world.revoke("C-2", at=START + dt.timedelta(hours=2))
        after = world.read_feed("northwind", at=START + dt.timedelta(hours=3))
        assert after.breaches == []
        assert (after.dossiers, after.withdrawals) == (
            [],
            [
                {
                    "dossier_id": next(r["dossier_id"] for r in read.dossiers if r["sme_id"] == "SME-000002"),
                    "sme_id": "SME-000002",
                    "reason": "consent_revoked",
                }
            ],
        )
        again = world.read_feed("northwind", at=START + dt.timedelta(hours=4))
        assert (again.summary["events"], again.breaches) == (0, [])
