"""``python -m bench``: run every benchmark and write its JSON under ``bench/results/``."""

import sys

from bench import core_pipeline, format_parsing

sys.exit(core_pipeline.main([]) or format_parsing.main([]))
