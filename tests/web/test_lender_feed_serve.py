"""``dossier serve --workers 2`` runs two service processes on one port: both answer the lender
API, and a key revoked from the command line is refused by every process once the bound of their
key caches has passed (``dossier.web.deps.KEY_CACHE_SECONDS``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from dossier.web.deps import KEY_CACHE_SECONDS

DOSSIER = Path(sys.executable).parent / "dossier"


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def test_two_workers_serve_the_feed_and_refuse_a_revoked_key_within_the_cache_bound(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("DOSSIER_") or key == "DOSSIER_TEST_POSTGRES_URL"
    }
    env |= {"DOSSIER_HOME": str(tmp_path / "var"), "DOSSIER_SANDBOX_FAULT_RATE": "0"}
    subprocess.run([str(DOSSIER), "db", "upgrade"], env=env, check=True, capture_output=True)
    added = subprocess.run(
        [str(DOSSIER), "lender", "add", "northwind-capital"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    token = added.stdout.splitlines()[0].strip()
    prefix = token.split("_")[1]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(DOSSIER), "serve", "--port", str(port), "--workers", "2", "--no-link", "--no-webhooks"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def fresh_get(path: str) -> requests.Response:
        # a new connection each time, so that the requests spread over the processes
        return requests.get(f"{base}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)

    try:
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, "the service did not start"
            assert server.poll() is None, server.stdout.read()
            try:
                if fresh_get("/health").status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        # the supervisor has two service processes (beside the bundled sandbox and its own helpers)
        workers = [
            pid
            for pid in _children(server.pid)
            if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
        ]
        assert len(workers) == 2, _children(server.pid)
        pages = [fresh_get("/v1/feed?limit=10") for _ in range(10)]
        assert [(p.status_code, p.json(), p.headers["feed-next-cursor"]) for p in pages] == [
            (200, {"events": [], "next_cursor": "0", "has_more": False}, "0")
        ] * 10
        last_accepted = time.monotonic()
        subprocess.run(
            [str(DOSSIER), "lender", "revoke-key", "--prefix", prefix],
            env=env,
            check=True,
            capture_output=True,
        )
        # each process may trust the key it verified for KEY_CACHE_SECONDS, no longer
        time.sleep(max(0.0, last_accepted + KEY_CACHE_SECONDS - time.monotonic()))
        refused = [fresh_get("/v1/feed?limit=10") for _ in range(10)]
        assert [(r.status_code, r.json()["detail"]) for r in refused] == [
            (403, f"API key {prefix} was revoked")
        ] * 10
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert server.returncode == 0, server.stdout.read()
