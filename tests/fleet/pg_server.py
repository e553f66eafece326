"""A throwaway PostgreSQL server for tests: Debian's `postgresql` binaries, a private data directory, port and socket
directory, TLS (a self-signed certificate, so deploy/dagster-postgres.yaml's `sslmode: require` holds) and password
authentication over TCP (so the password Dagster reads from DAGSTER_PG_PASSWORD is really checked).

PostgreSQL refuses to run as root; as root (CI, this machine) the server runs as the `postgres` system user that
Debian's package creates (else `nobody`), through runuser.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

DEBIAN_PACKAGE = "postgresql"


def find_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """`with PostgresServer() as pg:` starts a server on 127.0.0.1:pg.port with database `pg.db`; stops and removes
    it on exit."""

    user = "dagster"
    db = "dagster"

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.port = free_port()
        self.password = os.urandom(12).hex()
        self.host = "127.0.0.1"
        self._run_as = None
        if os.geteuid() == 0:
            self._run_as = next(u for u in ("postgres", "nobody") if _user_exists(u))

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self._run_as, "--", *args] if self._run_as else list(args)

    def _run(self, *args: str) -> None:
        done = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=120)
        if done.returncode:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n{log}")

    def __enter__(self) -> PostgresServer:
        # Under /tmp (not pytest's 0700 tmp dirs), owned by the server's user, which must reach it.
        self.base = Path(tempfile.mkdtemp(prefix="neuronforge-pg-"))
        self.data, self.sockets, self.log = self.base / "data", self.base / "sockets", self.base / "server.log"
        self.sockets.mkdir()
        pwfile = self.base / "pw"
        pwfile.write_text(self.password + "\n")
        if self._run_as:
            entry = pwd.getpwnam(self._run_as)
            for path in (self.base, self.sockets, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        try:
            self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            )
            self._self_signed_certificate()
            options = (
                f"-p {self.port} -k {self.sockets} -c listen_addresses={self.host} -c ssl=on -c fsync=off "
                "-c max_connections=200"
            )
            self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"
            )
            self._run(
                str(self.bindir / "createdb"), "-h", str(self.sockets), "-p", str(self.port), "-U", self.user, self.db
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _self_signed_certificate(self) -> None:
        key, crt = self.data / "server.key", self.data / "server.crt"
        self._run(
            "openssl", "req", "-new", "-x509", "-days", "2", "-nodes", "-subj", "/CN=localhost",
            "-keyout", str(key), "-out", str(crt),
        )  # fmt: skip
        self._run("chmod", "600", str(key))

    def __exit__(self, *exc) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"),
                capture_output=True,
                timeout=120,
            )
        shutil.rmtree(self.base, ignore_errors=True)

    def env(self) -> dict[str, str]:
        """The variables deploy/dagster-postgres.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.db,
        }

    def connect(self):
        import psycopg2

        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=self.db, sslmode="require"
        )


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
