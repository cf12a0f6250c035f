"""The client on a real Redis Cluster (3 masters, 3 replicas; conftest.TestCluster), both
editions: every command reaches the master of its queue's slot, a slot that moves under a
command, an ACK whose answer is lost is never sent again, and confirms."""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import List

import pytest

import rmq
import rmq.aio
from conftest import TestCluster, wait_for
from rmq.aio.client import QUEUE_KEY_PREFIXES
from rmq.partition import queue_slot


def exercise_every_command(c: rmq.Client, q: str) -> None:
    """Every command of the contract on queue ``q``, with the answers a single server gives."""
    mid = f"{q}-m1"
    assert c.push(q, "one", id=mid, key="k") == mid
    assert c.push(q, "one again", id=mid) == mid  # a duplicate
    c.push(q, "two", id=f"{q}-m2")
    c.push(q, "later", id=f"{q}-m3", delay=3600)
    st = c.stats(q)
    assert (st.ready, st.delayed, st.pushed, st.dups) == (2, 1, 3, 1), (q, st)

    m = c.fetch(q, count=1, lock=60)[0]
    assert (m.id, m.body, m.key, m.queue) == (mid, b"one", "k", q)
    assert c.touch(q, m.receipt, 120) > 0
    assert c.nack(q, m.receipt, "retry", delay=0, reason="again") is True
    assert len(c.peek(q, "ready")) == 2

    m = c.fetch(q, count=1, lock=60)[0]
    assert c.ack(q, m.receipt) == 1
    assert c.ack(q, m.receipt) == 0, "a second ACK changes nothing"

    m = c.fetch(q, count=1, lock=60)[0]
    assert c.nack(q, m.receipt, "error", reason="bad") is True
    assert c.get(q, m.id).state == "errors"
    assert c.recover(q, errors=True) == rmq.Recovered(0, 0, 1)
    m = c.fetch(q, count=1, lock=60)[0]
    assert c.nack(q, m.receipt, "fail", reason="dead") is True
    assert len(c.peek(q, "failed")) == 1
    assert c.requeue(q, m.id) == 1
    assert c.requeue(q, f"{q}-m3") == 1, "delayed -> ready"
    assert c.delete(q, m.id) == 1

    c.config_set(q, {"log": 1, "lock-ms": 45000})
    assert c.config_get(q, "lock-ms") == {"lock-ms": 45000}
    c.push(q, "logged", id=f"{q}-m4")
    assert c.log(q), "the log has the push"
    assert c.replay(q, 0) == 1
    assert c.stats(q).ready == 3, "m3, m4 and the replayed copy"
    assert c.purge(q, "ready") == 3
    c.push(q, "stays", id=f"{q}-m5")  # so that it shows in QUEUES


def test_every_command_reaches_the_master_of_its_queue(cluster: TestCluster) -> None:
    per_master = cluster.queues_per_master(f"route-{cluster.edition}", 2)
    every = [q for _, qs in per_master for q in qs]
    # Any node's URL will do, a replica's too.
    replica = cluster.replicas_of(cluster.master_ports()[0])[0]
    with rmq.Client(f"redis://127.0.0.1:{replica}", edition=cluster.edition) as c:
        assert c.is_cluster()
        assert sorted(c.masters()) == sorted(f"127.0.0.1:{p}" for p in cluster.master_ports())
        for q in every:
            exercise_every_command(c, q)
        listed = c.queues()
        assert all(q in listed for q in every), listed
    # Every queue's keys are on its slot's master, and on no other master.
    masters = cluster.master_ports()
    for master, qs in per_master:
        for q in qs:
            slot = queue_slot(q)
            assert cluster.keys_in_slot(master, slot) > 0, f"{q} has no key on its master {master}"
            for other in masters:
                if other != master:
                    assert cluster.keys_in_slot(other, slot) == 0, f"{q} has keys on {other} too"
    if cluster.edition == "lua":
        lua_calls_declare_every_key(cluster)
        the_library_is_loaded_on_every_master(cluster)


def lua_calls_declare_every_key(cluster: TestCluster) -> None:
    """The Lua edition on a cluster is called with every key of the queue declared (``FCALL
    rmq_push 11 q msg:{q} ... log:{q}``): the slow log, with a threshold of 0, keeps every
    command with its arguments."""
    q = "declared-py"
    port = cluster.owner(queue_slot(q))
    con = cluster.conn(port)
    con.config_set("slowlog-log-slower-than", 0)
    try:
        with rmq.Client(cluster.url, edition="lua") as c:
            c.push(q, "x", id="d1")
    finally:
        con.config_set("slowlog-log-slower-than", 10000)
    words: List[str] = []
    for entry in con.slowlog_get(50):
        words += [w.decode(errors="replace") if isinstance(w, bytes) else str(w) for w in entry["command"].split()]
    expected = ["rmq_push", "11", q] + [f"{p}:{{{q}}}" for p in QUEUE_KEY_PREFIXES]
    assert any(words[i : i + len(expected)] == expected for i in range(len(words))), words


def the_library_is_loaded_on_every_master(cluster: TestCluster) -> None:
    """A cluster whose masters lost the Lua library: the first write loads it on every master."""
    for port in cluster.master_ports():
        cluster.conn(port).execute_command("FUNCTION", "FLUSH")
    with rmq.Client(cluster.url) as c:
        for _, qs in cluster.queues_per_master("reload-py", 1):
            c.push(qs[0], "x")
    for port in cluster.master_ports():
        assert cluster.conn(port).execute_command("FUNCTION", "LIST"), f"no library on master {port}"


def test_a_command_waits_while_its_queues_slot_moves(cluster: TestCluster) -> None:
    """A slot moved by hand (CLUSTER SETSLOT and MIGRATE, as ``redis-cli --cluster reshard``
    does): while the queue's keys are split between the two masters, the source answers ASK and
    the target TRYAGAIN, so the client waits; once the slot has moved it answers MOVED and the
    command runs there. Nothing is lost and the queue is on one node."""
    q = f"moving-{cluster.edition}"
    slot = queue_slot(q)
    src = cluster.owner(slot)
    dst = next(p for p in cluster.master_ports() if p != src)
    with rmq.Client(cluster.url, command_timeout=20) as c:
        for i in range(5):
            c.push(q, f"m{i}", id=f"m{i}")
        s, d = cluster.conn(src), cluster.conn(dst)
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.id_of(src))
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.id_of(dst))
        keys = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        assert len(keys) >= 2, keys
        # Half of the queue's keys moved: the queue is split.
        s.execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys[: len(keys) // 2])
        done: List[str] = []
        t = threading.Thread(target=lambda: done.append(c.push(q, "during", id="during")))
        t.start()
        time.sleep(0.5)
        assert not done, "the push waits while the queue's keys are split"
        s.execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys[len(keys) // 2 :])
        for port in cluster.master_ports():
            cluster.conn(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", cluster.id_of(dst))
        t.join(20)
        assert done == ["during"]
        st = c.stats(q)
        assert (st.ready, st.pushed) == (6, 6), st
        assert cluster.keys_in_slot(src, slot) == 0 and cluster.keys_in_slot(dst, slot) > 0
        assert [m.id for m in c.fetch(q, count=10)] == [f"m{i}" for i in range(5)] + ["during"]
    # Every node agrees again before the next test uses the cluster.
    cluster.wait_ok()


def command_calls(cluster: TestCluster, port: int, command: str) -> int:
    """How many times the node ran ``command`` (INFO commandstats)."""
    stats = cluster.conn(port).info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def test_a_lost_ack_is_not_sent_again_and_a_blocking_fetch_holds_up_nothing(cluster: TestCluster) -> None:
    [(master, (waiting, other))] = cluster.queues_per_master(f"hold-{cluster.edition}", 2)[:1]

    async def main() -> None:
        async with rmq.aio.Client(cluster.url) as c:
            # A FETCH blocking on an empty queue; meanwhile the same client pushes to, and reads,
            # another queue of the same master.
            fetch = asyncio.ensure_future(c.fetch(waiting, count=1, block=30))
            await asyncio.sleep(0.2)
            for i in range(20):
                await c.push(other, "x", id=f"o{i}")
                assert (await c.stats(other)).ready == i + 1
            assert not fetch.done()
            await c.push(waiting, "wake", id="w1")
            got = await asyncio.wait_for(fetch, 30)
            assert got[0].id == "w1"

            # An ACK whose answer does not come in time (the master is paused) is reported as
            # unavailable and never sent again: the server sees it at most once. ACK being
            # idempotent, the caller may send it again: the message is acked once.
            m = (await c.fetch(other, count=1, lock=60))[0]
            acked_before = (await c.stats(other)).acked
            stat = "rmq.ack" if cluster.edition == "module" else "fcall"
            owner = cluster.owner(queue_slot(other))
            async with rmq.aio.Client(cluster.url, command_timeout=0.5, edition=cluster.edition) as impatient:
                await impatient.stats(other)
                before = command_calls(cluster, owner, stat)
                cluster.conn(owner).execute_command("CLIENT", "PAUSE", 1500, "ALL")
                with pytest.raises(rmq.Unavailable):
                    await impatient.ack(other, m.receipt)
                await asyncio.sleep(1.7)
            sent = command_calls(cluster, owner, stat) - before
            assert sent <= 1, f"the lost ACK reached the server {sent} times"
            again = await c.ack(other, m.receipt)
            assert again + sent == 1, "applied once, by the first ACK or by the second"
            assert await c.get(other, m.id) is None
            assert (await c.stats(other)).acked == acked_before + 1

    asyncio.run(main())


def test_confirmed_pushes_wait_for_a_replica(cluster: TestCluster, tmp_path: Path) -> None:
    q = f"confirmed-{cluster.edition}"
    with rmq.Producer(cluster.url, spool_dir=tmp_path / "a", confirm=True) as p:
        pushed = p.push(q, "safe")
        assert not pushed.spooled and pushed.queue == q
    with rmq.Client(cluster.url) as c:
        pid, acked = c.push_confirmed(q, "x", rmq.Confirm(replicas=1, timeout=2), id="x1")
        assert (pid, acked) == ("x1", 1)
    # Two replicas asked for, one there: never confirmed, so the push is sent again with its id
    # (a duplicate: the queue has it once) and then spooled.
    spool = tmp_path / "b"
    with rmq.Producer(
        cluster.url, spool_dir=spool, confirm=rmq.Confirm(replicas=2, timeout=0.05), retries=1, background_drain=False
    ) as p:
        r = p.push(q, "unsure", id="u1")
        assert r.spooled
        assert p.spool_status().records == 1
        report = p.drain()
        assert report.sent == 0 and report.stopped, "an unconfirmed drain keeps the record"
    with rmq.Client(cluster.url) as c:
        st = c.stats(q)
        assert (st.pushed, st.dups) == (3, 2), st
    # With one replica asked for, the drain confirms and empties the spool.
    with rmq.Producer(cluster.url, spool_dir=spool, confirm=True, background_drain=False) as p:
        report = p.drain()
        assert (report.sent, report.remaining) == (1, 0)
    with rmq.Client(cluster.url) as c:
        assert c.stats(q).ready == 3


def test_a_worker_and_a_producer_on_the_cluster(cluster: TestCluster, tmp_path: Path) -> None:
    qs = [q for _, v in cluster.queues_per_master(f"work-{cluster.edition}", 1) for q in v]
    with rmq.Producer(cluster.url, spool_dir=tmp_path) as p:
        for i in range(30):
            assert not p.push(qs[i % 3], f"{i}", id=f"w{i}").spooled
    seen: List[str] = []
    workers = [rmq.Worker(cluster.url, q, lambda m: seen.append(m.id), handle_signals=False, block=0.2) for q in qs]
    threads = [threading.Thread(target=w.run) for w in workers]
    for t in threads:
        t.start()
    try:
        wait_for("every message handled", lambda: len(seen) >= 30, 60)
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(30)
    assert sorted(seen) == sorted(f"w{i}" for i in range(30))
    assert sum(w.report.acked for w in workers) == 30


def test_a_producer_and_a_worker_ride_out_a_failover(cluster: TestCluster, tmp_path: Path) -> None:
    """kill -9 of a queue's master: its replica takes over, the client reads the slot map again
    and goes on. With confirms, every push acknowledged before the kill survives it; every
    message is handled at least once. (After the kill the new master has no replica, so a
    confirmed push could not be confirmed until one is back: the pushes after the kill are not
    confirmed.)"""
    q = f"failover-{cluster.edition}"
    slot = queue_slot(q)
    master = cluster.owner(slot)
    seen: List[str] = []
    worker = rmq.Worker(cluster.url, q, lambda m: seen.append(m.id), handle_signals=False, block=0.2, lock=5)
    t = threading.Thread(target=worker.run)
    t.start()
    try:
        with rmq.Producer(cluster.url, spool_dir=tmp_path / "a", confirm=True) as p:
            for i in range(10):
                assert not p.push(q, "before", id=f"b{i}").spooled
        cluster.node(master).kill()
        started = time.monotonic()
        with rmq.Producer(cluster.url, spool_dir=tmp_path / "b", command_timeout=20) as p:
            for i in range(10):
                assert not p.push(q, "after", id=f"a{i}").spooled, "the first push waits out the failover"
        took = time.monotonic() - started
        every = {f"b{i}" for i in range(10)} | {f"a{i}" for i in range(10)}
        wait_for("every message handled", lambda: every <= set(seen), 60)
        new_master = cluster.owner(slot)
        assert new_master != master
        print(f"{cluster.edition}: failover of {master} to {new_master}: pushes waited {took:.1f} s")
    finally:
        worker.stop()
        t.join(30)
        # The old master comes back as a replica; every node agrees again for the next test.
        cluster.node(master).restart()
        cluster.wait_ok()
