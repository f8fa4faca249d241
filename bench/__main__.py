"""``python -m bench``: run every benchmark and write its JSON under ``bench/results/``."""

import sys

from bench.core_pipeline import main

sys.exit(main())
