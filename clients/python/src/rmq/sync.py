"""The blocking API: ``rmq.Client``, ``rmq.Producer``, ``rmq.Worker``.

They run the asyncio implementation (``rmq.aio``) on an event loop of their own, in a
background thread, so the behaviour is the same in both APIs: the producer's background drain
goes on while your code runs, and the worker's handlers are plain functions, each run in a
thread. Make them after a fork (a pre-forking server), not before: a thread does not survive a
fork.
"""
from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any, Callable, Coroutine, Dict, Optional, TypeVar, Union

from .aio.client import Client as AsyncClient
from .aio.producer import Producer as AsyncProducer
from .aio.worker import Handler, Outcome
from .aio.worker import Worker as AsyncWorker
from .spool import DrainReport, SpoolStatus
from .types import Pushed, WorkerReport, validate_queue

T = TypeVar("T")

#: The arguments of a Client that a Producer or Worker made from a URL passes on.
CLIENT_SETTINGS = ("edition", "connect_timeout", "command_timeout", "poll_min", "poll_max", "max_connections")


class _LoopThread:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name="rmq-loop", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            raise RuntimeError("a blocking rmq call cannot run inside rmq's own event loop")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


class Client:
    """A handle on one Redis server or one Redis Cluster (blocking). Takes the same arguments as
    :class:`rmq.aio.Client`, and has the same methods, which block until done."""

    def __init__(self, url: str = "redis://127.0.0.1:6379", **settings: Any) -> None:
        self._lt = _LoopThread()

        async def make() -> AsyncClient:
            return AsyncClient(url, **settings)

        try:
            self.aio: AsyncClient = self._lt.run(make())
        except BaseException:
            self._lt.close()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._lt.run(coro)

    def settings(self) -> Dict[str, Any]:
        return self.aio.settings()

    def close(self) -> None:
        if not self._lt.loop.is_closed():
            try:
                self._run(self.aio.aclose())
            finally:
                self._lt.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _blocking(name: str) -> Callable[..., Any]:
    target = getattr(AsyncClient, name)

    @functools.wraps(target)
    def call(self: Client, *args: Any, **kwargs: Any) -> Any:
        return self._run(getattr(self.aio, name)(*args, **kwargs))

    return call


for _name in (
    "raw ping edition load_lua call push push_confirmed fetch ack nack touch recover stats peek get "
    "delete requeue purge config_get config_set queues log replay is_cluster masters partitioned "
    "partition_list partition_create partition_stats partition_peek partition_recover partition_fetch"
).split():
    setattr(Client, _name, _blocking(_name))


class Producer:
    """The producer (blocking): same arguments and behaviour as :class:`rmq.aio.Producer`.
    It starts at once: the spool is opened and its background drain runs until :meth:`close`."""

    def __init__(self, client: Union[Client, str], **options: Any) -> None:
        self._own = isinstance(client, str)
        if isinstance(client, str):
            settings = {k: options.pop(k) for k in CLIENT_SETTINGS if k in options}
            client = Client(client, **settings)
        self.client = client

        async def make() -> AsyncProducer:
            p = AsyncProducer(self.client.aio, **options)
            await p.start()
            return p

        self.aio: AsyncProducer = self.client._run(make())

    def push(self, queue: str, body: Any, **options: Any) -> Pushed:
        return self.client._run(self.aio.push(queue, body, **options))

    push.__doc__ = AsyncProducer.push.__doc__

    def drain(self) -> DrainReport:
        return self.client._run(self.aio.drain())

    def spool_status(self) -> SpoolStatus:
        return self.client._run(self.aio.spool_status())

    def close(self) -> None:
        self.client._run(self.aio.close())
        if self._own:
            self.client.close()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Worker:
    """The worker (blocking): same arguments as :class:`rmq.aio.Worker`. :meth:`run` blocks
    until :meth:`stop` (from another thread or a handler), SIGTERM or SIGINT, then stops
    gracefully and returns the report. Plain-function handlers each run in a thread of their
    own; ``async def`` handlers run on the worker's event loop."""

    def __init__(
        self, client: Union[Client, str], queue: str, handler: Optional[Handler] = None, **options: Any
    ) -> None:
        if isinstance(client, Client):
            self._settings = client.settings()
        else:
            self._settings = {"url": client}
            self._settings.update({k: options.pop(k) for k in CLIENT_SETTINGS if k in options})
        self.queue = queue
        self._options = options
        self._handlers: Dict[Optional[str], Handler] = {}
        if handler is not None:
            self._handlers[None] = handler
        self._worker: Optional[AsyncWorker] = None
        self._stop_requested = False
        validate_queue(queue)

    def handler(self, tag: Optional[str] = None) -> Callable[[Handler], Handler]:
        """Decorator: ``@worker.handler("created")``; ``@worker.handler()`` for every tag
        without a handler of its own."""

        def register(fn: Handler) -> Handler:
            self._handlers[tag] = fn
            return fn

        return register

    def handle(self, tag: Optional[str], fn: Handler) -> "Worker":
        self._handlers[tag] = fn
        return self

    def stop(self) -> None:
        """Asks a running worker to stop gracefully (safe from any thread)."""
        self._stop_requested = True
        if self._worker is not None:
            self._worker.stop()

    @property
    def report(self) -> WorkerReport:
        return self._worker.report if self._worker is not None else WorkerReport()

    def run(self) -> WorkerReport:
        async def main() -> WorkerReport:
            client = AsyncClient(**self._settings)
            w = AsyncWorker(client, self.queue, **self._options)
            for tag, fn in self._handlers.items():
                w.handle(tag, fn)
            self._worker = w
            if self._stop_requested:
                w.stop()
            try:
                return await w.run()
            finally:
                await client.aclose()

        return asyncio.run(main())


__all__ = ["Client", "Producer", "Worker", "Outcome"]
