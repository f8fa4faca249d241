"""A fresh PostgreSQL schema per test or module (``DOSSIER_TEST_POSTGRES_URL``, default the local server)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

POSTGRES_URL = os.environ.get(
    "DOSSIER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextlib.contextmanager
def fresh_postgres_schema() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL schema, dropped when the block ends; skips the test where
    ``DOSSIER_TEST_POSTGRES_URL=skip`` says this machine runs no PostgreSQL."""
    if POSTGRES_URL == "skip":
        pytest.skip("DOSSIER_TEST_POSTGRES_URL=skip: PostgreSQL runs disabled on this machine")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
