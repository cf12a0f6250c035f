"""Errors of the rmq client. Every error is an :class:`RmqError`."""
from __future__ import annotations


class RmqError(Exception):
    """Base class of every error this package raises."""


class Unavailable(RmqError):
    """Redis could not take the request now (down, unreachable, timed out, loading, a read-only
    replica after a failover, out of memory, a busy script ...). Trying again later can work;
    the producer spools messages on this error."""


class Refused(RmqError):
    """Redis answered with an error about the request itself or the setup (a bad argument,
    ``queue full``, no permission, a wrong password ...). Sending the same request again will not
    help; the producer reports it and never spools it."""


class NotInstalled(Refused):
    """The server has neither the rmq module nor the rmq Lua library, and the command only reads
    (a command that writes, such as a push or a fetch, loads the library)."""


class InvalidMessage(RmqError, ValueError):
    """The message breaks a rule of the server (queue name, id, headers, DELAY with AT) and was
    refused before anything was sent, even while Redis is down."""


class ConfigError(RmqError, ValueError):
    """Bad settings (URL, edition, durations ...)."""


class ProtocolError(RmqError):
    """Redis answered something this client does not understand."""


class SpoolError(RmqError):
    """The spool could not be read or written."""


class NotStored(RmqError):
    """The catastrophic case: Redis did not take the message and neither did the spool. The
    message is stored nowhere; the caller still has it."""

    def __init__(self, redis: str, spool: str) -> None:
        super().__init__(
            f"message not stored: redis unavailable ({redis}) and spool failed ({spool})"
        )
        self.redis = redis
        self.spool = spool
