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


def test_fetch_from_a_server_that_predates_compact_gives_whole_messages() -> None:
    """The client asks FETCH for the COMPACT reply; a server whose library does not know the
    word yet refuses it once, and the client fetches maps from then on."""
    import redis

    from conftest import lua_source

    old = lua_source().replace("elseif kw == 'COMPACT' then", "elseif kw == 'NOT-YET-COMPACT' then")
    old = old.replace("(rest == 'COMPACT' or rest == 'compact')", "false")
    old = old.replace("(first == 'COMPACT' or first == 'compact')", "false")
    assert old != lua_source(), "the library names COMPACT where this test expects it"
    s = Server("lua")
    try:
        r = redis.Redis(host="127.0.0.1", port=s.port, socket_timeout=10)
        r.execute_command("FUNCTION", "LOAD", old)
        with pytest.raises(redis.ResponseError, match="near 'COMPACT'"):
            r.execute_command("FCALL", "rmq_fetch", 1, "q", "COMPACT")
        with rmq.Client(s.url) as c:
            c.push("q", "one", headers={"h": "v"})
            c.push("q", "two")
            first = c.fetch("q")
            assert [(m.body, m.attempt, m.offset, m.headers) for m in first] == [(b"one", 1, 1, {"h": "v"})]
            second = c.fetch("q")
            assert [m.body for m in second] == [b"two"]
            assert c.ack("q", first[0].receipt, second[0].receipt) == 2
    finally:
        s.close()


def test_fetch_compact_and_map_forms_give_the_same_message(server: Server) -> None:
    with rmq.Client(server.url) as c:
        c.push("q", "body", id="m1", tag="t", key="k", headers={"a": "1", "b": "2"})
        [m] = c.fetch("q", consumer="w")
        assert (m.id, m.body, m.tag, m.key, m.headers, m.attempt, m.offset) == ("m1", b"body", "t", "k", {"a": "1", "b": "2"}, 1, 1)
        assert m.deadline >= m.created + 30000 and m.receipt.startswith("1-1-")
        assert c.ack("q", m.receipt) == 1
