"""``make train`` reproduces the committed statement model from the labelled data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.statement_model import STATEMENT_MODEL_VERSION, artifact_paths
from evaluation.train import main, train

TRAINING_FILE = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "credit" / "polish_bankruptcy_1y_train.csv"
)


@pytest.mark.slow
@pytest.mark.skipif(not TRAINING_FILE.is_file(), reason=f"labelled data not present at {TRAINING_FILE}")
def test_training_again_writes_the_committed_artifact(tmp_path: Path) -> None:
    meta = train(TRAINING_FILE, artifacts=tmp_path, card=tmp_path / "MODEL_CARD.md")

    model_path, meta_path = artifact_paths(STATEMENT_MODEL_VERSION, tmp_path)
    committed_model, committed_meta = artifact_paths(STATEMENT_MODEL_VERSION)
    assert model_path.read_text() == committed_model.read_text()
    assert json.loads(meta_path.read_text()) == json.loads(committed_meta.read_text())
    assert (tmp_path / f"{STATEMENT_MODEL_VERSION}-calibration.png").stat().st_size > 10_000
    card = (tmp_path / "MODEL_CARD.md").read_text()
    assert f"| {meta['held_out']['statement_model']['roc_auc']:.4f} |" in card
    held = meta["held_out"]
    assert held["statement_model"]["roc_auc"] > held["logistic_regression"]["roc_auc"]
    assert held["statement_model"]["roc_auc"] > held["altman_z2"]["roc_auc"]
    candidates = meta["candidates"]
    assert "candidates" not in json.loads(meta_path.read_text())
    assert list(candidates["cross_validation"]) == ["monotone_lightgbm", "woe_scorecard", "average"]
    assert candidates["held_out"]["monotone_lightgbm"] == held["statement_model"]
    assert candidates["chosen"] in candidates["cross_validation"]
    scorecard = candidates["held_out"]["woe_scorecard"]
    assert f"| {scorecard['roc_auc']:.4f} | {scorecard['brier']:.4f} | {scorecard['log_loss']:.4f} |" in card
    assert "**Chosen" in card


def test_a_missing_data_file_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["--data", str(tmp_path / "absent.csv")]) == 2

    assert capsys.readouterr().err == f"train: {tmp_path / 'absent.csv'}: no such file\n"


def test_prior_year_masking_is_seeded_label_blind_and_in_the_documented_shares() -> None:
    import numpy as np
    import pandas as pd

    from evaluation.train import PRIOR_YEAR_MASKS, mask_prior_years

    x = pd.DataFrame({"attr1": np.arange(4000.0), "attr21": 1.0, "attr24": 2.0})

    masked = mask_prior_years(x, seed=7)

    assert masked.equals(mask_prior_years(x, seed=7))
    assert masked["attr1"].equals(x["attr1"])
    both = masked["attr21"].isna() & masked["attr24"].isna()
    only_24 = masked["attr21"].notna() & masked["attr24"].isna()
    assert not (masked["attr21"].isna() & masked["attr24"].notna()).any()
    assert [both.mean(), only_24.mean()] == pytest.approx([share for _, share in PRIOR_YEAR_MASKS], abs=0.03)


def test_psi_reference_bins_hold_every_row() -> None:
    import numpy as np
    import pandas as pd

    from evaluation.train import psi_reference

    reference = psi_reference(pd.Series([*np.arange(100.0), np.nan, np.nan]), bins=4)

    assert reference["edges"] == [24.75, 49.5, 74.25]
    assert reference["shares"] == pytest.approx([25 / 102] * 4)
    assert reference["missing"] == pytest.approx(2 / 102, abs=1e-6)
