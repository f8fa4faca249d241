"""What every DAG task shares: its counts in the task log, and a failure that says where it happened.

:func:`run_step` calls one pipeline step (``dossier.pipeline``), logs the counts it returns at INFO
(so a green task's log says what it did, not only its XCom), and turns an expected failure
(:class:`~warehouse.errors.DossierError`, e.g. a corrupt canonical file) into a :class:`StepError`
naming the step, the shard and the as-of date before the original message, which names the file
(and the SME and field where there is one).

>>> run_step("double", lambda n: {"n": n * 2}, 2)
{'n': 4}
>>> def broken() -> dict:
...     raise DossierError("canonical/vat_returns/as_of=2026-12-01/shard=0003.parquet: not a readable Parquet file")
>>> run_step("validate shard 3 as of 2026-12-01", broken)
Traceback (most recent call last):
...
dossier.tasks.StepError: validate shard 3 as of 2026-12-01: canonical/vat_returns/as_of=2026-12-01/shard=0003.parquet: not a readable Parquet file
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from warehouse.errors import DossierError

log = logging.getLogger("dossier.tasks")


class StepError(DossierError):
    """A pipeline step failed for a reason its message names (step, shard, date, then file/SME/field)."""


def counts(result: Any) -> str:
    """``key value, ...`` of the numbers in a step's result, else of its text (its task log line).

    >>> counts({"shard": 2, "pulled": 5, "failed": 1, "path": "x"})
    'shard 2, pulled 5, failed 1'
    >>> counts({"site": "var/gx/index.html"})
    'site var/gx/index.html'
    >>> counts({"shard": 1, "validate": {"shard": 1, "failed": 2}, "evaluate": {"scored": 7}})
    'shard 1, validate.failed 2, evaluate.scored 7'
    """
    if not isinstance(result, dict):
        return repr(result)
    numbers = [f"{k} {v}" for k, v in whole_numbers(result).items()]
    return ", ".join(numbers) or ", ".join(
        f"{k} {v}" for k, v in result.items() if isinstance(v, str | float)
    )


def whole_numbers(result: dict[str, Any], prefix: str = "") -> dict[str, int]:
    """The whole numbers of a step's summary, nested summaries' named ``outer.inner`` (a nested
    ``shard`` left out: the outer one names it).

    >>> whole_numbers({"shard": 2, "ok": True, "path": "x", "withheld": {"count": 1, "shard": 2}})
    {'shard': 2, 'withheld.count': 1}
    """
    found: dict[str, int] = {}
    for key, value in result.items():
        if isinstance(value, dict):
            found.update(whole_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, int) and not isinstance(value, bool) and not (prefix and key == "shard"):
            found[f"{prefix}{key}"] = value
    return found


def run_step(label: str, step: Callable[..., Any], *args: Any) -> Any:
    """``step(*args)``, its counts logged at INFO under ``label``; expected failures re-raised naming ``label``."""
    try:
        result = step(*args)
    except DossierError as error:
        raise StepError(f"{label}: {error}") from error
    log.info("%s: %s", label, counts(result))
    return result
