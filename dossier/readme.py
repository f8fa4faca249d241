"""Keep the README's reference sections generated from the code: ``python -m dossier.readme``.

The README holds three generated blocks between ``<!-- BEGIN name -->`` and ``<!-- END name -->``
markers: the environment variables, the canonical tables and the dossier schema. A test fails when
they drift from the code; this module rewrites them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from dossier.settings import ENVIRONMENT
from warehouse import canonical, dossier_schema

README = Path(__file__).resolve().parent.parent / "README.md"


def environment_markdown() -> str:
    lines = ["| variable | default | what it sets |", "|---|---|---|"]
    lines += [
        f"| `{v.name}` | `{v.default}` | {v.help} |" if v.default else f"| `{v.name}` | (empty) | {v.help} |"
        for v in ENVIRONMENT
    ]
    return "\n".join(lines) + "\n"


def sections() -> dict[str, str]:
    """The generated blocks, by marker name."""
    return {
        "environment": environment_markdown(),
        "canonical": canonical.describe_markdown(),
        "dossier": dossier_schema.describe_markdown(),
    }


def block(text: str, name: str) -> str:
    """The current content of block ``name`` in ``text``."""
    match = re.search(rf"<!-- BEGIN {name} -->\n(.*?)<!-- END {name} -->", text, flags=re.S)
    if match is None:
        raise ValueError(f"README has no <!-- BEGIN {name} --> ... <!-- END {name} --> block")
    return match.group(1)


def rewrite(text: str) -> str:
    for name, content in sections().items():
        block(text, name)
        text = re.sub(
            rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)",
            lambda m, content=content: m.group(1) + content + m.group(2),
            text,
            flags=re.S,
        )
    return text


def main() -> int:
    README.write_text(rewrite(README.read_text()))
    print(f"rewrote the generated blocks of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
