"""What the offers market shows: pure statistics over the offers lenders posted on dossiers.

Two frames in, a dict out (JSON-ready: floats, ints, strings and ``None`` only):

``offers``
    one row per offer: ``dossier_id``, ``sme_id``, ``lender_id``, ``apr`` (fraction) and
    ``created_at`` (when the lender posted it).
``dossiers``
    one row per dossier version delivered to at least one lender: ``dossier_id``, ``sme_id``,
    ``grade``, ``indicative_rate`` (the broker's own rate, fraction) and ``delivered_at`` (its first
    delivery to any lender).

The figures (:func:`market_stats`):

* ``smes``, ``offers``: how many SMEs have a delivered dossier, how many offers were posted;
* ``offers_per_sme``: mean and median over *all* those SMEs (an SME nobody offered on counts 0);
* ``share_smes_2plus``: share of those SMEs with two or more offers -- competition happened;
* ``time_to_first_offer_hours``: median, over dossier versions with an offer, of the hours from
  the version's first delivery to its first offer;
* ``best_vs_indicative``: median, over versions with an offer, of the best (lowest) APR minus the
  version's ``indicative_rate`` (negative: the market priced below the broker's indication);
* ``by_grade``: per grade, the same for the offers on that grade's versions: ``offers``,
  ``median_apr``, ``p10_apr``, ``p90_apr``, ``spread_p10_p90`` (p90 - p10), ``min_apr``,
  ``max_apr``, ``spread_min_max`` and ``best_vs_indicative``.

Percentiles are linear interpolation between order statistics (numpy's default), so with offers
at 0.10, 0.12 and 0.20 the median is 0.12, p10 0.104 and p90 0.184.

>>> import pandas as pd
>>> offers = pd.DataFrame({"dossier_id": ["d1", "d1"], "sme_id": ["s1", "s1"], "lender_id": ["a", "b"],
...     "apr": [0.10, 0.14], "created_at": pd.to_datetime(["2026-01-01 02:00", "2026-01-01 05:00"], utc=True)})
>>> dossiers = pd.DataFrame({"dossier_id": ["d1"], "sme_id": ["s1"], "grade": ["B"],
...     "indicative_rate": [0.12], "delivered_at": pd.to_datetime(["2026-01-01 00:00"], utc=True)})
>>> stats = market_stats(offers, dossiers)
>>> stats["time_to_first_offer_hours"], stats["best_vs_indicative"], stats["by_grade"]["B"]["median_apr"]
(2.0, -0.02, 0.12)
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

OFFER_COLUMNS = ("dossier_id", "sme_id", "lender_id", "apr", "created_at")
DOSSIER_COLUMNS = ("dossier_id", "sme_id", "grade", "indicative_rate", "delivered_at")


def _missing(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise ValueError(f"{name} frame: missing column {absent[0]!r} (needs {', '.join(columns)})")


def _num(value: float | np.floating | None, digits: int = 6) -> float | None:
    if value is None or pd.isna(value):
        return None
    return round(float(value), digits)


def _spread(aprs: pd.Series, best_gap: pd.Series) -> dict[str, Any]:
    values = aprs.dropna().to_numpy(dtype=float)
    if not len(values):
        keys = ("median_apr", "p10_apr", "p90_apr", "spread_p10_p90", "min_apr", "max_apr", "spread_min_max")
        return {"offers": 0, **dict.fromkeys(keys), "best_vs_indicative": _num(best_gap.median())}
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return {
        "offers": len(values),
        "median_apr": _num(p50),
        "p10_apr": _num(p10),
        "p90_apr": _num(p90),
        "spread_p10_p90": _num(p90 - p10),
        "min_apr": _num(values.min()),
        "max_apr": _num(values.max()),
        "spread_min_max": _num(values.max() - values.min()),
        "best_vs_indicative": _num(best_gap.median()),
    }


def market_stats(offers: pd.DataFrame, dossiers: pd.DataFrame) -> dict[str, Any]:
    """The market figures described in the module docstring; offers on dossiers not in ``dossiers``
    are counted with grade ``"?"`` and without delivery time or indicative rate."""
    _missing(offers, OFFER_COLUMNS, "offers")
    _missing(dossiers, DOSSIER_COLUMNS, "dossiers")
    dossiers = dossiers.drop_duplicates("dossier_id")
    joined = offers.merge(
        dossiers[["dossier_id", "grade", "indicative_rate", "delivered_at"]], on="dossier_id", how="left"
    )
    joined["grade"] = joined["grade"].fillna("?")
    smes = pd.Index(dossiers["sme_id"]).union(pd.Index(offers["sme_id"])).unique()
    per_sme = offers.groupby("sme_id").size().reindex(smes, fill_value=0)
    per_version = joined.groupby("dossier_id").agg(
        grade=("grade", "first"),
        best=("apr", "min"),
        first_offer=("created_at", "min"),
        indicative=("indicative_rate", "first"),
        delivered=("delivered_at", "first"),
    )
    gap = per_version["best"] - per_version["indicative"]
    waited = (per_version["first_offer"] - per_version["delivered"]).dt.total_seconds() / 3600.0
    grades = sorted(set(joined["grade"]) | set(dossiers["grade"]))
    return {
        "smes": len(smes),
        "offers": len(offers),
        "offers_per_sme": {
            "mean": _num(per_sme.mean()) if len(per_sme) else None,
            "median": _num(per_sme.median()) if len(per_sme) else None,
        },
        "share_smes_2plus": _num((per_sme >= 2).mean()) if len(per_sme) else None,
        "time_to_first_offer_hours": _num(waited.median()),
        "best_vs_indicative": _num(gap.median()),
        "by_grade": {
            g: _spread(joined.loc[joined["grade"] == g, "apr"], gap[per_version["grade"] == g])
            for g in grades
        },
    }


def _pct(value: float | None) -> str:
    return "&ndash;" if value is None else f"{value * 100:.2f}%"


def market_section(stats: dict[str, Any]) -> str:
    """An HTML fragment (a ``<section>`` with a summary list and a table by grade) of
    :func:`market_stats`'s figures, for the disclosure report; every value is escaped."""
    hours = stats["time_to_first_offer_hours"]
    share = stats["share_smes_2plus"]
    mean = stats["offers_per_sme"]["mean"]
    summary = [
        ("SMEs with a delivered dossier", str(stats["smes"])),
        ("Offers posted", str(stats["offers"])),
        ("Offers per SME (mean)", "&ndash;" if mean is None else f"{mean:.2f}"),
        ("SMEs with two or more offers", "&ndash;" if share is None else f"{share * 100:.1f}%"),
        ("Median time from delivery to first offer", "&ndash;" if hours is None else f"{hours:.1f} h"),
        ("Median best APR minus indicative rate", _pct(stats["best_vs_indicative"])),
    ]
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{v}</dd>" for k, v in summary)
    rows = "".join(
        f'<tr><th scope="row">{html.escape(str(grade))}</th><td>{g["offers"]}</td>'
        f"<td>{_pct(g['median_apr'])}</td><td>{_pct(g['spread_p10_p90'])}</td>"
        f"<td>{_pct(g['min_apr'])} &ndash; {_pct(g['max_apr'])}</td><td>{_pct(g['best_vs_indicative'])}</td></tr>"
        for grade, g in stats["by_grade"].items()
    )
    return (
        '<section id="market"><h2>What the market shows</h2>'
        f"<dl>{items}</dl>"
        '<table><caption>Offers by grade (APR)</caption><thead><tr><th scope="col">Grade</th>'
        '<th scope="col">Offers</th><th scope="col">Median APR</th><th scope="col">Spread p90&minus;p10</th>'
        '<th scope="col">Min &ndash; max</th><th scope="col">Best minus indicative (median)</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></section>"
    )
