"""``dossier serve`` starts the webhook worker beside the service: a lender's endpoint on a local
receiver gets the signed test message queued by ``POST /v1/webhooks/{id}/test``, with nothing else
running to send it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "warehouse"))
from test_webhooks import Receiver

DOSSIER = Path(sys.executable).parent / "dossier"
T = TypeVar("T")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(condition: Callable[[], T], deadline: float, what: str) -> T:
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def test_serve_starts_the_worker_that_sends_a_signed_test_message(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("DOSSIER_") or key == "DOSSIER_TEST_POSTGRES_URL"
    }
    env |= {
        "DOSSIER_HOME": str(tmp_path / "var"),
        "DOSSIER_SANDBOX_FAULT_RATE": "0",
        "DOSSIER_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on 127.0.0.1
        "DOSSIER_WEBHOOK_POLL_SECONDS": "0.2",
    }
    subprocess.run([str(DOSSIER), "db", "upgrade"], env=env, check=True, capture_output=True)
    added = subprocess.run(
        [str(DOSSIER), "lender", "add", "northwind-capital"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    auth = {"Authorization": f"Bearer {added.stdout.strip()}"}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with Receiver() as receiver:
        server = subprocess.Popen(
            [str(DOSSIER), "serve", "--port", str(port), "--no-link"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120

            def up() -> bool:
                try:
                    return requests.get(f"{base}/v1/webhooks", headers=auth, timeout=5).status_code == 200
                except requests.ConnectionError:
                    assert server.poll() is None, server.stdout.read()
                    return False

            _wait_for(up, deadline, "the service")
            created = requests.post(
                f"{base}/v1/webhooks", json={"url": receiver.url}, headers=auth, timeout=5
            )
            assert created.status_code == 201, created.text
            endpoint_id, secret = created.json()["endpoint_id"], created.json()["secret"]
            receiver.secrets.append(secret)
            queued = requests.post(f"{base}/v1/webhooks/{endpoint_id}/test", headers=auth, timeout=5)
            assert (queued.status_code, queued.json()["status"]) == (202, "pending")
            message_id = queued.json()["message_id"]

            _wait_for(lambda: receiver.seen, deadline, "the test message")
            assert receiver.seen == [
                (
                    message_id,
                    {
                        "type": "webhook.test",
                        "timestamp": queued.json()["created_at"].replace("+00:00", "Z"),
                        "data": {"endpoint_id": endpoint_id, "lender_id": "northwind-capital"},
                    },
                    [0],  # verified with the endpoint's secret by the standardwebhooks package
                )
            ]

            def logged() -> dict | None:
                detail = requests.get(
                    f"{base}/v1/webhooks/{endpoint_id}/deliveries/{message_id}", headers=auth, timeout=5
                ).json()
                return detail if detail["status"] == "delivered" else None

            detail = _wait_for(logged, deadline, "the delivery log")
            assert (detail["attempts"], detail["last_status_code"], detail["last_error"]) == (1, 200, None)
            assert [(a["status_code"], a["error"]) for a in detail["attempt_log"]] == [(200, None)]
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    assert server.returncode == 0
