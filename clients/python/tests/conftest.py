"""Real redis-servers for the tests, on free 127.0.0.1 ports in temp dirs: with the module
(``--loadmodule``, path from RMQ_MODULE or the repository's target/release/librmq.so), or
plain (the client loads the Lua library itself). A server that does not come up fails the test
at once; each is killed when its test ends."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest

from rmq import RmqError

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
VECTORS = REPO / "clients" / "spool-vectors"


def module_path() -> Optional[str]:
    p = os.environ.get("RMQ_MODULE")
    if p:
        return p
    guess = REPO / "target" / "release" / "librmq.so"
    return str(guess) if guess.exists() else None


def cli_path() -> Optional[str]:
    """The Rust `rmq` CLI (for the cross-language spool tests)."""
    p = os.environ.get("RMQ_CLI")
    if p:
        return p
    guess = REPO / "target" / "release" / "rmq"
    return str(guess) if guess.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(
        self, edition: str, extra: Optional[List[str]] = None, port: Optional[int] = None, parent: Optional[str] = None
    ) -> None:
        self.edition = edition
        self.dir = tempfile.mkdtemp(prefix="rmq-py-", dir=parent)
        self.args = [
            "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", self.dir, "--logfile", "redis.log",
        ] + (extra or [])
        if edition == "module":
            m = module_path()
            if not m:
                pytest.fail("the module is not built: cargo build --release -p rmq (or set RMQ_MODULE)")
            self.args += ["--loadmodule", m]
        self.proc: Optional[subprocess.Popen] = None
        self.port = port or free_port()
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            return Path(self.dir, "redis.log").read_text()
        except OSError:
            return ""

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port)] + self.args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        until = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                self.proc = None
                pytest.fail(f"redis-server exited at start; log:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > until:
                self.kill()
                pytest.fail(f"redis-server on port {self.port} did not answer within 10 s")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def editions() -> List[str]:
    spec = os.environ.get("RMQ_CLIENT_EDITIONS")
    if not spec:
        return ["lua", "module"]
    eds = [e.strip() for e in spec.split(",") if e.strip()]
    bad = [e for e in eds if e not in ("lua", "module")]
    if bad or not eds:
        # A misspelled list must fail, not pass having tested nothing.
        raise pytest.UsageError(f"RMQ_CLIENT_EDITIONS={spec!r}: editions are lua and module")
    return eds


@pytest.fixture(params=editions())
def edition(request: pytest.FixtureRequest) -> str:
    if request.param == "module" and not module_path():
        pytest.skip("module edition: librmq.so is not built (cargo build --release -p rmq)")
    return request.param


@pytest.fixture
def server(edition: str) -> Iterator[Server]:
    s = Server(edition)
    yield s
    s.close()


@pytest.fixture
def make_server(edition: str) -> Iterator[Callable[..., Server]]:
    made: List[Server] = []

    def make(extra: Optional[List[str]] = None) -> Server:
        s = Server(edition, extra)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def wait_for(what: str, cond: Callable[[], bool], limit: float = 20.0) -> None:
    """Polls cond until it holds; fails the test (never hangs) after limit seconds."""
    until = time.monotonic() + limit

    def holds() -> bool:
        try:
            return bool(cond())
        except RmqError:  # e.g. the server is restarting: look again
            return False

    while not holds():
        if time.monotonic() > until:
            pytest.fail(f"{what}: not within {limit} s")
        time.sleep(0.02)


def dead_url() -> str:
    """A loopback port nobody listens on."""
    return f"redis://127.0.0.1:{free_port()}"


PYTHON = sys.executable


# --- a real Redis Cluster -------------------------------------------------------------------


def free_ports(n: int) -> List[int]:
    """``n`` distinct free loopback ports (every socket is held until all are chosen)."""
    held = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def lua_source() -> str:
    from rmq.aio import lua_library

    return lua_library()


class TestCluster:
    """A Redis Cluster of 3 masters and 3 replicas, as the Rust tests start it: each node a
    redis-server on two free 127.0.0.1 ports (its port and its cluster bus port) in a temp dir,
    with the module loaded, or plain with the Lua library loaded on every master; joined with
    ``redis-cli --cluster create``. A node that does not come up, a create that fails, or a
    cluster that is not ok within the bounded wait fails the test at once."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, edition: str, masters: int = 3, replicas: int = 1) -> None:
        self.edition = edition
        self.masters_count = masters
        self.replicas_per_master = replicas
        self.dir = tempfile.mkdtemp(prefix="rmq-py-cluster-")
        n = masters * (1 + replicas)
        ports = free_ports(2 * n)
        self.nodes: List[Server] = []
        try:
            for i in range(n):
                port, bus = ports[2 * i], ports[2 * i + 1]
                extra = [
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", "3000", "--cluster-port", str(bus),
                    # A replica takes over whatever its lag; replicas sync at once.
                    "--cluster-replica-validity-factor", "0", "--repl-diskless-sync-delay", "0",
                ]
                self.nodes.append(Server(edition, extra, port=port, parent=self.dir))
            self._create()
            self.wait_ok()
            if edition == "lua":
                for port in self.master_ports():
                    self.conn(port).execute_command("FUNCTION", "LOAD", "REPLACE", lua_source())
        except BaseException:
            self.close()
            raise

    def live_port(self) -> int:
        """The port of the first node that runs (any node will do for a cluster client)."""
        for s in self.nodes:
            if s.proc is not None and s.proc.poll() is None:
                return s.port
        pytest.fail("no cluster node runs")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.live_port()}"

    def node(self, port: int) -> Server:
        return next(s for s in self.nodes if s.port == port)

    def conn(self, port: int) -> Any:
        """An admin connection to one node (plain redis-py)."""
        import redis

        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=30, socket_connect_timeout=5)

    def _create(self) -> None:
        args = ["redis-cli", "--cluster", "create"] + [f"127.0.0.1:{s.port}" for s in self.nodes]
        args += ["--cluster-replicas", str(self.replicas_per_master), "--cluster-yes"]
        try:
            out = subprocess.run(args, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            pytest.fail("redis-cli is not installed (apt-get install redis-tools)")
        except subprocess.TimeoutExpired:
            pytest.fail("redis-cli --cluster create did not finish within 60 s")
        text = out.stdout.decode(errors="replace")
        # On a busy machine redis-cli's own final check may run before every node has heard of
        # every replica: what matters is that it set the cluster up; wait_ok then waits until
        # every node agrees.
        if "Nodes configuration updated" not in text or "Sending CLUSTER MEET" not in text:
            pytest.fail(f"redis-cli --cluster create failed:\n{text}\n{out.stderr.decode(errors='replace')}")

    def nodes_info(self, port: Optional[int] = None) -> List[dict]:
        """``CLUSTER NODES`` as a node sees it: port, id, master, failed, master_id, slots."""
        text = self.conn(port or self.live_port()).execute_command("CLUSTER", "NODES")
        text = text.decode() if isinstance(text, bytes) else text
        out = []
        for line in text.splitlines():
            f = line.split()
            if len(f) < 8:
                continue
            slots = []
            for s in f[8:]:
                if s.startswith("["):
                    continue  # a slot being moved
                a, _, b = s.partition("-")
                slots.append((int(a), int(b or a)))
            out.append(
                dict(
                    id=f[0],
                    port=int(f[1].split("@")[0].rsplit(":", 1)[1]),
                    master="master" in f[2],
                    failed="fail" in f[2] and "fail?" not in f[2],
                    master_id=None if f[3] == "-" else f[3],
                    slots=sorted(slots),
                )
            )
        return out

    def wait_ok(self, limit: float = 60.0) -> None:
        """Waits (bounded) until every node says ``cluster_state:ok``, knows every node and every
        replica, every replica's link is up, and every node agrees on the slot map."""
        n = len(self.nodes)
        until = time.monotonic() + limit
        why = ""
        while True:
            why = ""
            maps = set()
            for s in self.nodes:
                if s.proc is None:
                    continue  # killed on purpose
                try:
                    c = self.conn(s.port)
                    ci = c.execute_command("CLUSTER", "INFO").decode()
                    repl = c.execute_command("INFO", "replication")
                    info = self.nodes_info(s.port)
                except Exception as e:  # noqa: BLE001 - not up yet: look again
                    why = f"node {s.port}: {e}"
                    continue
                if "cluster_state:ok" not in ci:
                    why = f"node {s.port} is not ok"
                elif f"cluster_known_nodes:{n}" not in ci:
                    why = f"node {s.port} does not know every node yet"
                elif repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                    why = f"replica {s.port} is not in sync yet"
                elif sum(1 for i in info if not i["master"] and not i["failed"] and i["master_id"]) != (
                    self.masters_count * self.replicas_per_master
                ):
                    why = f"node {s.port} does not see every replica yet"
                maps.add(tuple(sorted((i["port"], tuple(i["slots"])) for i in info if i["master"] and i["slots"])))
            if not why and len(maps) > 1:
                why = "nodes disagree on the slot map"
            if not why:
                return
            if time.monotonic() > until:
                logs = "\n".join(f"--- node {s.port}:\n{s.log()[-3000:]}" for s in self.nodes)
                pytest.fail(f"the cluster is not ok within {limit} s: {why}\n{logs}")
            time.sleep(0.1)

    def master_ports(self) -> List[int]:
        """Ports of the masters that serve slots, in the order of their first slot."""
        ms = [i for i in self.nodes_info() if i["master"] and not i["failed"] and i["slots"]]
        return [i["port"] for i in sorted(ms, key=lambda i: i["slots"][0][0])]

    def owner(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        for i in self.nodes_info():
            if i["master"] and not i["failed"] and any(a <= slot <= b for a, b in i["slots"]):
                return i["port"]
        pytest.fail(f"no master serves slot {slot}")

    def replicas_of(self, port: int) -> List[int]:
        info = self.nodes_info()
        mid = next(i["id"] for i in info if i["port"] == port)
        return [i["port"] for i in info if i["master_id"] == mid]

    def id_of(self, port: int) -> str:
        return next(i["id"] for i in self.nodes_info() if i["port"] == port)

    def keys_in_slot(self, port: int, slot: int) -> int:
        return int(self.conn(port).execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))

    def queues_per_master(self, prefix: str, n: int) -> List[Tuple[int, List[str]]]:
        """``n`` queue names per master, named ``{prefix}-{i}``, found by their slots."""
        from rmq.partition import queue_slot

        info = [i for i in self.nodes_info() if i["master"] and i["slots"]]

        def owner(slot: int) -> int:
            return next(i["port"] for i in info if any(a <= slot <= b for a, b in i["slots"]))

        out = {m: [] for m in self.master_ports()}
        i = 0
        while any(len(v) < n for v in out.values()):
            q = f"{prefix}-{i}"
            qs = out[owner(queue_slot(q))]
            if len(qs) < n:
                qs.append(q)
            i += 1
        return list(out.items())

    def close(self) -> None:
        for s in self.nodes:
            s.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session", params=editions())
def cluster(request: pytest.FixtureRequest) -> Iterator[TestCluster]:
    """One cluster per edition for the whole session (tests use queue names of their own)."""
    if request.param == "module" and not module_path():
        pytest.skip("module edition: librmq.so is not built (cargo build --release -p rmq)")
    c = TestCluster(request.param)
    yield c
    c.close()
