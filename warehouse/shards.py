"""How SMEs are split into shards: a stable hash, so an SME stays in its shard across runs.

Each SME id has a **shard key**, the crc32 of the id (a number in ``0 .. 2**32 - 1``). With
``shard_count`` shards, shard ``k`` holds the keys of the ``k``-th of ``shard_count`` equal slices of
that range: one contiguous range of keys per shard. The key is stored beside each source connection
(``source_connections.shard_key``, indexed with the source), so an ingest task reads its own
shard's connections with one index range scan, whatever the shard count, instead of reading every
connection of the source and filtering in Python.

>>> shard_of("SME-000001", 8) == shard_of("SME-000001", 8)
True
>>> low, high = shard_range(shard_of("SME-000001", 8), 8)
>>> low <= shard_key("SME-000001") < high
True
>>> [shard_range(k, 4) for k in range(4)]
[(0, 1073741824), (1073741824, 2147483648), (2147483648, 3221225472), (3221225472, 4294967296)]
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import pandas as pd

KEY_SPACE = 2**32
"""Shard keys are ``0 .. KEY_SPACE - 1`` (crc32)."""


def shard_key(sme_id: str) -> int:
    """The shard key of ``sme_id``: the crc32 of its UTF-8 bytes."""
    return zlib.crc32(sme_id.encode())


def shard_of(sme_id: str, shard_count: int) -> int:
    """The shard (0 .. shard_count-1) that ``sme_id`` belongs to: the slice of key space its key is in."""
    return shard_key(sme_id) * shard_count // KEY_SPACE


def shard_range(shard: int, shard_count: int) -> tuple[int, int]:
    """The shard keys of ``shard``: ``low <= key < high`` (what SQL filters on).

    ``low`` is the smallest key with ``key * shard_count // KEY_SPACE == shard``, i.e. the ceiling of
    ``shard * KEY_SPACE / shard_count``, so :func:`shard_of` and the range always agree.
    """
    if not 0 <= shard < shard_count:
        raise ValueError(f"shard {shard} outside 0..{shard_count - 1}")
    return -(-shard * KEY_SPACE // shard_count), -(-(shard + 1) * KEY_SPACE // shard_count)


def in_shard(sme_ids: Iterable[str], shard: int, shard_count: int) -> list[str]:
    """The ids among ``sme_ids`` that fall in ``shard``, sorted."""
    return sorted(s for s in sme_ids if shard_of(s, shard_count) == shard)


def shard_column(sme_ids: pd.Series, shard_count: int) -> pd.Series:
    """Vectorised :func:`shard_of` for a column of ids."""
    keys = sme_ids.map(shard_key).astype("int64")
    return (keys * shard_count // KEY_SPACE).astype("int64")
