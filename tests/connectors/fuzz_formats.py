"""Coverage-guided fuzzing of one format parser with atheris (libFuzzer): ``python -m tests.connectors.fuzz_formats``.

``python -m tests.connectors.fuzz_formats FORMAT [libFuzzer options] [CORPUS_DIR ...]`` feeds the
parser of ``FORMAT`` (``--format`` name, or ``detect`` for detection then whichever parser it picks)
mutated bytes, guided by the coverage of the project's own Python code (``connectors``). A parser
may refuse any input with a :class:`~connectors.formats.base.FormatError`; any other exception is a
crash, which libFuzzer reports with the input that caused it (exit status non-zero). Bounded runs
(``-runs=N``) make it a test: ``tests/connectors/test_formats_atheris.py``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports(include=["connectors"]):
    from connectors import formats
    from connectors.formats.base import FormatError, Limits

LIMITS = Limits(max_bytes=1 << 20, max_records=20_000, max_seconds=5.0)


def target(format_name: str | None) -> Callable[[bytes], None]:
    def one_input(data: bytes) -> None:
        with contextlib.suppress(FormatError):
            formats.parse(data, format_name=format_name, limits=LIMITS, name="fuzz.csv")

    return one_input


def main(argv: list[str]) -> None:
    name, rest = argv[1], argv[1:]
    format_name = None if name == "detect" else formats.format_named(name).name
    atheris.Setup([argv[0], *rest[1:]], target(format_name))
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
