"""Servers and long-lived processes a test starts (`mlflow server`, `mlflow models serve`,
`mlflow ui`, PostgreSQL, sweep workers): each in its own session (process group), marked with
this test run's token in its environment, and stopped with its whole group. The session's
final check (`conftest.py`) fails the run when a marked process is still alive at the end:
`mlflow server` alone leaves uvicorn, a job runner and seven huey consumers behind when only
its parent is stopped."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

MARK = "DEEPLAB_TEST_SERVER"
# One token per test run, shared by the pytest-xdist workers (they inherit the environment).
TOKEN = os.environ.setdefault("DEEPLAB_TEST_RUN", uuid.uuid4().hex)


def start(args, env=None, **options) -> subprocess.Popen:
    """`subprocess.Popen(args)` in a new process group, marked as this run's."""
    env = {**(env if env is not None else os.environ), MARK: TOKEN}
    return subprocess.Popen(args, env=env, start_new_session=True, **options)


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop `proc` and every process of its group: SIGTERM, then SIGKILL after `timeout`."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.time() + wait
        while time.time() < deadline and group_alive(proc.pid):
            proc.poll()
            time.sleep(0.1)
        if not group_alive(proc.pid):
            break
    proc.poll()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def peak_rss(pgid: int) -> int:
    """The largest peak resident memory (VmHWM, bytes) of the processes of group `pgid`."""
    peak = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[2]) != pgid:  # the process group, after state and ppid
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except (OSError, ValueError, IndexError):
            continue
    return peak


def marked_alive() -> list[tuple[int, str]]:
    """(pid, command line) of every live process this run started as a server."""
    needle = f"{MARK}={TOKEN}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    found.append((int(entry.name), cmd.strip()[:200]))
        except OSError:
            continue
    return found


def mlflow_server(store: Path, port: int) -> subprocess.Popen:
    """`mlflow server --serve-artifacts` on 127.0.0.1:`port` (SQLite backend in `store`, its
    own artifact folder), answering /health."""
    import urllib.request

    store.mkdir(exist_ok=True)
    # Its log goes to a file: a pipe that nobody reads fills after a few hundred requests'
    # access lines, and the server then blocks on its next log line (every client waits).
    log = store / "server.log"
    with open(log, "ab") as out:
        proc = start(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
             f"sqlite:///{store / 'mlflow.db'}", "--serve-artifacts", "--artifacts-destination",
             str(store / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                stop(proc, timeout=5)
                raise AssertionError(f"mlflow server did not start: {log.read_text()[-3000:]}")
            time.sleep(0.5)
