"""The producer against real redis-servers: every PUSH option, ids, the spool when Redis is
down, drain on start, refusals, and the catastrophic case."""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

import rmq
import rmq.aio
from conftest import Server, dead_url, wait_for

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_push_carries_every_option_and_makes_time_ordered_ids(server: Server, tmp_path: Path) -> None:
    with rmq.Producer(server.url, spool_dir=tmp_path) as p:
        a = p.push("jobs", b"\x00\xff", tag="t", key="k", headers=[("h", "v"), ("n", "2")])
        b = p.push("jobs", "later", id="my-id", delay=60)
        at = p.push("jobs", "at", at=4102444800000)
        assert not a.spooled and UUID7.match(a.id) and b.id == "my-id"
        c = p.client
        m = c.get("jobs", a.id)
        assert m is not None
        assert (m.body, m.tag, m.key, m.headers) == (b"\x00\xff", "t", "k", {"h": "v", "n": "2"})
        assert c.get("jobs", "my-id").state == "delayed"
        assert c.get("jobs", at.id).due == 4102444800000
        assert p.push("jobs", "again", id="my-id").id == "my-id"
        assert c.stats("jobs").dups == 1
        ids = [p.push("jobs", str(i)).id for i in range(50)]
        assert ids == sorted(ids)


def test_redis_down_pushes_are_spooled_then_delivered_once(make_server, tmp_path: Path) -> None:
    """Scenario: Redis down during pushes -> spooled, then delivered exactly once."""
    srv = make_server()

    async def main() -> None:
        client = rmq.aio.Client(srv.url, connect_timeout=0.3, command_timeout=2)
        async with rmq.aio.Producer(
            client, spool_dir=tmp_path, retries=1, retry_backoff=0.01, drain_interval=0.1
        ) as p:
            sent = [await p.push("jobs", f"up {i}") for i in range(20)]
            assert not any(x.spooled for x in sent)
            got = [(await client.fetch("jobs", count=100))]
            await client.ack("jobs", *[m.receipt for m in got[0]])
            srv.kill()
            down = [await p.push("jobs", f"down {i}", tag="d") for i in range(100)]
            assert all(x.spooled for x in down)
            assert (await p.spool_status()).records == 100
            srv.restart()  # empty: no persistence; the spool must bring all 100
            for _ in range(400):
                if (await p.spool_status()).records == 0:
                    break
                await asyncio.sleep(0.05)
            seen = []
            while True:
                ms = await client.fetch("jobs", count=1000)
                if not ms:
                    break
                seen += ms
            assert sorted(m.id for m in seen) == sorted(x.id for x in down)
            assert [m.text() for m in seen] == [f"down {i}" for i in range(100)]  # in order
            assert (await client.stats("jobs")).pushed == 100
            back = await p.push("jobs", "after")
            assert not back.spooled
        await client.aclose()

    asyncio.run(main())


def test_a_new_producer_drains_what_an_old_one_spooled(server: Server, tmp_path: Path) -> None:
    with rmq.Producer(dead_url(), spool_dir=tmp_path, retries=0, connect_timeout=0.3) as old:
        pass  # (a producer may take a URL: it makes its own client)
    old = rmq.Producer(rmq.Client(dead_url(), connect_timeout=0.3), spool_dir=tmp_path, retries=0, background_drain=False)
    ids = [old.push("jobs", f"m{i}").id for i in range(5)]
    old.close()
    with rmq.Producer(server.url, spool_dir=tmp_path, drain_interval=0.1) as p:
        wait_for("drain on start", lambda: p.client.stats("jobs").ready == 5)
        assert [m.id for m in p.client.peek("jobs")] == ids
        # The drain deletes what Redis took just after Redis took it.
        wait_for("the spool emptied", lambda: p.spool_status().records == 0)


def test_refusals_are_raised_not_spooled(server: Server, tmp_path: Path) -> None:
    with rmq.Producer(server.url, spool_dir=tmp_path) as p:
        p.client.config_set("jobs", maxlen=1)
        p.push("jobs", "1")
        with pytest.raises(rmq.Refused, match="queue full"):
            p.push("jobs", "2")
        assert p.spool_status().records == 0
    with rmq.Producer(dead_url(), spool_dir=tmp_path, retries=0, connect_timeout=0.3) as p:
        with pytest.raises(rmq.InvalidMessage):
            p.push("no spaces allowed", "x")
        with pytest.raises(rmq.InvalidMessage):
            p.push("jobs", "x", headers=[("a", "1"), ("a", "2")])
        assert p.spool_status().records == 0


def test_redis_down_and_spool_unwritable_is_an_error(tmp_path: Path) -> None:
    spool = tmp_path / "file"
    spool.write_bytes(b"not a directory")
    with rmq.Producer(dead_url(), spool_dir=spool, retries=0, connect_timeout=0.3) as p:
        with pytest.raises(rmq.NotStored):
            p.push("jobs", "x")
    with rmq.Producer(dead_url(), spool_dir=None, retries=0, connect_timeout=0.3) as p:
        with pytest.raises(rmq.Unavailable):
            p.push("jobs", "x")
