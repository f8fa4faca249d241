"""The weight-of-evidence scorecard ``make train`` measures beside the trees is monotone in each
ratio's stated direction: in its fitted bins and in its score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation.statement_model import RATIO_BY_ATTR, RATIOS
from evaluation.train import (
    HELD_OUT_SHARE,
    SEED,
    Scorecard,
    mask_prior_years,
    monotonic_trends,
    prepared,
    read_labelled,
)

TRAINING_FILE = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "credit" / "polish_bankruptcy_1y_train.csv"
)


def assert_monotone_in_direction(scorecard: Scorecard, attr: str) -> None:
    """Bins low to high: bankruptcy rate and WoE follow the ratio's direction (WoE = ln(share of
    non-bankrupt / share of bankrupt), so it falls where the rate rises)."""
    bins = scorecard.bins(attr)
    rate, woe = bins["bankrupt_rate"].to_numpy(), bins["woe"].to_numpy()
    if RATIO_BY_ATTR[attr].direction > 0:
        assert (np.diff(rate) >= 0).all(), (attr, bins)
        assert (np.diff(woe) <= 1e-12).all(), (attr, bins)
    else:
        assert (np.diff(rate) <= 0).all(), (attr, bins)
        assert (np.diff(woe) >= -1e-12).all(), (attr, bins)


@pytest.fixture(scope="module")
def u_shaped() -> tuple[pd.DataFrame, np.ndarray]:
    """Two ratios whose empirical risk is not monotone: ``attr1`` (return on assets, higher lowers
    risk) is risky at both ends, ``attr2`` (leverage, higher raises risk) is safest at the top."""
    generator = np.random.default_rng(5)
    rows = 4000
    x = pd.DataFrame({"attr1": generator.uniform(-1, 1, rows), "attr2": generator.uniform(0, 1, rows)})
    logit = -2.5 + 3.0 * x["attr1"] ** 2 - 1.5 * x["attr1"] + 2.0 * np.sin(3.0 * x["attr2"])
    y = (generator.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64).to_numpy()
    x.loc[generator.random(rows) < 0.05, "attr2"] = np.nan
    return x, y


def test_the_trends_come_from_the_direction_table_of_the_trees() -> None:
    trends = monotonic_trends()

    assert list(trends) == [r.attr for r in RATIOS]
    assert trends["attr1"] == "descending"
    assert trends["attr2"] == "ascending"
    assert {trends[r.attr] for r in RATIOS if r.direction > 0} == {"ascending"}
    assert {trends[r.attr] for r in RATIOS if r.direction < 0} == {"descending"}


def test_bins_follow_the_stated_direction_where_the_data_does_not(u_shaped) -> None:
    x, y = u_shaped
    # the fixture's raw risk is not monotone in either ratio (by deciles), so the constraint must act
    for attr in ("attr1", "attr2"):
        deciles = pd.qcut(x[attr], 10, labels=False)
        rate = pd.Series(y).groupby(deciles.to_numpy()).mean().to_numpy()
        assert (np.diff(rate) > 0).any(), attr
        assert (np.diff(rate) < 0).any(), attr

    scorecard = Scorecard().fit(x, y)

    for attr in ("attr1", "attr2"):
        assert len(scorecard.bins(attr)) >= 2, attr
        assert_monotone_in_direction(scorecard, attr)
    assert (scorecard.weights >= 0).all()


def test_the_score_can_only_follow_each_direction(u_shaped) -> None:
    x, y = u_shaped
    scorecard = Scorecard().fit(x, y)
    grid = np.linspace(-1.2, 1.2, 241)

    along_1 = scorecard.logit(pd.DataFrame({"attr1": grid, "attr2": 0.5}))
    along_2 = scorecard.logit(pd.DataFrame({"attr1": 0.0, "attr2": np.linspace(-0.2, 1.2, 241)}))

    assert (np.diff(along_1) <= 1e-12).all()
    assert (np.diff(along_2) >= -1e-12).all()
    assert along_1[0] > along_1[-1]
    # a missing ratio scores as its own trained bin: the same logit for every missing row
    missing = scorecard.logit(pd.DataFrame({"attr1": [0.0, 0.0], "attr2": [np.nan, np.nan]}))
    assert missing[0] == missing[1]
    assert np.isfinite(missing).all()


@pytest.mark.slow
@pytest.mark.skipif(
    not TRAINING_FILE.is_file(), reason=f"labelled data not present at {TRAINING_FILE} (../shared is absent)"
)
def test_on_the_training_part_every_ratios_bins_follow_its_direction() -> None:
    from sklearn.model_selection import train_test_split

    raw_x, y = read_labelled(TRAINING_FILE)
    x = prepared(raw_x)
    x_train, _, y_train, _ = train_test_split(x, y, test_size=HELD_OUT_SHARE, stratify=y, random_state=SEED)

    scorecard = Scorecard().fit(mask_prior_years(x_train, SEED), y_train)

    for ratio in RATIOS:
        assert_monotone_in_direction(scorecard, ratio.attr)
    assert (scorecard.weights >= 0).all()
    assert (scorecard.weights > 0).sum() >= 5
