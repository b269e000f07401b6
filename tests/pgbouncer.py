"""A real PgBouncer in transaction mode in front of the test database.

`start_pgbouncer` runs its own `pgbouncer` process (as the `postgres` OS user when the
tests run as root: PgBouncer refuses to run as root) on a free port of 127.0.0.1, with
config, auth file, log and pid in a temporary directory removed afterwards. Clients
log in with `auth_type = trust`; PgBouncer logs in to the server with the password
listed in its auth file. `default_pool_size` server connections per (database, user):
with 1, every client of one login role shares one server connection, which is what a
request that leaves something on its session needs to reach the next one.
"""

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from skillmeat.core.database import make_engine

NOT_INSTALLED = (
    "pgbouncer is not installed: the pooler tests need it "
    "(Debian/Ubuntu: apt-get install -y pgbouncer; .ci/run installs it)"
)
_DEBIAN_PATH = "/usr/sbin/pgbouncer"


def pgbouncer_binary() -> str:
    """The pgbouncer executable; fails the test (never skips) when it is missing."""
    found = shutil.which("pgbouncer") or (
        _DEBIAN_PATH if os.access(_DEBIAN_PATH, os.X_OK) else None
    )
    if found is None:
        pytest.fail(NOT_INSTALLED, pytrace=False)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@dataclass
class PgBouncer:
    """A running PgBouncer: `url(login)` is that login's URL through it."""

    port: int
    log: Path

    def url(self, login: URL) -> URL:
        return login.set(host="127.0.0.1", port=self.port)

    def engine(self, login: URL, *, pool_size: int = 1) -> Engine:
        """The library's engine through this PgBouncer, configured as the docs say
        (SKILLMEAT_DATABASE_POOLER=transaction)."""
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SKILLMEAT_DATABASE_POOLER", "transaction")
            return make_engine(self.url(login), pool_size=pool_size, max_overflow=0)


@contextmanager
def start_pgbouncer(
    server: URL, logins: list[URL], *, pool_size: int = 1, max_client_conn: int = 100
) -> Iterator[PgBouncer]:
    """PgBouncer (pool_mode = transaction) in front of `server`'s host and port,
    accepting the users of `logins`; stopped and cleaned up on exit."""
    binary = pgbouncer_binary()
    as_postgres = os.geteuid() == 0
    workdir = Path(tempfile.mkdtemp(prefix="skillmeat_pgbouncer_"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        port = _free_port()
        users = "".join(f"{_quoted(str(u.username))} {_quoted(u.password or '')}\n" for u in logins)
        (workdir / "users.txt").write_text(users)
        ini = workdir / "pgbouncer.ini"
        log = workdir / "pgbouncer.log"
        ini.write_text(
            "[databases]\n"
            f"* = host={server.host or '127.0.0.1'} port={server.port or 5432}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {workdir / 'users.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            "min_pool_size = 0\n"
            "reserve_pool_size = 0\n"
            f"max_client_conn = {max_client_conn}\n"
            f"logfile = {log}\n"
            f"pidfile = {workdir / 'pgbouncer.pid'}\n"
            # psycopg sends none of these; listed so a driver that does is not refused.
            "ignore_startup_parameters = extra_float_digits,options\n"
        )
        if as_postgres:
            owner = pwd.getpwnam("postgres")
            for path in (workdir, *workdir.iterdir()):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        proc = subprocess.Popen(
            [binary, str(ini)],
            user="postgres" if as_postgres else None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                logged = log.read_text() if log.exists() else ""
                pytest.fail(f"pgbouncer exited at start: {err}{logged}", pytrace=False)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"pgbouncer did not listen on {port} within 10 s", pytrace=False)
            time.sleep(0.02)
        yield PgBouncer(port=port, log=log)
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # immediate shutdown: the tests are done
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(workdir, ignore_errors=True)
