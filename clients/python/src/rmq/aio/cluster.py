"""Redis Cluster: the slot map, one :class:`Node` per server, and the routing of a request to the
master that owns its queue's slot.

The client routes by itself rather than through redis-py's ``RedisCluster``, because that one
sends a command again after its connection broke (``cluster_error_retry_attempts``), whether or
not the command had reached the server: an ACK, a FETCH or a TOUCH must never be sent twice by
the client. Here, as in the Rust client:

- MOVED: the slot has a new owner; read the map again, send again at once;
- ASK: the slot is being moved; send again to the node named, after ASKING;
- TRYAGAIN (the queue's slot is migrating), CLUSTERDOWN, MASTERDOWN, LOADING, READONLY: the
  command was not run; wait (10 ms, doubling up to 250 ms) and send again, until the time limit;
- no connection to the owner: read the map again (a failover may have named a new master),
  wait, send again: the request never left;
- sent, but no answer (the connection broke, or the time ran out): sent again only when the
  caller says that is safe (a PUSH with its id, reads, CONFIG); otherwise Unavailable.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit, urlunsplit

import redis.exceptions as rex

from ..errors import ConfigError, ProtocolError, RmqError, Unavailable
from ..partition import SLOT_COUNT
from .node import Node, SendError, error_text

log = logging.getLogger("rmq.client")

#: Where a request goes: ("slot", n) the master of slot n; ("node", "host:port") that node;
#: ("any",) any master (the URL's node first when it is one).
Target = Union[Tuple[str, int], Tuple[str, str], Tuple[str]]

#: Refreshes closer together than this are merged into one.
REFRESH_GAP = 0.1
FIRST_PAUSE = 0.01
LONGEST_PAUSE = 0.25


class Topology:
    """The slot map: which master serves each slot, and each master's replicas."""

    def __init__(self) -> None:
        self.owners: List[Optional[str]] = [None] * SLOT_COUNT
        #: Masters in the order of their first slot.
        self.masters: List[str] = []
        self.replicas: Dict[str, List[str]] = {}

    @staticmethod
    def from_cluster_slots(reply: Any, seed_host: str) -> "Topology":
        """From a ``CLUSTER SLOTS`` reply: ``[start, end, [host, port, id, ...], replica...]`` per
        range. An empty host means the host the reply came from."""
        if not isinstance(reply, list):
            raise ProtocolError(f"CLUSTER SLOTS replied {reply!r}")
        t = Topology()
        first: Dict[str, int] = {}
        for r in reply:
            if not isinstance(r, list) or len(r) < 3:
                continue
            start, end = int(r[0]), int(r[1])
            addrs = []
            for n in r[2:]:
                if not isinstance(n, list) or len(n) < 2:
                    continue
                host = n[0].decode() if isinstance(n[0], bytes) else str(n[0] or "")
                if host in ("", "?"):
                    host = seed_host
                addrs.append(f"{host}:{int(n[1])}")
            if not addrs or not 0 <= start <= end < SLOT_COUNT:
                continue
            master = addrs[0]
            for s in range(start, end + 1):
                t.owners[s] = master
            first[master] = min(first.get(master, SLOT_COUNT), start)
            reps = t.replicas.setdefault(master, [])
            reps.extend(a for a in addrs[1:] if a not in reps)
        if not first:
            raise Unavailable("the cluster serves no slot yet")
        t.masters = sorted(first, key=lambda m: first[m])
        return t

    def copy(self) -> "Topology":
        t = Topology()
        t.owners = list(self.owners)
        t.masters = list(self.masters)
        t.replicas = {k: list(v) for k, v in self.replicas.items()}
        return t


def _split_addr(addr: str) -> Tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class Cluster:
    """The nodes of one cluster, found from the node of the seed URL."""

    def __init__(self, seed_url: str, *, connect_timeout: float, max_connections: Optional[int]) -> None:
        self._seed = urlsplit(seed_url)
        if self._seed.scheme not in ("redis", "rediss"):
            raise ConfigError("a Redis Cluster is reached by redis:// or rediss:// URLs")
        self.seed_host = self._seed.hostname or "127.0.0.1"
        self.seed_addr = f"{self.seed_host}:{self._seed.port or 6379}"
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.topology = Topology()
        self._nodes: Dict[str, Node] = {}
        self._refreshed = 0.0
        self._refresh_lock: Optional[asyncio.Lock] = None

    def node(self, addr: str) -> Node:
        """The node at ``addr`` (``host:port``), with the seed URL's user, password, TLS and
        options."""
        n = self._nodes.get(addr)
        if n is None:
            host, port = _split_addr(addr)
            userinfo = self._seed.netloc.rpartition("@")[0]
            hostpart = f"[{host}]" if ":" in host else host
            netloc = f"{userinfo}@{hostpart}:{port}" if userinfo else f"{hostpart}:{port}"
            url = urlunsplit((self._seed.scheme, netloc, self._seed.path, self._seed.query, ""))
            n = Node(url, connect_timeout=self.connect_timeout, max_connections=self.max_connections)
            self._nodes[addr] = n
        return n

    async def _read_map(self, addr: str, timeout: float) -> Topology:
        try:
            [v] = await self.node(addr).send([["CLUSTER", "SLOTS"]], timeout)
        except SendError as e:
            raise e.err from None
        if isinstance(v, Exception):
            raise Unavailable(error_text(v))
        return Topology.from_cluster_slots(v, self.seed_host)

    async def connect(self, timeout: float) -> None:
        """Reads the slot map from the seed node."""
        self.topology = await self._read_map(self.seed_addr, timeout)
        self._refreshed = time.monotonic()

    async def refresh(self) -> None:
        """Reads the slot map again from whichever node answers first (the masters, their
        replicas, then the seed), unless another refresh just did."""
        if self._refresh_lock is None:
            self._refresh_lock = asyncio.Lock()
        async with self._refresh_lock:
            if time.monotonic() - self._refreshed < REFRESH_GAP:
                return
            t = self.topology
            candidates = list(t.masters)
            for m in t.masters:
                candidates += t.replicas.get(m, [])
            candidates.append(self.seed_addr)
            seen = set()
            for addr in candidates:
                if addr in seen:
                    continue
                seen.add(addr)
                try:
                    new = await self._read_map(addr, max(self.connect_timeout, 0.5))
                except RmqError:
                    continue
                # Forget the connections of nodes that left the map (a dead master, a moved node).
                known = set(new.masters) | {r for rs in new.replicas.values() for r in rs} | {self.seed_addr}
                for gone in [a for a in self._nodes if a not in known]:
                    await self._nodes.pop(gone).retire()
                log.debug("rmq cluster: slot map read from %s: masters %s", addr, new.masters)
                self.topology = new
                break
            self._refreshed = time.monotonic()

    def _learn(self, slot: int, addr: str) -> None:
        """A MOVED reply: ``slot`` is served by ``addr`` now."""
        t = self.topology.copy()
        t.owners[slot] = addr
        self.topology = t

    def masters(self) -> List[str]:
        return list(self.topology.masters)

    async def exec(self, target: Target, cmds: Sequence[Sequence[Any]], timeout: float, resend: bool) -> List[Any]:
        """Sends ``cmds`` as one pipeline to ``target``, following the cluster's answers (see the
        module documentation), within ``timeout`` seconds. ``resend``: every command in it is
        safe to send again after its answer was lost; it also allows a pipeline of several
        commands to be sent again after a redirect."""
        deadline = time.monotonic() + timeout
        pause = FIRST_PAUSE
        ask: Optional[str] = None
        last: Optional[RmqError] = None
        hops = 0
        attempt = 0
        while True:
            attempt += 1
            now = time.monotonic()
            if now >= deadline:
                raise last or Unavailable(f"no answer from the cluster within {timeout:g} s")
            asking = ask is not None
            if ask is not None:
                addr, ask = ask, None
            elif target[0] == "slot":
                owner = self.topology.owners[target[1]]  # type: ignore[index]
                if owner is None:
                    last = Unavailable(f"no master serves slot {target[1]}")
                    await self.refresh()
                    pause = await _wait(pause, deadline)
                    continue
                addr = owner
            elif target[0] == "node":
                addr = str(target[1])  # type: ignore[misc]
            else:
                # The URL's node first when it is a master, then the masters in turn, so that a
                # dead one is passed over.
                masters = self.masters()
                if self.seed_addr in masters:
                    i = masters.index(self.seed_addr)
                    masters = masters[i:] + masters[:i]
                addr = masters[(attempt - 1) % len(masters)] if masters else self.seed_addr
            pipe: List[Sequence[Any]] = []
            for c in cmds:
                if asking:
                    pipe.append(["ASKING"])
                pipe.append(c)
            try:
                vals = await self.node(addr).send(pipe, max(deadline - now, 0.001))
            except SendError as e:
                if not isinstance(e.err, Unavailable) or (e.sent and not resend):
                    raise e.err from None
                last = e.err
                if target[0] == "node" and not e.sent:
                    raise e.err from None
                # The owner may be gone: a failover names another.
                await self.refresh()
                pause = await _wait(pause, deadline)
                continue
            if asking:
                vals = vals[1::2]
            v = _verdict(vals)
            if v is None or not (len(cmds) == 1 or resend):
                return vals
            if v[0] == "moved":
                # Other slots probably moved too: read the map again, then take the redirect's
                # word for this slot (the node that answered knows best).
                _, slot, to = v
                await self.refresh()
                self._learn(slot, to)
                last = Unavailable(f"slot {slot} moved to {to}")
                hops += 1
                if hops > 3:
                    pause = await _wait(pause, deadline)  # nodes that disagree: give them time
            elif v[0] == "ask":
                ask = v[2]
            else:
                _, err, refresh = v
                last = err
                if refresh:
                    await self.refresh()
                pause = await _wait(pause, deadline)

    async def close(self) -> None:
        nodes, self._nodes = self._nodes, {}
        for n in nodes.values():
            await n.close()


async def _wait(pause: float, deadline: float) -> float:
    """Sleeps ``pause`` (less when the deadline is nearer) and gives the next, longer pause."""
    await asyncio.sleep(max(min(pause, deadline - time.monotonic()), 0))
    return min(pause * 2, LONGEST_PAUSE)


def _verdict(vals: Sequence[Any]) -> Optional[Tuple[Any, ...]]:
    """The first reply that asks for a redirect or a wait: ("moved", slot, addr), ("ask", slot,
    addr) or ("wait", error, refresh_the_map); None when every reply stands. Read from the
    error's text: redis-py turns some of these replies into classes of their own, and older
    versions do not."""
    for v in vals:
        if not isinstance(v, rex.ResponseError):
            continue
        text = error_text(v)
        words = text.split()
        code = words[0] if words else ""
        if code in ("MOVED", "ASK") and len(words) >= 3:
            return ("moved" if code == "MOVED" else "ask", int(words[1]), words[2])
        if code == "TRYAGAIN":
            return ("wait", Unavailable(text), False)
        if code in ("CLUSTERDOWN", "MASTERDOWN", "READONLY", "LOADING"):
            return ("wait", Unavailable(text), True)
    return None
