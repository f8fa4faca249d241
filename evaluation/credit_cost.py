"""Credit cost and APR: the like-for-like comparison of loan offers (pure functions).

An offer is written down as :class:`OfferTerms`; :func:`check_terms` refuses absurd values with the
offending field named (:class:`TermsError`), :func:`schedule` turns the terms into the month-by-month
repayment :class:`Schedule` and :func:`apr` solves the annual percentage rate equation of the EU
Consumer Credit Directive (2008/48/EC Annex I, 2023/2225 Annex III)::

    sum_k  C_k (1 + X)^(-t_k)  =  sum_l  D_l (1 + X)^(-s_l)

where ``C_k`` are the drawdowns at ``t_k`` years after the first drawdown, ``D_l`` the repayments
(instalments and charges) at ``s_l`` years, and ``X`` the APR. Months are counted as 1/12 year
(Annex I, part I, remark (c) of 2008/48/EC). ``evaluation/APR.md`` writes down every
assumption, the rounding rule and a worked example that the tests check against this code.

Money is :class:`~decimal.Decimal`, rounded to cents per instalment (half up); the last
instalment absorbs the rounding, so principal sums to ``amount`` exactly and payments sum to
``total_repayable`` exactly.

>>> s = schedule(OfferTerms(amount=Decimal("1000"), term_months=12, nominal_rate=Decimal("0.12")))
>>> s.monthly_payment, s.total_cost, s.apr
(Decimal('88.85'), Decimal('66.19'), Decimal('0.1268'))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext

PROFILES = ("annuity", "equal_principal", "bullet", "revenue_share")
"""Repayment profiles :func:`schedule` knows (see ``evaluation/APR.md``)."""

CENT = Decimal("0.01")
APR_QUANTUM = Decimal("0.0001")
MAX_AMOUNT = Decimal("100000000")
MAX_TERM_MONTHS = 360
MAX_NOMINAL_RATE = Decimal("2.0")

_ZERO = Decimal(0)


class TermsError(ValueError):
    """Offer terms refused; :attr:`field` names the offending :class:`OfferTerms` field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class OfferTerms:
    """What a lender offers, in the units :func:`schedule` needs.

    ``nominal_rate`` is the annual nominal rate as a fraction; a month's interest is
    ``nominal_rate / 12`` of the outstanding balance. For ``revenue_share`` the cost is fixed by
    ``repayment_cap`` instead and ``nominal_rate`` is not used (it must still be valid).
    """

    amount: Decimal
    term_months: int
    nominal_rate: Decimal
    upfront_fee: Decimal = _ZERO
    periodic_fee: Decimal = _ZERO
    profile: str = "annuity"
    revenue_share: Decimal | None = None
    repayment_cap: Decimal | None = None
    expected_monthly_revenue: Decimal | None = None


@dataclass(frozen=True)
class Instalment:
    """One monthly instalment: ``payment = principal + interest + fee``; ``balance`` is the
    principal still outstanding after it."""

    month: int
    principal: Decimal
    interest: Decimal
    fee: Decimal
    payment: Decimal
    balance: Decimal


@dataclass(frozen=True)
class Schedule:
    """The repayment schedule of an offer and the numbers a person compares."""

    instalments: tuple[Instalment, ...]
    total_repayable: Decimal
    """Sum of every payment, fees included (the upfront fee too)."""
    total_cost: Decimal
    """``total_repayable - amount``: the total cost of credit."""
    monthly_payment: Decimal
    """The first regular instalment."""
    apr: Decimal
    """Annual percentage rate as a fraction, rounded to 4 dp (``0.1268`` is 12.68 %)."""


_MONEY_FIELDS = ("amount", "nominal_rate", "upfront_fee", "periodic_fee")
_OPTIONAL_FIELDS = ("revenue_share", "repayment_cap", "expected_monthly_revenue")


def _decimal(field: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, str, float)):
        raise TermsError(field, f"must be a number, got {value!r}")
    try:
        number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise TermsError(field, f"must be a number, got {value!r}") from None
    if not number.is_finite():
        raise TermsError(field, f"must be a finite number, got {value!r}")
    return number


def check_terms(terms: OfferTerms) -> OfferTerms:
    """Return ``terms`` with every number as :class:`~decimal.Decimal`, or raise :class:`TermsError`.

    Refused: ``amount`` not in (0, 100M]; ``term_months`` not an integer in 1..360;
    ``nominal_rate`` outside [0, 2.0]; a negative fee; an upfront fee not below the amount; an amount or fee in fractions of a cent; an unknown ``profile``; and for
    ``revenue_share``: a missing revenue assumption, ``revenue_share`` outside (0, 1],
    ``repayment_cap`` below 1, ``expected_monthly_revenue`` not positive.

    >>> check_terms(OfferTerms(amount=Decimal(0), term_months=12, nominal_rate=Decimal("0.1")))
    Traceback (most recent call last):
    ...
    evaluation.credit_cost.TermsError: amount: must be positive, got 0
    """
    values = {f.name: getattr(terms, f.name) for f in fields(terms)}
    for name in _MONEY_FIELDS:
        values[name] = _decimal(name, values[name])
    for name in _OPTIONAL_FIELDS:
        if values[name] is not None:
            values[name] = _decimal(name, values[name])
    amount, rate = values["amount"], values["nominal_rate"]
    if amount <= 0:
        raise TermsError("amount", f"must be positive, got {amount}")
    if amount > MAX_AMOUNT:
        raise TermsError("amount", f"must be at most {MAX_AMOUNT}, got {amount}")
    term = values["term_months"]
    if isinstance(term, bool) or not isinstance(term, int):
        raise TermsError("term_months", f"must be a whole number of months, got {term!r}")
    if not 1 <= term <= MAX_TERM_MONTHS:
        raise TermsError("term_months", f"must be between 1 and {MAX_TERM_MONTHS}, got {term}")
    if not _ZERO <= rate <= MAX_NOMINAL_RATE:
        raise TermsError("nominal_rate", f"must be between 0 and {MAX_NOMINAL_RATE}, got {rate}")
    for name in ("upfront_fee", "periodic_fee"):
        if values[name] < 0:
            raise TermsError(name, f"must not be negative, got {values[name]}")
    if values["upfront_fee"] >= amount:
        raise TermsError("upfront_fee", f"must be less than amount {amount}, got {values['upfront_fee']}")
    for name in ("amount", "upfront_fee", "periodic_fee"):
        if values[name] != values[name].quantize(CENT):
            raise TermsError(name, f"must be a whole number of cents, got {values[name]}")
        values[name] = values[name].quantize(CENT)
    profile = values["profile"]
    if profile not in PROFILES:
        raise TermsError("profile", f"must be one of {', '.join(PROFILES)}, got {profile!r}")
    if profile == "revenue_share":
        for name in _OPTIONAL_FIELDS:
            if values[name] is None:
                raise TermsError(name, "is required for the revenue_share profile")
        share, cap = values["revenue_share"], values["repayment_cap"]
        revenue = values["expected_monthly_revenue"]
        if not _ZERO < share <= 1:
            raise TermsError("revenue_share", f"must be in (0, 1], got {share}")
        if cap < 1:
            raise TermsError("repayment_cap", f"must be at least 1 (times amount), got {cap}")
        if revenue <= 0:
            raise TermsError("expected_monthly_revenue", f"must be positive, got {revenue}")
        if (share * revenue).quantize(CENT, ROUND_HALF_UP) <= 0:
            raise TermsError("expected_monthly_revenue", "times revenue_share rounds to a zero payment")
    return replace(terms, **values)


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _annuity_payment(amount: Decimal, monthly_rate: Decimal, n: int) -> Decimal:
    if monthly_rate == 0:
        return _cents(amount / n)
    factor = (1 + monthly_rate) ** n
    return _cents(amount * monthly_rate * factor / (factor - 1))


def _interest_rows(t: OfferTerms) -> list[tuple[Decimal, Decimal]]:
    """(principal, interest) per month for the interest-bearing profiles."""
    r = t.nominal_rate / 12
    n = t.term_months
    balance = t.amount
    rows = []
    level = _annuity_payment(t.amount, r, n) if t.profile == "annuity" else _ZERO
    for month in range(1, n + 1):
        interest = _cents(balance * r)
        if month == n:
            principal = balance
        elif t.profile == "annuity":
            principal = min(max(level - interest, _ZERO), balance)
        elif t.profile == "equal_principal":
            principal = min(_cents(t.amount / n), balance)
        else:  # bullet
            principal = _cents(_ZERO)
        balance -= principal
        rows.append((principal, interest))
    return rows


def _revenue_share_rows(t: OfferTerms) -> list[tuple[Decimal, Decimal]]:
    """(principal, interest) per month for ``revenue_share``: a fixed total of cap * amount.

    Each month repays ``min(share * revenue, cap left)``, split between principal and cost in the
    proportion amount : (cap total - amount); if the term ends first, what is left is a balloon in
    the last month. The split is made on the running total (principal repaid so far is the
    cent-rounded share of everything paid so far), so its rounding never drifts by more than a
    cent, and the last payment repays whatever principal is left.
    """
    cap_total = _cents(t.amount * t.repayment_cap)
    monthly = _cents(t.revenue_share * t.expected_monthly_revenue)
    paid, principal_paid = _ZERO, _ZERO
    rows = []
    for month in range(1, t.term_months + 1):
        left = cap_total - paid
        pay = left if month == t.term_months else min(monthly, left)
        paid += pay
        if paid == cap_total:
            principal = t.amount - principal_paid
        else:
            share = _cents(paid * t.amount / cap_total) - principal_paid
            principal = max(min(share, pay, t.amount - principal_paid), _ZERO)
        rows.append((principal, pay - principal))
        principal_paid += principal
        if paid == cap_total:
            break
    return rows


def schedule(terms: OfferTerms) -> Schedule:
    """The month-by-month schedule, totals and APR of an offer (terms checked first).

    The upfront fee is paid at drawdown (t = 0) and counted in ``total_repayable``; it is not an
    instalment. ``periodic_fee`` is added to every instalment.
    """
    t = check_terms(terms)
    rows = _revenue_share_rows(t) if t.profile == "revenue_share" else _interest_rows(t)
    balance = t.amount
    instalments = []
    for month, (principal, interest) in enumerate(rows, start=1):
        balance -= principal
        payment = principal + interest + t.periodic_fee
        instalments.append(Instalment(month, principal, interest, t.periodic_fee, payment, balance))
    total = t.upfront_fee + sum((i.payment for i in instalments), _ZERO)
    rate = apr(
        [(0.0, t.amount)],
        [(0.0, t.upfront_fee)] + [(i.month / 12, i.payment) for i in instalments],
    )
    return Schedule(
        instalments=tuple(instalments),
        total_repayable=total,
        total_cost=total - t.amount,
        monthly_payment=instalments[0].payment,
        apr=rate,
    )


def apr_exact(draws: Sequence[tuple[float, Decimal]], repayments: Sequence[tuple[float, Decimal]]) -> float:
    """The root ``X`` of the APR equation, unrounded (see :func:`apr`)."""
    flows = [(float(time), -float(v)) for time, v in draws if v] + [
        (float(time), float(v)) for time, v in repayments if v
    ]
    for time, _ in flows:
        if not math.isfinite(time) or time < 0:
            raise ValueError(f"times must be finite and >= 0 years, got {time}")
    drawn = sum(-v for _, v in flows if v < 0)
    repaid = sum(v for _, v in flows if v > 0)
    if drawn <= 0 or repaid <= 0:
        raise ValueError("the APR needs at least one positive drawdown and one repayment")

    # f(y) = PV(repayments) - PV(draws) with y = ln(1 + X), so (1 + X)^-t = exp(-y t). Its sign is
    # that of exp(y t_ref) f(y) for any t_ref; taking t_ref = 0 for y >= 0 and the last time for
    # y < 0 keeps every exponent <= 0, so no term overflows however extreme the rate.
    last = max(time for time, _ in flows)

    def g(y: float) -> tuple[float, float]:
        ref = 0.0 if y >= 0 else last
        terms = [(time - ref, v * math.exp(-y * (time - ref))) for time, v in flows]
        return sum(w for _, w in terms), sum(-dt * w for dt, w in terms)

    # The bracket grows to y in [-4096, 700]: X from -1 + e^-4096 to e^700 - 1 (1e304, still a float).
    lo, hi = -1.0, 1.0
    for _ in range(13):
        if g(lo)[0] * g(hi)[0] <= 0:
            break
        lo, hi = lo * 2, min(hi * 2, 700.0)
    else:
        raise ValueError("the APR equation has no root for these cash flows")
    # Newton from the bracket's midpoint, falling back to bisection whenever a step leaves it.
    lo_positive = g(lo)[0] > 0
    y = (lo + hi) / 2
    for _ in range(300):
        gy, slope = g(y)
        if gy == 0:
            break
        if (gy > 0) == lo_positive:
            lo = y
        else:
            hi = y
        step = y - gy / slope if slope else math.nan
        previous, y = y, step if lo < step < hi else (lo + hi) / 2
        if min(hi - lo, abs(y - previous)) < 1e-14 * (1 + abs(y)):
            break
    return math.expm1(y)


def apr(draws: Sequence[tuple[float, Decimal]], repayments: Sequence[tuple[float, Decimal]]) -> Decimal:
    """Solve the APR equation; times in years from the first drawdown (a month is 1/12 year).

    ``draws`` and ``repayments`` are ``(years, amount)`` pairs; zero amounts are ignored. The
    result is a fraction rounded half up to 4 dp. Raises :class:`ValueError` for a negative or
    non-finite time, no positive drawdown or repayment, or flows with no root.

    >>> apr([(0.0, Decimal(1000))], [(1.0, Decimal(1100))])
    Decimal('0.1000')
    """
    x = apr_exact(draws, repayments)
    with localcontext() as ctx:
        ctx.prec = 400  # an absurd but finite APR (up to 1e304) still rounds to 4 dp
        return Decimal(repr(x)).quantize(APR_QUANTUM, rounding=ROUND_HALF_UP)
