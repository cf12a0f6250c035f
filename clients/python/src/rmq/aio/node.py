"""One Redis server: a small pool of redis-py connections, each carrying one request (a command,
or a pipeline of them) at a time.

It keeps apart what redis-py's own retries would blur: a request that was **not sent** (no
connection could be opened, or a LOADING server ran none of it) is always safe to send again;
a request that was **sent without an answer** may have been applied, and only its caller knows
whether sending it again is safe (see ``cluster.py``)."""
from __future__ import annotations

import asyncio
import re
from typing import Any, List, Optional, Sequence, Set

import redis.asyncio as aredis
import redis.exceptions as rex
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import ConfigError, Refused, RmqError, Unavailable

#: Idle connections kept per server (more are opened when needed, and closed after use).
IDLE_KEPT = 16


#: Error codes that mean "Redis cannot take it now", not "the request is wrong".
_UNAVAILABLE_CODES = frozenset(
    {"BUSY", "OOM", "MISCONF", "NOREPLICAS", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY"}
)
_CODE = re.compile(r"^[A-Z]{3,}\b")

#: Error replies that redis-py turns into classes of their own, without their code in the text.
_CODE_OF = (
    (rex.MovedError, "MOVED"),  # before AskError, which it extends
    (rex.AskError, "ASK"),
    (rex.TryAgainError, "TRYAGAIN"),
    (rex.MasterDownError, "MASTERDOWN"),  # before ClusterDownError, which it extends
    (rex.ClusterDownError, "CLUSTERDOWN"),
    (rex.ReadOnlyError, "READONLY"),
    (rex.BusyLoadingError, "LOADING"),
    (getattr(rex, "OutOfMemoryError", ()), "OOM"),
    (rex.NoPermissionError, "NOPERM"),
)


def error_text(e: BaseException) -> str:
    """An error reply as Redis sent it: redis-py strips the code of some (MOVED, TRYAGAIN,
    ERR ...)."""
    text = str(e)
    for cls, code in _CODE_OF:
        if cls and isinstance(e, cls):
            return text if text.startswith(code) else f"{code} {text}"
    if isinstance(e, rex.ResponseError) and not _CODE.match(text):
        return "ERR " + text
    return text


def classify(e: BaseException) -> RmqError:
    """Sorts an error into Unavailable (retry later, spool) and Refused (the request or the
    setup is wrong)."""
    if isinstance(e, RmqError):
        return e
    if isinstance(e, rex.AuthenticationError):
        return Refused(str(e))
    if isinstance(e, rex.ResponseError) or isinstance(e, rex.BusyLoadingError):
        text = error_text(e)
        m = _CODE.match(text)
        if m and m.group(0) in _UNAVAILABLE_CODES | {"MOVED", "ASK"}:
            return Unavailable(text)
        return Refused(text)
    if isinstance(e, (rex.ConnectionError, rex.TimeoutError, asyncio.TimeoutError, OSError)):
        return Unavailable(str(e) or type(e).__name__)
    if isinstance(e, rex.RedisError):
        return Unavailable(str(e))
    return Refused(f"{type(e).__name__}: {e}")


class SendError(Exception):
    """A request without an answer: ``err`` says why, ``sent`` whether it may have reached the
    server."""

    def __init__(self, err: RmqError, sent: bool) -> None:
        super().__init__(str(err))
        self.err = err
        self.sent = sent


class Node:
    """The connections to one server (``url``). Replies are raw (bytes, ints, lists); an error
    reply is the redis-py exception in its place."""

    def __init__(self, url: str, *, connect_timeout: float, max_connections: Optional[int]) -> None:
        try:
            self._pool = aredis.ConnectionPool.from_url(
                url,
                protocol=2,
                decode_responses=False,
                socket_connect_timeout=connect_timeout,
                socket_timeout=None,  # limits are set per request (a blocking FETCH waits longer)
                retry=Retry(NoBackoff(), 0),  # retries are this client's job, not redis-py's
                retry_on_timeout=False,
                health_check_interval=0,
            )
        except ValueError as e:
            raise ConfigError(f"bad Redis URL: {e}") from None
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self._idle: List[Any] = []
        self._all: Set[Any] = set()
        self._slots: Optional[asyncio.Semaphore] = None
        # Set when the node left the cluster's map: requests in flight finish, nothing is kept.
        self._retired = False

    async def send(self, cmds: Sequence[Sequence[Any]], timeout: float) -> List[Any]:
        """Sends ``cmds`` as one pipeline on one connection, within ``timeout`` seconds, and gives
        each reply. Raises :class:`SendError` when there is no complete answer."""
        if self.max_connections and self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        if self._slots is not None:
            await self._slots.acquire()
        try:
            return await self._send(cmds, timeout)
        finally:
            if self._slots is not None:
                self._slots.release()

    async def _send(self, cmds: Sequence[Sequence[Any]], timeout: float) -> List[Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = await self._take()
        try:
            await asyncio.wait_for(conn.connect(), max(min(timeout, self.connect_timeout + 0.5), 0.001))
        except asyncio.CancelledError:
            await self._drop(conn)
            raise
        except BaseException as e:  # noqa: BLE001 - every failure to connect is "not sent"
            await self._drop(conn)
            raise SendError(_connect_error(e), sent=False) from None
        try:
            out = await asyncio.wait_for(_exchange(conn, cmds), max(deadline - loop.time(), 0.001))
        except asyncio.TimeoutError:
            await self._drop(conn)
            raise SendError(Unavailable(f"no answer within {timeout:g} s"), sent=True) from None
        except rex.BusyLoadingError as e:
            # The server is loading its data: it ran none of the pipeline.
            await self._drop(conn)
            raise SendError(Unavailable(f"LOADING {e}"), sent=False) from None
        except asyncio.CancelledError:
            await self._drop(conn)
            raise
        except BaseException as e:  # noqa: BLE001 - the connection broke mid-request
            await self._drop(conn)
            # The server went away: its other idle connections are most likely dead too.
            await self._forget_idle()
            raise SendError(classify(e), sent=True) from None
        if len(self._idle) < IDLE_KEPT and not self._retired:
            self._idle.append(conn)
        else:
            await self._drop(conn)
        return out

    async def _take(self) -> Any:
        """An idle connection still open (one the server closed is dropped), or a new one."""
        while self._idle:
            conn = self._idle.pop()
            reader = getattr(conn, "_reader", None)
            if reader is not None and reader.at_eof():
                await self._drop(conn)
                continue
            return conn
        conn = self._pool.make_connection()
        self._all.add(conn)
        return conn

    async def _drop(self, conn: Any) -> None:
        self._all.discard(conn)
        try:
            await conn.disconnect()
        except Exception:  # noqa: BLE001 - closing a broken connection may fail too
            pass

    async def _forget_idle(self) -> None:
        idle, self._idle = self._idle, []
        for c in idle:
            await self._drop(c)

    async def retire(self) -> None:
        """Closes the idle connections and keeps none from now on; requests in flight finish."""
        self._retired = True
        await self._forget_idle()

    async def close(self) -> None:
        self._idle = []
        for c in list(self._all):
            await self._drop(c)


async def _exchange(conn: Any, cmds: Sequence[Sequence[Any]]) -> List[Any]:
    await conn.send_packed_command(conn.pack_commands(cmds), check_health=False)
    out: List[Any] = []
    for _ in cmds:
        try:
            out.append(await conn.read_response())
        except rex.ResponseError as e:  # an error reply: read in full, the connection is in step
            out.append(e)
    return out


def _connect_error(e: BaseException) -> RmqError:
    if isinstance(e, asyncio.TimeoutError):
        return Unavailable("connect timed out")
    return classify(e)
