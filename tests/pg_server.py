"""A real PostgreSQL server for the tests: started once per session in a temporary folder.

The server is Debian's (``/usr/lib/postgresql/*/bin``; ``.ci/run`` installs it): ``initdb``
makes a cluster in a temporary folder, ``pg_ctl`` starts it on 127.0.0.1 on a free port with
its socket in that folder, and it is stopped (``pg_ctl stop -m fast``) at the end, always.
``initdb`` refuses to run as root, so as root the cluster belongs to the ``postgres`` system
user (``runuser -u postgres --``).  Without the binaries the tests skip, unless
``DAGCALL_REQUIRE_POSTGRES=1`` (CI), where they fail.

Each test gets a schema of its own (:func:`pg_url`: the URL sets its search_path); the
superuser ``dagcall`` logs in over TCP with the password :data:`PASSWORD` (scram-sha-256).
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PASSWORD = "pg-Secr3t-pw"  # noqa: S105 - the test cluster's own
USER = "dagcall"


@dataclass
class PostgresServer:
    """A running server: its superuser's URL for a database is :meth:`url`."""

    port: int
    folder: Path

    def url(self, dbname: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A new empty schema (quicker than a database): the URL whose search_path it is."""
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f'CREATE SCHEMA "{name}"')
        return self.url() + f"?options=-csearch_path%3D{name}"


def _binaries() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[4]) if Path(p).parts[4].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unavailable(reason: str) -> None:
    if os.environ.get("DAGCALL_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"DAGCALL_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


def _as_owner(command: list[str]) -> list[str]:
    """``command`` as the cluster's owner: the ``postgres`` user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def _run(command: list[str], timeout: float = 60) -> None:
    done = subprocess.run(
        _as_owner(command), capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:2])} failed ({done.returncode}): {done.stdout}{done.stderr}"
        )


def start_server() -> Iterator[PostgresServer]:
    """Start a server, yield it, stop it (and remove its folder) however the tests end."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'dagcall[postgres]')")
    bin_dir = _binaries()
    if bin_dir is None:
        _unavailable("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        return
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        _unavailable("running as root, and there is no runuser to run initdb as postgres")
    folder = Path(tempfile.mkdtemp(prefix="dagcall-pg-"))
    data, sockets = folder / "data", folder / "sock"
    sockets.mkdir()
    pwfile = folder / "pwfile"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        import pwd

        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder, ignore_errors=True)
            _unavailable("running as root, and there is no postgres user to own the cluster")
            return
        for path in (folder, sockets, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    started = False
    try:
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ]
        )
        for attempt in range(3):
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
            )
            try:
                _run(
                    [
                        str(bin_dir / "pg_ctl"),
                        "start",
                        "-D",
                        str(data),
                        "-w",
                        "-t",
                        "60",
                        "-l",
                        str(folder / "server.log"),
                        "-o",
                        options,
                    ],
                    timeout=90,
                )
            except RuntimeError:
                if attempt == 2:
                    raise
                time.sleep(0.2)  # the port was taken meanwhile: another one
                continue
            started = True
            break
        yield PostgresServer(port=port, folder=folder)
    finally:
        if started or (data / "postmaster.pid").exists():
            subprocess.run(
                _as_owner([str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w"]),
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole session."""
    yield from start_server()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A new empty schema on the session's server: its URL (with the password)."""
    return postgres_server.create_database()
