"""Credit cost and APR engine: published APR examples, hand-computed schedules, refusals, properties."""

from __future__ import annotations

import doctest
import pathlib
from dataclasses import replace
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation import credit_cost
from evaluation.credit_cost import (
    PROFILES,
    Instalment,
    OfferTerms,
    TermsError,
    apr,
    apr_exact,
    check_terms,
    schedule,
)

APR_MD = pathlib.Path(credit_cost.__file__).with_name("APR.md")


def _monthly(payment: str, n: int) -> list[tuple[float, D]]:
    return [(m / 12, D(payment)) for m in range(1, n + 1)]


def test_published_example_150_repaid_by_11_monthly_instalments_of_15() -> None:
    # "Example 1. A straightforward 'equal instalment' agreement. A loan of £150 is repaid in 11
    # equal monthly instalments [of £15] ... RESULT - APR 21.3" -- "APR - Annual Percentage Rate of
    # charge", Z88 PD library Z165A (https://www.bighole.nl/pub/mirror/English%20computers/Z88/
    # PDZ-library/Z16/Z165A), present-value method with monthly periods.
    assert apr([(0.0, D(150))], _monthly("15", 11)) == D("0.2131")
    assert round(apr_exact([(0.0, D(150))], _monthly("15", 11)) * 100, 1) == 21.3


def test_published_example_5000_repaid_by_three_annual_instalments_of_2000() -> None:
    # "A loan of £5000 is repaid in three equal annual instalments of £2000. The APR is quoted as
    # 9.7%. ... the APR is 9.7% correct to 1 decimal place." -- FSMQ Additional Mathematics,
    # "Calculating the APR" (http://www.fsmq.org/data/files/feb08afisaapr2si-10623.DOC).
    assert apr([(0.0, D(5000))], [(float(y), D(2000)) for y in (1, 2, 3)]) == D("0.0970")


def test_single_repayment_after_a_year_is_the_simple_rate() -> None:
    assert apr([(0.0, D(1000))], [(1.0, D(1100))]) == D("0.1000")
    assert apr([(0.0, D(1000))], [(2.0, D(1210))]) == D("0.1000")


def test_apr_refuses_flows_without_a_root() -> None:
    with pytest.raises(ValueError, match="at least one positive drawdown"):
        apr([(0.0, D(1000))], [])
    with pytest.raises(ValueError, match="times must be finite"):
        apr([(0.0, D(1000))], [(-1.0, D(1100))])


def test_apr_can_be_negative_when_less_is_repaid() -> None:
    assert apr([(0.0, D(1000))], [(1.0, D(900))]) == D("-0.1000")


def _rows(s: credit_cost.Schedule) -> list[tuple[int, str, str, str, str, str]]:
    return [
        (i.month, str(i.principal), str(i.interest), str(i.fee), str(i.payment), str(i.balance))
        for i in s.instalments
    ]


HAND = {"amount": D(1200), "term_months": 6, "nominal_rate": D("0.12"), "upfront_fee": D(10)}


def test_annuity_schedule_by_hand() -> None:
    # r = 1 %; P = 1200 * 0.01 / (1 - 1.01^-6) = 207.058... -> 207.06; + fee 2 = 209.06.
    # Interest on the balance: 12.00, 10.05 (1004.94 * 1 %), 8.08, 6.09, 4.08, 2.05; the last
    # month repays the 205.00 left: 205.00 + 2.05 + 2 = 209.05.
    s = schedule(OfferTerms(**HAND, periodic_fee=D(2)))
    assert _rows(s) == [
        (1, "195.06", "12.00", "2.00", "209.06", "1004.94"),
        (2, "197.01", "10.05", "2.00", "209.06", "807.93"),
        (3, "198.98", "8.08", "2.00", "209.06", "608.95"),
        (4, "200.97", "6.09", "2.00", "209.06", "407.98"),
        (5, "202.98", "4.08", "2.00", "209.06", "205.00"),
        (6, "205.00", "2.05", "2.00", "209.05", "0.00"),
    ]
    # 10 + 5 * 209.06 + 209.05
    assert (s.total_repayable, s.total_cost, s.monthly_payment) == (
        D("1264.35"),
        D("64.35"),
        D("209.06"),
    )
    assert s.apr == D("0.1993")


def test_equal_principal_schedule_by_hand() -> None:
    # 200 of principal a month; interest 1 % of 1200, 1000, ..., 200.
    s = schedule(OfferTerms(**HAND, profile="equal_principal"))
    assert _rows(s) == [
        (1, "200.00", "12.00", "0.00", "212.00", "1000.00"),
        (2, "200.00", "10.00", "0.00", "210.00", "800.00"),
        (3, "200.00", "8.00", "0.00", "208.00", "600.00"),
        (4, "200.00", "6.00", "0.00", "206.00", "400.00"),
        (5, "200.00", "4.00", "0.00", "204.00", "200.00"),
        (6, "200.00", "2.00", "0.00", "202.00", "0.00"),
    ]
    assert (s.total_repayable, s.total_cost, s.monthly_payment) == (
        D("1252.00"),
        D("52.00"),
        D("212.00"),
    )


def test_equal_principal_last_month_absorbs_rounding() -> None:
    # 100 / 3 = 33.33 twice, then 33.34.
    s = schedule(OfferTerms(amount=D(100), term_months=3, nominal_rate=D(0), profile="equal_principal"))
    assert [str(i.principal) for i in s.instalments] == ["33.33", "33.33", "33.34"]
    assert (s.total_cost, s.apr) == (D("0.00"), D("0.0000"))


def test_bullet_schedule_by_hand() -> None:
    s = schedule(OfferTerms(**HAND, profile="bullet"))
    assert _rows(s) == [(m, "0.00", "12.00", "0.00", "12.00", "1200.00") for m in range(1, 6)] + [
        (6, "1200.00", "12.00", "0.00", "1212.00", "0.00")
    ]
    # 10 + 6 * 12: bullet pays interest on the full amount, so it costs more than the annuity
    assert (s.total_repayable, s.total_cost, s.monthly_payment) == (
        D("1282.00"),
        D("82.00"),
        D("12.00"),
    )


REVENUE = {"profile": "revenue_share", "revenue_share": D("0.1"), "repayment_cap": D("1.2")}


def test_revenue_share_stops_at_the_cap() -> None:
    # cap 1440; 10 % of 3000 = 300 a month, split 250 : 50 (1200 : 240); four months repay 1200,
    # the fifth the 240 left (200 principal, 40 cost); nothing after the cap.
    s = schedule(OfferTerms(**HAND, **REVENUE, expected_monthly_revenue=D(3000)))
    assert _rows(s) == [
        (1, "250.00", "50.00", "0.00", "300.00", "950.00"),
        (2, "250.00", "50.00", "0.00", "300.00", "700.00"),
        (3, "250.00", "50.00", "0.00", "300.00", "450.00"),
        (4, "250.00", "50.00", "0.00", "300.00", "200.00"),
        (5, "200.00", "40.00", "0.00", "240.00", "0.00"),
    ]
    assert (s.total_repayable, s.total_cost, s.monthly_payment) == (
        D("1450.00"),
        D("250.00"),
        D("300.00"),
    )


def test_revenue_share_balloon_when_the_term_ends_first() -> None:
    # 10 % of 1000 = 100 a month; principal repaid so far is 1200/1440 of everything paid so far,
    # in cents: 83.33, 166.67, 250.00, 333.33, 416.67. After 5 months 940 of the cap is left and
    # is due in month 6 (783.33 principal, 156.67 cost).
    s = schedule(OfferTerms(**HAND, **REVENUE, expected_monthly_revenue=D(1000)))
    assert _rows(s) == [
        (1, "83.33", "16.67", "0.00", "100.00", "1116.67"),
        (2, "83.34", "16.66", "0.00", "100.00", "1033.33"),
        (3, "83.33", "16.67", "0.00", "100.00", "950.00"),
        (4, "83.33", "16.67", "0.00", "100.00", "866.67"),
        (5, "83.34", "16.66", "0.00", "100.00", "783.33"),
        (6, "783.33", "156.67", "0.00", "940.00", "0.00"),
    ]
    assert s.total_repayable == D("1450.00")


def test_faster_revenue_repays_the_same_cap_at_a_higher_apr() -> None:
    slow = schedule(OfferTerms(**HAND, **REVENUE, expected_monthly_revenue=D(1000)))
    fast = schedule(OfferTerms(**HAND, **REVENUE, expected_monthly_revenue=D(3000)))
    assert slow.total_cost == fast.total_cost
    assert fast.apr > slow.apr


def test_worked_example_in_apr_md_matches_the_code() -> None:
    text = APR_MD.read_text()
    terms = OfferTerms(
        amount=D(1000),
        term_months=12,
        nominal_rate=D("0.12"),
        upfront_fee=D(10),
        periodic_fee=D(2),
    )
    s = schedule(terms)
    first, last = s.instalments[0], s.instalments[-1]
    assert (first.interest, first.principal, first.payment, first.balance) == (
        D("10.00"),
        D("78.85"),
        D("90.85"),
        D("921.15"),
    )
    assert (last.principal, last.interest, last.payment) == (D("87.96"), D("0.88"), D("90.84"))
    for shown in (
        f"**{s.monthly_payment}**",
        f"**{last.payment}**",
        f"**{s.total_repayable:,}**",
        f"total cost **{s.total_cost}**",
        f"**X = {s.apr}**",
        f"balance {first.balance}",
        f"remaining principal {last.principal}",
    ):
        assert shown in text, shown
    plain = schedule(OfferTerms(amount=D(1000), term_months=12, nominal_rate=D("0.12")))
    assert f"costs **{plain.total_cost}** and its APR is **{plain.apr}**" in text


def test_module_doctests() -> None:
    result = doctest.testmod(credit_cost, optionflags=doctest.IGNORE_EXCEPTION_DETAIL)
    assert result.attempted >= 4
    assert result.failed == 0


VALID = {"amount": D(1000), "term_months": 12, "nominal_rate": D("0.1")}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount": D(0)}, "amount"),
        ({"amount": D(-5)}, "amount"),
        ({"amount": D("100000000.01")}, "amount"),
        ({"amount": D("10.005")}, "amount"),
        ({"amount": "lots"}, "amount"),
        ({"term_months": 0}, "term_months"),
        ({"term_months": 361}, "term_months"),
        ({"term_months": 12.5}, "term_months"),
        ({"nominal_rate": D("-0.01")}, "nominal_rate"),
        ({"nominal_rate": D("2.01")}, "nominal_rate"),
        ({"nominal_rate": D("NaN")}, "nominal_rate"),
        ({"upfront_fee": D(-1)}, "upfront_fee"),
        ({"upfront_fee": D(1000)}, "upfront_fee"),
        ({"periodic_fee": D("-0.01")}, "periodic_fee"),
        ({"profile": "balloon"}, "profile"),
        ({"profile": "revenue_share"}, "revenue_share"),
        (
            {"profile": "revenue_share", "revenue_share": D("0.1"), "repayment_cap": D("1.2")},
            "expected_monthly_revenue",
        ),
        (
            {"profile": "revenue_share", "revenue_share": D(0), **{"repayment_cap": D("1.2")}},
            "revenue_share",
        ),
        (
            {"profile": "revenue_share", "revenue_share": D("1.1"), "repayment_cap": D("1.2")},
            "revenue_share",
        ),
        (
            {"profile": "revenue_share", "revenue_share": D("0.1"), "repayment_cap": D("0.9")},
            "repayment_cap",
        ),
        (
            {
                "profile": "revenue_share",
                "revenue_share": D("0.1"),
                "repayment_cap": D("1.2"),
                "expected_monthly_revenue": D(0),
            },
            "expected_monthly_revenue",
        ),
    ],
)
def test_absurd_terms_are_refused_naming_the_field(changes: dict, field: str) -> None:
    values = {**VALID, **changes}
    if values.get("profile") == "revenue_share" and field != "expected_monthly_revenue":
        values.setdefault("expected_monthly_revenue", D(5000))
    with pytest.raises(TermsError) as err:
        schedule(OfferTerms(**values))
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")
    assert "\n" not in str(err.value)


def test_check_terms_normalises_numbers() -> None:
    checked = check_terms(OfferTerms(amount=1000, term_months=12, nominal_rate=0.1, upfront_fee=5))
    assert checked == OfferTerms(
        amount=D("1000.00"),
        term_months=12,
        nominal_rate=D("0.1"),
        upfront_fee=D("5.00"),
        periodic_fee=D("0.00"),
    )


money = st.decimals(min_value=D("1000.00"), max_value=D("1000000.00"), places=2)
fees = st.decimals(min_value=D(0), max_value=D("500.00"), places=2)
rates = st.decimals(min_value=D(0), max_value=D("0.6"), places=4)
terms_st = st.builds(
    OfferTerms,
    amount=money,
    term_months=st.integers(1, 360),
    nominal_rate=rates,
    upfront_fee=fees,
    periodic_fee=st.decimals(min_value=D(0), max_value=D("20.00"), places=2),
    profile=st.sampled_from(PROFILES),
    revenue_share=st.decimals(min_value=D("0.01"), max_value=D(1), places=2),
    repayment_cap=st.decimals(min_value=D(1), max_value=D("2.5"), places=2),
    expected_monthly_revenue=st.decimals(min_value=D("1000"), max_value=D("5000000"), places=2),
)


@settings(max_examples=150, deadline=None)
@given(terms_st)
def test_schedule_repays_exactly_amount_plus_cost(terms: OfferTerms) -> None:
    s = schedule(terms)
    assert sum((i.principal for i in s.instalments), D(0)) == terms.amount
    assert s.total_repayable == terms.amount + s.total_cost
    assert s.total_repayable == terms.upfront_fee + sum((i.payment for i in s.instalments), D(0))
    assert s.instalments[-1].balance == 0
    assert len(s.instalments) <= terms.term_months
    for i in s.instalments:
        assert isinstance(i, Instalment)
        assert i.payment == i.principal + i.interest + i.fee
        assert i.principal >= 0
        assert i.interest >= 0
        assert i.payment == i.payment.quantize(D("0.01"))
    assert s.monthly_payment == s.instalments[0].payment


@settings(max_examples=150, deadline=None)
@given(
    amount=money,
    payments=st.lists(
        st.tuples(
            st.decimals(min_value=D("1.00"), max_value=D("50000.00"), places=2),
            st.decimals(min_value=D(0), max_value=D("1000.00"), places=2),
        ),
        min_size=1,
        max_size=60,
    ),
)
def test_lower_cost_at_the_same_timing_never_shows_a_higher_apr(amount: D, payments: list) -> None:
    # Same amount, same payment dates; every payment of the cheaper offer is at most the other's.
    dearer = [(m / 12, p + extra) for m, (p, extra) in enumerate(payments, start=1)]
    cheaper = [(m / 12, p) for m, (p, _) in enumerate(payments, start=1)]
    assert apr([(0.0, amount)], cheaper) <= apr([(0.0, amount)], dearer)


@settings(max_examples=100, deadline=None)
@given(base=terms_st, lower_upfront=fees, lower_periodic=fees)
def test_cheaper_offer_of_the_same_shape_never_shows_a_higher_apr(
    base: OfferTerms, lower_upfront: D, lower_periodic: D
) -> None:
    # Same amount, term, profile and rate: only fees are lowered, so every payment date is the
    # same and no payment of the cheaper offer is higher.
    base = check_terms(base)
    cheaper = replace(
        base,
        upfront_fee=min(lower_upfront, base.upfront_fee),
        periodic_fee=min(lower_periodic, base.periodic_fee),
    )
    a, b = schedule(base), schedule(cheaper)
    assert [i.month for i in a.instalments] == [i.month for i in b.instalments]
    assert b.total_cost <= a.total_cost
    assert b.apr <= a.apr


@settings(max_examples=150, deadline=None)
@given(
    amount=st.decimals(min_value=D("10000.00"), max_value=D("10000000.00"), places=2),
    term=st.integers(1, 360),
    rate=st.decimals(min_value=D(0), max_value=D("0.6"), places=4),
)
def test_fee_free_annuity_apr_is_the_effective_annual_rate(amount: D, term: int, rate: D) -> None:
    s = schedule(OfferTerms(amount=amount, term_months=term, nominal_rate=rate))
    effective = (1 + float(rate) / 12) ** 12 - 1
    draws = [(0.0, amount)]
    repayments = [(i.month / 12, i.payment) for i in s.instalments]
    # Cent rounding of the instalments moves the exact root by at most 1e-5 from 10,000 up, so
    # the 4-dp APR is the 4-dp effective rate unless that lies within 1e-5 of a rounding boundary.
    exact = apr_exact(draws, repayments)
    assert abs(exact - effective) < 1e-5
    if abs((effective * 1e4) % 1 - 0.5) > 0.1:
        assert s.apr == D(repr(effective)).quantize(D("0.0001"))
