"""Every command through the client, on both editions, with typed results."""
from __future__ import annotations

import asyncio
import time

import pytest

import rmq
import rmq.aio
from conftest import Server, dead_url


def test_commands_round_trip_with_typed_results(server: Server) -> None:
    with rmq.Client(server.url) as c:
        assert c.edition() == server.edition
        c.config_set("jobs", {"backoff-ms": 0}, max_attempts=3)
        cfg = c.config_get("jobs")
        assert cfg["backoff-ms"] == 0 and cfg["max-attempts"] == 3
        assert c.config_get("jobs", "lock-ms") == {"lock-ms": 30000}
        body = bytes(range(256))
        mid = c.push("jobs", body, id="m1", tag="t", key="k", headers={"h": "v", "x": "日本"})
        assert mid == "m1"
        assert c.push("jobs", "two", id="m2") == "m2"
        assert c.push("jobs", "dup", id="m2") == "m2"  # within the dedup window: dropped
        later = c.push("jobs", "later", delay=60)
        st = c.stats("jobs")
        assert isinstance(st, rmq.Stats)
        assert (st.ready, st.delayed, st.pushed, st.dups) == (2, 1, 3, 1)
        assert [m.id for m in c.peek("jobs")] == ["m1", "m2"]
        assert c.peek("jobs", "delayed")[0].due > 0
        got = c.get("jobs", "m1")
        assert got is not None and got.state == "ready" and got.body == body
        assert got.headers == {"h": "v", "x": "日本"} and (got.tag, got.key) == ("t", "k")
        assert c.get("jobs", "nope") is None

        msgs = c.fetch("jobs", count=2, lock=30, consumer="me")
        assert [(m.id, m.attempt) for m in msgs] == [("m1", 1), ("m2", 1)]
        m1, m2 = msgs
        assert m1.body == body and m1.receipt and m1.deadline > time.time() * 1000
        assert c.peek("jobs", "inflight")[0].consumer == "me"
        assert c.touch("jobs", m1.receipt, 60) > m1.deadline
        assert c.ack("jobs", m1.receipt) == 1
        assert c.ack("jobs", m1.receipt) == 0  # stale
        assert c.nack("jobs", m2.receipt, "error", reason="boom") is True
        assert c.nack("jobs", m2.receipt, "fail") is False
        err = c.peek("jobs", "errors")[0]
        assert (err.id, err.error) == ("m2", "boom")
        assert c.requeue("jobs", "m2") == 1
        assert c.fetch("jobs")[0].id == "m2"
        assert c.recover("jobs") == rmq.Recovered(0, 0, 0)
        assert "jobs" in c.queues()
        assert c.delete("jobs", later, "m2") == 2
        c.push("jobs", "x")
        assert c.purge("jobs", "all") == 1
        assert c.stats("jobs").acked == 1


def test_fetch_block_waits_for_a_message(server: Server) -> None:
    async def main() -> None:
        async with rmq.aio.Client(server.url) as c:
            t0 = time.monotonic()
            assert await c.fetch("jobs", block=0.3) == []
            assert time.monotonic() - t0 >= 0.25

            async def later() -> None:
                await asyncio.sleep(0.2)
                await c.push("jobs", "hi")

            task = asyncio.ensure_future(later())
            got = await c.fetch("jobs", block=10)
            await task
            assert [m.text() for m in got] == ["hi"]

    asyncio.run(main())


def test_lua_library_is_loaded_only_by_commands_that_write() -> None:
    srv = Server("lua")
    try:
        with rmq.Client(srv.url) as c:
            assert c.edition() == "lua"
            with pytest.raises(rmq.NotInstalled, match="rmq is not installed on redis://127.0.0.1"):
                c.stats("jobs")
            with pytest.raises(rmq.NotInstalled):
                c.config_get("jobs")
            assert c.raw("FUNCTION", "LIST") == []
            c.push("jobs", "x")  # writes: loads the library
            assert c.stats("jobs").ready == 1
            # A restart without persistence loses the library: the next write loads it again.
            srv.kill()
            srv.restart()
            c.push("jobs", "y")
            assert c.stats("jobs").ready == 1
    finally:
        srv.close()


def test_errors_are_sorted_into_unavailable_and_refused(server: Server) -> None:
    with rmq.Client(dead_url(), connect_timeout=0.5) as c:
        with pytest.raises(rmq.Unavailable):
            c.push("jobs", "x")
    with rmq.Client(server.url) as c:
        with pytest.raises(rmq.InvalidMessage):
            c.push("bad name", "x")
        with pytest.raises(rmq.InvalidMessage):
            c.push("jobs", "x", delay=1, at=5)
        c.config_set("jobs", maxlen=1)
        c.push("jobs", "1")
        with pytest.raises(rmq.Refused, match="ERR queue full"):
            c.push("jobs", "2")
        with pytest.raises(rmq.Refused, match="ERR unknown setting"):
            c.config_set("jobs", {"nope": 1})


def test_the_packaged_lua_library_is_the_repositorys() -> None:
    from rmq.aio import lua_library

    from conftest import REPO

    repo = REPO / "lua" / "rmq.lua"
    if not repo.exists():
        pytest.skip("not inside the rmq repository")
    assert lua_library() == repo.read_text(encoding="utf-8"), "run `make sync-lua`"
