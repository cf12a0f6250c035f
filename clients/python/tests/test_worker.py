"""The worker against real redis-servers: outcomes, TOUCH, timeouts, stopping, and the shared
scenarios of docs/client.md (kill -9 mid-job, graceful stop, a hung handler, a poison
message)."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, List

import pytest

import rmq
import rmq.aio
from conftest import HERE, PYTHON, Server, wait_for


def run_until(worker: rmq.aio.Worker, cond, limit: float = 30.0) -> rmq.WorkerReport:
    """Runs an asyncio worker until cond() holds, then stops it; fails after limit seconds."""

    async def main() -> rmq.WorkerReport:
        task = asyncio.ensure_future(worker.run())
        until = time.monotonic() + limit
        while not await cond():
            if task.done():
                return task.result()
            if time.monotonic() > until:
                worker.stop()
                await task
                pytest.fail(f"condition not met within {limit} s")
            await asyncio.sleep(0.02)
        worker.stop()
        return await asyncio.wait_for(task, 30)

    return asyncio.run(main())


def test_outcomes_by_return_value_and_exception(server: Server) -> None:
    with rmq.Client(server.url) as c:
        c.config_set("jobs", {"backoff-ms": 0})
        for tag in ["ok", "async-ok", "retry", "fail", "error", "raises", "returns-error", "nobody"]:
            c.push("jobs", tag, tag=tag, id=f"m-{tag}")
    runs: Dict[str, int] = {}
    client = rmq.aio.Client(server.url)
    w = rmq.aio.Worker(client, "jobs", lock=5, handle_signals=False)

    @w.handler("ok")
    def ok(m: rmq.Message) -> None:
        runs["ok"] = runs.get("ok", 0) + 1

    @w.handler("async-ok")
    async def async_ok(m: rmq.Message) -> None:
        await asyncio.sleep(0)
        runs["async-ok"] = 1

    @w.handler("retry")
    def retry(m: rmq.Message):
        runs["retry"] = m.attempt
        if m.attempt == 1:
            raise rmq.Outcome.retry("try later")

    @w.handler("fail")
    def fail(m: rmq.Message):
        return rmq.Outcome.fail("bad order")

    @w.handler("error")
    async def error(m: rmq.Message):
        raise rmq.Outcome.error("explicit")

    @w.handler("raises")
    def raises(m: rmq.Message):
        raise ValueError("no sku")

    @w.handler("returns-error")
    def returns_error(m: rmq.Message):
        return rmq.Outcome.error("returned")

    async def settled() -> bool:
        s = await client.stats("jobs")
        return s.acked == 3 and s.dead == 1 and s.errored == 4

    report = run_until(w, settled)
    assert (report.acked, report.retried, report.failed, report.errored) == (3, 1, 1, 4)
    assert runs == {"ok": 1, "async-ok": 1, "retry": 2}
    with rmq.Client(server.url) as c:
        errors = {m.id: m.error for m in c.peek("jobs", "errors", count=100)}
        assert errors == {
            "m-error": "explicit",
            "m-raises": "ValueError: no sku",
            "m-returns-error": "returned",
            "m-nobody": "no handler for tag 'nobody'",
        }
        assert [(m.id, m.error) for m in c.peek("jobs", "failed")] == [("m-fail", "bad order")]
        assert c.stats("jobs").inflight == 0


def test_touch_keeps_a_handler_running_three_locks_from_redelivery(server: Server) -> None:
    with rmq.Client(server.url) as c:
        c.push("jobs", "slow", id="slow")
    calls: List[int] = []
    client = rmq.aio.Client(server.url)
    w = rmq.aio.Worker(client, "jobs", lock=0.4, concurrency=4, handle_signals=False)

    @w.handler()
    async def slow(m: rmq.Message) -> None:
        calls.append(m.attempt)
        await asyncio.sleep(1.2)

    async def acked() -> bool:
        return (await client.stats("jobs")).acked == 1

    report = run_until(w, acked)
    assert calls == [1] and report.acked == 1 and report.stale == 0


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_handler_that_hangs_past_its_timeout_is_retried_with_reason_timeout(server: Server, kind: str) -> None:
    """Scenario: a handler that hangs past its timeout."""
    with rmq.Client(server.url) as c:
        c.config_set("jobs", {"backoff-ms": 60000})
        c.push("jobs", "hang", id="hang")
    client = rmq.aio.Client(server.url)
    w = rmq.aio.Worker(client, "jobs", lock=5, timeout=0.3, handle_signals=False)
    release = threading.Event()

    if kind == "sync":

        @w.handler()
        def hang(m: rmq.Message) -> None:
            release.wait(30)

    else:

        @w.handler()
        async def hang(m: rmq.Message) -> None:
            await asyncio.sleep(30)

    async def retried() -> bool:
        m = await client.get("jobs", "hang")
        return m is not None and m.state == "delayed"

    t0 = time.monotonic()
    report = run_until(w, retried)
    release.set()
    assert time.monotonic() - t0 < 20
    assert report.timed_out == 1 and report.acked == 0
    with rmq.Client(server.url) as c:
        m = c.get("jobs", "hang")
        # Delayed by the queue's backoff: NACK RETRY (a lock expiry would make it ready). The
        # reason is stored; servers that show the last error of a delayed message show it.
        assert (m.state, m.attempt) == ("delayed", 1)
        assert m.error in ("", "timeout after 300 ms")


def test_a_poison_message_reaches_failed_after_max_attempts(server: Server) -> None:
    """Scenario: a poison message reaches failed after max-attempts."""
    with rmq.Client(server.url) as c:
        c.config_set("jobs", {"backoff-ms": 0, "max-attempts": 3})
        c.push("jobs", "poison", id="poison")
        c.push("jobs", "fine", id="fine")
    attempts: List[int] = []
    client = rmq.aio.Client(server.url)
    w = rmq.aio.Worker(client, "jobs", lock=5, handle_signals=False)

    @w.handler()
    def handle(m: rmq.Message) -> None:
        if m.id == "poison":
            attempts.append(m.attempt)
            raise rmq.Outcome.retry("cannot parse")

    async def dead() -> bool:
        s = await client.stats("jobs")
        return s.dead == 1 and s.acked == 1

    run_until(w, dead)
    assert attempts == [1, 2, 3]
    with rmq.Client(server.url) as c:
        m = c.get("jobs", "poison")
        assert m.state == "failed" and "max attempts" in m.error


def test_graceful_stop_loses_nothing(server: Server) -> None:
    """Scenario: graceful stop -> nothing lost."""
    n = 200
    with rmq.Client(server.url) as c:
        for i in range(n):
            c.push("jobs", str(i), id=f"m{i}")
    handled: List[str] = []
    lock = threading.Lock()

    def handle(m: rmq.Message) -> None:
        time.sleep(0.02)
        with lock:
            handled.append(m.id)

    w = rmq.Worker(server.url, "jobs", handle, concurrency=8, lock=10, grace=10, handle_signals=False)
    t = threading.Thread(target=w.run)
    t.start()
    wait_for("a first part handled", lambda: len(handled) >= 40)
    w.stop()
    t.join(30)
    assert not t.is_alive()
    first = w.report
    with rmq.Client(server.url) as c:
        s = c.stats("jobs")
        assert s.inflight == 0, "a graceful stop leaves nothing in flight"
        assert first.abandoned == 0 and first.acked == len(handled) == s.acked
        assert s.acked + s.ready == n
    w2 = rmq.Worker(server.url, "jobs", handle, concurrency=8, handle_signals=False)
    t2 = threading.Thread(target=w2.run)
    t2.start()
    wait_for("the rest handled", lambda: len(handled) >= n)
    w2.stop()
    t2.join(30)
    assert sorted(handled) == sorted(f"m{i}" for i in range(n))  # each exactly once


def test_grace_period_over_abandons_handlers_and_their_messages_come_back(server: Server) -> None:
    with rmq.Client(server.url) as c:
        c.push("jobs", "stuck", id="stuck")
    client = rmq.aio.Client(server.url)
    w = rmq.aio.Worker(client, "jobs", lock=1, grace=0.2, handle_signals=False)
    started = threading.Event()

    @w.handler()
    async def stuck(m: rmq.Message) -> None:
        started.set()
        await asyncio.sleep(60)

    async def running() -> bool:
        return started.is_set()

    report = run_until(w, running)
    assert report.abandoned == 1 and report.acked == 0
    with rmq.Client(server.url) as c:
        got = c.fetch("jobs", block=5)
        assert [(m.id, m.attempt) for m in got] == [("stuck", 2)]


def spawn_worker(server: Server, marker: Path, sleep_s: float, lock_s: float) -> subprocess.Popen:
    env = dict(os.environ)
    return subprocess.Popen(
        [PYTHON, str(HERE / "worker_proc.py"), server.url, "jobs", str(marker), str(sleep_s), str(lock_s)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_a_worker_killed_mid_job_gets_its_message_redelivered(server: Server, tmp_path: Path) -> None:
    """Scenario: kill -9 of a worker mid-job -> redelivered."""
    with rmq.Client(server.url) as c:
        c.push("jobs", "work", id="job-1")
    proc = spawn_worker(server, tmp_path, 60, 1)
    try:
        wait_for("the job to start", lambda: (tmp_path / "started-job-1").exists(), 30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    seen: List[rmq.Message] = []
    w = rmq.Worker(server.url, "jobs", seen.append, lock=5, handle_signals=False)
    t = threading.Thread(target=w.run)
    t.start()
    try:
        wait_for("redelivery", lambda: len(seen) == 1, 20)
    finally:
        w.stop()
        t.join(30)
    assert (seen[0].id, seen[0].attempt) == ("job-1", 2)
    with rmq.Client(server.url) as c:
        assert c.stats("jobs").acked == 1


def test_sigterm_stops_a_worker_process_gracefully(server: Server, tmp_path: Path) -> None:
    with rmq.Client(server.url) as c:
        c.push("jobs", "work", id="job-1")
        proc = spawn_worker(server, tmp_path, 0.5, 5)
        try:
            wait_for("the job to start", lambda: (tmp_path / "started-job-1").exists(), 30)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err.decode()
        assert b"acked=1 abandoned=0" in out
        assert (tmp_path / "done-job-1").exists()
        s = c.stats("jobs")
        assert (s.acked, s.inflight, s.ready) == (1, 0, 0)
