"""Sandbox lenders: each policy's quote worked out by hand, then answer_feed over a live lender API."""

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest

from connectors.sandbox.lenders import POLICIES, LenderPolicy, quote

TODAY = dt.date(2026, 3, 2)
ROW = {
    "dossier_id": "sme-0001@2026-03-01#m1",
    "sme_id": "sme-0001",
    "grade": "B",
    "pd_12m": 0.02,
    "credit_limit": 41_234.0,
    "currency": "GBP",
    "revenue_12m": 300_000.0,
}


def test_cautious_bank_prices_funding_margin_and_expected_loss() -> None:
    # 0.75 x 41,234 = 30,925.5 -> 30,500 (step 500); 0.035 + 0.030 + 0.02 x 0.45 = 0.074; fee 1% = 305.
    assert quote(POLICIES["sandbox-bank"], ROW, today=TODAY) == {
        "dossier_id": "sme-0001@2026-03-01#m1",
        "amount": "30500",
        "currency": "GBP",
        "term_months": 36,
        "nominal_rate": "0.0740",
        "upfront_fee": "305.00",
        "periodic_fee": "0",
        "profile": "annuity",
        "conditions": "Personal guarantee of a director; annual accounts within 9 months of year end.",
        "valid_until": "2026-04-01",
    }


def test_fintech_lends_the_whole_limit_dearer_and_shorter() -> None:
    # 41,234 -> 41,000; 0.06 + 0.05 + 0.02 x 0.60 = 0.122; fee 2% = 820; 10 a month.
    assert quote(POLICIES["sandbox-fintech"], ROW, today=TODAY) == {
        "dossier_id": "sme-0001@2026-03-01#m1",
        "amount": "41000",
        "currency": "GBP",
        "term_months": 12,
        "nominal_rate": "0.1220",
        "upfront_fee": "820.00",
        "periodic_fee": "10",
        "profile": "annuity",
        "conditions": "Open-banking connection kept live for the term.",
        "valid_until": "2026-04-01",
    }


def test_revenue_share_lender_caps_repayment_instead_of_interest() -> None:
    # 0.5 x 41,234 -> 20,500; cap 1 + 0.05 + 0.07 + 0.02 x 0.5 = 1.13; 8% of monthly revenue.
    assert quote(POLICIES["sandbox-revshare"], ROW, today=TODAY) == {
        "dossier_id": "sme-0001@2026-03-01#m1",
        "amount": "20500",
        "currency": "GBP",
        "term_months": 24,
        "nominal_rate": "0",
        "upfront_fee": "0.00",
        "periodic_fee": "0",
        "profile": "revenue_share",
        "revenue_share": "0.08",
        "repayment_cap": "1.13",
        "conditions": "Card and bank receipts reported monthly.",
        "valid_until": "2026-04-01",
    }


@pytest.mark.parametrize(
    ("lender_id", "change"),
    [
        ("sandbox-bank", {"pd_12m": 0.051}),  # above max_pd
        ("sandbox-bank", {"grade": "D", "pd_12m": 0.04}),  # worse than min_grade
        ("sandbox-fintech", {"grade": "E", "pd_12m": 0.02}),
        ("sandbox-fintech", {"credit_limit": 999.0}),  # under min_amount after rounding
        ("sandbox-fintech", {"credit_limit": None}),
        ("sandbox-fintech", {"pd_12m": float("nan")}),
        ("sandbox-fintech", {"grade": None}),
        ("sandbox-revshare", {"revenue_12m": 0.0}),  # no revenue to share
        ("sandbox-revshare", {"revenue_12m": None}),
    ],
)
def test_lender_passes_outside_its_appetite(lender_id: str, change: dict) -> None:
    assert quote(POLICIES[lender_id], {**ROW, **change}, today=TODAY) is None


def test_rate_above_the_cap_passes() -> None:
    # 0.06 + 0.05 + 0.14 x 0.60 = 0.194 > a 0.19 cap; at 0.20 the same dossier is priced.
    dear = {**ROW, "grade": "D", "pd_12m": 0.14}
    capped = dataclasses.replace(POLICIES["sandbox-fintech"], max_rate=Decimal("0.19"))
    assert quote(capped, dear, today=TODAY) is None
    assert quote(POLICIES["sandbox-fintech"], dear, today=TODAY)["nominal_rate"] == "0.1940"


def test_same_sme_gets_a_spread_of_rates() -> None:
    rates = {k: quote(p, ROW, today=TODAY)["nominal_rate"] for k, p in POLICIES.items()}
    assert rates == {"sandbox-bank": "0.0740", "sandbox-fintech": "0.1220", "sandbox-revshare": "0"}


def test_policy_refuses_an_unknown_grade_or_a_share_without_its_fraction() -> None:
    with pytest.raises(ValueError, match="x: min_grade 'F' is not one of A, B, C, D, E"):
        LenderPolicy("x", "X", 0.1, "F", Decimal(0), Decimal(0), Decimal(0), 12)
    with pytest.raises(ValueError, match="x: a revenue_share policy needs revenue_share"):
        LenderPolicy("x", "X", 0.1, "C", Decimal(0), Decimal(0), Decimal(0), 12, profile="revenue_share")
