"""Canonical files and their digest sidecars: the digests read are always those of the file's rows."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from warehouse.canonical import UTILITY_BILLS
from warehouse.canonical_files import CanonicalShard, digests_path, sme_digests, write_canonical
from warehouse.storage import Store

DAY = dt.date(2026, 11, 1)


def bills(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    """``utility_bills`` rows: (SME, first day of the period, amount due), one record each."""
    starts = [pd.Timestamp(r[1], tz="UTC") for r in rows]
    return pd.DataFrame(
        {
            "sme_id": [r[0] for r in rows],
            "usage_point_id": ["M-1"] * len(rows),
            "period_start": starts,
            "period_seconds": [30 * 86400] * len(rows),
            "amount_due": [r[2] for r in rows],
            "currency": ["GBP"] * len(rows),
            "due_date": [(s + pd.Timedelta(days=44)).date() for s in starts],
            "paid_date": [None] * len(rows),
            "source_record": [f"{r[0]}/{r[1]}" for r in rows],
            "raw_sha256": ["0" * 64] * len(rows),
        }
    )


def test_digests_follow_the_rows_not_their_order(tmp_path) -> None:
    store = Store(str(tmp_path))
    rows = [("SME-1", "2026-08-01", 10.0), ("SME-1", "2026-09-01", 12.0), ("SME-2", "2026-09-01", 7.0)]
    write_canonical(store, "utility_bills", DAY, 0, UTILITY_BILLS.to_arrow(bills(rows)))
    first = CanonicalShard.open(store, DAY, 0)
    assert first.from_sidecars == 1
    assert first.digests(["SME-1", "SME-2"])["utility_bills.rows"].tolist() == [2, 1]
    # the same rows in another order have the same digests
    reordered = bills(rows[::-1])
    write_canonical(store, "utility_bills", DAY, 0, UTILITY_BILLS.to_arrow(reordered))
    assert (
        CanonicalShard.open(store, DAY, 0)
        .digests(["SME-1", "SME-2"])
        .equals(first.digests(["SME-1", "SME-2"]))
    )
    # one amount changed changes only its SME's digest
    changed = bills([rows[0], ("SME-1", "2026-09-01", 12.5), rows[2]])
    write_canonical(store, "utility_bills", DAY, 0, UTILITY_BILLS.to_arrow(changed))
    now = CanonicalShard.open(store, DAY, 0).digests(["SME-1", "SME-2"])
    before = first.digests(["SME-1", "SME-2"])
    assert now.loc["SME-2"].equals(before.loc["SME-2"])
    assert not now.loc["SME-1"].equals(before.loc["SME-1"])


def test_a_file_rewritten_without_its_sidecar_is_digested_from_its_rows(tmp_path) -> None:
    store = Store(str(tmp_path))
    rows = [("SME-1", "2026-08-01", 10.0), ("SME-2", "2026-09-01", 7.0)]
    write_canonical(store, "utility_bills", DAY, 0, UTILITY_BILLS.to_arrow(bills(rows)))
    stale = store.read_table(digests_path(store, "utility_bills", DAY, 0))
    # what an erasure does: the file is rewritten without one SME, the sidecar stays as it was
    kept = UTILITY_BILLS.to_arrow(bills(rows[1:]))
    store.write_table(store.layout.canonical("utility_bills", DAY.isoformat(), 0), kept)
    opened = CanonicalShard.open(store, DAY, 0)
    assert opened.from_sidecars == 0
    assert opened.smes() == ["SME-2"]
    expected = sme_digests(kept.to_pandas())
    got = opened.digests(["SME-2"])
    assert got["utility_bills.h0"].tolist() == expected["h0"].tolist()
    assert stale.num_rows == 2
    # only the SMEs asked for are read; a table without a file has no rows
    assert opened.frames(["SME-2"])["utility_bills"]["amount_due"].tolist() == [7.0]
    assert opened.frames(["SME-2"])["vat_returns"].empty


def test_kept_rows_serve_later_reads_and_only_missing_smes_are_read_again(tmp_path) -> None:
    store = Store(str(tmp_path))
    rows = [
        ("SME-1", "2026-08-01", 10.0),
        ("SME-1", "2026-09-01", 12.0),
        ("SME-2", "2026-09-01", 7.0),
        ("SME-3", "2026-07-01", 3.0),
        ("SME-3", "2026-08-01", 4.0),
    ]
    write_canonical(store, "utility_bills", DAY, 0, UTILITY_BILLS.to_arrow(bills(rows)))
    opened = CanonicalShard.open(store, DAY, 0)
    opened.keep_rows = True

    def read(sme_ids, **kwargs) -> list[tuple[str, float]]:
        frame = opened.table("utility_bills", sme_ids, **kwargs)
        return list(zip(frame["sme_id"], frame["amount_due"], strict=True))

    assert read(["SME-3"]) == [("SME-3", 3.0), ("SME-3", 4.0)]
    assert opened.file_reads == 1
    # fewer SMEs, or only some columns: from what was kept
    assert read(["SME-3"], columns=["sme_id", "amount_due"]) == [("SME-3", 3.0), ("SME-3", 4.0)]
    assert opened.file_reads == 1
    # SMEs not read yet: only those are read, and the kept rows stay ordered by SME
    assert read(["SME-1", "SME-3"]) == [("SME-1", 10.0), ("SME-1", 12.0), ("SME-3", 3.0), ("SME-3", 4.0)]
    assert opened.file_reads == 2
    assert read(["SME-1"]) == [("SME-1", 10.0), ("SME-1", 12.0)]
    # with others, what was kept is handed over as it is: other SMEs' rows included
    assert read(["SME-1"], others=True) == [("SME-1", 10.0), ("SME-1", 12.0), ("SME-3", 3.0), ("SME-3", 4.0)]
    assert opened.file_reads == 2
    # every SME: read from the file once, then kept whole
    assert [s for s, _ in read(None)] == ["SME-1", "SME-1", "SME-2", "SME-3", "SME-3"]
    assert read(["SME-2"]) == [("SME-2", 7.0)]
    assert opened.file_reads == 3
    # without keep_rows every read reads the file and returns only what was asked for
    plain = CanonicalShard.open(store, DAY, 0)
    plain.table("utility_bills", ["SME-2"])
    assert plain.table("utility_bills", ["SME-2"], others=True)["sme_id"].tolist() == ["SME-2"]
    assert plain.file_reads == 2
