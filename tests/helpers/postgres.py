"""A real PostgreSQL server for a test: Debian's `postgresql` (`.ci/run` installs it), `initdb`
and `pg_ctl` in a temporary folder on 127.0.0.1, one database; stopped at the end."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import servers
from helpers.models import free_port


def bindir() -> Path | None:
    """The folder of Debian's PostgreSQL server programs (the newest version installed)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def _as_postgres(args: list[str]) -> list[str]:
    """`args` run as the `postgres` user when we are root (initdb refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


def start(database: str = "sweep") -> tuple[str, callable]:
    """A server with `database` on a free port, its data in a fresh folder of the system's
    temporary directory (pytest's is private to root, and the server runs as `postgres`):
    (its URL, a function that stops it and removes the folder). Skips the test, saying why,
    where PostgreSQL is not installed."""
    bin_ = bindir()
    if bin_ is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb refuses root")
    folder = Path(tempfile.mkdtemp(prefix="deeplab-pg-"))
    data, sock = folder / "data", folder / "sock"
    sock.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(sock, "postgres")
    subprocess.run(_as_postgres([str(bin_ / "initdb"), "-D", str(data), "-A", "trust", "-U",
                                 "postgres", "--no-sync"]), check=True, capture_output=True)
    port = free_port()
    proc = servers.start(_as_postgres([str(bin_ / "postgres"), "-D", str(data), "-p", str(port),
                                       "-k", str(sock), "-c", "listen_addresses=127.0.0.1",
                                       "-c", "fsync=off"]),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{database}"
    import time

    import psycopg2

    deadline = time.time() + 60
    while True:
        try:
            con = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
            break
        except psycopg2.OperationalError:
            if proc.poll() is not None or time.time() > deadline:
                servers.stop(proc, timeout=5)
                raise AssertionError("PostgreSQL did not start")
            time.sleep(0.3)
    con.autocommit = True
    con.cursor().execute(f"CREATE DATABASE {database}")
    con.close()

    def stop() -> None:
        servers.stop(proc, timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
    return url, stop
