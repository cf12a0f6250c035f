"""The asyncio producer: PUSH with ids it makes itself, retries, and the disk spool for when
Redis cannot take a message."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from ..errors import ConfigError, NotStored, Refused, RmqError, SpoolError, Unavailable
from ..partition import Partitioned
from ..spool import DrainReport, SendStopped, Spool, SpoolRecord, SpoolStatus
from ..types import Confirm, Duration, Push, Pushed, new_id, now_ms, seconds
from .client import Client, make_client

log = logging.getLogger("rmq.producer")

def default_spool_dir() -> str:
    """The default spool, as in every rmq client: ``$RMQ_SPOOL``, else ``rmq/spool`` in the
    user's state directory (``$XDG_STATE_HOME``, or ``~/.local/state``); never the working
    directory."""
    env = os.environ.get("RMQ_SPOOL")
    if env:
        return env
    state = os.environ.get("XDG_STATE_HOME")
    if not state or not os.path.isabs(state):
        home = os.environ.get("HOME")
        state = os.path.join(home, ".local", "state") if home else None
    return os.path.join(state, "rmq", "spool") if state else "rmq-spool"


DEFAULT_SPOOL = object()  # "the default spool", resolved when the producer is made

#: How long "this name is an ordinary queue" is believed before the registry is read again (a
#: partitioned queue's record is kept for good: its partitions never change).
PLAIN_FOR = 10.0


def _record(p: Push) -> SpoolRecord:
    """The spool's copy: a DELAY becomes an absolute due time, so a message re-sent later is due
    when it was meant to be."""
    now = now_ms()
    at = p.at_ms if p.at_ms is not None else (now + p.delay_ms if p.delay_ms is not None else None)
    return SpoolRecord(p.queue, p.id or "", p.body, p.tag, p.key, list(p.headers), at, now)


def _push_of(r: SpoolRecord) -> Push:
    return Push(r.queue, r.body, r.id or None, r.tag, r.key, list(r.headers), None, r.at)


class Producer:
    """Pushes messages; when Redis cannot take one, it goes to the spool on disk (fsynced before
    ``push`` returns) and is re-sent, in order, by a background task and at every start.

    Use it as ``async with Producer(client) as p:`` or call :meth:`start` and :meth:`close`.
    """

    def __init__(
        self,
        client: Union[Client, str],
        *,
        spool_dir: Union[str, "os.PathLike[str]", None, object] = DEFAULT_SPOOL,
        retries: int = 3,
        retry_backoff: Duration = 0.05,
        retry_backoff_max: Duration = 1.0,
        drain_interval: Duration = 1.0,
        background_drain: bool = True,
        confirm: Union[bool, Confirm, None] = None,
        **client_settings: Any,
    ) -> None:
        """``spool_dir``: the spool directory (default: see :func:`default_spool_dir`); give each
        Redis server its own. ``spool_dir=None`` turns spooling off: a push Redis cannot take then raises
        Unavailable. ``retries``: tries of a push Redis could not take before it is spooled,
        with pauses from ``retry_backoff`` doubling up to ``retry_backoff_max`` (seconds).
        ``confirm``: ``True`` or a :class:`Confirm` (replicas, timeout): after each PUSH,
        ``WAIT replicas timeout`` on the same connection; a push is taken only once that many
        replicas have it (so it survives the loss of its master), an unconfirmed one is sent
        again with the same id and then spooled, and the spool is re-sent with the same WAIT.
        ``client`` is a Client, or a URL with client settings (``connect_timeout=`` ...)."""
        self._own_client = isinstance(client, str)
        self.client = make_client(client, client_settings)
        if spool_dir is DEFAULT_SPOOL:
            spool_dir = default_spool_dir()
        self.spool_dir = None if spool_dir is None else os.fspath(spool_dir)  # type: ignore[arg-type]
        if retries < 0:
            raise ConfigError("retries must be >= 0")
        self.retries = retries
        self.retry_backoff = seconds(retry_backoff, "retry_backoff") or 0.0
        self.retry_backoff_max = seconds(retry_backoff_max, "retry_backoff_max") or 0.0
        self.drain_interval = seconds(drain_interval, "drain_interval") or 0.01
        self.background_drain = background_drain
        if confirm is True:
            confirm = Confirm()
        elif confirm is False:
            confirm = None
        elif confirm is not None and not isinstance(confirm, Confirm):
            raise ConfigError("confirm must be True, False, None or a Confirm")
        self.confirm: Optional[Confirm] = confirm
        # Partitioned queues looked up: name -> (record or None for an ordinary queue, when).
        self._lookups: Dict[str, Tuple[Optional[Partitioned], float]] = {}
        self._spool: Optional[Spool] = None
        # Made in start(), inside the event loop (Python 3.9 binds them at creation).
        self._spool_lock: Optional[asyncio.Lock] = None
        self._wake: Optional[asyncio.Event] = None
        # Set when Redis was found unavailable, cleared by a success: while set, a push tries
        # once and then spools instead of waiting through its retries.
        self._down = False
        self._task: Optional[asyncio.Task] = None
        self._started = False
        # Group commit: pushes that arrive while an append runs share the next fsync.
        self._pending: List[Tuple[SpoolRecord, asyncio.Future]] = []
        self._writing = False
        # The drain running in a thread, if any: close() waits for it (its sends run on this
        # loop), and a closing producer's sends stop the drain at the next batch.
        self._draining: Optional[asyncio.Future] = None
        self._closing = False

    async def __aenter__(self) -> "Producer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Opens the spool (a failure is logged and tried again when the spool is needed) and,
        with ``background_drain``, starts re-sending what it holds, at once and then every
        ``drain_interval``. ``push`` calls it when it was not called."""
        if self._started:
            return
        self._started = True
        self._spool_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        if self.spool_dir is None:
            return
        try:
            await self._get_spool()
        except RmqError as e:
            log.warning("rmq producer: the spool cannot be opened now (%s); tried again when needed", e)
        if self.background_drain:
            self._task = asyncio.ensure_future(self._background())

    async def close(self) -> None:
        """Stops the background task (the spool stays on disk for the next start)."""
        self._closing = True
        t, self._task = self._task, None
        if t is not None:
            t.cancel()
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        if self._draining is not None:
            await asyncio.wait([self._draining])
        if self._own_client:
            await self.client.aclose()

    async def _get_spool(self) -> Spool:
        if self._spool_lock is None:
            await self.start()
        assert self._spool_lock is not None
        async with self._spool_lock:
            if self._spool is not None:
                return self._spool
            if self.spool_dir is None:
                raise ConfigError("spooling is off")
            try:
                sp = await asyncio.to_thread(Spool, self.spool_dir)
            except OSError as e:
                raise SpoolError(f"{self.spool_dir}: {e}") from None
            if sp.torn_bytes_at_open:
                log.warning(
                    "rmq producer: cut a torn tail off the spool (%d bytes; a crash interrupted a write)",
                    sp.torn_bytes_at_open,
                )
            self._spool = sp
            return sp

    async def push(self, queue: str, body: Any, **options: Any) -> Pushed:
        """Pushes a message. Options: ``id`` (made here when not given: a UUID v7), ``tag``,
        ``key``, ``headers`` (dict or pairs), ``delay`` (seconds) or ``at`` (unix ms or
        datetime). For a partitioned queue, the message goes to the partition of its ``key``
        (a random one without a key): see ``Pushed.queue``.

        Returns :class:`Pushed`: Redis has it, or the spool has it on disk (``spooled``).
        Raises InvalidMessage (breaks a rule; checked even while Redis is down), Refused
        (Redis refused it, e.g. ``queue full``: not spooled, sending it again would not help),
        NotStored (neither Redis nor the spool took it) or Unavailable (spooling is off).
        With ``confirm``, "Redis has it" means its master and the replicas asked for; a push
        they did not confirm in time counts as one Redis could not take."""
        p = Push.build(queue, body, **options)
        if p.id is None:
            p.id = new_id()
        if not self._started:
            await self.start()
        tries = 1 if self._down else self.retries + 1
        pause = self.retry_backoff
        last = ""
        # A partitioned queue's name is looked up first and the message routed once: every retry
        # goes to the same partition, whose dedup window drops a second copy. If the registry
        # cannot be read, the message is spooled under the logical name and routed when the
        # spool is sent.
        routed: Optional[Push] = None
        for attempt in range(1, tries + 1):
            try:
                if routed is None:
                    routed = await self.route(p)
                pid = await self._send(routed)
                self._down = False
                return Pushed(pid, False, routed.queue)
            except Unavailable as e:
                last = str(e)
                if attempt < tries:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, self.retry_backoff_max)
        self._down = True
        if self.spool_dir is None:
            raise Unavailable(last)
        target = routed or p
        try:
            await self._spool_one(_record(target))
        except Exception as e:  # the disk did not take it either
            log.error("rmq producer: message %s NOT stored: redis %s; spool %s", p.id, last, e)
            raise NotStored(last, str(e)) from None
        log.debug("rmq producer: redis unavailable (%s); message %s spooled", last, p.id)
        if self._wake is not None:
            self._wake.set()
        return Pushed(p.id, True, target.queue)

    async def route(self, p: Push) -> Push:
        """``p`` addressed to the partition of its key when its queue is a partitioned queue,
        else as it is. Lookups are remembered: a partitioned queue's record for good (its
        partitions never change), an ordinary queue for 10 s."""
        known = self._lookups.get(p.queue)
        if known is not None and (known[0] is not None or time.monotonic() - known[1] < PLAIN_FOR):
            part = known[0]
        else:
            part = await self.client.partitioned_or_plain(p.queue)
            self._lookups[p.queue] = (part, time.monotonic())
        if part is None:
            return p
        return dataclasses.replace(p, queue=part.route(p.key))

    async def _send(self, p: Push) -> str:
        """One PUSH, confirmed when confirms are on."""
        if self.confirm is None:
            return await self.client.send_push(p)
        pid, acked = await self.client.send_push_confirmed(p, self.confirm)
        if acked < self.confirm.replicas:
            raise Unavailable(self.confirm.shortfall(acked))
        return pid

    async def _spool_one(self, rec: SpoolRecord) -> None:
        sp = await self._get_spool()
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((rec, fut))
        if not self._writing:
            self._writing = True
            try:
                while self._pending:
                    batch, self._pending = self._pending[:4096], self._pending[4096:]
                    try:
                        await asyncio.to_thread(sp.append, [r for r, _ in batch])
                        err: Optional[BaseException] = None
                    except BaseException as e:  # noqa: BLE001 - every waiter must hear of it
                        err = e
                    for _, f in batch:
                        if not f.done():
                            f.set_result(None) if err is None else f.set_exception(SpoolError(str(err)))
            finally:
                self._writing = False
        await fut

    async def drain(self) -> DrainReport:
        """Re-sends the spool now (what the background task does). Records Redis refuses for
        good go to the quarantine."""
        sp = await self._get_spool()
        report = await self._drain(sp)
        if report.sent and report.stopped is None:
            self._down = False
        return report

    async def spool_status(self) -> SpoolStatus:
        sp = await self._get_spool()
        return await asyncio.to_thread(sp.status)

    async def _background(self) -> None:
        while True:
            sp = self._spool
            if sp is None and self.spool_dir is not None:
                try:
                    sp = await self._get_spool()
                except RmqError:
                    sp = None
            try:
                if sp is not None and await asyncio.to_thread(sp.has_data):
                    await self.client.ping()
                    r = await self._drain(sp)
                    if r.sent:
                        log.info("rmq producer: re-sent %d spooled messages (%d remain)", r.sent, r.remaining)
                    if r.stopped is None:
                        self._down = False
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis still down, or a disk fault: try again later
                log.debug("rmq producer: spool drain not done: %s", e)
            assert self._wake is not None
            try:
                await asyncio.wait_for(self._wake.wait(), self.drain_interval)
                # A push just spooled: Redis is down; do not hammer it.
                self._wake.clear()
                await asyncio.sleep(self.drain_interval)
            except asyncio.TimeoutError:
                pass


    async def _drain(self, sp: Spool) -> DrainReport:
        """One drain at a time per producer (the spool's DRAIN lock keeps other processes out)."""
        while self._draining is not None:
            await asyncio.wait([self._draining])
        self._draining = asyncio.ensure_future(_drain(self.client, sp, lambda: self._closing, self.confirm))
        try:
            return await asyncio.shield(self._draining)
        finally:
            if self._draining is not None and self._draining.done():
                self._draining = None


async def _drain(
    client: Client, sp: Spool, closing: Callable[[], bool], confirm: Optional[Confirm] = None
) -> DrainReport:
    """Runs the spool's drain in a thread; batches are sent on this event loop (confirmed by
    WAIT when confirms are on). A record spooled under a partitioned queue's logical name (its
    registry could not be read at push time) goes to the partition of its key."""
    loop = asyncio.get_running_loop()
    limit = client.command_timeout * 3 + 5 + (confirm.timeout if confirm is not None else 0)

    async def send_async(recs: List[SpoolRecord]) -> List[Optional[str]]:
        try:
            parts: Dict[str, Optional[Partitioned]] = {}
            for r in recs:
                if r.queue not in parts:
                    parts[r.queue] = await client.partitioned_or_plain(r.queue)
            pushes = [_push_of(r) for r in recs]
            for i, p in enumerate(pushes):
                part = parts[p.queue]
                if part is not None:
                    pushes[i] = dataclasses.replace(p, queue=part.route(p.key))
            res = await client.call_many([("push", p.queue, p.args()) for p in pushes], confirm)
        except RmqError as e:
            raise SendStopped(str(e)) from None
        out: List[Optional[str]] = []
        for r in res:
            if isinstance(r, Refused):
                if "queue full" in str(r):
                    # Back-pressure, not a fault of the record: keep it, in order, for later.
                    raise SendStopped(f"Redis refused: {r}")
                out.append(str(r))
            elif isinstance(r, RmqError):
                raise SendStopped(str(r))
            else:
                out.append(None)
        return out

    def send(recs: List[SpoolRecord]) -> List[Optional[str]]:
        if closing():
            raise SendStopped("the producer is closing")
        try:
            fut = asyncio.run_coroutine_threadsafe(send_async(recs), loop)
        except RuntimeError:  # the event loop is gone
            raise SendStopped("the producer is closing") from None
        try:
            return fut.result(timeout=limit)
        except SendStopped:
            raise
        except Exception as e:  # no answer in time, or the loop went away
            fut.cancel()
            raise SendStopped(str(e) or type(e).__name__) from None

    report = await asyncio.to_thread(sp.drain, send)
    if report.refused or report.corrupt:
        log.error(
            "rmq producer: spooled records were moved to the quarantine (refused %d, corrupt %d)",
            report.refused,
            report.corrupt,
        )
    return report
