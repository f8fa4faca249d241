"""The public disclosure report (``dossier disclose --out DIR``): static HTML a lender or regulator reads
without our code.

One page, ``index.html``, plus the calibration plot copied to ``artifacts/`` beside it (where the
model card links it from). It holds, from the artifact and
the warehouse as they are when it is built:

- the model card (``evaluation/MODEL_CARD.md``, rendered from Markdown; raw HTML in it is escaped);
- the held-out metrics with their baselines, the calibration table (mean PD against the observed
  bankrupt rate per bin) and the PD bands that turn a PD into a grade;
- the grade distribution and the coverage of the latest published dossiers;
- the population stability (PSI) written by that publish (:mod:`dossier.monitoring`);
- the suspended field agents and the market section, when the modules that provide them are present;
- how every dossier column is computed (the descriptions of :mod:`warehouse.dossier_schema`).

No JavaScript: tables have captions and header cells, and the plot has a text alternative (the
calibration table itself).
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup

TEMPLATES = Path(__file__).parent / "templates"
GRADES = ("A", "B", "C", "D", "E")
COVERAGE_BANDS = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0001))
"""Coverage bands of the report: ``[from, below)``; the last one includes 1."""


def render_markdown(text: str) -> Markup:
    """Markdown (CommonMark and tables) as HTML; raw HTML in the source is escaped, not passed through.

    >>> str(render_markdown("# Card\\n\\n| a |\\n|---|\\n| <b>1</b> |"))
    '<h1>Card</h1>\\n<table>\\n<thead>\\n<tr>\\n<th>a</th>\\n</tr>\\n</thead>\\n<tbody>\\n<tr>\\n<td>&lt;b&gt;1&lt;/b&gt;</td>\\n</tr>\\n</tbody>\\n</table>\\n'
    """
    return Markup(MarkdownIt("commonmark", {"html": False}).enable("table").render(text))


def published_summary(frame: Any) -> dict[str, Any]:
    """Grade distribution, coverage bands and sources of a frame of published dossier rows.

    >>> import pandas as pd
    >>> rows = pd.DataFrame({"grade": ["A", "C", "C"], "coverage": [1.0, 0.5, 0.2],
    ...                      "sources_used": [["accounting", "tax"], ["tax"], ["tax"]]})
    >>> s = published_summary(rows)
    >>> s["grades"], s["coverage_bands"], s["sources"], s["coverage_mean"]
    ({'A': 1, 'B': 0, 'C': 2, 'D': 0, 'E': 0}, [('0.00–0.25', 1), ('0.25–0.50', 0), ('0.50–0.75', 1), ('0.75–1.00', 1)], {'tax': 3, 'accounting': 1}, 0.5667)
    """
    grades = Counter(frame["grade"].dropna())
    coverage = frame["coverage"].dropna()
    bands = [
        (f"{low:.2f}–{min(high, 1.0):.2f}", int(((coverage >= low) & (coverage < high)).sum()))
        for low, high in COVERAGE_BANDS
    ]
    sources = Counter(source for used in frame["sources_used"] for source in used)
    return {
        "rows": len(frame),
        "grades": {g: grades.get(g, 0) for g in GRADES},
        "coverage_bands": bands,
        "coverage_mean": round(float(coverage.mean()), 4) if len(coverage) else None,
        "sources": dict(sources.most_common()),
    }


def _suspended_agents() -> list[dict[str, Any]]:
    """The field agents suspended now (``warehouse.agents.suspended_agents``)."""
    from warehouse.agents import suspended_agents
    from warehouse.db import session_scope

    with session_scope() as session:
        return suspended_agents(session)


def _market(stats: dict[str, Any] | None) -> Markup | None:
    """The market section: ``evaluation.market.market_section`` of the figures given (an HTML fragment
    whose every value it escapes), or None without figures."""
    if stats is None:
        return None
    from evaluation.market import market_section

    return Markup(market_section(stats))


def market_figures() -> dict[str, Any] | None:
    """:func:`evaluation.market.market_stats` of the warehouse's offers and delivered dossiers, or
    None when no lender has posted an offer."""
    from evaluation.market import market_stats
    from warehouse.db import session_scope
    from warehouse.offers import market_frames

    with session_scope() as session:
        offers, dossiers = market_frames(session)
    return market_stats(offers, dossiers) if len(offers) else None


def build(
    out: Path,
    *,
    as_of: dt.date | None = None,
    now: dt.datetime | None = None,
    market: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the report into ``out`` (created if needed); returns what it holds.

    ``market`` is the offers market's figures (``evaluation.market.market_stats`` of the offers
    lenders posted and the dossiers delivered); by default they are read from the warehouse
    (:func:`market_figures`), and with no offer posted the market section says so.

    ``as_of`` picks the publish to describe; by default the latest with a complete manifest. With no
    publish at all the dossier sections say so and the model sections are still written.
    """
    from dossier.monitoring import read_stability
    from evaluation.statement_model import default_statement_model
    from warehouse.db import session_scope
    from warehouse.dossier_schema import ALL_COLUMNS, SCHEMA_VERSION
    from warehouse.dossier_store import published_dates, read_as_of
    from warehouse.storage import Store

    model = default_statement_model()
    meta = model.meta
    store = Store.from_settings()
    dates = [dt.date.fromisoformat(d) for d in published_dates(store)]
    frame = None
    described = as_of
    with session_scope() as session:  # a date's dossiers: its new versions and those it kept
        for day in [as_of] if as_of else sorted(dates, reverse=True):
            rows = read_as_of(session, store, day)
            if len(rows):
                frame, described = rows, day
                break
    summary = published_summary(frame) if frame is not None else None
    psi = read_stability(store, described) if described else None

    out.mkdir(parents=True, exist_ok=True)
    artifacts = Path(__import__("evaluation").__file__).parent
    card = (artifacts / "MODEL_CARD.md").read_text(encoding="utf-8")
    plot = artifacts / "artifacts" / f"{model.version}-calibration.png"
    plot_name = None
    if plot.exists():  # at the path the card links it from, relative to the card
        plot_name = f"artifacts/{plot.name}"
        (out / "artifacts").mkdir(exist_ok=True)
        shutil.copyfile(plot, out / plot_name)
    context = {
        "generated_at": (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M UTC"),
        "model_version": model.version,
        "schema_version": SCHEMA_VERSION,
        "card": render_markdown(card),
        "held_out": meta["held_out"],
        "held_out_data": meta["data"],
        "calibration": meta["calibration"],
        "calibration_curve": meta["calibration_curve"],
        "bands": meta["bands"],
        "plot": plot_name,
        "as_of": described.isoformat() if described and frame is not None else None,
        "summary": summary,
        "psi": psi,
        "agents": _suspended_agents(),
        "market": _market(market if market is not None else market_figures()),
        "columns": [
            {"name": c.name, "type": str(c.type), "nullable": c.nullable, "description": c.description}
            for c in ALL_COLUMNS
        ],
    }
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(("html",)),
        keep_trailing_newline=True,
    )
    page = out / "index.html"
    page.write_text(env.get_template("disclosure.html").render(**context), encoding="utf-8")
    return {
        "page": str(page),
        "plot": str(out / plot_name) if plot_name else None,
        "model_version": model.version,
        "as_of": context["as_of"],
        "dossiers": summary["rows"] if summary else 0,
        "psi": bool(psi),
        "agents": context["agents"] is not None,
        "market": context["market"] is not None,
    }


__all__ = ["COVERAGE_BANDS", "GRADES", "build", "published_summary", "render_markdown"]
