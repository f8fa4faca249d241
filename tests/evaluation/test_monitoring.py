"""PSI against the artifact's training reference, and cross-source triangulation, on hand-made rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from evaluation.monitoring import add_counts, bin_counts, stability, verdict
from evaluation.statement_model import RATIOS, default_statement_model
from evaluation.triangulation import consistency


def _reference() -> dict:
    return default_statement_model().meta["reference"]["psi"]


def test_a_population_drawn_like_the_reference_is_stable_and_a_shifted_one_is_not() -> None:
    reference = _reference()
    edges = reference["attr1"]["edges"]
    generator = np.random.default_rng(3)
    # Draw values bin by bin in the reference shares: the same distribution, by construction.
    bins = generator.choice(
        len(edges) + 1,
        size=20_000,
        p=np.array(reference["attr1"]["shares"]) / sum(reference["attr1"]["shares"]),
    )
    lower = np.array([edges[0] - 1.0, *edges])
    upper = np.array([*edges, edges[-1] + 1.0])
    like = lower[bins] + (upper[bins] - lower[bins]) * generator.uniform(0.01, 0.99, size=len(bins))
    shifted = like - 0.5

    psi = stability(bin_counts(pd.DataFrame({"attr1": like}), reference), reference)["attr1"]
    moved = stability(bin_counts(pd.DataFrame({"attr1": shifted}), reference), reference)["attr1"]

    assert psi < 0.01
    assert verdict(psi) == "stable"
    assert moved > 0.25
    assert verdict(moved) == "shifted"


def test_counts_of_shards_add_up_to_the_counts_of_the_whole() -> None:
    reference = _reference()
    frame = pd.DataFrame(
        {r.attr: np.linspace(-1, 3, 101) for r in RATIOS} | {"pd_12m": np.linspace(0, 1, 101)}
    )
    frame.loc[::7, "attr21"] = np.nan

    whole = bin_counts(frame, reference)
    parts = add_counts([bin_counts(frame.iloc[:40], reference), bin_counts(frame.iloc[40:], reference)])

    assert parts == whole
    assert set(whole) == {r.attr for r in RATIOS} | {"pd_12m"}
    assert all(sum(counts) == 101 for counts in whole.values())
    assert whole["attr21"][-1] == 15
    assert stability({"attr1": [0] * len(whole["attr1"])}, reference) == {"attr1": None}


def test_consistency_scores_each_comparison_and_names_the_side_that_is_higher() -> None:
    features = pd.DataFrame(
        {
            "vat_books_revenue_ratio": [1.0, 0.7, 1.3, np.nan, np.nan, 0.0],
            "utility_books_revenue_ratio": [1.0, 0.5, np.nan, 0.9, np.nan, np.nan],
            "survey_revenue_ratio": [1.1, np.nan, np.nan, 3.0, np.nan, np.nan],
        }
    )

    result = consistency(features)

    vat_badness = (np.log(1.3) - np.log(1 / 0.92)) / (np.log(1 / 0.75) - np.log(1 / 0.92))
    survey_badness = 1.0  # 3.0 is beyond the limit of 2.5
    assert result["consistency_score"].tolist()[:3] == pytest.approx([1.0, 0.0, round(1 - vat_badness, 4)])
    assert result["consistency_score"].iloc[3] == pytest.approx(1 - survey_badness / 2)
    assert np.isnan(result["consistency_score"].iloc[4])
    assert result["consistency_score"].iloc[5] == 0.0  # VAT declared nothing against booked revenue
    assert [list(c) for c in result["discrepancy_codes"]] == [
        [],
        ["BOOKS_ABOVE_VAT", "BOOKS_GROWTH_ABOVE_USAGE"],
        ["BOOKS_BELOW_VAT"],
        ["BOOKS_BELOW_SURVEY"],
        [],
        ["BOOKS_ABOVE_VAT"],
    ]


def test_the_publish_step_reads_the_reference_without_importing_lightgbm(tmp_path) -> None:
    """Publishing computes PSI against the artifact's reference from its JSON alone: the same
    reference the loaded model holds, and no LightGBM (nor scikit-learn) in the publishing process."""
    import subprocess
    import sys

    script = (
        "import sys, datetime, json\n"
        "from dossier.monitoring import publish_stability\n"
        "from warehouse.storage import Store\n"
        f"result = publish_stability(Store({str(tmp_path)!r}), datetime.date(2026, 11, 1))\n"
        "from evaluation.statement_model import default_metadata\n"
        "print(json.dumps(default_metadata()['reference']['psi'], sort_keys=True))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightgbm', 'sklearn')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    reference, modules = done.stdout.strip().splitlines()
    assert modules == "[]"
    assert json.loads(reference) == _reference()
