"""The asyncio client: the two editions (RMQ.* commands of the module, or FCALL of the Lua
library), error sorting, and typed wrappers of every command."""
from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from importlib import resources
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import redis.asyncio as aredis
import redis.exceptions as rex
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import ConfigError, NotInstalled, ProtocolError, Refused, RmqError, Unavailable
from ..types import (
    Duration,
    LogEntry,
    Message,
    Push,
    Recovered,
    Stats,
    ms,
    parse_config,
    parse_log,
    parse_message,
    parse_messages,
    parse_stats,
    seconds,
    validate_queue,
)

#: Commands of the Lua edition that only read: sent with FCALL_RO, and never load the library.
READERS = frozenset({"stats", "peek", "get", "queues", "log"})

#: Error codes that mean "Redis cannot take it now", not "the request is wrong".
_UNAVAILABLE_CODES = frozenset(
    {"BUSY", "OOM", "MISCONF", "NOREPLICAS", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY"}
)
_CODE = re.compile(r"^[A-Z]{3,}\b")

EDITIONS = ("auto", "module", "lua")

log = logging.getLogger("rmq.client")


def _reads_only(name: str, args: Sequence[Any]) -> bool:
    """Commands that only read never load the Lua library (CONFIG GET too, though the library's
    rmq_config also writes)."""
    if name in READERS:
        return True
    return name == "config" and bool(args) and str(args[0]).upper() == "GET"


def _display(url: str) -> str:
    """The URL without its password."""
    return re.sub(r"//[^@/]*@", "//***@", url)


def make_client(client: "Union[Client, str]", settings: Dict[str, Any]) -> "Client":
    """The client a producer or worker was given, or one made from a URL and settings
    (``edition``, ``connect_timeout`` ...)."""
    if isinstance(client, str):
        return Client(client, **settings)
    if settings:
        raise ConfigError(f"client settings ({', '.join(settings)}) go with a URL, not a Client")
    return client


def lua_library() -> str:
    """The Lua library's source: the copy shipped in this package, or the file named by the
    RMQ_LUA environment variable (to try another version)."""
    path = os.environ.get("RMQ_LUA")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise ConfigError(f"RMQ_LUA={path}: {e}") from None
    return resources.files("rmq").joinpath("rmq.lua").read_text(encoding="utf-8")


def classify(e: BaseException) -> RmqError:
    """Sorts an error into Unavailable (retry later, spool) and Refused (the request or the
    setup is wrong)."""
    if isinstance(e, RmqError):
        return e
    if isinstance(e, (rex.AuthenticationError, rex.NoPermissionError)):
        return Refused(str(e))
    if isinstance(e, (rex.ConnectionError, rex.TimeoutError, asyncio.TimeoutError, OSError)):
        return Unavailable(str(e) or type(e).__name__)
    if isinstance(e, (rex.ReadOnlyError, getattr(rex, "OutOfMemoryError", ()))):
        return Unavailable(str(e))
    if isinstance(e, rex.ResponseError):
        text = str(e)
        m = _CODE.match(text)
        if m and m.group(0) in _UNAVAILABLE_CODES:
            return Unavailable(text)
        if not m:
            text = "ERR " + text  # redis-py strips the ERR code; show the error as Redis sent it
        return Refused(text)
    if isinstance(e, rex.RedisError):
        return Unavailable(str(e))
    return Refused(f"{type(e).__name__}: {e}")


class Client:
    """A handle on one Redis server (asyncio). It can be made outside an event loop; its
    connections belong to the loop of its first command."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379",
        *,
        edition: str = "auto",
        connect_timeout: Duration = 2.0,
        command_timeout: Duration = 5.0,
        poll_min: Duration = 0.005,
        poll_max: Duration = 0.25,
        max_connections: Optional[int] = None,
    ) -> None:
        """``url``: ``redis://[user:password@]host[:port][/db]`` or ``rediss://`` for TLS.
        ``edition``: ``auto`` (the module when loaded, else the Lua library), ``module`` or
        ``lua``. ``poll_min``/``poll_max``: the pauses between empty FETCHes on the Lua
        edition, which cannot block."""
        if edition not in EDITIONS:
            raise ConfigError(f"edition must be one of {', '.join(EDITIONS)}")
        self.url = url
        self.edition_choice = edition
        self.connect_timeout = seconds(connect_timeout, "connect_timeout") or 0.001
        self.command_timeout = seconds(command_timeout, "command_timeout") or 0.001
        self.poll_min = seconds(poll_min, "poll_min") or 0.001
        self.poll_max = max(seconds(poll_max, "poll_max") or 0.001, self.poll_min)
        self.max_connections = max_connections
        self._edition: Optional[str] = None if edition == "auto" else edition
        if not re.match(r"^(rediss?|unix)://", url):
            raise ConfigError(f"bad Redis URL: {url!r} (redis://, rediss:// or unix://)")
        self._redis: Optional[aredis.Redis] = None

    def _make_redis(self) -> "aredis.Redis":
        try:
            r = aredis.Redis.from_url(
                self.url,
                protocol=2,
                decode_responses=False,
                socket_connect_timeout=self.connect_timeout,
                socket_timeout=None,  # limits are set per call (a blocking FETCH waits longer)
                retry=Retry(NoBackoff(), 0),  # retries are this client's job, not redis-py's
                retry_on_timeout=False,
                health_check_interval=0,
                max_connections=self.max_connections,
            )
        except ValueError as e:
            raise ConfigError(f"bad Redis URL: {e}") from None
        # Replies are read raw (redis-py's COMMAND parser does not take COMMAND INFO).
        r.response_callbacks.pop("COMMAND", None)
        return r

    @property
    def _r(self) -> "aredis.Redis":
        """The redis-py client, made on first use inside the event loop that uses it (on Python
        3.9 asyncio objects belong to the loop that was current when they were made)."""
        if self._redis is None:
            self._redis = self._make_redis()
        return self._redis

    def settings(self) -> Dict[str, Any]:
        """The arguments this client was made with (to make another one like it)."""
        return dict(
            url=self.url,
            edition=self.edition_choice,
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            poll_min=self.poll_min,
            poll_max=self.poll_max,
            max_connections=self.max_connections,
        )

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- raw calls ------------------------------------------------------------------------

    async def raw(self, *args: Any, timeout: Optional[float] = None) -> Any:
        """Runs one command with a time limit (the command timeout by default)."""
        t = self.command_timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(self._r.execute_command(*args), t)
        except asyncio.TimeoutError:
            # redis-py drops a connection whose command was cancelled: the next call opens a new one.
            raise Unavailable(f"no answer within {t:g} s") from None
        except Exception as e:
            raise classify(e) from None

    async def ping(self) -> None:
        await self.raw("PING")

    async def edition(self) -> str:
        """``module`` or ``lua``: found out once, then again when a call shows a change."""
        if self._edition is None:
            self._edition = await self._detect()
        return self._edition

    async def _detect(self) -> str:
        try:
            v = await self.raw("COMMAND", "INFO", "rmq.push")
            return "module" if isinstance(v, list) and v and v[0] is not None else "lua"
        except Refused:
            # COMMAND may be forbidden by an ACL: ask the module itself.
            try:
                await self.raw("RMQ.QUEUES")
                return "module"
            except Refused as e:
                if "unknown command" in str(e).lower():
                    return "lua"
                raise

    async def load_lua(self, replace: bool = False) -> None:
        """Loads the Lua library unless the server has it (``replace``: load it anyway)."""
        args = ["FUNCTION", "LOAD"] + (["REPLACE"] if replace else []) + [lua_library()]
        try:
            await self.raw(*args)
        except Refused as e:
            if "already exists" not in str(e):
                raise

    @staticmethod
    def _build(edition: str, name: str, q: Optional[str], args: Sequence[Any]) -> List[Any]:
        if edition == "module":
            return [f"RMQ.{name.upper()}"] + ([q] if q is not None else []) + list(args)
        fcall = "FCALL_RO" if name in READERS else "FCALL"
        keys = [1, q] if q is not None else [0]
        return [fcall, f"rmq_{name}"] + keys + list(args)

    async def call(
        self, name: str, q: Optional[str], args: Sequence[Any] = (), timeout: Optional[float] = None
    ) -> Any:
        """Runs an rmq command in the server's edition. A Lua library missing from the server
        (a restart without persistence, a FUNCTION FLUSH) is loaded again by commands that
        write; a command that only reads reports it instead (it never changes the server)."""
        for tries in range(1, 4):
            ed = await self.edition()
            try:
                return await self.raw(*self._build(ed, name, q, args), timeout=timeout)
            except Refused as e:
                if tries < 3 and await self._recoverable(ed, _reads_only(name, args), str(e)):
                    continue
                raise
        raise AssertionError("unreachable")

    async def _recoverable(self, ed: str, reads_only: bool, text: str) -> bool:
        """After an error that says the edition is not what we thought, fixes that and says
        whether to try again."""
        lower = text.lower()
        if ed == "lua" and "function not found" in lower:
            if self.edition_choice == "auto":
                self._edition = None  # maybe the module is there now
                if await self.edition() == "module":
                    return True
            if reads_only:
                raise NotInstalled(
                    f"rmq is not installed on {_display(self.url)}: neither the RMQ module nor the "
                    "rmq Lua library is loaded (a command that writes, such as a push, loads the library)"
                )
            await self.load_lua()
            log.warning("rmq: loaded the rmq Lua library on %s (FUNCTION LOAD)", _display(self.url))
            return True
        if ed == "module" and "unknown command" in lower and self.edition_choice == "auto":
            self._edition = None
            return True
        return False

    async def call_many(self, cmds: Sequence[Tuple[str, str, Sequence[Any]]]) -> List[Any]:
        """Runs several rmq commands in one pipeline. Each result is a value or an RmqError;
        an Unavailable Redis raises."""
        if not cmds:
            return []
        for tries in range(1, 4):
            ed = await self.edition()
            pipe = self._r.pipeline(transaction=False)
            for name, q, args in cmds:
                pipe.execute_command(*self._build(ed, name, q, args))
            t = self.command_timeout + len(cmds) / 10000
            try:
                res = await asyncio.wait_for(pipe.execute(raise_on_error=False), t)
            except asyncio.TimeoutError:
                raise Unavailable(f"no answer within {t:g} s") from None
            except Exception as e:
                raise classify(e) from None
            out = [classify(r) if isinstance(r, Exception) else r for r in res]
            first = next((r for r in out if isinstance(r, Refused)), None)
            reads = all(_reads_only(n, a) for n, _, a in cmds)
            if first is not None and tries < 3 and await self._recoverable(ed, reads, str(first)):
                continue
            return out
        raise AssertionError("unreachable")

    # --- the commands ---------------------------------------------------------------------

    async def push(self, queue: str, body: Any, **options: Any) -> str:
        """RMQ.PUSH straight to Redis (no retries, no spool: see Producer). Options: id, tag,
        key, headers, delay (seconds), at (unix ms or datetime). Returns the id."""
        return await self.send_push(Push.build(queue, body, **options))

    async def send_push(self, p: Push) -> str:
        """RMQ.PUSH of a built (and checked) :class:`Push`."""
        v = await self.call("push", p.queue, p.args())
        return v.decode() if isinstance(v, bytes) else str(v)

    async def fetch(
        self,
        queue: str,
        *,
        count: Optional[int] = None,
        lock: Optional[Duration] = None,
        block: Optional[Duration] = None,
        consumer: Optional[str] = None,
    ) -> List[Message]:
        """RMQ.FETCH. ``block`` (seconds; 0 = forever) waits for a message: on the server with
        the module, by polling with the Lua edition."""
        validate_queue(queue)
        args: List[Any] = []
        if count is not None:
            args += ["COUNT", int(count)]
        if lock is not None:
            args += ["LOCK", max(ms(lock, "lock") or 1, 1)]
        if consumer:
            args += ["CONSUMER", consumer]
        if block is None:
            return parse_messages(queue, await self.call("fetch", queue, args))
        wait = seconds(block, "block") or 0.0
        forever = wait == 0
        until = time.monotonic() + wait
        if await self.edition() == "module":
            while True:
                # Block on the server in slices, so a dead connection is noticed.
                left = until - time.monotonic()
                sl = 10.0 if forever else max(left, 0.001)
                v = await self.call(
                    "fetch", queue, args + ["BLOCK", max(int(sl * 1000), 1)], timeout=sl + self.command_timeout
                )
                msgs = parse_messages(queue, v)
                if msgs or (not forever and time.monotonic() >= until):
                    return msgs
        pause = self.poll_min
        while True:
            msgs = parse_messages(queue, await self.call("fetch", queue, args))
            now = time.monotonic()
            if msgs or (not forever and now >= until):
                return msgs
            await asyncio.sleep(pause if forever else min(pause, until - now))
            pause = min(pause * 2, self.poll_max)

    async def ack(self, queue: str, *receipts: str) -> int:
        """RMQ.ACK. Returns how many were acked (stale receipts count 0)."""
        return int(await self.call("ack", queue, list(receipts)))

    async def nack(
        self,
        queue: str,
        receipt: str,
        how: str = "retry",
        *,
        delay: Optional[Duration] = None,
        reason: Optional[str] = None,
    ) -> bool:
        """RMQ.NACK: ``how`` is ``retry`` (``delay`` in seconds, else the queue's backoff),
        ``fail`` or ``error``. Returns False for a stale receipt."""
        how = how.lower()
        if how not in ("retry", "fail", "error"):
            raise ValueError("how must be retry, fail or error")
        args: List[Any] = [receipt, how.upper()]
        if delay is not None:
            if how != "retry":
                raise ValueError("delay goes with retry only")
            args += ["DELAY", ms(delay, "delay")]
        if reason is not None:
            args += ["REASON", reason]
        return int(await self.call("nack", queue, args)) == 1

    async def touch(self, queue: str, receipt: str, lock: Optional[Duration] = None) -> int:
        """RMQ.TOUCH. Returns the new deadline (unix ms), or 0 for a stale receipt."""
        args: List[Any] = [receipt]
        if lock is not None:
            args += ["LOCK", max(ms(lock, "lock") or 1, 1)]
        return int(await self.call("touch", queue, args))

    async def recover(
        self, queue: str, *, expired: bool = False, failed: bool = False, errors: bool = False
    ) -> Recovered:
        """RMQ.RECOVER (none of the three asked for: all three)."""
        parts = [n for n, on in (("EXPIRED", expired), ("FAILED", failed), ("ERRORS", errors)) if on]
        v = await self.call("recover", queue, parts)
        if not isinstance(v, list) or len(v) != 3:
            raise ProtocolError(f"RECOVER replied {v!r}")
        return Recovered(int(v[0]), int(v[1]), int(v[2]))

    async def stats(self, queue: str) -> Stats:
        return parse_stats(await self.call("stats", queue))

    async def peek(
        self, queue: str, state: str = "ready", *, start: int = 0, count: int = 10
    ) -> List[Message]:
        """RMQ.PEEK: messages in ``state`` (ready, delayed, inflight, failed, errors)."""
        args = [state.upper(), "START", int(start), "COUNT", int(count)]
        return parse_messages(queue, await self.call("peek", queue, args))

    async def get(self, queue: str, id: str) -> Optional[Message]:
        v = await self.call("get", queue, [id])
        return None if v is None else parse_message(queue, v)

    async def delete(self, queue: str, *ids: str) -> int:
        """RMQ.DEL: deletes messages in any state. Returns how many."""
        return int(await self.call("del", queue, list(ids)))

    async def requeue(self, queue: str, *ids: str) -> int:
        """RMQ.REQUEUE: failed, errored or delayed messages back to ready now."""
        return int(await self.call("requeue", queue, list(ids)))

    async def purge(self, queue: str, state: str) -> int:
        """RMQ.PURGE: deletes the messages of a state (or ``all``); settings and counters stay."""
        return int(await self.call("purge", queue, [state.upper()]))

    async def config_get(self, queue: str, name: Optional[str] = None) -> Dict[str, Any]:
        return parse_config(await self.call("config", queue, ["GET"] + ([name] if name else [])))

    async def config_set(self, queue: str, settings: Optional[Dict[str, Any]] = None, **kw: Any) -> None:
        """RMQ.CONFIG SET: ``config_set("q", {"lock-ms": 60000})`` or
        ``config_set("q", max_attempts=3)`` (underscores become dashes)."""
        items = dict(settings or {})
        items.update({k.replace("_", "-"): v for k, v in kw.items()})
        args: List[Any] = ["SET"]
        for k, v in items.items():
            args += [k, int(v) if isinstance(v, bool) else v]
        await self.call("config", queue, args)

    async def queues(self) -> List[str]:
        v = await self.call("queues", None)
        return [x.decode() if isinstance(x, bytes) else str(x) for x in (v or [])]

    async def log(self, queue: str, *, from_offset: int = 0, count: int = 100) -> List[LogEntry]:
        return parse_log(await self.call("log", queue, ["FROM", int(from_offset), "COUNT", int(count)]))

    async def replay(self, queue: str, from_offset: int, to_offset: Optional[int] = None) -> int:
        args: List[Any] = ["FROM", int(from_offset)]
        if to_offset is not None:
            args += ["TO", int(to_offset)]
        return int(await self.call("replay", queue, args))


ClientLike = Union[Client, str]
