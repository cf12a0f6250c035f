"""One spool for every language: a spool written by this client is drained by the Rust CLI
(`rmq spool drain`), and one written by the Rust CLI (`rmq push` while Redis is down) is
drained by this client. One partitioned queue for every language: made by the Rust CLI, pushed
to by Python with keys, each message in the partition the Rust client picks."""
from __future__ import annotations

import json
import subprocess
import zlib
from pathlib import Path
from typing import Dict, List

import pytest

import rmq
from conftest import Server, TestCluster, cli_path, dead_url


def rmq_cli(url: str, spool: Path, *args: str) -> subprocess.CompletedProcess:
    cli = cli_path()
    if not cli:
        pytest.skip("the rmq CLI is not built (cargo build --release -p rmq-client --bin rmq)")
    return subprocess.run(
        [cli, "--url", url, "--spool", str(spool), "--connect-timeout", "300", "--command-timeout", "3000", *args],
        capture_output=True,
        timeout=60,
        env={"RMQ_LOG": "error", "PATH": "/usr/bin:/bin"},
    )


def test_a_python_spool_is_drained_by_the_rust_cli(server: Server, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with rmq.Producer(dead_url(), spool_dir=spool, retries=0, connect_timeout=0.3, background_drain=False) as p:
        pushed = [
            p.push("orders", b"\x00binary\xff", tag="created", key="cust-7", headers={"trace": "abc", "lang": "日本語"}),
            p.push("orders", "plain", id="given-id"),
            p.push("orders", "later", at=4102444800000),
        ]
        assert all(x.spooled for x in pushed)
    out = rmq_cli(server.url, spool, "spool", "drain")
    assert out.returncode == 0, out.stderr.decode()
    with rmq.Client(server.url) as c:
        a = c.get("orders", pushed[0].id)
        assert a is not None
        assert (a.body, a.tag, a.key, a.headers) == (
            b"\x00binary\xff",
            "created",
            "cust-7",
            {"trace": "abc", "lang": "日本語"},
        )
        assert c.get("orders", "given-id").body == b"plain"
        assert c.get("orders", pushed[2].id).due == 4102444800000
        assert c.stats("orders").pushed == 3
    assert not list(spool.glob("*.seg")) or all(f.stat().st_size == 0 for f in spool.glob("*.seg"))


def test_a_rust_spool_is_drained_by_python(server: Server, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    down = dead_url()
    ids: List[str] = []
    for i in range(3):
        out = rmq_cli(down, spool, "push", "jobs", f"from rust {i}", "--id", f"r{i}", "--tag", "t", "--header", f"n={i}")
        assert out.returncode == 4, out.stderr.decode()  # 4: spooled, not in Redis yet
        ids.append(f"r{i}")
    with rmq.Producer(server.url, spool_dir=spool, background_drain=False) as p:
        assert p.spool_status().records == 3
        report = p.drain()
        assert (report.sent, report.corrupt, report.refused) == (3, 0, 0)
        msgs = p.client.fetch("jobs", count=10)
        assert [(m.id, m.text(), m.tag, m.headers) for m in msgs] == [
            (f"r{i}", f"from rust {i}", "t", {"n": str(i)}) for i in range(3)
        ]


def test_a_partitioned_queue_made_by_the_rust_cli_routes_python_pushes_as_rust_does(
    cluster: TestCluster, tmp_path: Path
) -> None:
    """``rmq partition create`` (the Rust CLI) makes the queue; Python pushes with keys: every
    message lands in the partition the Rust client picks for its key."""
    name = f"xl-{cluster.edition}"
    spool = tmp_path / "spool"
    out = rmq_cli(cluster.url, spool, "partition", "create", name, "8")
    assert out.returncode == 0, out.stderr.decode()
    show = rmq_cli(cluster.url, spool, "--json", "partition", "show", name)
    assert show.returncode == 0, show.stderr.decode()
    parts = [p["queue"] for p in json.loads(show.stdout)["partitions"]]
    assert len(parts) == 8
    keys = [f"customer-{i}" for i in range(30)] + ["123456789", "日本語", "k"]
    rust: Dict[str, str] = {}
    for k in keys[:6] + keys[-3:]:
        r = rmq_cli(cluster.url, spool, "--json", "push", name, "from rust", "--key", k)
        assert r.returncode == 0, r.stderr.decode()
        rust[k] = json.loads(r.stdout)["queue"]
    with rmq.Producer(cluster.url, spool_dir=tmp_path / "py") as p:
        assert p.client.partitioned(name).partitions == parts
        for i, k in enumerate(keys):
            pushed = p.push(name, "from python", key=k, id=f"py-{i}")
            assert not pushed.spooled
            assert pushed.queue == parts[zlib.crc32(k.encode()) % 8], k
            if k in rust:
                assert pushed.queue == rust[k], f"{k}: Rust chose {rust[k]}, Python {pushed.queue}"
            got = p.client.get(pushed.queue, f"py-{i}")
            assert got is not None and got.key == k
    assert len(set(rust.values())) > 1
