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
from typing import Callable, Iterator, List, Optional

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
    def __init__(self, edition: str, extra: Optional[List[str]] = None) -> None:
        self.edition = edition
        self.dir = tempfile.mkdtemp(prefix="rmq-py-")
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
        self.port = free_port()
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
