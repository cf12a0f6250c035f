"""The asyncio client: one server or a Redis Cluster, the two editions (RMQ.* commands of the
module, or FCALL of the Lua library), error sorting, typed wrappers of every command, and
partitioned queues."""
from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
from importlib import resources
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..errors import ConfigError, NotInstalled, ProtocolError, Refused, RmqError, Unavailable
from ..partition import (
    REGISTRY_KEY,
    PartitionRecovered,
    Partitioned,
    PartitionStats,
    key_slot,
    partition_names,
    queue_slot,
    total_stats,
)
from ..types import (
    Confirm,
    Duration,
    LogEntry,
    Message,
    Push,
    Recovered,
    Stats,
    ms,
    now_ms,
    pairs,
    parse_config,
    parse_log,
    parse_message,
    parse_fetched,
    parse_messages,
    parse_stats,
    seconds,
    validate_queue,
)
from .cluster import Cluster, Target
from .node import Node, SendError, classify

#: Commands of the Lua edition that only read: sent with FCALL_RO, and never load the library.
READERS = frozenset({"stats", "peek", "get", "queues", "log"})

#: The keys of a queue, in the order the Lua edition takes them when a cluster client declares
#: them all (``FCALL rmq_x 11 q msg:{q} dly:{q} ... log:{q} ...``), so that Redis itself refuses
#: (ASK, TRYAGAIN) while the queue's slot migrates.
QUEUE_KEY_PREFIXES = ("msg", "dly", "bak", "inf", "fai", "err", "cfg", "st", "dup", "log")

EDITIONS = ("auto", "module", "lua")

log = logging.getLogger("rmq.client")


def _reads_only(name: str, args: Sequence[Any]) -> bool:
    """Commands that only read never load the Lua library (CONFIG GET too, though the library's
    rmq_config also writes)."""
    if name in READERS:
        return True
    return name == "config" and bool(args) and str(args[0]).upper() == "GET"


def _safe_to_repeat(name: str, args: Sequence[Any]) -> bool:
    """The commands that may be sent again when their answer was lost: the ones that change
    nothing, a PUSH that carries its id (the dedup window drops a second copy), and CONFIG
    (setting a value twice is setting it once). ACK, NACK, TOUCH, FETCH and the repair commands
    are never sent twice by the client: a lost answer is reported as Unavailable, since the
    command may have been applied."""
    if name in ("stats", "peek", "get", "queues", "log", "config"):
        return True
    if name == "push":
        # Push.args() puts ID right after the body.
        return len(args) >= 3 and _text(args[1]).upper() == "ID"
    return False


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


def _reply(v: Any) -> Any:
    """One reply as a result: an error reply raises."""
    if isinstance(v, Exception):
        raise classify(v)
    return v


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)


class Rotation:
    """Fetches from several queues in turn, fairly: it starts at a random queue, and every call
    starts one past where the previous one found messages, so a busy queue never starves the
    others and an empty one costs one FETCH per round."""

    def __init__(self, queues: Sequence[str]) -> None:
        self.queues = list(queues)
        self._next = random.randrange(len(self.queues)) if self.queues else 0

    async def fetch_round(
        self, client: "Client", *, count: Optional[int] = None, lock: Optional[Duration] = None, consumer: Optional[str] = None
    ) -> List[Message]:
        """One round: FETCHes (never blocking) from the queues in turn until ``count`` messages
        (default 1) are in hand or every queue was asked once. A queue that fails (its master is
        down) is passed over; the error is raised only when every queue failed."""
        n = len(self.queues)
        if n == 0:
            return []
        want = max(count or 1, 1)
        start = self._next
        out: List[Message] = []
        first_err: Optional[RmqError] = None
        failed = 0
        for k in range(n):
            i = (start + k) % n
            try:
                out += await client.fetch(self.queues[i], count=want - len(out), lock=lock, consumer=consumer)
            except RmqError as e:
                failed += 1
                first_err = first_err or e
            if len(out) >= want:
                self._next = (i + 1) % n
                return out
        self._next = (start + 1) % n
        if first_err is not None and failed == n:
            raise first_err
        return out

    async def fetch(
        self,
        client: "Client",
        *,
        count: Optional[int] = None,
        lock: Optional[Duration] = None,
        block: Optional[Duration] = None,
        consumer: Optional[str] = None,
    ) -> List[Message]:
        """Rounds until a message comes or ``block`` seconds have passed (0: forever; None: one
        round), pausing between empty rounds as the Lua edition's polling does: FETCH cannot
        block on several queues."""
        if block is None:
            return await self.fetch_round(client, count=count, lock=lock, consumer=consumer)
        wait = seconds(block, "block") or 0.0
        forever = wait == 0
        until = time.monotonic() + wait
        pause = client.poll_min
        while True:
            msgs = await self.fetch_round(client, count=count, lock=lock, consumer=consumer)
            now = time.monotonic()
            if msgs or (not forever and now >= until):
                return msgs
            await asyncio.sleep(pause if forever else min(pause, until - now))
            pause = min(pause * 2, client.poll_max)


class Client:
    """A handle on one Redis server or one Redis Cluster (asyncio). It can be made outside an
    event loop; its connections belong to the loop of its first command.

    Given the URL of any node of a cluster, it finds the cluster at its first request
    (``INFO cluster``), reads the slot map, and sends every command to the master of its queue's
    slot, following MOVED and ASK and waiting out TRYAGAIN and failovers within the command
    timeout."""

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
        edition, which cannot block. ``max_connections``: connections open at once per
        server (default: as many as requests in flight)."""
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
        # FETCH asks for the COMPACT reply (half the server's reply work) until a server that
        # predates it refuses the word; then it asks for maps.
        self._compact = True
        if not re.match(r"^(rediss?|unix)://", url):
            raise ConfigError(f"bad Redis URL: {url!r} (redis://, rediss:// or unix://)")
        self._seed = Node(url, connect_timeout=self.connect_timeout, max_connections=max_connections)
        # Found out at the first request: None (not yet), False (one server) or the cluster.
        self._cluster: Union[None, bool, Cluster] = None
        self._rotations: Dict[str, Rotation] = {}

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
        await self._seed.close()
        if isinstance(self._cluster, Cluster):
            await self._cluster.close()
        self._cluster = None

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- one server or a cluster ------------------------------------------------------------

    async def _mode(self) -> Optional[Cluster]:
        """The cluster, or None for one server: asked once (``INFO cluster``, or ``CLUSTER
        INFO`` for a user whose ACL forbids INFO), at the first request."""
        if self._cluster is None:
            t = self.command_timeout
            try:
                info, cinfo = await self._seed.send([["INFO", "cluster"], ["CLUSTER", "INFO"]], t)
            except SendError as e:
                raise e.err from None
            if not isinstance(info, Exception):
                cluster = "cluster_enabled:1" in _text(info)
            else:
                cluster = not isinstance(cinfo, Exception) and "cluster_state:" in _text(cinfo)
            if not cluster:
                self._cluster = False
            else:
                c = Cluster(self.url, connect_timeout=self.connect_timeout, max_connections=self.max_connections)
                await c.connect(t)
                log.debug("rmq: Redis Cluster at %s, masters %s", _display(self.url), c.masters())
                if self._cluster is None:
                    self._cluster = c
                else:  # another request found it meanwhile
                    await c.close()
        return self._cluster if isinstance(self._cluster, Cluster) else None

    async def is_cluster(self) -> bool:
        """True when the URL names a node of a Redis Cluster."""
        return await self._mode() is not None

    async def masters(self) -> List[str]:
        """The masters (``host:port``): the cluster's, or the one server's URL."""
        c = await self._mode()
        return c.masters() if c is not None else [_display(self.url)]

    async def _exec(
        self, to: Union[str, Tuple[str, str], None], cmds: Sequence[Sequence[Any]], timeout: float, resend: bool
    ) -> List[Any]:
        """Sends ``cmds`` in one pipeline where ``to`` says: a queue name (the master of its
        slot), ``("key", k)`` (the master of key k's slot) or None (any master). Each error
        reply is the redis-py exception in its place."""
        c = await self._mode()
        if c is None:
            try:
                return await self._seed.send(cmds, timeout)
            except SendError as e:
                raise e.err from None
        target: Target
        if to is None:
            target = ("any",)
        elif isinstance(to, tuple):
            target = ("slot", key_slot(to[1]))
        else:
            target = ("slot", queue_slot(to))
        return await c.exec(target, cmds, timeout, resend)

    async def _on_every_master(self, cmd: Sequence[Any]) -> List[Tuple[str, Any]]:
        """Sends ``cmd`` to every master (one server: to it): each master's reply, an error
        reply or an RmqError in its place."""
        c = await self._mode()
        t = self.command_timeout
        if c is None:
            try:
                [v] = await self._seed.send([cmd], t)
            except SendError as e:
                v = e.err
            return [(_display(self.url), v)]

        async def one(m: str) -> Any:
            try:
                [v] = await c.exec(("node", m), [cmd], t, False)  # type: ignore[union-attr]
                return v
            except RmqError as e:
                return e

        masters = c.masters()
        return list(zip(masters, await asyncio.gather(*(one(m) for m in masters))))

    async def key_command(self, key: str, *args: Any, resend: bool = True) -> Any:
        """A plain Redis command on ``key`` (not a queue's), sent to the server holding the key."""
        return _reply((await self._exec(("key", key), [args], self.command_timeout, resend))[0])

    # --- raw calls ------------------------------------------------------------------------

    async def raw(self, *args: Any, timeout: Optional[float] = None) -> Any:
        """Runs one command with a time limit (the command timeout by default). In a cluster it
        goes to the URL's node when that is a master, else to another master."""
        t = self.command_timeout if timeout is None else timeout
        return _reply((await self._exec(None, [args], t, False))[0])

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
        """Loads the Lua library unless the server has it (``replace``: load it anyway); in a
        cluster on every master (replicas get it from their master)."""
        cmd = ["FUNCTION", "LOAD"] + (["REPLACE"] if replace else []) + [lua_library()]
        for _, v in await self._on_every_master(cmd):
            if isinstance(v, Exception):
                e = classify(v)
                if "already exists" not in str(e):
                    raise e

    @staticmethod
    def _build(edition: str, name: str, q: Optional[str], args: Sequence[Any], all_keys: bool = False) -> List[Any]:
        """The command ``name`` for queue ``q`` in ``edition``. ``all_keys`` declares every key of
        the queue to the Lua edition (on a cluster), instead of the queue name alone."""
        if edition == "module":
            return [f"RMQ.{name.upper()}"] + ([q] if q is not None else []) + list(args)
        fcall = "FCALL_RO" if name in READERS else "FCALL"
        if q is None:
            keys: List[Any] = [0]
        elif all_keys:
            keys = [1 + len(QUEUE_KEY_PREFIXES), q] + [f"{p}:{{{q}}}" for p in QUEUE_KEY_PREFIXES]
        else:
            keys = [1, q]
        return [fcall, f"rmq_{name}"] + keys + list(args)

    async def call(
        self, name: str, q: Optional[str], args: Sequence[Any] = (), timeout: Optional[float] = None
    ) -> Any:
        """Runs an rmq command in the server's edition. A Lua library missing from the server
        (a restart without persistence, a FUNCTION FLUSH) is loaded again by commands that
        write; a command that only reads reports it instead (it never changes the server)."""
        return _reply((await self._call_with(name, q, args, None, timeout))[0])

    async def _call_with(
        self, name: str, q: Optional[str], args: Sequence[Any], then: Optional[Sequence[Any]], timeout: Optional[float]
    ) -> List[Any]:
        """Runs an rmq command, followed on the same connection by ``then`` when given (WAIT),
        and gives every reply."""
        t = self.command_timeout if timeout is None else timeout
        cluster = await self.is_cluster()
        for tries in range(1, 4):
            ed = await self.edition()
            cmds = [self._build(ed, name, q, args, cluster)] + ([then] if then is not None else [])
            vals = await self._exec(q, cmds, t, _safe_to_repeat(name, args))
            err = classify(vals[0]) if isinstance(vals[0], Exception) else None
            if isinstance(err, Refused) and tries < 3 and await self._recoverable(ed, _reads_only(name, args), str(err)):
                continue
            return vals
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

    async def call_many(
        self, cmds: Sequence[Tuple[str, str, Sequence[Any]]], confirm: Optional[Confirm] = None
    ) -> List[Any]:
        """Runs several rmq commands: in one pipeline on one server; in a cluster, one pipeline
        per queue slot (the order of one queue's commands is kept), sent at the same time. Each
        result is a value or an RmqError; an unavailable Redis raises. With ``confirm``, each
        pipeline is followed by ``WAIT replicas timeout``, and the commands of a pipeline that
        fewer replicas confirmed come back as Unavailable ("not confirmed")."""
        if not cmds:
            return []
        if await self.is_cluster():
            by_slot: Dict[int, List[int]] = {}
            for i, (_, q, _) in enumerate(cmds):
                by_slot.setdefault(queue_slot(q), []).append(i)
            groups = list(by_slot.values())
        else:
            groups = [list(range(len(cmds)))]
        results = await asyncio.gather(*(self._call_group(cmds, g, confirm) for g in groups), return_exceptions=True)
        out: List[Any] = [None] * len(cmds)
        for g, r in zip(groups, results):
            if isinstance(r, BaseException):
                raise r
            for i, v in zip(g, r):
                out[i] = v
        return out

    async def _call_group(
        self, cmds: Sequence[Tuple[str, str, Sequence[Any]]], g: List[int], confirm: Optional[Confirm]
    ) -> List[Any]:
        cluster = await self.is_cluster()
        for tries in range(1, 4):
            ed = await self.edition()
            pipe = [self._build(ed, cmds[i][0], cmds[i][1], cmds[i][2], cluster) for i in g]
            if confirm is not None:
                pipe.append(confirm.wait_cmd())
            t = self.command_timeout + len(g) / 10000 + (confirm.timeout if confirm is not None else 0)
            resend = all(_safe_to_repeat(cmds[i][0], cmds[i][2]) for i in g)
            vals = await self._exec(cmds[g[0]][1], pipe, t, resend)
            waited = vals.pop() if confirm is not None else None
            out = [classify(v) if isinstance(v, Exception) else v for v in vals]
            first = next((r for r in out if isinstance(r, Refused)), None)
            reads = all(_reads_only(cmds[i][0], cmds[i][2]) for i in g)
            if first is not None and tries < 3 and await self._recoverable(ed, reads, str(first)):
                continue
            if confirm is not None:
                acked = int(_reply(waited))
                if acked < confirm.replicas:
                    why = Unavailable(confirm.shortfall(acked))
                    out = [r if isinstance(r, RmqError) else why for r in out]
            return out
        raise AssertionError("unreachable")

    # --- the commands ---------------------------------------------------------------------

    async def push(self, queue: str, body: Any, **options: Any) -> str:
        """RMQ.PUSH straight to Redis (no retries, no spool: see Producer). Options: id, tag,
        key, headers, delay (seconds), at (unix ms or datetime). Returns the id."""
        return await self.send_push(Push.build(queue, body, **options))

    async def send_push(self, p: Push) -> str:
        """RMQ.PUSH of a built (and checked) :class:`Push`."""
        return _text(await self.call("push", p.queue, p.args()))

    async def push_confirmed(
        self, queue: str, body: Any, confirm: Optional[Confirm] = None, **options: Any
    ) -> Tuple[str, int]:
        """RMQ.PUSH (no retries, no spool: see Producer), then ``WAIT replicas timeout`` on the
        same connection: the id, and how many replicas confirmed they have the write (the push,
        and everything before it on that master). Fewer than asked means the message may be lost
        if its master fails now. ``confirm`` defaults to ``Confirm()`` (1 replica, 1 s); options
        as for :meth:`push`."""
        return await self.send_push_confirmed(Push.build(queue, body, **options), confirm)

    async def send_push_confirmed(self, p: Push, confirm: Optional[Confirm] = None) -> Tuple[str, int]:
        """:meth:`push_confirmed` of a built (and checked) :class:`Push`."""
        c = confirm or Confirm()
        t = self.command_timeout + c.timeout
        vals = await self._call_with("push", p.queue, p.args(), c.wait_cmd(), t)
        return _text(_reply(vals[0])), int(_reply(vals[1]))

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
        compact = self._compact
        try:
            return await self._fetch_as(queue, count, lock, block, consumer, compact)
        except Refused as e:
            if not (compact and "near 'COMPACT'" in str(e)):
                raise
            self._compact = False
            return await self._fetch_as(queue, count, lock, block, consumer, False)

    async def _fetch_as(
        self,
        queue: str,
        count: Optional[int],
        lock: Optional[Duration],
        block: Optional[Duration],
        consumer: Optional[str],
        compact: bool,
    ) -> List[Message]:
        args: List[Any] = []
        if count is not None:
            args += ["COUNT", int(count)]
        if lock is not None:
            args += ["LOCK", max(ms(lock, "lock") or 1, 1)]
        if consumer:
            args += ["CONSUMER", consumer]
        if compact:
            # Last: the Lua edition reads COUNT n COMPACT without walking the options.
            args.append("COMPACT")
        if block is None:
            return parse_fetched(queue, await self.call("fetch", queue, args), compact)
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
                msgs = parse_fetched(queue, v, compact)
                if msgs or (not forever and time.monotonic() >= until):
                    return msgs
        pause = self.poll_min
        while True:
            msgs = parse_fetched(queue, await self.call("fetch", queue, args), compact)
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
        """RMQ.QUEUES: the queues of the server; in a cluster, of every master, merged (sorted,
        each name once: a queue whose slot is moving may show on two)."""
        if not await self.is_cluster():
            v = await self.call("queues", None)
            return [_text(x) for x in (v or [])]
        ed = await self.edition()
        names = set()
        for master, v in await self._on_every_master(self._build(ed, "queues", None, [])):
            if isinstance(v, Exception):
                e = classify(v)
                if "function not found" in str(e).lower():
                    continue  # a master without the Lua library holds no queue of the Lua edition
                raise e
            names.update(_text(x) for x in (v or []))
        return sorted(names)

    async def log(self, queue: str, *, from_offset: int = 0, count: int = 100) -> List[LogEntry]:
        return parse_log(await self.call("log", queue, ["FROM", int(from_offset), "COUNT", int(count)]))

    async def replay(self, queue: str, from_offset: int, to_offset: Optional[int] = None) -> int:
        args: List[Any] = ["FROM", int(from_offset)]
        if to_offset is not None:
            args += ["TO", int(to_offset)]
        return int(await self.call("replay", queue, args))

    # --- partitioned queues -----------------------------------------------------------------

    async def partitioned(self, name: str) -> Optional[Partitioned]:
        """The registry record of ``name``, or None when ``name`` is an ordinary queue."""
        v = await self.key_command(REGISTRY_KEY, "HGET", REGISTRY_KEY, name)
        return None if v is None else Partitioned.decode(name, v)

    async def partitioned_or_plain(self, name: str) -> Optional[Partitioned]:
        """:meth:`partitioned`, except that a user who may not read the registry (an ACL limited
        to some queues' keys) sees ordinary queues."""
        try:
            return await self.partitioned(name)
        except Refused as e:
            if str(e).startswith("NOPERM"):
                log.debug("rmq: the registry of partitioned queues may not be read: %r taken for an ordinary queue", name)
                return None
            raise

    async def partition_list(self) -> List[Partitioned]:
        """Every partitioned queue, by name."""
        v = await self.key_command(REGISTRY_KEY, "HGETALL", REGISTRY_KEY)
        return sorted((Partitioned.decode(k, rec) for k, rec in pairs(v)), key=lambda p: p.name)

    async def partition_create(self, name: str, count: int, ordered: bool = False) -> Tuple[Partitioned, bool]:
        """Creates partitioned queue ``name`` with ``count`` partitions (``ordered``: every
        partition is an ordered queue, set before the record is written, so no client ever
        pushes to a partition that is not ordered yet). Returns the record and whether it is
        new: creating again with the same count and order changes nothing; with others it is
        refused (Refused).

        Refused when ``name`` is an ordinary queue that holds messages, when a partition name
        is a queue that holds messages, or when ``name`` collides with the partitions of another
        partitioned queue."""
        names = partition_names(name, count)
        existing = await self.partitioned(name)
        if existing is not None:
            if existing.count == count and existing.ordered == ordered:
                return existing, False
            raise Refused(
                f"partitioned queue {name!r} exists with {existing.count} partitions"
                f"{', ordered' if existing.ordered else ''}; a partition count is fixed at creation"
            )
        for other in await self.partition_list():
            if name in other.partitions or any(q in other.partitions for q in names):
                raise Refused(f"{name!r} collides with the partitions of partitioned queue {other.name!r}")
        for q in [name] + names:
            try:
                st = await self.stats(q)
            except NotInstalled:
                continue  # no rmq on the server yet (a write loads the Lua library): nothing held
            held = st.ready + st.delayed + st.inflight + st.failed + st.errors
            if held:
                raise Refused(f"queue {q!r} holds {held} message(s): choose another name, or empty it first")
        if ordered:
            for q in names:
                await self.config_set(q, {"ordered": 1})
        p = Partitioned(name=name, ordered=ordered, partitions=names, created=now_ms())
        if int(await self.key_command(REGISTRY_KEY, "HSETNX", REGISTRY_KEY, name, p.encode())) == 1:
            return p, True
        # Someone created it at the same moment: theirs stands if it is the same.
        theirs = await self.partitioned(name)
        if theirs is not None and theirs.count == count and theirs.ordered == ordered:
            return theirs, False
        raise Refused(f"partitioned queue {name!r} was just created with other settings")

    async def _partitions_of(self, name: Union[str, Partitioned]) -> Partitioned:
        if isinstance(name, Partitioned):
            return name
        p = await self.partitioned(name)
        if p is None:
            raise Refused(f"{name!r} is not a partitioned queue")
        return p

    async def partition_stats(self, name: Union[str, Partitioned]) -> PartitionStats:
        """STATS of every partition, and their sum."""
        p = await self._partitions_of(name)
        each = {q: await self.stats(q) for q in p.partitions}
        return PartitionStats(total=total_stats(list(each.values())), partitions=each)

    async def partition_peek(
        self, name: Union[str, Partitioned], state: str = "ready", *, start: int = 0, count: int = 10
    ) -> List[Message]:
        """PEEK on every partition, in partition order (each message's ``queue`` is its
        partition): up to ``count`` from each."""
        p = await self._partitions_of(name)
        out: List[Message] = []
        for q in p.partitions:
            out += await self.peek(q, state, start=start, count=count)
        return out

    async def partition_recover(
        self, name: Union[str, Partitioned], *, expired: bool = False, failed: bool = False, errors: bool = False
    ) -> PartitionRecovered:
        """RECOVER on every partition, and the sum."""
        p = await self._partitions_of(name)
        each = {q: await self.recover(q, expired=expired, failed=failed, errors=errors) for q in p.partitions}
        total = Recovered(*(sum(getattr(r, f) for r in each.values()) for f in ("expired", "failed", "errors")))
        return PartitionRecovered(total=total, partitions=each)

    async def partition_fetch(
        self,
        name: Union[str, Partitioned],
        *,
        count: Optional[int] = None,
        lock: Optional[Duration] = None,
        block: Optional[Duration] = None,
        consumer: Optional[str] = None,
    ) -> List[Message]:
        """FETCH over every partition, fairly (see :class:`Rotation`; one rotation per name is
        kept by this client). ``block`` waits by polling. Each message's ``queue`` is its
        partition: ack, nack and touch it there."""
        p = await self._partitions_of(name)
        r = self._rotations.get(p.name)
        if r is None or r.queues != p.partitions:
            r = self._rotations[p.name] = Rotation(p.partitions)
        return await r.fetch(self, count=count, lock=lock, block=block, consumer=consumer)


ClientLike = Union[Client, str]
