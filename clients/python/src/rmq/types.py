"""The values the client hands out and takes: messages, pushes, and typed command results."""
from __future__ import annotations

import datetime as _dt
import uuid
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import ConfigError, InvalidMessage, ProtocolError

#: A duration: seconds (int or float) or a timedelta.
Duration = Union[int, float, _dt.timedelta]
Body = Union[bytes, bytearray, memoryview, str]


def seconds(d: Optional[Duration], what: str = "duration") -> Optional[float]:
    if d is None:
        return None
    if isinstance(d, _dt.timedelta):
        d = d.total_seconds()
    if isinstance(d, bool) or not isinstance(d, (int, float)) or d < 0:
        raise InvalidMessage(f"{what} must be a non-negative number of seconds")
    return float(d)


def ms(d: Optional[Duration], what: str = "duration") -> Optional[int]:
    s = seconds(d, what)
    return None if s is None else int(round(s * 1000))


def now_ms() -> int:
    return int(time.time() * 1000)


_QUEUE_CHARS = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-#/"
)


def validate_queue(q: str) -> None:
    """Queue names: 1-200 bytes of ``A-Z a-z 0-9 _ . : - # /``."""
    b = q.encode("utf-8") if isinstance(q, str) else b""
    if not b or len(b) > 200 or not all(c in _QUEUE_CHARS for c in b):
        raise InvalidMessage("invalid queue name")


def validate_id(i: str) -> None:
    """Ids: 1-128 bytes of 0x21-0x7E (printable ASCII, no spaces)."""
    b = i.encode("utf-8") if isinstance(i, str) else b""
    if not b or len(b) > 128 or not all(0x21 <= c <= 0x7E for c in b):
        raise InvalidMessage("ID must be 1 to 128 printable ASCII characters without spaces")


_id_lock = threading.Lock()
_id_last = [0, 0]  # unix ms, 74 random bits of the last id


def new_id() -> str:
    """A new producer id: a UUID v7 (48 bits of unix ms, then 74 random bits), so ids sort by
    time and two producers never make the same one; the same form the Rust client makes.
    Within one process ids are strictly increasing: in the same ms the random part counts up."""
    with _id_lock:
        t = max(now_ms(), _id_last[0])
        if t == _id_last[0]:
            r = _id_last[1] + 1 + int.from_bytes(os.urandom(4), "big")
            if r >= 1 << 74:
                t, r = t + 1, int.from_bytes(os.urandom(10), "big") >> 7
        else:
            r = int.from_bytes(os.urandom(10), "big") >> 7  # 73 bits: room to count up
        _id_last[0], _id_last[1] = t, r
    t &= (1 << 48) - 1
    v = (t << 80) | (0x7 << 76) | ((r >> 62) << 64) | (0b10 << 62) | (r & ((1 << 62) - 1))
    return str(uuid.UUID(int=v))


def _body_bytes(body: Body) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise InvalidMessage("body must be bytes or str")


@dataclass
class Push:
    """A message to push; ``Producer.push`` and ``Client.push`` build it from their arguments."""

    queue: str
    body: bytes
    id: Optional[str] = None
    tag: str = ""
    key: str = ""
    headers: List[Tuple[str, str]] = field(default_factory=list)
    #: DELAY in ms, or AT in unix ms (not both).
    delay_ms: Optional[int] = None
    at_ms: Optional[int] = None

    @staticmethod
    def build(
        queue: str,
        body: Body,
        *,
        id: Optional[str] = None,
        tag: str = "",
        key: str = "",
        headers: Union[Mapping[str, str], Sequence[Tuple[str, str]], None] = None,
        delay: Optional[Duration] = None,
        at: Union[int, _dt.datetime, None] = None,
    ) -> "Push":
        if isinstance(headers, Mapping):
            hs = [(str(k), str(v)) for k, v in headers.items()]
        else:
            hs = [(str(k), str(v)) for k, v in (headers or [])]
        at_ms: Optional[int] = None
        if isinstance(at, _dt.datetime):
            at_ms = int(at.timestamp() * 1000)
        elif at is not None:
            if isinstance(at, bool) or not isinstance(at, int) or at < 0:
                raise InvalidMessage("at must be a unix time in ms or a datetime")
            at_ms = at
        p = Push(
            queue=queue,
            body=_body_bytes(body),
            id=id,
            tag=tag or "",
            key=key or "",
            headers=hs,
            delay_ms=ms(delay, "delay"),
            at_ms=at_ms,
        )
        p.validate()
        return p

    def validate(self) -> None:
        """What the server would refuse, checked here so a bad message is refused at once even
        while Redis is down (and never sits in the spool to be refused later)."""
        validate_queue(self.queue)
        if self.id is not None:
            validate_id(self.id)
        seen = set()
        for name, _ in self.headers:
            if not name:
                raise InvalidMessage("HEADER name must not be empty")
            if name in seen:
                raise InvalidMessage(f"HEADER '{name}' given twice")
            seen.add(name)
        if self.delay_ms is not None and self.at_ms is not None:
            raise InvalidMessage("DELAY and AT cannot be used together")

    def args(self) -> List[bytes]:
        """The PUSH arguments after the queue name."""
        a: List[bytes] = [self.body]
        if self.id:
            a += [b"ID", self.id.encode()]
        if self.tag:
            a += [b"TAG", self.tag.encode()]
        if self.key:
            a += [b"KEY", self.key.encode()]
        for k, v in self.headers:
            a += [b"HEADER", k.encode(), v.encode()]
        if self.delay_ms is not None:
            a += [b"DELAY", str(self.delay_ms).encode()]
        if self.at_ms is not None:
            a += [b"AT", str(self.at_ms).encode()]
        return a


@dataclass
class Pushed:
    """What became of a pushed message."""

    id: str
    #: True when Redis could not take it and it is in the local spool (fsynced), to be re-sent.
    spooled: bool
    #: The queue it went to: the one asked for, or for a partitioned queue, the partition of its
    #: key. A message spooled while the partitioned queue could not be looked up shows the
    #: logical name: it goes to its partition when the spool is sent.
    queue: str = ""


@dataclass(frozen=True)
class Confirm:
    """A producer's confirm: after each PUSH, ``WAIT replicas timeout`` on the same connection,
    so that a push counts as taken only once that many replicas have it."""

    #: How many replicas must have the write.
    replicas: int = 1
    #: How long WAIT may wait for them, in seconds.
    timeout: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or self.replicas < 1:
            raise ConfigError("confirm replicas must be at least 1")
        object.__setattr__(self, "timeout", seconds(self.timeout, "confirm timeout") or 0.001)

    def wait_cmd(self) -> List[Any]:
        return ["WAIT", self.replicas, max(int(round(self.timeout * 1000)), 1)]

    def shortfall(self, acked: int) -> str:
        """Why a WAIT that counted ``acked`` replicas is not enough."""
        return (
            f"not confirmed: {acked} of {self.replicas} replica(s) had the write within "
            f"{int(round(self.timeout * 1000))} ms (WAIT)"
        )


@dataclass
class Message:
    """A message as FETCH, PEEK or GET hand it out. Fields a reply does not carry are empty."""

    queue: str
    id: str = ""
    body: bytes = b""
    #: For ack, nack and touch (FETCH only).
    receipt: str = ""
    attempt: int = 0
    tag: str = ""
    key: str = ""
    headers: Dict[str, str] = field(default_factory=dict)
    created: int = 0
    offset: int = 0
    #: Lock deadline, unix ms (FETCH; PEEK of in-flight messages).
    deadline: int = 0
    #: PEEK/GET: ready, delayed, inflight, failed, errors.
    state: str = ""
    due: int = 0
    consumer: str = ""
    #: The last reason given (NACK REASON, "max attempts" ...).
    error: str = ""

    def text(self, errors: str = "replace") -> str:
        """The body as text."""
        return self.body.decode("utf-8", errors)


@dataclass
class Stats:
    """RMQ.STATS: the counters of a queue."""

    ready: int = 0
    delayed: int = 0
    inflight: int = 0
    failed: int = 0
    errors: int = 0
    pushed: int = 0
    acked: int = 0
    retried: int = 0
    dead: int = 0
    errored: int = 0
    dups: int = 0
    offset: int = 0
    oldest_ready_ms: int = 0
    #: Fields a newer server added.
    extra: Dict[str, int] = field(default_factory=dict)


@dataclass
class Recovered:
    """RMQ.RECOVER: messages moved back to ready, by where they came from."""

    expired: int
    failed: int
    errors: int


@dataclass
class LogEntry:
    """An entry of RMQ.LOG."""

    offset: int
    event: str
    id: str
    time: int
    #: Every other field of the entry (body, tag, headers of a push; consumer, attempt ...).
    fields: Dict[str, Any] = field(default_factory=dict)


# --- reply parsing -------------------------------------------------------------------------


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace")
    return str(v)


def _int(v: Any) -> int:
    if v is None:
        return 0
    if isinstance(v, int):
        return v
    try:
        return int(float(_text(v)))
    except ValueError:
        raise ProtocolError(f"expected an integer, got {v!r}") from None


def pairs(v: Any) -> List[Tuple[str, Any]]:
    """The fields of a map reply: a RESP3 dict or a flat RESP2 array."""
    if v is None:
        return []
    if isinstance(v, dict):
        return [(_text(k), x) for k, x in v.items()]
    if isinstance(v, (list, tuple)):
        if len(v) % 2:
            raise ProtocolError("odd field-value array")
        return [(_text(v[i]), v[i + 1]) for i in range(0, len(v), 2)]
    raise ProtocolError(f"expected a map, got {v!r}")


def parse_message(queue: str, v: Any) -> Message:
    m = Message(queue=queue)
    for k, x in pairs(v):
        if k == "body":
            m.body = bytes(x) if isinstance(x, (bytes, bytearray)) else _text(x).encode()
        elif k == "headers":
            m.headers = {name: _text(val) for name, val in pairs(x)}
        elif k in ("attempt", "created", "offset", "deadline", "due"):
            setattr(m, k, _int(x))
        elif k in ("id", "receipt", "tag", "key", "state", "consumer", "error"):
            setattr(m, k, _text(x))
    return m


# The values of a FETCH … COMPACT message, in their order.
COMPACT_FIELDS = ("id", "body", "receipt", "attempt", "tag", "key", "headers", "created", "offset", "deadline")


def parse_fetched(queue: str, v: Any, compact: bool) -> List[Message]:
    """FETCH's reply: maps, or with COMPACT each message's values in the maps' order."""
    if not compact or v is None:
        return parse_messages(queue, v)
    if not isinstance(v, (list, tuple)):
        raise ProtocolError(f"expected messages, got {v!r}")
    out = []
    for values in v:
        if not isinstance(values, (list, tuple)) or len(values) != len(COMPACT_FIELDS):
            raise ProtocolError(f"expected a COMPACT message of 10 values, got {values!r}")
        flat: List[Any] = []
        for name, value in zip(COMPACT_FIELDS, values):
            flat += [name, value]
        out.append(parse_message(queue, flat))
    return out


def parse_messages(queue: str, v: Any) -> List[Message]:
    if v is None:
        return []
    if not isinstance(v, (list, tuple)):
        raise ProtocolError(f"expected messages, got {v!r}")
    return [parse_message(queue, m) for m in v]


def parse_stats(v: Any) -> Stats:
    s = Stats()
    for k, x in pairs(v):
        if k in Stats.__dataclass_fields__ and k != "extra":
            setattr(s, k, _int(x))
        else:
            s.extra[k] = _int(x)
    return s


def parse_log(v: Any) -> List[LogEntry]:
    out = []
    for e in v or []:
        f = dict(pairs(e))
        entry = LogEntry(
            offset=_int(f.pop("offset", 0)),
            event=_text(f.pop("event", "")),
            id=_text(f.pop("id", "")),
            time=_int(f.pop("time", 0)),
        )
        for k, x in f.items():
            if k == "body":
                entry.fields[k] = bytes(x) if isinstance(x, (bytes, bytearray)) else x
            elif k == "headers":
                entry.fields[k] = {n: _text(val) for n, val in pairs(x)}
            elif isinstance(x, int):
                entry.fields[k] = x
            else:
                entry.fields[k] = _text(x)
        out.append(entry)
    return out


def parse_config(v: Any) -> Dict[str, int]:
    """CONFIG GET: name-value pairs; values are numbers (booleans are 0/1)."""
    out: Dict[str, Any] = {}
    for k, x in pairs(v):
        t = _text(x)
        out[k] = int(t) if t.isdigit() else t
    return out


@dataclass
class WorkerReport:
    """What a worker did, counted when it stops."""

    acked: int = 0
    retried: int = 0
    errored: int = 0
    failed: int = 0
    #: ACKed without a handler (no_handler_is_error off).
    dropped: int = 0
    #: Handlers that ran past their timeout: abandoned, message NACKed RETRY "timeout".
    timed_out: int = 0
    #: Handlers still running when the grace period ended (their messages come back by lock
    #: expiry).
    abandoned: int = 0
    #: ACK/NACK that found the receipt stale (the lock had run out and the message went to
    #: someone else) or could not reach Redis.
    stale: int = 0
