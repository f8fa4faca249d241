"""Engine, sessions and the idempotent write primitive (upsert by natural key).

>>> engine = make_engine("sqlite://")
>>> engine.dialect.name
'sqlite'
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")


IN_LIST_SIZE = 1000
"""Values per ``IN (...)`` list: far below SQLite's (32,766) and PostgreSQL's (65,535) parameter limits."""


def in_chunks(values: Iterable[T], size: int = IN_LIST_SIZE) -> Iterator[list[T]]:
    """``values`` (deduplicated, sorted) in lists of at most ``size``: one ``IN (...)`` list each.

    Every query whose ``IN`` list grows with the data goes through this, so no query is refused
    for too many bound parameters however large a shard is.

    >>> [len(chunk) for chunk in in_chunks(range(2500))]
    [1000, 1000, 500]
    >>> list(in_chunks(["b", "a", "b"]))
    [['a', 'b']]

    A pandas Series, numpy or Arrow array is turned into a list in one step first (iterating one
    value at a time costs about a microsecond a value for Arrow-backed strings).

    >>> import pandas as pd, pyarrow as pa
    >>> list(in_chunks(pd.Series(["b", "a"], dtype="str"))), list(in_chunks(pa.array(["c", "c"])))
    ([['a', 'b']], [['c']])
    """
    as_list = getattr(values, "tolist", None) or getattr(values, "to_pylist", None)
    ordered = sorted(set(as_list() if as_list is not None else values))  # type: ignore[type-var]
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


def select_frame(
    session: Session,
    query: Any,
    columns: Sequence[str],
    *,
    where_in: tuple[Any, Iterable[Any]] | None = None,
) -> pd.DataFrame:
    """The rows of ``query`` as a frame with ``columns`` (one per selected column, in order).

    With ``where_in=(column, values)`` the query runs once per :func:`in_chunks` list of
    ``values`` (``column IN (...)``). The frame is built column by column: handing pandas the
    result's row objects costs about four times as much, which counts where a query reads a row
    per SME. Each column's type is the one pandas infers from its values (``object`` when empty).

    >>> from sqlalchemy import column, select, table, text
    >>> t = table("t", column("k"), column("n"))
    >>> with session_scope(make_engine("sqlite://")) as session:
    ...     _ = session.execute(text("CREATE TABLE t (k TEXT, n INTEGER)"))
    ...     _ = session.execute(text("INSERT INTO t VALUES ('a', 1), ('b', 2), ('c', 3)"))
    ...     found = select_frame(session, select(t.c.k, t.c.n), ["k", "n"], where_in=(t.c.k, ["c", "a"]))
    >>> found.to_dict("records")
    [{'k': 'a', 'n': 1}, {'k': 'c', 'n': 3}]
    """
    if where_in is None:
        rows = list(session.execute(query))
    else:
        target, values = where_in
        rows = [row for chunk in in_chunks(values) for row in session.execute(query.where(target.in_(chunk)))]
    return rows_frame(rows, columns)


def rows_frame(rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> pd.DataFrame:
    """Result rows (of :func:`select_frame`'s kind) as a frame, built column by column.

    >>> rows_frame([("a", 1), ("b", None)], ["k", "n"]).to_dict("list")
    {'k': ['a', 'b'], 'n': [1.0, nan]}
    >>> rows_frame([], ["k"]).dtypes.tolist()
    [dtype('O')]
    """
    import pandas as pd

    if not rows:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
    values_by_column = zip(*rows, strict=True)
    return pd.DataFrame({name: list(values) for name, values in zip(columns, values_by_column, strict=True)})


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys on, WAL and a busy timeout for concurrent tasks."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            if ":memory:" not in url and url != "sqlite://":
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


@functools.cache
def _engine_for(url: str) -> Engine:
    return make_engine(url)


def get_engine() -> Engine:
    """The engine of the configured warehouse (one per URL per process)."""
    from dossier.settings import get_settings

    return _engine_for(get_settings().warehouse_url)


@contextlib.contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error: one task step, one transaction."""
    factory = sessionmaker(bind=engine or get_engine(), expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def upsert(
    session: Session,
    model: type[DeclarativeBase],
    rows: Sequence[dict[str, Any]],
    key: Sequence[str],
    update: Sequence[str] | None = None,
) -> int:
    """Insert ``rows`` or, where a row with the same ``key`` exists, update its other columns.

    ``update`` limits which columns an existing row takes from the new one (default: all but the
    key). Returns the number of rows sent. Works on SQLite and PostgreSQL.
    """
    if not rows:
        return 0
    table = model.__table__  # type: ignore[attr-defined]
    dialect = session.get_bind().dialect.name
    insert_factory = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(dialect)
    if insert_factory is None:
        raise ValueError(f"upsert supports SQLite and PostgreSQL, not {dialect}")
    columns = list(rows[0])
    update_columns = [c for c in (update if update is not None else columns) if c not in key]
    statement = insert_factory(table)
    if update_columns:
        statement = statement.on_conflict_do_update(
            index_elements=list(key),
            set_={c: statement.excluded[c] for c in update_columns},
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=list(key))
    session.execute(statement, list(rows))
    return len(rows)
