"""evaluation/market.py against figures computed by hand."""

import pandas as pd
import pytest

from evaluation.market import market_section, market_stats

T0 = pd.Timestamp("2026-03-02 09:00", tz="UTC")


def _hours(h: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(hours=h)


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    dossiers = pd.DataFrame(
        {
            "dossier_id": ["d1", "d2", "d3"],
            "sme_id": ["s1", "s2", "s3"],
            "grade": ["A", "C", "C"],
            "indicative_rate": [0.08, 0.13, 0.16],
            "delivered_at": [T0, T0, T0],
        }
    )
    offers = pd.DataFrame(
        {
            "dossier_id": ["d1", "d1", "d2", "d2", "d2"],
            "sme_id": ["s1", "s1", "s2", "s2", "s2"],
            "lender_id": ["a", "b", "a", "b", "c"],
            "apr": [0.07, 0.09, 0.14, 0.18, 0.20],
            "created_at": [_hours(1), _hours(3), _hours(2), _hours(4), _hours(5)],
        }
    )
    return offers, dossiers


def test_market_stats_by_hand() -> None:
    offers, dossiers = _frames()
    # s1: 2 offers, s2: 3, s3: none -> mean 5/3, median 2, two of three SMEs with >= 2 offers.
    # first offers 1 h (d1) and 2 h (d2) after delivery -> median 1.5 h.
    # best minus indicative: d1 0.07 - 0.08 = -0.01, d2 0.14 - 0.13 = +0.01 -> median 0.
    # grade A aprs 0.07, 0.09: p10 = 0.07 + 0.1 * 0.02 = 0.072, p90 = 0.088.
    # grade C aprs 0.14, 0.18, 0.20: p10 at rank 0.2 -> 0.14 + 0.2 * 0.04 = 0.148; p90 at rank 1.8 ->
    # 0.18 + 0.8 * 0.02 = 0.196; d3 has no offer so only d2's gap counts.
    assert market_stats(offers, dossiers) == {
        "smes": 3,
        "offers": 5,
        "offers_per_sme": {"mean": 1.666667, "median": 2.0},
        "share_smes_2plus": 0.666667,
        "time_to_first_offer_hours": 1.5,
        "best_vs_indicative": 0.0,
        "by_grade": {
            "A": {
                "offers": 2,
                "median_apr": 0.08,
                "p10_apr": 0.072,
                "p90_apr": 0.088,
                "spread_p10_p90": 0.016,
                "min_apr": 0.07,
                "max_apr": 0.09,
                "spread_min_max": 0.02,
                "best_vs_indicative": -0.01,
            },
            "C": {
                "offers": 3,
                "median_apr": 0.18,
                "p10_apr": 0.148,
                "p90_apr": 0.196,
                "spread_p10_p90": 0.048,
                "min_apr": 0.14,
                "max_apr": 0.2,
                "spread_min_max": 0.06,
                "best_vs_indicative": 0.01,
            },
        },
    }


def test_market_stats_without_offers() -> None:
    offers, dossiers = _frames()
    stats = market_stats(offers.iloc[0:0], dossiers)
    assert stats["offers"] == 0
    assert stats["offers_per_sme"] == {"mean": 0.0, "median": 0.0}
    assert stats["share_smes_2plus"] == 0.0
    assert stats["time_to_first_offer_hours"] is None
    assert stats["by_grade"]["A"] == {
        "offers": 0,
        "median_apr": None,
        "p10_apr": None,
        "p90_apr": None,
        "spread_p10_p90": None,
        "min_apr": None,
        "max_apr": None,
        "spread_min_max": None,
        "best_vs_indicative": None,
    }


def test_missing_column_is_named() -> None:
    offers, dossiers = _frames()
    with pytest.raises(ValueError, match="offers frame: missing column 'apr'"):
        market_stats(offers.drop(columns="apr"), dossiers)


def test_market_section_renders_the_figures_escaped() -> None:
    offers, dossiers = _frames()
    fragment = market_section(market_stats(offers, dossiers))
    assert fragment.startswith('<section id="market">')
    assert fragment.endswith("</section>")
    assert "<dt>SMEs with two or more offers</dt><dd>66.7%</dd>" in fragment
    assert "<dt>Median time from delivery to first offer</dt><dd>1.5 h</dd>" in fragment
    assert (
        '<tr><th scope="row">C</th><td>3</td><td>18.00%</td><td>4.80%</td>'
        "<td>14.00% &ndash; 20.00%</td><td>1.00%</td></tr>"
    ) in fragment
