"""Partitioned queues: one logical queue NAME over COUNT ordinary rmq queues, its partitions,
whose names put them on different slots of a Redis Cluster (and so spread over its masters).
The server sees ordinary queues; everything here lives in the client.

The rules are the same in every rmq client (Rust, Python, Node.js):

- **Registry**: the hash ``rmq:partitions``, field NAME, value
  ``v=1 count=COUNT ordered=0|1 created=UNIX_MS partitions=P0,P1,...``. A NAME without a field
  is an ordinary queue. A partition count is fixed at creation.
- **Key -> partition**: CRC-32 (IEEE 802.3, ``zlib.crc32``) of the key's UTF-8 bytes, modulo
  COUNT: the index in the registry's list. A message without a key goes to a random partition.
- **Partition names** (what creating writes): partition ``i`` is ``NAME#i`` when the cluster
  slot of that name is in the ``i``-th of COUNT equal shares of the 16384 slots, else
  ``NAME#i.n`` with the smallest ``n >= 1`` whose slot is. Readers take the names from the
  registry.
"""
from __future__ import annotations

import random
import zlib
from binascii import crc_hqx
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

from .errors import InvalidMessage, ProtocolError
from .types import Recovered, Stats, validate_queue

#: The registry: a hash, field = logical name, value = its record. No queue key looks like it
#: (every key of a queue ends in ``{name}``).
REGISTRY_KEY = "rmq:partitions"
#: The most partitions a logical queue may have.
MAX_PARTITIONS = 1024
#: The longest logical name (room for the partition suffix within a queue name's 200 bytes).
MAX_NAME_LEN = 180
#: Redis Cluster's number of hash slots.
SLOT_COUNT = 16384


def key_slot(key: Union[str, bytes]) -> int:
    """The hash slot of a key, as Redis Cluster computes it: CRC16 (XMODEM) of the key's hash
    tag (between the first ``{`` and the next ``}``, when not empty) or of the whole key."""
    b = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    start = b.find(b"{")
    if start >= 0:
        end = b.find(b"}", start + 1)
        if end > start + 1:
            b = b[start + 1 : end]
    return crc_hqx(b, 0) % SLOT_COUNT


def queue_slot(queue: str) -> int:
    """The slot of queue ``queue``: every key of a queue carries the hash tag ``{queue}``."""
    return crc_hqx(queue.encode("utf-8"), 0) % SLOT_COUNT


def partition_index(key: Union[str, bytes], count: int) -> int:
    """The index of the partition of ``key`` among ``count``: CRC-32 (IEEE) of the key's bytes
    mod ``count``."""
    b = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    return (zlib.crc32(b) & 0xFFFFFFFF) % max(count, 1)


def _check_name_and_count(name: str, count: int) -> None:
    try:
        validate_queue(name)
    except InvalidMessage:
        raise InvalidMessage(f"invalid partitioned queue name {name!r}") from None
    if len(name.encode("utf-8")) > MAX_NAME_LEN:
        raise InvalidMessage(f"a partitioned queue name has at most {MAX_NAME_LEN} bytes")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PARTITIONS:
        raise InvalidMessage(f"COUNT must be 1 to {MAX_PARTITIONS}")


def partition_names(name: str, count: int) -> List[str]:
    """The partition names of logical queue ``name`` with ``count`` partitions (the rule above)."""
    _check_name_and_count(name, count)
    out = []
    for i in range(count):
        lo, hi = i * SLOT_COUNT // count, (i + 1) * SLOT_COUNT // count
        chosen = f"{name}#{i}"
        if not lo <= queue_slot(chosen) < hi:
            # One name in every 16384 / (hi - lo) fits, on average: about COUNT tries.
            for n in range(1, 1000 * count + 10_000 + 1):
                chosen = f"{name}#{i}.{n}"
                if lo <= queue_slot(chosen) < hi:
                    break
            else:
                raise InvalidMessage(f"no name found for partition {i} of {name!r}")
        out.append(chosen)
    return out


@dataclass
class Partitioned:
    """A partitioned queue, as its registry record says."""

    name: str
    #: Every partition is an ``ordered`` queue: one key's messages are handled strictly one
    #: after another.
    ordered: bool
    #: The partitions' queue names, by index.
    partitions: List[str]
    #: Unix ms of the creation.
    created: int = 0

    @property
    def count(self) -> int:
        return len(self.partitions)

    def partition_for_key(self, key: Union[str, bytes]) -> str:
        """The partition of messages with ``key``."""
        return self.partitions[partition_index(key, self.count)]

    def route(self, key: Union[str, bytes, None]) -> str:
        """The partition a message goes to: its key's, or a random one when it has none."""
        if not key:
            return random.choice(self.partitions)
        return self.partition_for_key(key)

    def encode(self) -> str:
        """The registry record."""
        return (
            f"v=1 count={self.count} ordered={int(self.ordered)} created={self.created} "
            f"partitions={','.join(self.partitions)}"
        )

    @staticmethod
    def decode(name: str, record: Union[str, bytes]) -> "Partitioned":
        """Reads a registry record of logical queue ``name``."""
        text = record.decode("utf-8", "replace") if isinstance(record, bytes) else record

        def bad(why: str) -> ProtocolError:
            return ProtocolError(f"registry record of {name!r} in {REGISTRY_KEY}: {why}: {text!r}")

        p = Partitioned(name=name, ordered=False, partitions=[])
        count: Optional[int] = None
        for f in text.split():
            k, sep, v = f.partition("=")
            if not sep:
                raise bad("not key=value")
            if k == "v" and v != "1":
                raise bad("unknown version (a newer client wrote it?)")
            try:
                if k == "count":
                    count = int(v)
                elif k == "created":
                    p.created = int(v)
            except ValueError:
                raise bad(f"bad {k}") from None
            if k == "ordered":
                p.ordered = v == "1"
            elif k == "partitions":
                p.partitions = [q for q in v.split(",") if q]
        if count != len(p.partitions) or not p.partitions:
            raise bad("count and partitions disagree")
        for q in p.partitions:
            try:
                validate_queue(q)
            except InvalidMessage:
                raise bad("invalid partition name") from None
        return p


def total_stats(each: Sequence[Stats]) -> Stats:
    """The counters of several partitions summed (``oldest_ready_ms``: the oldest; ``offset``
    is per partition and left 0)."""
    t = Stats()
    for s in each:
        for k in Stats.__dataclass_fields__:
            if k in ("extra", "offset"):
                continue
            if k == "oldest_ready_ms":
                t.oldest_ready_ms = max(t.oldest_ready_ms, s.oldest_ready_ms)
            else:
                setattr(t, k, getattr(t, k) + getattr(s, k))
        for k, v in s.extra.items():
            t.extra[k] = t.extra.get(k, 0) + v
    return t


@dataclass
class PartitionStats:
    """STATS of every partition of a partitioned queue, and their sum."""

    total: Stats
    #: Partition queue name -> its counters, in partition order.
    partitions: Dict[str, Stats] = field(default_factory=dict)


@dataclass
class PartitionRecovered:
    """RECOVER on every partition of a partitioned queue, and the sum."""

    total: Recovered
    partitions: Dict[str, Recovered] = field(default_factory=dict)


__all__ = [
    "REGISTRY_KEY",
    "MAX_PARTITIONS",
    "MAX_NAME_LEN",
    "SLOT_COUNT",
    "key_slot",
    "queue_slot",
    "partition_index",
    "partition_names",
    "Partitioned",
    "PartitionStats",
    "PartitionRecovered",
    "total_stats",
]
