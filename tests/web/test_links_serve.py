"""``dossier serve`` starts the sandbox beside the service and prints a connector link that opens."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

DOSSIER = Path(sys.executable).parent / "dossier"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_starts_the_sandbox_and_prints_a_ready_link(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("DOSSIER_") or key == "DOSSIER_TEST_POSTGRES_URL"
    }
    env |= {"DOSSIER_HOME": str(tmp_path / "var"), "DOSSIER_SANDBOX_FAULT_RATE": "0"}
    subprocess.run([str(DOSSIER), "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run([str(DOSSIER), "sandbox", "seed", "--smes", "3"], env=env, check=True, capture_output=True)
    port = _free_port()
    server = subprocess.Popen(
        [str(DOSSIER), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith("http://"):
                break
        url = lines[-1]
        assert url.startswith(f"http://127.0.0.1:{port}/connect/SME-"), lines
        assert lines[0].startswith(f"sme-dossier web service at http://127.0.0.1:{port} ")
        assert lines[1].startswith("providers: http://127.0.0.1:")
        assert lines[1].endswith("(the bundled sandbox, started beside the service)")
        assert "(recipients harbor-credit, kestrel-finance, northwind-capital)" in lines[2]
        sandbox = lines[1].split()[1]
        page = None
        while time.monotonic() < deadline:
            try:
                page = requests.get(url, timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert page is not None
        assert page.status_code == 200
        assert "to share data for a credit dossier." in page.text
        assert "Connect your accounting provider" in page.text
        assert "Request a field visit" in page.text
        assert requests.get(f"{sandbox}/accounting/oauth/authorize", timeout=5).status_code in (400, 422)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
