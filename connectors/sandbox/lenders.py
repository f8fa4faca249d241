"""Sandbox lenders: automatic offers on the dossiers delivered to them, over the lender API.

A :class:`LenderPolicy` is how one lender prices: its **risk appetite** (the highest 12-month PD
and the worst grade it lends to), its **funding cost** and **margin**, the **loss given default**
it assumes, its **fees**, the **repayment profile** and **term** it prefers, and the **share of
the dossier's credit_limit** it is willing to lend. :func:`quote` turns a policy and a dossier row
into the body of ``POST /v1/offers`` (or ``None``: the lender passes); it is pure.

The nominal rate a policy asks is ``funding_cost + margin + pd_12m x lgd`` (the expected loss per
year), rounded to 4 decimals and capped at ``max_rate``. The amount is ``limit_share x
credit_limit`` rounded down to the policy's ``step``; under ``min_amount`` the lender passes. A
revenue-share policy asks no interest: it takes ``revenue_share`` of the SME's monthly revenue
until ``1 + funding_cost + margin + pd_12m x lgd`` times the amount (its cap, 2 decimals) is
repaid -- the API computes the schedule and APR from the dossier's own monthly revenue.

:func:`answer_feed` is the lender's side of the wire: it reads ``GET /v1/offers`` (every page) to
know which dossier versions it already answered, reads ``GET /v1/feed`` from the start (a version
withdrawn later in the feed is not answered), and posts one offer per new version it is willing to
price. Re-running it posts nothing twice: the answered versions are read back from the API, not
from local state. Only ``requests`` and the base URL and API key are needed; this module does not
know the broker's warehouse.

>>> row = {"dossier_id": "d1", "grade": "B", "pd_12m": 0.02, "credit_limit": 40000.0,
...        "currency": "GBP", "revenue_12m": 240000.0}
>>> body = quote(POLICIES["sandbox-bank"], row, today=dt.date(2026, 1, 5))
>>> body["amount"], body["nominal_rate"], body["term_months"], body["valid_until"]
('30000', '0.0740', 36, '2026-02-04')
>>> quote(POLICIES["sandbox-bank"], {**row, "grade": "D", "pd_12m": 0.10}, today=dt.date(2026, 1, 5)) is None
True
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any

import requests

GRADES = ("A", "B", "C", "D", "E")
"""Best first, as the dossier's ``grade``."""

TIMEOUT = 30.0
"""Seconds a request to the lender API may take (connect and read)."""

RATE_LIMIT_WAITS = 5
"""How many 429 answers in a row a request waits out (each its ``Retry-After``, at most a minute)."""


class LenderClientError(RuntimeError):
    """The lender API could not be reached or refused a read (the message says which and why)."""


@dataclass(frozen=True)
class LenderPolicy:
    """How one sandbox lender prices a dossier (see the module docstring for the formulas)."""

    lender_id: str
    name: str
    max_pd: float
    min_grade: str
    funding_cost: Decimal
    margin: Decimal
    lgd: Decimal
    term_months: int
    profile: str = "annuity"
    limit_share: Decimal = Decimal("1")
    upfront_fee_rate: Decimal = Decimal("0")
    periodic_fee: Decimal = Decimal("0")
    revenue_share: Decimal | None = None
    step: Decimal = Decimal("500")
    min_amount: Decimal = Decimal("1000")
    max_rate: Decimal = Decimal("0.60")
    validity_days: int = 30
    conditions: str = ""

    def __post_init__(self) -> None:
        if self.min_grade not in GRADES:
            raise ValueError(
                f"{self.lender_id}: min_grade {self.min_grade!r} is not one of {', '.join(GRADES)}"
            )
        if self.profile == "revenue_share" and not self.revenue_share:
            raise ValueError(f"{self.lender_id}: a revenue_share policy needs revenue_share")


POLICIES: dict[str, LenderPolicy] = {
    p.lender_id: p
    for p in (
        LenderPolicy(
            lender_id="sandbox-bank",
            name="Sandbox Bank (cautious)",
            max_pd=0.05,
            min_grade="C",
            funding_cost=Decimal("0.035"),
            margin=Decimal("0.030"),
            lgd=Decimal("0.45"),
            term_months=36,
            limit_share=Decimal("0.75"),
            upfront_fee_rate=Decimal("0.01"),
            conditions="Personal guarantee of a director; annual accounts within 9 months of year end.",
        ),
        LenderPolicy(
            lender_id="sandbox-fintech",
            name="Sandbox Fintech (fast, wider appetite)",
            max_pd=0.15,
            min_grade="D",
            funding_cost=Decimal("0.060"),
            margin=Decimal("0.050"),
            lgd=Decimal("0.60"),
            term_months=12,
            limit_share=Decimal("1"),
            upfront_fee_rate=Decimal("0.02"),
            periodic_fee=Decimal("10"),
            conditions="Open-banking connection kept live for the term.",
        ),
        LenderPolicy(
            lender_id="sandbox-revshare",
            name="Sandbox Revenue Partners (revenue share)",
            max_pd=0.10,
            min_grade="D",
            funding_cost=Decimal("0.050"),
            margin=Decimal("0.070"),
            lgd=Decimal("0.50"),
            term_months=24,
            profile="revenue_share",
            limit_share=Decimal("0.5"),
            revenue_share=Decimal("0.08"),
            conditions="Card and bank receipts reported monthly.",
        ),
    )
}
"""The demo's three lenders: a cautious bank, a fintech and a revenue-share lender."""

SEEDED_POLICIES: dict[str, str] = {
    "northwind-capital": "sandbox-bank",
    "harbor-credit": "sandbox-fintech",
    "kestrel-finance": "sandbox-revshare",
}
"""The policy (a key of :data:`POLICIES`) each lender the sandbox seeds
(``connectors.sandbox.seed.LENDERS``) prices with in the demo."""


def _number(row: Mapping[str, Any], field: str) -> float | None:
    value = row.get(field)
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def quote(policy: LenderPolicy, dossier_row: Mapping[str, Any], *, today: dt.date) -> dict[str, Any] | None:
    """The offer body ``policy`` posts on ``dossier_row`` (the dossier's columns), or ``None`` when
    the dossier is outside its appetite (PD above ``max_pd``, grade worse than ``min_grade``), has no
    credit limit, prices above ``max_rate``, comes to less than ``min_amount``, or, for revenue
    share, shows no revenue. ``today`` dates the offer's validity (``validity_days`` later)."""
    pd_12m = _number(dossier_row, "pd_12m")
    limit = _number(dossier_row, "credit_limit")
    grade = dossier_row.get("grade")
    if pd_12m is None or limit is None or grade not in GRADES:
        return None
    if pd_12m > policy.max_pd or GRADES.index(grade) > GRADES.index(policy.min_grade):
        return None
    amount = (Decimal(str(limit)) * policy.limit_share / policy.step).to_integral_value(
        ROUND_FLOOR
    ) * policy.step
    if amount < policy.min_amount:
        return None
    price = policy.funding_cost + policy.margin + Decimal(str(pd_12m)) * policy.lgd
    body: dict[str, Any] = {
        "dossier_id": str(dossier_row["dossier_id"]),
        "amount": str(amount),
        "currency": str(dossier_row.get("currency") or "GBP"),
        "term_months": policy.term_months,
        "upfront_fee": str((amount * policy.upfront_fee_rate).quantize(Decimal("0.01"), ROUND_HALF_UP)),
        "periodic_fee": str(policy.periodic_fee),
        "profile": policy.profile,
        "conditions": policy.conditions,
        "valid_until": (today + dt.timedelta(days=policy.validity_days)).isoformat(),
    }
    if policy.profile == "revenue_share":
        revenue = _number(dossier_row, "revenue_12m")
        if revenue is None or revenue <= 0:
            return None
        body["nominal_rate"] = "0"
        body["revenue_share"] = str(policy.revenue_share)
        body["repayment_cap"] = str((1 + price).quantize(Decimal("0.01"), ROUND_HALF_UP))
        return body
    rate = price.quantize(Decimal("0.0001"), ROUND_HALF_UP)
    if rate > policy.max_rate:
        return None
    body["nominal_rate"] = str(rate)
    return body


def _problem(answer: requests.Response) -> str:
    try:
        problem = answer.json()
    except ValueError:
        return answer.text.strip()[:200]
    if not isinstance(problem, dict):
        return str(problem)[:200]
    fields = [e.get("field") for e in problem.get("errors") or [] if isinstance(e, dict) and e.get("field")]
    detail = str(problem.get("detail") or problem.get("title") or answer.reason)
    return f"{detail} (field {', '.join(fields)})" if fields else detail


def _send(
    session: requests.Session, method: str, url: str, sleep: Callable[[float], None], **kwargs: Any
) -> requests.Response:
    """One request, waiting out 429s as their ``Retry-After`` says."""
    for waited in range(RATE_LIMIT_WAITS + 1):
        try:
            answer = session.request(method, url, timeout=TIMEOUT, **kwargs)
        except requests.RequestException as error:
            raise LenderClientError(
                f"cannot reach the lender API at {url} ({type(error).__name__})"
            ) from None
        if answer.status_code != 429 or waited == RATE_LIMIT_WAITS:
            return answer
        try:
            wait = min(max(float(answer.headers.get("Retry-After", "1")), 0.0), 60.0)
        except ValueError:
            wait = 1.0
        sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def _read(
    session: requests.Session, url: str, sleep: Callable[[float], None], **params: Any
) -> requests.Response:
    answer = _send(session, "GET", url, sleep, params=params)
    if answer.status_code != 200:
        raise LenderClientError(f"the lender API at {url} answered {answer.status_code}: {_problem(answer)}")
    return answer


def offered_versions(
    session: requests.Session, base_url: str, *, sleep: Callable[[float], None] = time.sleep
) -> set[str]:
    """The dossier versions this lender has an offer on, in any status (``GET /v1/offers``, every page)."""
    found: set[str] = set()
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        answer = _read(session, f"{base_url}/v1/offers", sleep, **params)
        found.update(str(o["dossier_id"]) for o in answer.json())
        cursor = answer.headers.get("Next-Cursor")
        if not cursor:
            return found


def held_versions(
    session: requests.Session, base_url: str, *, sleep: Callable[[float], None] = time.sleep
) -> Iterator[dict[str, Any]]:
    """The dossier rows delivered to this lender and not withdrawn since, in feed order (``GET /v1/feed``
    from its start)."""
    held: dict[str, dict[str, Any]] = {}
    cursor = ""
    while True:
        page = _read(session, f"{base_url}/v1/feed", sleep, cursor=cursor, limit=500).json()
        for event in page["events"]:
            if event["event"] == "delivered" and event.get("dossier"):
                held[event["dossier_id"]] = event["dossier"]
            elif event["event"] == "withdrawn":
                held.pop(event["dossier_id"], None)
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    yield from held.values()


def answer_feed(
    base_url: str,
    api_key: str,
    policy: LenderPolicy,
    *,
    today: dt.date | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Post ``policy``'s offer on every held dossier version it has not answered yet; a summary back:
    ``lender_id``, ``held`` (versions held), ``already`` (answered before), ``passed`` (outside the
    policy), ``posted`` (the new offers' views, as the API returned them) and ``refused`` (``[dossier_id,
    reason]`` for offers the API turned down, e.g. a version withdrawn meanwhile)."""
    base_url = base_url.rstrip("/")
    today = today or dt.datetime.now(dt.UTC).date()
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api_key}"
    lender_id = _read(session, f"{base_url}/v1/lender", sleep).json()["lender_id"]
    already = offered_versions(session, base_url, sleep=sleep)
    summary: dict[str, Any] = {
        "lender_id": lender_id,
        "held": 0,
        "already": 0,
        "passed": 0,
        "posted": [],
        "refused": [],
    }
    for row in held_versions(session, base_url, sleep=sleep):
        summary["held"] += 1
        if str(row["dossier_id"]) in already:
            summary["already"] += 1
            continue
        body = quote(policy, row, today=today)
        if body is None:
            summary["passed"] += 1
            continue
        answer = _send(session, "POST", f"{base_url}/v1/offers", sleep, json=body)
        if answer.status_code == 201:
            summary["posted"].append(answer.json())
            already.add(body["dossier_id"])
        elif answer.status_code in (404, 409, 422):
            summary["refused"].append([body["dossier_id"], _problem(answer)])
        else:
            raise LenderClientError(
                f"the lender API at {base_url}/v1/offers answered {answer.status_code}: {_problem(answer)}"
            )
    return summary
