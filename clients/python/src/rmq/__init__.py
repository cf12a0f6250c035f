"""rmq: the client for rmq, the reliable message queue in Redis, on redis-py.

Works with both editions of rmq: the ``RMQ.*`` module, or the Lua library (``FCALL rmq_*``) on
a Redis without modules, which it loads itself when a command that writes needs it.

- :class:`Producer` pushes, and spools to disk what Redis cannot take (re-sent later);
- :class:`Worker` runs a handler per message, with ack / retry / fail / error outcomes,
  lock renewal, a per-job timeout and a graceful stop;
- :class:`Client` has every command, with typed results, and partitioned queues.

Given the URL of any node of a Redis Cluster, they find the cluster and route every command to
its queue's master.

These are the blocking classes; ``rmq.aio`` has the same three for asyncio.
"""
from .errors import (
    ConfigError,
    InvalidMessage,
    NotInstalled,
    NotStored,
    ProtocolError,
    Refused,
    RmqError,
    SpoolError,
    Unavailable,
)
from .aio.worker import Outcome
from .partition import PartitionRecovered, Partitioned, PartitionStats, partition_index, partition_names
from .spool import DrainReport, QuarantineEntry, Spool, SpoolRecord, SpoolStatus
from .sync import Client, Producer, Worker
from .types import Confirm, LogEntry, Message, Pushed, Recovered, Stats, WorkerReport, new_id

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Producer",
    "Worker",
    "Outcome",
    "Message",
    "Pushed",
    "Stats",
    "Recovered",
    "LogEntry",
    "WorkerReport",
    "Confirm",
    "Partitioned",
    "PartitionStats",
    "PartitionRecovered",
    "partition_index",
    "partition_names",
    "Spool",
    "SpoolRecord",
    "SpoolStatus",
    "DrainReport",
    "QuarantineEntry",
    "RmqError",
    "Unavailable",
    "Refused",
    "InvalidMessage",
    "ConfigError",
    "ProtocolError",
    "SpoolError",
    "NotStored",
    "NotInstalled",
    "new_id",
]
