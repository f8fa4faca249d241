"""``dossier webhooks``: add an endpoint, queue a test message, send it with ``send --once`` to a real
receiver that verifies the signature, read the log, replay, remove; mistakes get one line and exit 2."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "warehouse"))
from test_webhooks import Receiver

from dossier.cli import EXIT_ERROR, EXIT_OK, main
from dossier.settings import Settings, override


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def lender(capsys: pytest.CaptureFixture[str], home: Settings) -> Iterator[str]:
    """A lender; the receiver is on 127.0.0.1, so private destinations are allowed (as
    DOSSIER_WEBHOOK_ALLOW_PRIVATE=true does)."""
    with override(dataclasses.replace(home, webhook_allow_private=True)):
        assert main(["lender", "add", "northwind-capital"]) == EXIT_OK
        capsys.readouterr()
        yield "northwind-capital"


def test_a_loopback_endpoint_is_refused_by_default(capsys, home: Settings) -> None:
    assert main(["lender", "add", "northwind-capital"]) == EXIT_OK
    capsys.readouterr()
    status, out, err = run(
        capsys, "webhooks", "add", "--lender", "northwind-capital", "--url", "http://127.0.0.1:9/hooks"
    )
    assert (status, out) == (EXIT_ERROR, "")
    assert err.splitlines() == [
        "dossier: error: url: host '127.0.0.1' resolves to 127.0.0.1, not a public address "
        "(loopback, private, link-local and other non-global addresses are refused)"
    ]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_add_test_send_log_replay_and_remove(capsys, lender: str, receiver: Receiver) -> None:
    status, out, _err = run(capsys, "webhooks", "add", "--lender", lender, "--url", receiver.url)
    assert status == EXIT_OK
    secret = out.splitlines()[-1]
    assert secret.startswith("whsec_")
    receiver.secrets.append(secret)
    endpoint_id = out.split()[1]
    status, out, _err = run(capsys, "webhooks", "list", "--lender", lender, "--json")
    assert status == EXIT_OK
    assert json.loads(out) == [
        {
            "endpoint_id": endpoint_id,
            "lender_id": lender,
            "url": receiver.url,
            "description": "",
            "event_types": [
                "dossier.delivered",
                "dossier.withdrawn",
                "offer.accepted",
                "offer.closed",
                "offer.declined",
                "offer.lapsed",
            ],
            "enabled": True,
            "disabled_reason": None,
            "last_seq": 0,
        }
    ]
    assert secret not in run(capsys, "webhooks", "list")[1]

    assert run(capsys, "webhooks", "test", endpoint_id)[0] == EXIT_OK
    status, out, _err = run(capsys, "webhooks", "send", "--once")
    assert (status, receiver.seen[0][2]) == (EXIT_OK, [0])
    assert "1 sent: 1 delivered, 0 to retry, 0 failed" in out

    status, out, _err = run(capsys, "webhooks", "deliveries", endpoint_id, "--json")
    log = json.loads(out)
    assert [
        (m["message_id"], m["event_type"], m["status"], m["attempts"], m["last_status_code"]) for m in log
    ] == [(receiver.seen[0][0], "webhook.test", "delivered", 1, 200)]
    status, out, _err = run(capsys, "webhooks", "replay", endpoint_id, "--message", log[0]["message_id"])
    assert (status, out.split()[0]) == (EXIT_OK, "1")
    run(capsys, "webhooks", "send", "--once")
    assert [seen[0] for seen in receiver.seen] == [log[0]["message_id"]] * 2
    status, out, _err = run(
        capsys, "webhooks", "replay", endpoint_id, "--since", "2026-01-01", "--until", "2027-01-01"
    )
    assert (status, out.split()[0]) == (EXIT_OK, "0")
    assert run(capsys, "webhooks", "remove", endpoint_id)[0] == EXIT_OK
    assert json.loads(run(capsys, "webhooks", "list", "--json")[1]) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["add", "--lender", "northwind-capital", "--url", "ftp://x"], "url: 'ftp://x' is not an absolute"),
        (["add", "--lender", "nobody", "--url", "http://127.0.0.1/"], "unknown lender 'nobody'"),
        (
            [
                "add",
                "--lender",
                "northwind-capital",
                "--url",
                "http://127.0.0.1/",
                "--events",
                "dossier.read",
            ],
            "event_types: unknown 'dossier.read'",
        ),
        (["deliveries", "ep_000000000000000000000000"], "no webhook endpoint 'ep_000000000000000000000000'"),
        (["replay", "ep_000000000000000000000000"], "give --message MSG_ID, or --since and --until"),
        (["replay", "ep_0", "--since", "yesterday"], "'yesterday' is not an ISO 8601 instant"),
    ],
)
def test_mistakes_get_one_line_and_exit_2(capsys, lender: str, argv: list[str], message: str) -> None:
    status, out, err = run(capsys, "webhooks", *argv)
    assert status == EXIT_ERROR
    assert len(err.strip().splitlines()) == 1
    assert message in err
    assert "Traceback" not in err + out
