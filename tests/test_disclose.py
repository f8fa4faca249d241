"""The disclosure report builds on a small published warehouse, every section with the real numbers.

Four SMEs of different soundness are published through the pipeline's own steps
(:mod:`published_world`); ``dossier disclose`` then writes the report, which is read back as HTML.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from published_world import AS_OF, publish_books

from dossier.cli import main
from dossier.disclose import published_summary
from dossier.monitoring import read_stability
from dossier.settings import for_home, override
from evaluation.statement_model import default_statement_model
from warehouse.agents import suspend, suspended_agents
from warehouse.db import make_engine, session_scope
from warehouse.dossier_schema import ALL_COLUMNS
from warehouse.dossier_store import read_published
from warehouse.storage import Store

MARGINS = {"SME-000001": 0.15, "SME-000002": 0.06, "SME-000003": -0.02, "SME-000004": -0.25}
"""Net margin of each SME's books: from sound to loss-making, so the grades differ."""


@pytest.fixture
def published(warehouse_url: str, tmp_path: Path) -> Iterator[Store]:
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, shard_count=1)
    engine = make_engine(warehouse_url)
    with override(settings):
        store = Store.from_settings()
        publish_books(engine, store, MARGINS, dict.fromkeys(MARGINS, "northwind"))
        yield store
    engine.dispose()


class Page(HTMLParser):
    """Section ids, table rows (cell texts) per section, image sources and any script tag."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, list[list[str]]] = {}
        self.section: str | None = None
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.images: list[dict[str, str | None]] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "section":
            self.section = found["id"]
            self.sections[self.section] = []
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th") and self.row is not None:
            self.cell = []
        elif tag == "img":
            self.images.append(found)
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "tr" and self.row is not None and self.section:
            self.sections[self.section].append(self.row)
            self.row = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def test_the_report_builds_with_every_section_and_the_published_numbers(
    published: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "public"
    with session_scope() as session:
        suspend(session, "agent_013", actor="operator", reason="copied surveys", sme_ids=["SME-1"])
    capsys.readouterr()
    assert main(["disclose", "--out", str(out)]) == 0
    model = default_statement_model()
    assert capsys.readouterr().out == (
        f"disclosure report for {model.version} (as-of {AS_OF}, 4 dossiers): {out / 'index.html'}\n"
    )
    text = (out / "index.html").read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    assert page.scripts == 0
    assert list(page.sections) == [
        "performance",
        "calibration",
        "bands",
        "published",
        "psi",
        "agents",
        "market",
        "columns",
        "card",
    ]
    meta = model.meta
    held = meta["held_out"]
    assert page.sections["performance"] == [["model", "ROC AUC", "Brier score", "log loss"]] + [
        [name.replace("_", " "), f"{m['roc_auc']:.4f}", f"{m['brier']:.4f}", f"{m['log_loss']:.4f}"]
        for name, m in held.items()
    ]
    plot = f"artifacts/{model.version}-calibration.png"
    assert [i["src"] for i in page.images] == [plot, plot]  # the section's and the card's
    assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.sections["calibration"][1:] == [
        [str(i), str(r["rows"]), f"{r['mean_pd'] * 100:.2f}%", f"{r['bankrupt_rate'] * 100:.2f}%"]
        for i, r in enumerate(meta["calibration_curve"], start=1)
    ]
    assert [row[0] for row in page.sections["bands"][1:]] == ["A", "B", "C", "D", "E"]
    assert page.sections["bands"][1] == [
        "A",
        "0.0%",
        "1.0%",
        str(meta["bands"][0]["rows"]),
        f"{meta['bands'][0]['mean_pd'] * 100:.2f}%",
        f"{meta['bands'][0]['bankrupt_rate'] * 100:.2f}%",
    ]

    frame = read_published(published, as_of=AS_OF)
    grades = Counter(frame["grade"])
    assert len(grades) >= 2, grades  # the books were made to differ
    rows = page.sections["published"]
    assert rows[1:6] == [[g, str(grades.get(g, 0)), f"{100 * grades.get(g, 0) / 4:.1f}%"] for g in "ABCDE"]
    summary = published_summary(frame)
    assert rows[7:11] == [[band, str(n)] for band, n in summary["coverage_bands"]]
    assert rows[12:] == [["accounting", "4"]]
    assert f"mean coverage {summary['coverage_mean']:.2f}" in text

    psi = read_stability(published, AS_OF)
    assert psi is not None
    assert psi["rows"] == 4
    assert page.sections["psi"][1:] == [
        [name, f"{value:.4f}" if value is not None else "n/a", psi["verdicts"][name]]
        for name, value in psi["psi"].items()
    ]
    assert page.sections["columns"][1:] == [
        [c.name, f"{c.type}{', may be empty' if c.nullable else ''}", " ".join(c.description.split())]
        for c in ALL_COLUMNS
    ]
    card = page.sections["card"]
    assert card, "the model card's tables are rendered as HTML tables"
    assert "<h1>Model card: <code>" + model.version + "</code></h1>" in text
    with session_scope() as session:
        agents = suspended_agents(session)
    assert [a["agent_id"] for a in agents] == ["agent_013"]
    assert page.sections["agents"][1:] == [[str(v) for v in a.values()] for a in agents]
    assert "No lender has posted an offer yet." in text


def test_without_a_publish_the_report_says_so_and_still_describes_the_model(
    home, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "public"
    assert main(["disclose", "--out", str(out)]) == 0
    text = (out / "index.html").read_text(encoding="utf-8")
    assert "No published dossiers yet." in text
    assert "No dossiers have been published yet." in text
    assert "No population stability was recorded." in text
    page = Page()
    page.feed(text)
    assert len(page.sections["performance"]) == 1 + len(default_statement_model().meta["held_out"])


def test_an_out_path_that_is_a_file_is_refused_in_one_line(
    home, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "report.html"
    target.write_text("x")
    capsys.readouterr()
    assert main(["disclose", "--out", str(target)]) == 2
    assert capsys.readouterr().err == f"dossier disclose: --out {target}: exists and is not a directory\n"
