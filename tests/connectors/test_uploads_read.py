"""Reading an SME's uploaded files for the ingest step: window, newer file wins, lineage, errors."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pandas as pd

from connectors.core.connector import PullWindow
from connectors.uploads import UploadedFile, in_window, read_uploads
from warehouse.storage import Store

AS_OF = dt.date(2026, 12, 1)
WINDOW = PullWindow.for_history(AS_OF, 3)  # 2026-09-01 .. 2026-11-30, as-of day included


def ledger(months: dict[str, int]) -> bytes:
    lines = ["Account Code,Account Name,Date,Debit,Credit,Currency"]
    for month, sales in months.items():
        lines += [f"1920,Bank,{month}-15,{sales}.00,,GBP", f"3000,Sales,{month}-15,,{sales}.00,GBP"]
    return ("\n".join(lines) + "\n").encode()


def landed(store: Store, file_id: int, name: str, data: bytes, status: str = "parsed") -> UploadedFile:
    digest = hashlib.sha256(data).hexdigest()
    path = store.layout.raw("accounting", digest, "csv")
    store.write_bytes(path, data)
    return UploadedFile(
        id=file_id,
        sme_id="SME-1",
        filename=name,
        sha256=digest,
        raw_path=path,
        size_bytes=len(data),
        format="ledger" if status == "parsed" else None,
        status=status,
        uploaded_at=dt.datetime(2026, 11, 20, 9, file_id, tzinfo=dt.UTC),
    )


def test_rows_inside_the_window_the_newer_file_winning(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    old = ledger({"2026-07": 100, "2026-09": 200, "2026-10": 300})
    new = ledger({"2026-10": 333, "2026-11": 400, "2026-12": 500})
    files = [
        landed(store, 1, "old.csv", old),
        landed(store, 2, "scan.pdf", b"%PDF-1.4 not a ledger", status="unreadable"),
        landed(store, 3, "new.csv", new),
    ]
    read = read_uploads(store, "accounting", "SME-1", files, WINDOW)
    months = read.tables["monthly_financials"]
    assert list(
        zip(months["period_month"].astype(str), months["revenue"], months["raw_sha256"], strict=True)
    ) == [
        ("2026-09-01", 200.0, files[0].sha256),
        ("2026-10-01", 333.0, files[2].sha256),
        ("2026-11-01", 400.0, files[2].sha256),
    ]
    assert read.tables["bank_transactions"].empty
    assert (read.records_raw, read.records_canonical, read.outside_window) == (
        7,
        3,
        3,
    )  # the old file fills the gap month 2026-08
    assert [(p.sequence, p.sha256, p.path, p.request, p.media_type) for p in read.landed] == [
        (0, files[0].sha256, files[0].raw_path, "upload old.csv", "text/csv"),
        (1, files[2].sha256, files[2].raw_path, "upload new.csv", "text/csv"),
    ]
    assert (
        read.notes() == "3 rows outside the consented window not used; received, not yet readable: scan.pdf"
    )
    assert read.errors == []


def test_a_changed_raw_copy_is_an_error_and_gives_no_rows(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    good = landed(store, 1, "good.csv", ledger({"2026-10": 300}))
    bad = landed(store, 2, "bad.csv", ledger({"2026-11": 400}))
    store.write_bytes(bad.raw_path, ledger({"2026-11": 999}))
    read = read_uploads(store, "accounting", "SME-1", [good, bad], WINDOW)
    assert [(f.filename, e.record, e.reason) for f, e in read.errors] == [
        ("bad.csv", "file", "the raw copy no longer matches its sha256 (changed since it was uploaded)")
    ]
    assert read.records_canonical == 0


def test_a_span_must_lie_wholly_inside_the_window() -> None:
    vat = pd.DataFrame(
        {
            "period_start": [dt.date(2026, 8, 1), dt.date(2026, 9, 1), dt.date(2026, 11, 1)],
            "period_end": [dt.date(2026, 10, 31), dt.date(2026, 11, 30), dt.date(2027, 1, 31)],
        }
    )
    assert in_window("vat_returns", vat, WINDOW).tolist() == [False, True, False]
    day = 86400
    readings = pd.DataFrame(
        {
            "interval_start": pd.to_datetime(
                [
                    "2026-08-31T23:00:00Z",
                    "2026-09-01T00:00:00Z",
                    "2026-12-01T00:00:00Z",
                    "2026-12-01T12:00:00Z",
                ]
            ),
            "interval_seconds": [7200, day, day, day],
        }
    )
    assert in_window("utility_readings", readings, WINDOW).tolist() == [False, True, True, False]
    visits = pd.DataFrame({"visited_at": pd.to_datetime(["2026-12-01T18:00:00Z", "2026-12-02T08:00:00Z"])})
    assert in_window("survey_visits", visits, WINDOW).tolist() == [True, False]
