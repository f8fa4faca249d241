"""How SMEs are split into shards: a stable hash, so an SME stays in its shard across runs.

>>> shard_of("SME-000001", 8) == shard_of("SME-000001", 8)
True
>>> 0 <= shard_of("SME-000001", 8) < 8
True
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import pandas as pd


def shard_of(sme_id: str, shard_count: int) -> int:
    """The shard (0 .. shard_count-1) that ``sme_id`` belongs to."""
    return zlib.crc32(sme_id.encode()) % shard_count


def in_shard(sme_ids: Iterable[str], shard: int, shard_count: int) -> list[str]:
    """The ids among ``sme_ids`` that fall in ``shard``, sorted."""
    return sorted(s for s in sme_ids if shard_of(s, shard_count) == shard)


def shard_column(sme_ids: pd.Series, shard_count: int) -> pd.Series:
    """Vectorised :func:`shard_of` for a column of ids."""
    return sme_ids.map(lambda s: zlib.crc32(s.encode()) % shard_count).astype("int64")
