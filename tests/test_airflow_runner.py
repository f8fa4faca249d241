"""Ctrl-C on ``dossier airflow`` (``make airflow``) stops every process it started, children of children too."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import requests

# A process tree like Airflow standalone's: a parent with children, one of which ignores SIGINT and
# one of which ignores SIGINT and SIGTERM (only SIGKILL stops it); each writes its pid when ready.
TREE = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    pids = sys.argv[1]
    def child(ignore):
        code = "import signal, time\\n" + "".join(f"signal.signal(signal.{s}, signal.SIG_IGN)\\n" for s in ignore)
        code += "time.sleep(600)\\n"
        return subprocess.Popen([sys.executable, "-c", code])
    kids = [child([]), child(["SIGINT"]), child(["SIGINT", "SIGTERM"])]
    with open(pids, "w") as out:
        out.write(" ".join(str(p) for p in [os.getpid()] + [k.pid for k in kids]))
    time.sleep(600)
    """
)

RUNNER = textwrap.dedent(
    """
    import sys
    from dossier.airflow_runner import run_until_interrupted
    sys.exit(run_until_interrupted([sys.executable, sys.argv[1], sys.argv[2]], {}, grace=3.0))
    """
)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(path: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} was not written within {timeout} s"
        time.sleep(0.1)
    return path.read_text()


def test_ctrl_c_stops_the_whole_process_tree(tmp_path: Path) -> None:
    (tmp_path / "tree.py").write_text(TREE)
    pids_file = tmp_path / "pids"
    # Started as a background job is: with SIGINT ignored, which the runner must undo.
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(tmp_path / "tree.py"), str(pids_file)],
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        pids = [int(p) for p in wait_for(pids_file).split()]
        assert all(alive(p) for p in pids)

        runner.send_signal(signal.SIGINT)

        assert runner.wait(timeout=60) == 130
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in pids if alive(p)] == []
    finally:
        if runner.poll() is None:
            runner.kill()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.airflow
def test_ctrl_c_on_airflow_standalone_leaves_no_process_behind(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "DOSSIER_HOME": str(tmp_path / "var"), "AIRFLOW__API__PORT": str(port)}
    for key in [k for k in env if k.startswith("AIRFLOW__") and k != "AIRFLOW__API__PORT"] + ["AIRFLOW_HOME"]:
        env.pop(key, None)  # the test session's own Airflow wiring must not leak into this one
    standalone = subprocess.Popen(
        [sys.executable, "-m", "dossier.cli", "airflow", "standalone"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            assert standalone.poll() is None, "airflow standalone exited early"
            assert time.monotonic() < deadline, "airflow standalone did not answer within 300 s"
            try:
                health = requests.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2)
                if health.status_code == 200 and json.loads(health.text)["scheduler"]["status"] == "healthy":
                    break
            except (requests.ConnectionError, requests.Timeout, KeyError, ValueError):
                pass
            time.sleep(1)
        started = [p.pid for p in psutil.Process(standalone.pid).children(recursive=True)]
        assert len(started) >= 4  # airflow standalone, scheduler, API server, DAG processor, ...

        standalone.send_signal(signal.SIGINT)

        assert standalone.wait(timeout=120) == 130
        deadline = time.monotonic() + 10
        while any(alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [p for p in started if alive(p)] == []
    finally:
        if standalone.poll() is None:
            standalone.kill()
