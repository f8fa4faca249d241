"""The examples in the connector modules' docstrings run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "connectors.core.errors",
    "connectors.core.http",
    "connectors.core.streams",
    "connectors.core.landing",
    "connectors.core.parsing",
    "connectors.core.connector",
    "connectors.accounting.monthly_reports",
    "connectors.tax.hmrc_vat",
    "connectors.utility.espi",
    "connectors.survey.kobo",
    "connectors.registry",
    "connectors.formats",
    "connectors.formats.base",
    "connectors.formats.saft_no",
    "connectors.formats.ofx",
    "connectors.formats.ledger",
    "connectors.formats.mva_melding",
    "connectors.formats.kobo",
    "connectors.survey.forms",
    "connectors.uploads",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    outcome = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert outcome.attempted > 0
    assert outcome.failed == 0
