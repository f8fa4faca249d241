"""Turn a connector's :class:`~connectors.core.parsing.ParseResult` of one file into a format result.

The API connectors read batches of many SMEs and report bad fields as rejects; a single file that
has any reject is not accepted, so its first reject becomes the :class:`FormatError`.
"""

from __future__ import annotations

from connectors.core.parsing import ParseResult
from connectors.formats.base import FormatError


def raise_first_reject(result: ParseResult) -> None:
    """Raise the first reject of ``result`` (record and field as the connector named them), if any."""
    if len(result.rejects):
        first = result.rejects.iloc[0]
        more = len(result.rejects) - 1
        suffix = f" (and {more} more)" if more else ""
        raise FormatError(
            f"{first['reason']}{suffix}", record=str(first["record"]) or "file", field=str(first["field"])
        )
