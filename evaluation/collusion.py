"""Collusion and exit: which field agents' visits should stop counting as verification.

A field visit is worth something only if the agent really went and wrote down what they saw.
:func:`detect` reads the ``survey_visits`` canonical table (and, when given, the books in
``monthly_financials``) and gathers, per agent, three independent lines of evidence:

(a) **Contradiction with the books.** A visit *contradicts* the books when the monthly revenue the
    owner stated to the agent is more than :data:`CONTRADICTION_FACTOR` times the revenue booked
    for the month of the visit, or less than its inverse. Some visits contradict by chance (inflated
    books, a bad month), so an agent is flagged only when their count ``k`` out of ``n`` compared
    visits is improbable under the population's contradiction rate ``p``: the one-sided binomial
    tail ``P(X >= k | n, p)`` is below :data:`SIGNIFICANCE` divided by the number of agents tested
    (a Bonferroni correction, so the whole team has at most a 1 % chance of one false flag).
(b) **Reused places or photos.** Two visits to *different* firms less than :data:`GPS_RADIUS_M`
    metres apart mean one of them was not made where it says. An optional ``photo_hashes`` column
    (a list of attachment hashes or file names per visit) is read the same way: one photo attached
    to visits of different firms.
(c) **Copied submissions.** Visits by one agent to different firms whose answers are near-identical:
    the same stated revenue and at most one other answer of :data:`ANSWER_FIELDS` different.

Each line of evidence raises a flag with a machine-readable code (:data:`FLAGS`) once it involves
at least :data:`MIN_FIRMS` firms; the agent's ``score`` is the share of the four flags raised and
an agent is recommended for suspension when :data:`SUSPEND_AT_FLAGS` flags are raised (two
independent lines of evidence, so one unlucky coincidence never suspends anyone).

Frames in, frames out: no database, no I/O.

>>> report = detect(pd.DataFrame(columns=list(REQUIRED_COLUMNS)))
>>> list(report.agents.columns) == list(AGENT_COLUMNS), len(report.evidence)
(True, 0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binom

CONTRADICTION_FACTOR = 1.5
"""Stated revenue above 1.5x, or below 1/1.5 of, the month's booked revenue contradicts the books."""

SIGNIFICANCE = 0.01
"""Family-wise significance of the contradiction test (Bonferroni-divided among the agents)."""

GPS_RADIUS_M = 10.0
"""Visits of different firms closer than this (metres) share one point."""

MIN_FIRMS = 3
"""A reuse or copy flag needs at least this many firms involved among the agent's visits."""

SUSPEND_AT_FLAGS = 2
"""Flags (independent lines of evidence) at which suspension is recommended."""

EARTH_RADIUS_M = 6_371_000.0

ANSWER_FIELDS = (
    "employees_observed",
    "customers_observed",
    "stock_level",
    "photo_count",
    "notes",
)
"""Answers compared for copies, besides ``reported_monthly_revenue`` (which must match exactly)."""

FLAGS = {
    "CONTRADICTS_BOOKS": "Stated revenue contradicts the books more often than chance allows.",
    "REUSED_GPS": "The same GPS point is used for visits to different firms.",
    "REUSED_PHOTO": "The same photo is attached to visits of different firms.",
    "COPIED_ANSWERS": "Near-identical answer sets are submitted for different firms.",
}
"""Flag codes and what each means."""

REQUIRED_COLUMNS = (
    "sme_id",
    "visit_id",
    "agent_id",
    "visited_at",
    "reported_monthly_revenue",
    "latitude",
    "longitude",
    *ANSWER_FIELDS,
)
"""Columns of ``survey_visits`` read by :func:`detect`."""

AGENT_COLUMNS = (
    "agent_id",
    "visits",
    "smes",
    "compared_visits",
    "contradictions",
    "contradiction_rate",
    "contradiction_p",
    "gps_reused_smes",
    "photo_reused_smes",
    "copied_smes",
    "score",
    "flags",
    "recommend_suspend",
)
"""Columns of :attr:`CollusionReport.agents`, one row per agent."""

EVIDENCE_COLUMNS = ("agent_id", "code", "sme_id", "visit_id", "detail")
"""Columns of :attr:`CollusionReport.evidence`, one row per visit behind a raised flag."""


@dataclass(frozen=True)
class CollusionReport:
    """Per-agent scores and flags, the visits behind each flag and the population's rates."""

    agents: pd.DataFrame
    evidence: pd.DataFrame
    population_contradiction_rate: float
    threshold_p: float

    @property
    def recommended(self) -> list[str]:
        """Agents recommended for suspension, sorted."""
        return sorted(self.agents.loc[self.agents["recommend_suspend"], "agent_id"])


def _check(visits: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in visits.columns]
    if missing:
        raise ValueError(f"survey_visits: missing columns {missing}")


def _contradictions(visits: pd.DataFrame, financials: pd.DataFrame | None) -> pd.Series:
    """Per visit: True (contradicts the month's books), False (agrees) or NA (nothing to compare)."""
    result = pd.Series(pd.NA, index=visits.index, dtype="boolean")
    if financials is None or len(financials) == 0 or len(visits) == 0:
        return result
    for column in ("sme_id", "period_month", "revenue"):
        if column not in financials.columns:
            raise ValueError(f"monthly_financials: missing column {column!r}")
    books = pd.DataFrame(
        {
            "sme_id": financials["sme_id"].astype(str).to_numpy(),
            "month": pd.to_datetime(financials["period_month"]).dt.to_period("M").to_numpy(),
            "booked": pd.to_numeric(financials["revenue"], errors="coerce").to_numpy(),
        }
    ).drop_duplicates(["sme_id", "month"], keep="last")
    visited = pd.to_datetime(visits["visited_at"], utc=True).dt.tz_localize(None).dt.to_period("M")
    keyed = pd.DataFrame(
        {"sme_id": visits["sme_id"].astype(str).to_numpy(), "month": visited.to_numpy(), "row": visits.index}
    )
    joined = keyed.merge(books, on=["sme_id", "month"], how="left").set_index("row")
    stated = pd.to_numeric(visits["reported_monthly_revenue"], errors="coerce")
    booked = joined["booked"].reindex(visits.index)
    comparable = stated.notna() & booked.notna() & (booked > 0) & (stated > 0)
    ratio = stated[comparable] / booked[comparable]
    result[comparable] = (ratio > CONTRADICTION_FACTOR) | (ratio < 1 / CONTRADICTION_FACTOR)
    return result


def _shared_points(visits: pd.DataFrame) -> pd.Series:
    """Per visit: True when a visit of another firm lies within :data:`GPS_RADIUS_M` metres.

    Points are projected to metres (equirectangular, fine at these distances) and binned into
    squares of the radius; only the 9 neighbouring squares are compared, so the cost is linear.
    """
    lat = pd.to_numeric(visits["latitude"], errors="coerce").to_numpy(dtype=float)
    lon = pd.to_numeric(visits["longitude"], errors="coerce").to_numpy(dtype=float)
    known = ~(np.isnan(lat) | np.isnan(lon))
    shared = np.zeros(len(visits), dtype=bool)
    if known.sum() < 2:
        return pd.Series(shared, index=visits.index)
    y = np.radians(lat[known]) * EARTH_RADIUS_M
    x = np.radians(lon[known]) * EARTH_RADIUS_M * np.cos(np.radians(lat[known]))
    points = pd.DataFrame(
        {
            "i": np.flatnonzero(known),
            "sme": visits["sme_id"].astype(str).to_numpy()[known],
            "x": x,
            "y": y,
            "cx": np.floor(x / GPS_RADIUS_M).astype(np.int64),
            "cy": np.floor(y / GPS_RADIUS_M).astype(np.int64),
        }
    )
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            moved = points.assign(cx=points["cx"] + dx, cy=points["cy"] + dy)
            pairs = moved.merge(points, on=["cx", "cy"], suffixes=("", "_o"))
            pairs = pairs[pairs["sme"] != pairs["sme_o"]]
            close = np.hypot(pairs["x"] - pairs["x_o"], pairs["y"] - pairs["y_o"]) < GPS_RADIUS_M
            shared[pairs.loc[close, "i"].to_numpy()] = True
    return pd.Series(shared, index=visits.index)


def _shared_photos(visits: pd.DataFrame) -> pd.Series:
    """Per visit: True when one of its photos (``photo_hashes``) is attached to another firm's visit."""
    shared = pd.Series(False, index=visits.index)
    if "photo_hashes" not in visits.columns:
        return shared
    photos = visits[["sme_id", "photo_hashes"]].explode("photo_hashes").dropna(subset=["photo_hashes"])
    if photos.empty:
        return shared
    firms = photos.groupby("photo_hashes")["sme_id"].transform("nunique")
    reused = photos.index[firms.to_numpy() > 1].unique()
    shared[reused] = True
    return shared


def _copied(visits: pd.DataFrame) -> pd.Series:
    """Per visit: True when the same agent's visit to another firm has a near-identical answer set.

    Near-identical: equal stated revenue and at most one of :data:`ANSWER_FIELDS` different. Found
    by leave-one-out signatures (all answers but one, for each answer left out): two visits are
    near-identical exactly when they share one, so grouping replaces pairwise comparison.
    """
    copied = pd.Series(False, index=visits.index)
    revenue = pd.to_numeric(visits["reported_monthly_revenue"], errors="coerce")
    usable = visits[revenue.notna()]
    if usable.empty:
        return copied
    answers = {f: usable[f].astype(object).where(usable[f].notna(), "<none>").map(str) for f in ANSWER_FIELDS}
    base = usable["agent_id"].astype(str) + "|" + revenue[usable.index].map(repr)
    for left_out in (None, *ANSWER_FIELDS):
        kept = [f for f in ANSWER_FIELDS if f != left_out]
        signature = base
        for field in kept:
            signature = signature + "|" + answers[field]
        firms = usable["sme_id"].groupby(signature).transform("nunique")
        copied[firms.index[firms.to_numpy() > 1]] = True
    return copied


def detect(visits: pd.DataFrame, financials: pd.DataFrame | None = None) -> CollusionReport:
    """Score every agent of ``visits`` (``survey_visits`` rows) against the books in ``financials``.

    Visits without an agent are ignored. Raises ``ValueError`` naming the table and the missing
    columns when a required column is absent.
    """
    _check(visits)
    visits = visits[visits["agent_id"].notna() & (visits["agent_id"].astype(str) != "")]
    visits = visits.reset_index(drop=True)
    signals = pd.DataFrame(
        {
            "agent_id": visits["agent_id"].astype(str),
            "sme_id": visits["sme_id"].astype(str),
            "visit_id": visits["visit_id"].astype(str),
            "contradicts": _contradictions(visits, financials),
            "gps": _shared_points(visits),
            "photo": _shared_photos(visits),
            "copied": _copied(visits),
        }
    )
    compared = signals["contradicts"].notna()
    rate = float(signals.loc[compared, "contradicts"].astype(bool).mean()) if compared.any() else 0.0
    grouped = signals.groupby("agent_id", sort=True)
    agents = pd.DataFrame(
        {
            "visits": grouped.size(),
            "smes": grouped["sme_id"].nunique(),
            "compared_visits": grouped["contradicts"].count(),
            "contradictions": grouped["contradicts"].sum(),
        }
    ).reset_index()
    if agents.empty:
        agents = pd.DataFrame(columns=["agent_id", "visits", "smes", "compared_visits", "contradictions"])
    for signal, column in (
        ("gps", "gps_reused_smes"),
        ("photo", "photo_reused_smes"),
        ("copied", "copied_smes"),
    ):
        firms = signals[signals[signal]].groupby("agent_id")["sme_id"].nunique()
        agents[column] = agents["agent_id"].map(firms).fillna(0).astype(np.int64)
    n = agents["compared_visits"].to_numpy(dtype=np.int64)
    k = agents["contradictions"].to_numpy(dtype=np.int64)
    agents["contradiction_rate"] = np.divide(k, n, out=np.full(len(n), np.nan), where=n > 0)
    agents["contradiction_p"] = (
        np.where(n > 0, binom.sf(k - 1, n, rate), 1.0) if rate > 0 else np.where(k > 0, 0.0, 1.0)
    )
    threshold = SIGNIFICANCE / max(1, int((n > 0).sum()))
    raised = {
        "CONTRADICTS_BOOKS": (agents["contradiction_p"] < threshold)
        & (agents["contradictions"] >= MIN_FIRMS),
        "REUSED_GPS": agents["gps_reused_smes"] >= MIN_FIRMS,
        "REUSED_PHOTO": agents["photo_reused_smes"] >= MIN_FIRMS,
        "COPIED_ANSWERS": agents["copied_smes"] >= MIN_FIRMS,
    }
    flags = pd.DataFrame(raised)
    agents["flags"] = [[code for code in FLAGS if row[code]] for _, row in flags.iterrows()]
    agents["score"] = flags.sum(axis=1).to_numpy(dtype=float) / len(FLAGS) if len(flags) else []
    agents["recommend_suspend"] = flags.sum(axis=1).to_numpy() >= SUSPEND_AT_FLAGS if len(flags) else []
    agents["recommend_suspend"] = agents["recommend_suspend"].astype(bool)
    evidence = _evidence(signals, agents, rate)
    return CollusionReport(
        agents=agents[list(AGENT_COLUMNS)].reset_index(drop=True),
        evidence=evidence,
        population_contradiction_rate=rate,
        threshold_p=threshold,
    )


def _evidence(signals: pd.DataFrame, agents: pd.DataFrame, rate: float) -> pd.DataFrame:
    """One row per visit behind each raised flag, with a sentence saying what it shows."""
    flagged = agents.set_index("agent_id")["flags"]
    texts = {
        "CONTRADICTS_BOOKS": (
            "contradicts",
            f"stated revenue off the month's books by more than x{CONTRADICTION_FACTOR} (population rate {rate:.3f})",
        ),
        "REUSED_GPS": ("gps", f"GPS point within {GPS_RADIUS_M:g} m of another firm's visit"),
        "REUSED_PHOTO": ("photo", "photo also attached to another firm's visit"),
        "COPIED_ANSWERS": ("copied", "answers near-identical to a visit of another firm"),
    }
    parts = []
    for code, (signal, detail) in texts.items():
        agents_with = {a for a, codes in flagged.items() if code in codes}
        rows = signals[signals["agent_id"].isin(agents_with) & signals[signal].fillna(False).astype(bool)]
        parts.append(rows[["agent_id", "sme_id", "visit_id"]].assign(code=code, detail=detail))
    evidence = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(EVIDENCE_COLUMNS))
    return (
        evidence[list(EVIDENCE_COLUMNS)]
        .sort_values(["agent_id", "code", "sme_id", "visit_id"])
        .reset_index(drop=True)
    )
