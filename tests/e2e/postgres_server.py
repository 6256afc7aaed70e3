"""A throwaway PostgreSQL cluster for the end-to-end tests.

One cluster per test session (the `postgres` fixture), in a temporary
directory, on a free port of 127.0.0.1, its unix socket in that directory,
fsync on. PostgreSQL refuses to run as root: as root the cluster runs as the
user postgres (Debian's postgresql package makes it), or nobody when there
is none. Each test gets a namespace of its own, a table of its own named in
the store URL (`pg_store`), so tests never see each other's keys. The
cluster can be stopped (as a crash: `pg_ctl stop -m immediate`) and started
again on the same port, to test a store that goes away under load.
"""

import os
import pwd
import re
import shutil
import subprocess
import tempfile

import pytest

from conftest import free_port


def _bindir():
    try:
        d = subprocess.run(["pg_config", "--bindir"], capture_output=True,
                           text=True, check=True).stdout.strip()
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    except (OSError, subprocess.CalledProcessError):
        pass
    return "/usr/lib/postgresql/15/bin"


class PostgresServer:
    def __init__(self):
        self.bin = _bindir()
        self.dir = tempfile.mkdtemp(prefix="idem-pg-", dir="/tmp")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.port = free_port()
        self.prefix = []
        if os.getuid() == 0:
            user = "postgres"
            try:
                pw = pwd.getpwnam(user)
            except KeyError:
                user = "nobody"
                pw = pwd.getpwnam(user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.prefix = ["runuser", "-u", user, "--"]
        self._run(["initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                   "--no-sync"])
        self.start()

    def _run(self, argv, check=True):
        argv = self.prefix + [os.path.join(self.bin, argv[0])] + argv[1:]
        return subprocess.run(argv, capture_output=True, text=True,
                              check=check, timeout=60)

    def start(self):
        opts = ("-c listen_addresses=127.0.0.1 -c port=%d "
                "-c unix_socket_directories=%s -c fsync=on "
                "-c max_connections=300" % (self.port, self.dir))
        self._run(["pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "30",
                   "-o", opts, "start"])
        self._run(["pg_isready", "-q", "-h", "127.0.0.1", "-p",
                   str(self.port), "-t", "30"])

    def stop(self, mode="immediate"):
        self._run(["pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"],
                  check=False)

    def url(self, table, **params):
        query = "&".join(["connect_timeout=2", "table=" + table] +
                         ["%s=%s" % kv for kv in params.items()])
        return "postgres://postgres@127.0.0.1:%d/postgres?%s" % (self.port,
                                                                 query)

    def sql(self, statement):
        """Runs one statement with psql; its output, unaligned."""
        return subprocess.run(
            [os.path.join(self.bin, "psql"), "-h", "127.0.0.1", "-p",
             str(self.port), "-U", "postgres", "-d", "postgres", "-X", "-A",
             "-t", "-q", "-c", statement],
            capture_output=True, text=True, check=True, timeout=30).stdout

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    server = PostgresServer()
    yield server
    server.destroy()


@pytest.fixture
def pg_store(postgres, request):
    """A store URL with a table of this test's own, and the table's name."""
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())
    table = ("t%s_%s" % (os.urandom(3).hex(), name))[:40]
    return postgres.url(table), table + "_v1"
