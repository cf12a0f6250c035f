"""The asyncio worker: fetches, runs the handler of each message's tag, ACKs or NACKs by its
outcome, TOUCHes the lock while the handler runs, enforces a per-job timeout, and stops
gracefully."""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import socket
import threading
import time
from typing import Any, Callable, Dict, Optional, Set, Union

from ..errors import ConfigError, RmqError, Unavailable
from ..types import Duration, Message, WorkerReport, seconds, validate_queue
from .client import Client, Rotation, make_client

log = logging.getLogger("rmq.worker")

Handler = Callable[[Message], Any]


class Outcome(Exception):
    """What to do with a message, returned or raised by a handler:

    - ``Outcome.ack()`` (or returning anything else, None included): ACK;
    - ``Outcome.retry(reason, delay=None)``: NACK RETRY (the queue's backoff and max-attempts
      apply; ``delay`` in seconds overrides the backoff);
    - ``Outcome.fail(reason)``: NACK FAIL, to failed (dead) now;
    - ``Outcome.error(reason)``: NACK ERROR, to errors now.

    Any other exception a handler raises is ``Outcome.error`` with its type and text.
    """

    def __init__(self, kind: str, reason: str = "", delay: Optional[Duration] = None) -> None:
        if kind not in ("ack", "retry", "fail", "error"):
            raise ValueError("kind must be ack, retry, fail or error")
        super().__init__(f"{kind}: {reason}" if reason else kind)
        self.kind = kind
        self.reason = reason
        self.delay = seconds(delay, "delay")

    @classmethod
    def ack(cls) -> "Outcome":
        return cls("ack")

    @classmethod
    def retry(cls, reason: str = "", delay: Optional[Duration] = None) -> "Outcome":
        return cls("retry", reason, delay)

    @classmethod
    def fail(cls, reason: str = "") -> "Outcome":
        return cls("fail", reason)

    @classmethod
    def error(cls, reason: str = "") -> "Outcome":
        return cls("error", reason)


def default_consumer() -> str:
    return f"{socket.gethostname() or 'rmq'}:{os.getpid()}"


def _run_in_thread(fn: Handler, m: Message) -> "asyncio.Future[Any]":
    """Runs a plain function in a thread of its own (so a hung handler holds no pool slot) and
    returns a future of its result. Python cannot stop a thread: an abandoned one runs on, and
    its result is ignored."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, exc: Optional[BaseException]) -> None:
        if fut.done():
            return
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)

    def target() -> None:
        try:
            value, exc = fn(m), None
        except BaseException as e:  # noqa: BLE001 - the handler's failure is the message's outcome
            value, exc = None, e
        try:
            loop.call_soon_threadsafe(settle, value, exc)
        except RuntimeError:
            pass  # the loop is closed: the worker is gone

    threading.Thread(target=target, name=f"rmq-job-{m.id}", daemon=True).start()
    return fut


class Worker:
    """A worker for one queue, or for every partition of a partitioned queue (taken in turn,
    from a random first one, so that workers spread over the partitions).

    ``handler`` (optional) handles every tag; :meth:`handler` registers one per tag, as a
    decorator. Handlers take a :class:`Message`; ``async def`` handlers run on the event loop,
    plain functions each in a thread of their own.
    """

    def __init__(
        self,
        client: Union[Client, str],
        queue: str,
        handler: Optional[Handler] = None,
        *,
        lock: Duration = 30.0,
        timeout: Optional[Duration] = None,
        concurrency: int = 8,
        grace: Duration = 30.0,
        block: Duration = 1.0,
        consumer: Optional[str] = None,
        retry_is_error: bool = False,
        no_handler_is_error: bool = True,
        handle_signals: bool = True,
        **client_settings: Any,
    ) -> None:
        """``lock``: how long a fetched message stays invisible to others; it is TOUCHed every
        ``lock / 2`` while its handler runs. ``timeout``: the longest a handler may run; past it
        the job is abandoned and the message NACKed RETRY with reason ``timeout after N ms``
        (None: no limit). ``grace``: after a stop, how long running handlers may take to finish; those
        still running are abandoned and their messages come back when their lock runs out.
        ``retry_is_error``: a retry outcome goes to errors instead. ``no_handler_is_error``: a
        tag with no handler goes to errors (else it is ACKed and dropped). ``handle_signals``:
        SIGTERM and SIGINT stop the worker gracefully (main thread only)."""
        validate_queue(queue)
        if concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        self._own_client = isinstance(client, str)
        self.client = make_client(client, client_settings)
        self.queue = queue
        self.lock = seconds(lock, "lock") or 0.001
        self.timeout = seconds(timeout, "timeout")
        self.concurrency = concurrency
        self.grace = seconds(grace, "grace") or 0.0
        self.block = min(max(seconds(block, "block") or 0.001, 0.001), 1.0)
        self.consumer = consumer or default_consumer()
        self.retry_is_error = retry_is_error
        self.no_handler_is_error = no_handler_is_error
        self.handle_signals = handle_signals
        self._handlers: Dict[str, Handler] = {}
        self._fallback: Optional[Handler] = handler
        self._stop: Optional[asyncio.Event] = None
        self._stop_requested = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self.report = WorkerReport()

    def handler(self, tag: Optional[str] = None) -> Callable[[Handler], Handler]:
        """Decorator: ``@worker.handler("created")`` registers the handler of messages tagged
        ``created``; ``@worker.handler()`` the handler of every tag without one of its own
        (``""`` is the tag of messages pushed without one)."""

        def register(fn: Handler) -> Handler:
            self.handle(tag, fn)
            return fn

        return register

    def handle(self, tag: Optional[str], fn: Handler) -> "Worker":
        if tag is None:
            self._fallback = fn
        else:
            self._handlers[tag] = fn
        return self

    def stop(self) -> None:
        """Asks the worker to stop gracefully; safe to call from any thread or a signal handler."""
        self._stop_requested = True
        loop, ev = self._loop, self._stop
        if loop is not None and ev is not None:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:
                pass

    async def _pause(self, t: float) -> bool:
        """Sleeps up to t seconds; True when a stop came meanwhile."""
        assert self._stop is not None
        try:
            await asyncio.wait_for(self._stop.wait(), t)
            return True
        except asyncio.TimeoutError:
            return False

    async def run(self) -> WorkerReport:
        """Runs until :meth:`stop` (or SIGTERM/SIGINT), then stops fetching, gives running
        handlers up to ``grace`` to finish, abandons the rest, and returns the report."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        signals = []
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    self._loop.add_signal_handler(sig, self.stop)
                    signals.append(sig)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass
        tasks: Set[asyncio.Task] = set()
        try:
            rotation = await self._partitions()
            if rotation is not None:
                await self._fetch_loop(tasks, rotation)
            # Stopping: no more fetches; running handlers get the grace period.
            if tasks:
                done, pending = await asyncio.wait(tasks, timeout=self.grace)
                if pending:
                    log.warning(
                        "rmq worker: grace period over; abandoning %d running handlers (their "
                        "messages come back by lock expiry)",
                        len(pending),
                    )
                    self.report.abandoned += len(pending)
                    for t in pending:
                        t.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
        finally:
            for sig in signals:
                self._loop.remove_signal_handler(sig)
            if self._own_client:
                await self.client.aclose()
        return self.report

    async def _partitions(self) -> Optional[Rotation]:
        """The partitions of the queue when it is a partitioned queue (``Rotation([])`` for an
        ordinary queue), looked up once, until Redis answers; None when a stop came first."""
        assert self._stop is not None
        pause = 0.05
        while not self._stop.is_set():
            try:
                p = await self.client.partitioned_or_plain(self.queue)
            except RmqError as e:
                log.warning("rmq worker: cannot look up %s in the registry of partitioned queues: %s", self.queue, e)
                if await self._pause(pause):
                    return None
                pause = min(pause * 2, 2.0)
                continue
            if p is not None:
                log.info("rmq worker: %s is a partitioned queue: working its %d partitions", self.queue, p.count)
            return Rotation(p.partitions if p is not None else [])
        return None

    async def _fetch_loop(self, tasks: Set[asyncio.Task], rotation: Rotation) -> None:
        assert self._stop is not None
        pause = 0.05
        poll = self.client.poll_min
        while not self._stop.is_set():
            free = self.concurrency - len(tasks)
            if free <= 0:
                stopper = asyncio.ensure_future(self._stop.wait())
                await asyncio.wait(tasks | {stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                continue
            # A FETCH is never cancelled half way (its messages would sit in flight until their
            # lock ran out): the module blocks on the server in slices of at most a second, and
            # the Lua edition, which cannot block, is polled here with pauses a stop cuts short.
            # A partitioned queue is fetched from in rounds that never block (a FETCH blocks on one
            # queue only), with pauses between empty rounds.
            try:
                module = await self.client.edition() == "module" and not rotation.queues
                if rotation.queues:
                    msgs = await rotation.fetch_round(self.client, count=free, lock=self.lock, consumer=self.consumer)
                else:
                    msgs = await self.client.fetch(
                        self.queue,
                        count=free,
                        lock=self.lock,
                        block=self.block if module else None,
                        consumer=self.consumer,
                    )
            except RmqError as e:
                log.warning("rmq worker: fetch from %s failed: %s", self.queue, e)
                if await self._pause(pause):
                    return
                pause = min(pause * 2, 2.0)
                continue
            pause = 0.05
            for m in msgs:
                t = asyncio.ensure_future(self._process(m))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            if msgs:
                poll = self.client.poll_min
            elif not module:
                if await self._pause(poll):
                    return
                poll = min(poll * 2, self.client.poll_max)

    async def _process(self, m: Message) -> None:
        fn = self._handlers.get(m.tag, self._fallback)
        if fn is None:
            if self.no_handler_is_error:
                await self._finish(m, "error", f"no handler for tag '{m.tag}'", None, "errored")
            else:
                await self._finish(m, "ack", "", None, "dropped")
            return
        if inspect.iscoroutinefunction(fn):
            job: asyncio.Future[Any] = asyncio.ensure_future(fn(m))
        else:
            job = _run_in_thread(fn, m)
        try:
            outcome = await self._watch(m, job)
        finally:
            if not job.done():
                job.cancel()  # abandoned (timeout, or the grace period ended)
        if outcome is None:
            log.warning("rmq worker: message %s ran past its timeout; NACK RETRY", m.id)
            reason = f"timeout after {int(round((self.timeout or 0) * 1000))} ms"
            await self._finish(m, "retry", reason, None, "timed_out", force_retry=True)
            return
        await self._finish(m, outcome.kind, outcome.reason, outcome.delay, None)

    async def _watch(self, m: Message, job: "asyncio.Future[Any]") -> Optional[Outcome]:
        """Waits for the handler, TOUCHing every lock/2; None when it ran past its timeout."""
        half = max(self.lock / 2, 0.001)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        next_touch = time.monotonic() + half
        while True:
            now = time.monotonic()
            wake = next_touch if deadline is None else min(next_touch, deadline)
            done, _ = await asyncio.wait({job}, timeout=max(wake - now, 0))
            if done:
                return _outcome(job)
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            if now >= next_touch:
                next_touch = now + half
                try:
                    if await self.client.touch(m.queue, m.receipt, self.lock) == 0:
                        log.warning(
                            "rmq worker: lock of %s lost (the message went back to the queue); "
                            "the handler runs on",
                            m.id,
                        )
                except RmqError as e:
                    log.warning("rmq worker: TOUCH of %s failed: %s", m.id, e)

    async def _finish(
        self,
        m: Message,
        kind: str,
        reason: str,
        delay: Optional[float],
        counter: Optional[str],
        force_retry: bool = False,
    ) -> None:
        """ACK or NACK, tried again while Redis is unavailable, for at most one lock period."""
        if kind == "retry" and self.retry_is_error and not force_retry:
            kind, delay = "error", None
        counter = counter or {"ack": "acked", "retry": "retried", "fail": "failed", "error": "errored"}[kind]
        reason = reason[:4000]
        until = time.monotonic() + self.lock
        pause = 0.05
        while True:
            try:
                # m.queue: the message's partition, for a partitioned queue.
                if kind == "ack":
                    ok = await self.client.ack(m.queue, m.receipt) == 1
                else:
                    ok = await self.client.nack(m.queue, m.receipt, kind, delay=delay, reason=reason or None)
            except Unavailable as e:
                if time.monotonic() + pause < until:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 1.0)
                    continue
                log.error("rmq worker: could not ACK/NACK %s (%s); it comes back by lock expiry", m.id, e)
                ok = None
            except RmqError as e:
                log.error("rmq worker: could not ACK/NACK %s (%s); it comes back by lock expiry", m.id, e)
                ok = None
            if ok:
                setattr(self.report, counter, getattr(self.report, counter) + 1)
            else:
                if ok is False:
                    log.warning(
                        "rmq worker: stale receipt for %s (the lock ran out and the message went back)",
                        m.id,
                    )
                self.report.stale += 1
            return


def _outcome(job: "asyncio.Future[Any]") -> Outcome:
    if job.cancelled():
        return Outcome.error("handler cancelled")
    exc = job.exception()
    if exc is None:
        value = job.result()
        return value if isinstance(value, Outcome) else Outcome.ack()
    if isinstance(exc, Outcome):
        return exc
    text = str(exc)
    return Outcome.error(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
