"""Private server instances that a test may stop, kill and restart: a RabbitMQ node, a
PostgreSQL cluster and an nx-27017 MongoDB stand-in, each on free ports with its data in a
temporary directory (kept across restarts, removed at the end).

The shared servers that the rest of the suite uses are never touched. Use the fixtures

    from servers import private_rabbit, private_postgres, private_mongo  # noqa: F401

or the classes directly (`with PrivateRabbit() as rabbit: ... rabbit.restart()`).
Each `start()` returns once the server accepts connections; `stop()` is a clean shutdown
(connections are closed by the server, as in a rolling restart), `kill()` a crash (SIGKILL).
A missing server binary skips the test that asked for it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False


def _wait(predicate, what: str, timeout: float = START_TIMEOUT, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise TimeoutError(f"{what} within {timeout:.0f}s\n{tail}")
        time.sleep(0.1)


class _Server:
    name = "server"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"private-{self.name}-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def start(self) -> "_Server":
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        _wait(lambda: not port_open(self.port), f"{self.name} port closed", 30)

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.restarts += 1
        self.start()

    def cleanup(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class PrivateRabbit(_Server):
    """A second RabbitMQ node (own node name, AMQP and distribution ports, mnesia, logs,
    config, plugins file and Erlang cookie), guest/guest on the default vhost."""

    name = "rabbit"

    def __init__(self) -> None:
        self.server = _find("rabbitmq-server", ["/usr/lib/rabbitmq/bin/rabbitmq-server"])
        self.ctl_bin = _find("rabbitmqctl", ["/usr/lib/rabbitmq/bin/rabbitmqctl"])
        super().__init__()
        self.dist_port = free_port()
        self.node = f"priv{self.port}@localhost"
        home = self.dir / "home"
        for d in (home, self.dir / "mnesia", self.dir / "log"):
            d.mkdir()
        # the Erlang cookie is read from $HOME/.erlang.cookie by the node and by rabbitmqctl:
        # a HOME of its own keeps the shared node's cookie (and ~) untouched
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users.guest = true\n")
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")  # not the system's (its NODENAME)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")},
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbit.pid"),
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self) -> "PrivateRabbit":
        log = self.dir / "server.out"
        self.proc = subprocess.Popen([self.server], env=self.env, cwd=self.dir,
                                     stdout=log.open("ab"), stderr=subprocess.STDOUT)
        _wait(lambda: port_open(self.port) or self.proc.poll() is not None, "RabbitMQ accepting", log=log)
        assert self.proc.poll() is None, log.read_text(errors="replace")[-3000:]
        return self

    def ctl(self, *args: str) -> str:
        out = subprocess.run([self.ctl_bin, "-n", self.node, *args], env=self.env, capture_output=True,
                             text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {out.stdout}{out.stderr}")
        return out.stdout

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.ctl("stop")
        except (RuntimeError, subprocess.TimeoutExpired):
            self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        _wait(lambda: not port_open(self.port), "RabbitMQ port closed", 30)


class PrivatePostgres(_Server):
    """A PostgreSQL cluster of its own (initdb, trust auth, user postgres). As root, the
    server runs as the `postgres` system user (PostgreSQL refuses to run as root)."""

    name = "postgres"

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
        pg_ctl = str(bins[-1]) if bins else shutil.which("pg_ctl")
        if not pg_ctl:
            pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.bin = Path(pg_ctl).parent
        super().__init__()
        self.data = self.dir / "data"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8", "--locale=C")

    def _run(self, *args: str, timeout: float = 120) -> None:
        out = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {out.stdout}{out.stderr}")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> "PrivatePostgres":
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                  "-o", opts, "-w", "-t", str(int(START_TIMEOUT)), "start")
        _wait(lambda: port_open(self.port), "PostgreSQL accepting")
        self.proc = None
        return self

    def _pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        return int(pidfile.read_text().split()[0]) if pidfile.exists() else None

    def stop(self, mode: str = "fast") -> None:
        """`fast`: clients are disconnected and the server shuts down cleanly;
        `immediate`: no shutdown checkpoint, like a crash (recovery at the next start)."""
        if self._pid() is None:
            return
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        _wait(lambda: not port_open(self.port), "PostgreSQL port closed", 30)

    def kill(self) -> None:
        pid = self._pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            _wait(lambda: not port_open(self.port), "PostgreSQL port closed", 30)
            # a SIGKILLed postmaster leaves its children: stop them the documented way
            subprocess.run([*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60)

    def cleanup(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class PrivateMongo(_Server):
    """An nx-27017 MongoDB stand-in with its data (SQLite) kept across restarts."""

    name = "mongo"

    def __init__(self) -> None:
        self.bin = VENV_BIN / "nx-27017"
        if not self.bin.exists():
            pytest.skip("nx-27017 is not installed (make install)")
        super().__init__()

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self) -> "PrivateMongo":
        log = self.dir / "server.out"
        self.proc = subprocess.Popen(
            [str(self.bin), "--host", "127.0.0.1", "-p", str(self.port), "--data-dir", str(self.dir / "data"),
             "--log-file", str(self.dir / "nx.log"), "--pid-file", str(self.dir / "nx.pid")],
            stdout=log.open("ab"), stderr=subprocess.STDOUT)
        _wait(lambda: port_open(self.port) or self.proc.poll() is not None, "nx-27017 accepting", log=log)
        assert self.proc.poll() is None, log.read_text(errors="replace")[-3000:]
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        _wait(lambda: not port_open(self.port), "nx-27017 port closed", 30)


def _find(name: str, candidates: list[str]) -> str:
    for c in candidates:
        if Path(c).exists():
            return c
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} not found")
    return found


class PrivateServers(NamedTuple):
    rabbit: PrivateRabbit
    postgres: PrivatePostgres
    mongo: PrivateMongo


def parallel(*calls):
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(c) for c in calls]]


@pytest.fixture(scope="module")
def private_servers() -> Iterator[PrivateServers]:
    """All three, created and started side by side (a RabbitMQ boot and an initdb take
    seconds each)."""
    servers = PrivateServers(*parallel(PrivateRabbit, PrivatePostgres, PrivateMongo))
    try:
        parallel(*(s.start for s in servers))
        yield servers
    finally:
        parallel(*(s.cleanup for s in servers))


@pytest.fixture(scope="module")
def private_rabbit() -> Iterator[PrivateRabbit]:
    with PrivateRabbit() as server:
        yield server


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    with PrivatePostgres() as server:
        yield server


@pytest.fixture(scope="module")
def private_mongo() -> Iterator[PrivateMongo]:
    with PrivateMongo() as server:
        yield server
