"""Coverage-guided fuzzing (atheris) of every format parser, on a bounded budget per parser.

Hypothesis (``test_formats_hostile.py``) builds inputs from the formats' structure; libFuzzer
mutates the real fixtures byte by byte, guided by which branches of the parsers' Python code each
input reaches, so it walks into the corners a grammar does not describe (a BOM in mid-header, a
truncated tag inside a CDATA section, an XLSX/zip whose directory lies). Each run is its own
process (libFuzzer ends the process when done); an exception other than ``FormatError`` fails the
test with libFuzzer's report, which includes the offending input.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import atheris
import pytest

from tests.connectors.test_formats_hostile import FIXTURE_FORMATS

assert atheris.Setup

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parents[2]
RUNS = int(os.environ.get("FORMATS_FUZZ_RUNS", "2000"))
"""Inputs per parser (CI keeps the default; a longer local campaign sets a larger number). Each
parser also stops after 30 s of fuzzing, so the slow ones (pandas-based) cost CI bounded time."""
SEED = int(os.environ.get("FORMATS_FUZZ_SEED", "1"))
"""libFuzzer's random seed: fixed, so a CI run is reproducible; another seed explores elsewhere."""
SEEDS: dict[str, list[str]] = {}
for fixture_name, format_name in FIXTURE_FORMATS.items():
    SEEDS.setdefault(format_name, []).append(fixture_name)


@pytest.mark.parametrize("format_name", [*sorted(SEEDS), "detect"])
def test_no_input_makes_a_parser_fail_other_than_with_a_format_error(
    format_name: str, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    seeds = SEEDS.get(format_name) or [name for names in SEEDS.values() for name in names]
    for name in seeds:
        shutil.copy(FIXTURES / name, corpus / name)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.connectors.fuzz_formats",
            format_name,
            f"-runs={RUNS}",
            f"-seed={SEED}",
            "-max_len=8192",
            "-timeout=30",
            "-max_total_time=30",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Done" in run.stderr
