"""The examples in the warehouse and settings docstrings run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "evaluation.credit_cost",
    "connectors.sandbox.lenders",
    "dossier.pipeline",
    "dossier.report",
    "dossier.settings",
    "dossier.tasks",
    "evaluation.market",
    "warehouse.canonical",
    "warehouse.db",
    "warehouse.dossier_schema",
    "warehouse.dossier_store",
    "warehouse.feed",
    "warehouse.migrate",
    "warehouse.shards",
    "warehouse.storage",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    outcome = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert outcome.attempted > 0
    assert outcome.failed == 0
