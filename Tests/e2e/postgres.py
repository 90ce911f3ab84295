"""A throwaway PostgreSQL server for end-to-end tests (fleet, DESIGN §9).

`PostgresServer` runs initdb into a fresh temporary directory and starts `postgres` on a free 127.0.0.1 port, its
unix socket inside that directory, fsync off. A role `portcullis` with a password (SCRAM over TCP) owns the
database `portcullis`; `create_database()` makes more. `stop()` (immediate shutdown) and `start()` again keep the
port and the data, for outage tests; `destroy()` stops it and removes the directory.

PostgreSQL refuses to run as root, and CI runs as root: then initdb and postgres run as the `postgres` user
(created by Debian's `postgresql` package, see scripts/install-deps --test) in a directory handed to that user.

Fixtures (import them into a conftest.py or a test module: `from postgres import postgres_server, pg`):
  postgres_server  session-scoped server
  pg               per test: a fresh database on it, as a PostgresDatabase (url, password, store_config())
Environment: PORTCULLIS_PG_BIN overrides the binaries' folder (default: the newest /usr/lib/postgresql/*/bin).
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass

import pytest


def bin_dir() -> str:
    if os.environ.get("PORTCULLIS_PG_BIN"):
        return os.environ["PORTCULLIS_PG_BIN"]
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                  key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not dirs:
        pytest.skip("PostgreSQL is not installed (scripts/install-deps --test)")
    return os.path.dirname(dirs[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres() -> dict:
    """subprocess arguments that drop root to the postgres user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("postgres")

    def demote():
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return {"preexec_fn": demote}


@dataclass
class PostgresDatabase:
    """One database on a server: what a gateway's `store` block needs."""
    server: "PostgresServer"
    name: str

    @property
    def url(self) -> str:
        return f"postgres://{self.server.user}@127.0.0.1:{self.server.port}/{self.name}?sslmode=disable"

    @property
    def password(self) -> str:
        return self.server.password

    def store_config(self, **extra) -> dict:
        """A gateway.json `store` block for this database (the password inline)."""
        return {"type": "postgres", "url": self.url, "password": self.password, **extra}

    def sql(self, statement: str) -> str:
        """Runs SQL as the superuser over the unix socket; returns psql's unaligned output."""
        return self.server.psql(statement, database=self.name)


class PostgresServer:
    user = "portcullis"

    def __init__(self):
        self.bin = bin_dir()
        self.directory = tempfile.mkdtemp(prefix="pcpg-")
        self.port = _free_port()
        self.password = "pw-" + uuid.uuid4().hex
        self.process: subprocess.Popen | None = None
        os.makedirs(self.socket_dir)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            for root, dirs, files in os.walk(self.directory):
                os.chown(root, user.pw_uid, user.pw_gid)
            os.chmod(self.directory, 0o700)
        try:
            self._initdb()
            self.start()
            self.psql(f"CREATE ROLE {self.user} LOGIN CREATEDB PASSWORD '{self.password}'")
            self.psql(f"CREATE DATABASE portcullis OWNER {self.user}")
        except BaseException:
            self.destroy()
            raise

    @property
    def data_dir(self) -> str:
        return os.path.join(self.directory, "data")

    @property
    def socket_dir(self) -> str:
        return os.path.join(self.directory, "sock")

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "postgres.log")

    def _initdb(self):
        subprocess.run(
            [f"{self.bin}/initdb", "-D", self.data_dir, "-U", "postgres", "-E", "UTF8", "--no-sync",
             "--auth-local=trust", "--auth-host=scram-sha-256"],
            check=True, capture_output=True, cwd=self.directory, **_as_postgres())
        with open(os.path.join(self.data_dir, "pg_hba.conf"), "w") as f:
            f.write("local all postgres trust\nhost all all 127.0.0.1/32 scram-sha-256\n")

    def start(self, timeout: float = 30):
        """Starts the server (again) on the same port and data directory; returns once it accepts connections."""
        if self.process is not None and self.process.poll() is None:
            return
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [f"{self.bin}/postgres", "-D", self.data_dir, "-p", str(self.port), "-k", self.socket_dir,
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "full_page_writes=off", "-c", "max_connections=300", "-c", "shared_buffers=32MB"],
            stdout=log, stderr=log, cwd=self.directory, **_as_postgres())
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                with open(self.log_path, errors="replace") as f:
                    raise RuntimeError("postgres exited at start:\n" + f.read()[-2000:])
            # The port opens before crash recovery ends; pg_isready says when connections are accepted.
            if subprocess.run([f"{self.bin}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)]).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"postgres did not accept connections within {timeout} s")

    def stop(self):
        """Immediate shutdown (SIGQUIT): connections drop at once, no checkpoint; the data stays for start()."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def destroy(self):
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def psql(self, statement: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [f"{self.bin}/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.socket_dir,
             "-p", str(self.port), "-U", "postgres", "-d", database, "-c", statement],
            capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self) -> PostgresDatabase:
        name = "t_" + uuid.uuid4().hex
        self.psql(f"CREATE DATABASE {name} OWNER {self.user}")
        return PostgresDatabase(self, name)

    def database(self, name: str = "portcullis") -> PostgresDatabase:
        return PostgresDatabase(self, name)


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer()
    yield server
    server.destroy()


@pytest.fixture
def pg(postgres_server) -> PostgresDatabase:
    """A fresh database for one test (the server is shared; a test that stops it must start it again)."""
    if not postgres_server.running:
        postgres_server.start()
    return postgres_server.create_database()


if __name__ == "__main__":
    # Self-check: python3 Tests/e2e/postgres.py
    s = PostgresServer()
    try:
        db = s.create_database()
        print(db.url, db.sql("SELECT current_database()"))
        s.stop()
        s.start()
        print("restarted:", db.sql("SELECT 1"))
    finally:
        s.destroy()
    print("ok")
