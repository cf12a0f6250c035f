"""Partitioned queues: the rules every client language follows (docs/cluster.md), on one server
and on a real Redis Cluster, both editions: the registry, routing by key, a worker over every
partition keeping each key's order, and stats, peek, recover and fetch over every partition."""
from __future__ import annotations

import threading
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set

import pytest

import rmq
from conftest import Server, TestCluster, wait_for
from rmq.partition import REGISTRY_KEY, Partitioned, key_slot, partition_index, partition_names, queue_slot


def test_the_key_hash_and_the_partition_names_are_every_clients() -> None:
    # The check values of docs/cluster.md.
    assert zlib.crc32(b"123456789") == 0xCBF43926
    assert partition_index("123456789", 12) == 0xCBF43926 % 12 == 2
    assert partition_index("customer-7", 12) == 8
    assert partition_index(b"customer-7", 1) == 0
    assert partition_index("", 5) == 0
    # UTF-8 bytes of the key.
    assert partition_index("日本", 1000) == zlib.crc32("日本".encode()) % 1000
    assert partition_names("orders", 12) == [
        "orders#0.40", "orders#1", "orders#2.42", "orders#3.22", "orders#4", "orders#5.42",
        "orders#6.48", "orders#7", "orders#8.20", "orders#9.1", "orders#10.23", "orders#11",
    ]
    for count in (1, 2, 3, 12, 100):
        names = partition_names("orders", count)
        for i, q in enumerate(names):
            assert i * 16384 // count <= queue_slot(q) < (i + 1) * 16384 // count, q
    # Redis Cluster's slots (CLUSTER KEYSLOT on a real server).
    assert (queue_slot("jobs"), key_slot("msg:{jobs}"), key_slot("123456789")) == (9631, 9631, 12739)
    for bad in (("orders", 0), ("orders", 1025), ("bad name", 2), ("n" * 181, 2)):
        with pytest.raises(rmq.InvalidMessage):
            partition_names(*bad)


def test_the_registry_record_reads_back() -> None:
    p = Partitioned("orders", True, partition_names("orders", 4), 1700)
    assert p.encode().startswith("v=1 count=4 ordered=1 created=1700 partitions=orders#0")
    assert Partitioned.decode("orders", p.encode()) == p
    for bad in ("v=2 count=1 partitions=a", "v=1 count=2 partitions=a", "v=1 count=1 partitions=a b", "v=1 count=1 partitions=bad{q}"):
        with pytest.raises(rmq.ProtocolError):
            Partitioned.decode("x", bad)
    keyed = {p.route("customer-7") for _ in range(10)}
    assert keyed == {p.partitions[partition_index("customer-7", 4)]}
    assert {p.route("") for _ in range(400)} == set(p.partitions), "keyless messages reach every partition"


def run_workers(url: str, queue: str, n: int, until, **options) -> List[rmq.WorkerReport]:
    """Runs ``n`` blocking workers of ``queue`` in threads until ``until()`` holds (bounded)."""
    handler = options.pop("handler")
    workers = [rmq.Worker(url, queue, handler, handle_signals=False, **options) for _ in range(n)]
    threads = [threading.Thread(target=w.run) for w in workers]
    for t in threads:
        t.start()
    try:
        wait_for("every message handled", until, 120)
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(60)
    return [w.report for w in workers]


def test_a_partitioned_queue_on_one_server_keeps_each_keys_order(server: Server, tmp_path: Path) -> None:
    with rmq.Client(server.url) as c:
        assert not c.is_cluster()
        assert c.partitioned("jobs") is None, "an ordinary queue"
        # The Lua edition starts without the library: creating loads it (ordered partitions
        # are configured, a write).
        p, created = c.partition_create("jobs", 4, ordered=True)
        assert created and p.count == 4 and p.partitions == partition_names("jobs", 4)
        again, created = c.partition_create("jobs", 4, ordered=True)
        assert not created and again == p, "creating again changes nothing"
        with pytest.raises(rmq.Refused, match="fixed at creation"):
            c.partition_create("jobs", 5, ordered=True)
        for q in p.partitions:
            assert c.config_get(q, "ordered") == {"ordered": 1}
        rec = c.raw("HGET", REGISTRY_KEY, "jobs").decode()
        assert rec.startswith("v=1 count=4 ordered=1 created="), rec
        assert c.partition_list() == [p]
        assert REGISTRY_KEY not in c.queues()
        c.push("busy", "x")
        with pytest.raises(rmq.Refused, match="holds 1 message"):
            c.partition_create("busy", 2)
        with pytest.raises(rmq.Refused, match="collides"):
            c.partition_create(p.partitions[1], 2)

    with rmq.Producer(server.url, spool_dir=tmp_path) as producer:
        for seq in range(10):
            for key in "abcdef":
                r = producer.push("jobs", f"{key}:{seq}", key=key)
                assert not r.spooled and r.queue == p.partitions[partition_index(key, 4)]
    seen: Dict[str, List[int]] = defaultdict(list)
    partition_of: Dict[str, Set[str]] = defaultdict(set)
    lock = threading.Lock()

    def handle(m: rmq.Message) -> None:
        key, seq = m.text().split(":")
        with lock:
            seen[key].append(int(seq))
            partition_of[key].add(m.queue)

    reports = run_workers(server.url, "jobs", 2, lambda: sum(map(len, seen.values())) >= 60, handler=handle, concurrency=3)
    assert sum(r.acked for r in reports) == 60 and sum(r.stale for r in reports) == 0
    for key, seqs in seen.items():
        assert seqs == list(range(10)), f"key {key} in order"
        assert partition_of[key] == {p.partition_for_key(key)}
    with rmq.Client(server.url) as c:
        st = c.partition_stats("jobs")
        assert (st.total.pushed, st.total.acked, st.total.ready) == (60, 60, 0)
        assert list(st.partitions) == p.partitions
        assert sum(s.pushed for s in st.partitions.values()) == 60


def test_inspection_and_fetch_cover_every_partition(server: Server) -> None:
    with rmq.Client(server.url) as c:
        p, _ = c.partition_create("inspect", 3)
        for i in range(9):
            c.push(p.partitions[i % 3], f"m{i}", id=f"m{i}")
        peeked = c.partition_peek("inspect")
        assert sorted(m.id for m in peeked) == [f"m{i}" for i in range(9)]
        assert {m.queue for m in peeked} == set(p.partitions)
        # Fair fetch: one message at a time, the partitions in turn.
        got = [c.partition_fetch("inspect", count=1, lock=60) for _ in range(3)]
        assert all(len(g) == 1 for g in got)
        assert {g[0].queue for g in got} == set(p.partitions), "each fetch starts one past the last"
        for [m] in got:
            assert c.nack(m.queue, m.receipt, "error") is True
        more = c.partition_fetch("inspect", count=6, lock=60)
        assert len(more) == 6
        for m in more:
            assert c.nack(m.queue, m.receipt, "fail") is True
        rec = c.partition_recover("inspect")
        assert rec.total == rmq.Recovered(0, 6, 3)
        assert sum(r.failed for r in rec.partitions.values()) == 6
        assert c.partition_stats("inspect").total.ready == 9
        assert c.partition_fetch("inspect", count=20, block=0.2) and c.partition_fetch("inspect", block=0.2) == []
        with pytest.raises(rmq.Refused, match="not a partitioned queue"):
            c.partition_stats("plain")


def test_a_push_spooled_under_the_logical_name_goes_to_its_partition(make_server, tmp_path: Path) -> None:
    srv = make_server(["--appendonly", "yes", "--appendfsync", "always"])
    with rmq.Client(srv.url) as c:
        p, _ = c.partition_create("later", 4)
    srv.kill()
    with rmq.Producer(srv.url, spool_dir=tmp_path, retries=0, background_drain=False, connect_timeout=0.3) as producer:
        r = producer.push("later", "hi", key="customer-7", id="s1")
        assert r.spooled and r.queue == "later", "not looked up: spooled under the logical name"
        srv.restart()
        wait_for("the server is back", lambda: producer.client.ping() is None)
        assert producer.drain().sent == 1
    with rmq.Client(srv.url) as c:
        got = c.get(p.partition_for_key("customer-7"), "s1")
        assert got is not None and got.body == b"hi"


PARTITIONS = 6
KEYS = 20
MESSAGES = 600


def test_an_ordered_partitioned_queue_over_three_masters(cluster: TestCluster, tmp_path: Path) -> None:
    name = f"orders-{cluster.edition}"
    with rmq.Client(cluster.url) as c:
        p, created = c.partition_create(name, PARTITIONS, ordered=True)
        assert created
        per_master: Dict[int, int] = defaultdict(int)
        for q in p.partitions:
            per_master[cluster.owner(queue_slot(q))] += 1
        assert sorted(per_master.values()) == [2, 2, 2], per_master
    seen: Dict[str, List[int]] = defaultdict(list)
    ids: Dict[str, int] = defaultdict(int)
    partition_of: Dict[str, Set[str]] = defaultdict(set)
    lock = threading.Lock()

    def handle(m: rmq.Message) -> None:
        key, seq = m.text().split(":")
        with lock:
            seen[key].append(int(seq))
            ids[m.id] += 1
            partition_of[key].add(m.queue)

    workers = [rmq.Worker(cluster.url, name, handle, handle_signals=False, concurrency=2, lock=60) for _ in range(3)]
    threads = [threading.Thread(target=w.run) for w in workers]
    for t in threads:
        t.start()
    try:
        with rmq.Producer(cluster.url, spool_dir=tmp_path) as producer:
            for i in range(MESSAGES):
                key = f"k{i % KEYS}"
                r = producer.push(name, f"{key}:{i // KEYS}", key=key)
                assert not r.spooled and r.queue == p.partition_for_key(key)
        wait_for("every message handled", lambda: len(ids) >= MESSAGES, 120)
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(60)
    assert sum(w.report.acked for w in workers) == MESSAGES
    assert all(n == 1 for n in ids.values()), "each message handled once"
    for key, seqs in seen.items():
        assert seqs == list(range(MESSAGES // KEYS)), f"key {key} in order"
        assert partition_of[key] == {p.partition_for_key(key)}
    assert set().union(*partition_of.values()) == set(p.partitions), "every partition used"
    with rmq.Client(cluster.url) as c:
        st = c.partition_stats(name)
        assert (st.total.pushed, st.total.acked, st.total.inflight) == (MESSAGES, MESSAGES, 0)
