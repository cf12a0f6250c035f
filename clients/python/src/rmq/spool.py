"""The local spool: where the producer keeps messages that Redis could not take.

The format is shared with the Rust and Node clients byte for byte (docs/spool-format.md): a
directory of append-only *segments* of CRC-framed records, a ``quarantine`` file in the same
framing, ``<segment>.pos`` files that say how far a drain got, and ``flock`` files ``LOCK``
(appends, sealing) and ``DRAIN`` (one drain at a time). A record is a format byte (1) and the
postcard encoding of :class:`SpoolRecord`.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

log = logging.getLogger("rmq.spool")

MAGIC = b"RMQs"
HEADER = 12
MAX_PAYLOAD = 512 * 1024 * 1024 + 64 * 1024
RECORD_FORMAT = 1
QUARANTINE_FORMAT = 1
SEGMENT_ROLL_BYTES = 64 * 1024 * 1024
DRAIN_BATCH = 500
_U64_MAX = (1 << 64) - 1
_SEGMENT = re.compile(r"^(\d+)\.seg$")


# ---------------------------------------------------------------------------------------------
# postcard: the few shapes the records need (varints, strings, bytes, lists, options).


def _varint(v: int, out: bytearray) -> None:
    if v < 0 or v > _U64_MAX:
        raise ValueError(f"{v} does not fit in a u64")
    while True:
        b = v & 0x7F
        v >>= 7
        if v == 0:
            out.append(b)
            return
        out.append(b | 0x80)


def _str(s: str, out: bytearray) -> None:
    _bytes(s.encode("utf-8"), out)


def _bytes(b: bytes, out: bytearray) -> None:
    _varint(len(b), out)
    out += b


class _Reader:
    """Reads postcard values; any fault is a ValueError."""

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            raise ValueError("unexpected end of record")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        out = 0
        for i in range(10):
            b = self.byte()
            out |= (b & 0x7F) << (7 * i)
            if b & 0x80 == 0:
                if i == 9 and b > 1:
                    raise ValueError("bad varint")
                return out
        raise ValueError("bad varint")

    def bytes(self) -> bytes:
        n = self.varint()
        if n > len(self.buf) - self.pos:
            raise ValueError("unexpected end of record")
        b = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(b)

    def str(self) -> str:
        try:
            return self.bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("string is not UTF-8") from None

    def option_u64(self) -> Optional[int]:
        tag = self.byte()
        if tag == 0:
            return None
        if tag == 1:
            return self.varint()
        raise ValueError("bad option tag")


@dataclass
class SpoolRecord:
    """One spooled message: everything needed to PUSH it again."""

    queue: str
    id: str
    body: bytes
    tag: str = ""
    key: str = ""
    headers: List[Tuple[str, str]] = field(default_factory=list)
    #: Absolute due time (unix ms) of a delayed message.
    at: Optional[int] = None
    #: When it was spooled (unix ms).
    spooled_at: int = 0

    def encode(self) -> bytes:
        out = bytearray([RECORD_FORMAT])
        _str(self.queue, out)
        _str(self.id, out)
        _bytes(bytes(self.body), out)
        _str(self.tag, out)
        _str(self.key, out)
        _varint(len(self.headers), out)
        for name, value in self.headers:
            _str(name, out)
            _str(value, out)
        if self.at is None:
            out.append(0)
        else:
            out.append(1)
            _varint(self.at, out)
        _varint(self.spooled_at, out)
        return bytes(out)

    @staticmethod
    def decode(payload: bytes) -> "SpoolRecord":
        """Raises ValueError with the reason when the payload is not a record."""
        if not payload:
            raise ValueError("empty record")
        if payload[0] != RECORD_FORMAT:
            raise ValueError(f"unknown record format {payload[0]}")
        r = _Reader(payload, 1)
        try:
            queue, id_, body, tag, key = r.str(), r.str(), r.bytes(), r.str(), r.str()
            headers = [(r.str(), r.str()) for _ in range(r.varint())]
            at = r.option_u64()
            spooled_at = r.varint()
        except ValueError as e:
            raise ValueError(f"undecodable record: {e}") from None
        return SpoolRecord(queue, id_, body, tag, key, headers, at, spooled_at)


@dataclass
class QuarantineEntry:
    """A record, or a stretch of damaged bytes, moved aside for a person to look at."""

    segment: str
    offset: int
    reason: str
    time: int
    #: The raw bytes of the damaged stretch, or the record payload that Redis refused.
    bytes: bytes

    def encode(self) -> bytes:
        out = bytearray([QUARANTINE_FORMAT])
        _str(self.segment, out)
        _varint(self.offset, out)
        _str(self.reason, out)
        _varint(self.time, out)
        _bytes(self.bytes, out)
        return bytes(out)

    @staticmethod
    def decode(payload: bytes) -> "QuarantineEntry":
        if not payload:
            raise ValueError("empty entry")
        if payload[0] != QUARANTINE_FORMAT:
            raise ValueError(f"unknown quarantine format {payload[0]}")
        r = _Reader(payload, 1)
        return QuarantineEntry(r.str(), r.varint(), r.str(), r.varint(), r.bytes())

    def record(self) -> Optional[SpoolRecord]:
        """The record, when the entry holds a whole one (a refused record)."""
        try:
            return SpoolRecord.decode(self.bytes)
        except ValueError:
            return None


# ---------------------------------------------------------------------------------------------
# Frames: magic | len u32 LE | crc32(len bytes + payload) u32 LE | payload.


def frame(payload: bytes) -> bytes:
    n = len(payload).to_bytes(4, "little")
    crc = zlib.crc32(payload, zlib.crc32(n)) & 0xFFFFFFFF
    return MAGIC + n + crc.to_bytes(4, "little") + payload


# What a scan found: ("frame", start, end), ("corrupt", start, end, reason), ("torn", start).
Item = Tuple


def _check_frame(buf: bytes, pos: int) -> Tuple[Optional[int], str, Optional[int]]:
    """(end of the good frame at pos, "", None), or (None, fault, end of a complete frame whose
    magic is right and CRC wrong)."""
    if len(buf) - pos < HEADER:
        return None, "truncated frame", None
    magic_ok = buf[pos : pos + 4] == MAGIC
    n = int.from_bytes(buf[pos + 4 : pos + 8], "little")
    crc = int.from_bytes(buf[pos + 8 : pos + 12], "little")
    if n > MAX_PAYLOAD:
        return None, "bad frame length" if magic_ok else "bad frame header", None
    end = pos + HEADER + n
    if end > len(buf):
        return None, "truncated frame" if magic_ok else "bad frame header", None
    got = zlib.crc32(buf[pos + HEADER : end], zlib.crc32(buf[pos + 4 : pos + 8])) & 0xFFFFFFFF
    if got == crc:
        return end, "", None
    if magic_ok:
        return None, "CRC mismatch", end
    return None, "bad frame header", None


def _next_good(buf: bytes, start: int) -> Optional[int]:
    p = start
    while p + HEADER <= len(buf):
        at = buf.find(MAGIC, p)
        if at < 0:
            return None
        if _check_frame(buf, at)[0] is not None:
            return at
        p = at + 1
    return None


def scan(buf: bytes, start: int = 0) -> List[Item]:
    """Splits buf[start:] into good frames, corrupt stretches and a torn tail."""
    items: List[Item] = []
    pos = start
    while pos < len(buf):
        end, fault, crc_end = _check_frame(buf, pos)
        if end is not None:
            items.append(("frame", pos, end))
            pos = end
            continue
        nxt = _next_good(buf, pos + 1)
        if nxt is not None:
            # Good data follows: whatever lies between is damage, not a torn tail.
            items.append(("corrupt", pos, nxt, fault))
            pos = nxt
        elif crc_end is not None:
            # A complete frame, magic right, CRC wrong: damaged after it was written.
            items.append(("corrupt", pos, crc_end, fault))
            pos = crc_end
        else:
            items.append(("torn", pos))
            break
    return items


# ---------------------------------------------------------------------------------------------


@dataclass
class SpoolStatus:
    """What the spool holds; reading it changes nothing."""

    #: Records waiting to be re-sent, and their bytes (frames included).
    records: int = 0
    bytes: int = 0
    segments: int = 0
    #: Damaged stretches not yet quarantined (the next drain moves them).
    corrupt: int = 0
    #: Entries in the quarantine file, and its size.
    quarantined: int = 0
    quarantine_bytes: int = 0


@dataclass
class DrainReport:
    """What a drain did."""

    sent: int = 0
    #: Records Redis refused for good (moved to the quarantine with Redis's error).
    refused: int = 0
    #: Damaged stretches moved to the quarantine.
    corrupt: int = 0
    torn_bytes: int = 0
    #: Records still in the spool afterwards (when the drain stopped early).
    remaining: int = 0
    #: Why the drain stopped early (Redis unavailable ...), if it did.
    stopped: Optional[str] = None
    #: Another process was draining, so this one did nothing.
    busy: bool = False


#: What a sender answers per record: None when Redis took it, else the reason it refused it for
#: good. Raising :class:`SendStopped` means Redis is unavailable: the drain stops there.
Outcome = Optional[str]


class SendStopped(Exception):
    """Raised by a drain's sender when Redis cannot take the batch now."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _seg_name(n: int) -> str:
    return f"{n:016d}.seg"


class _FileLock:
    """An exclusive flock(2) on a file, held while the ``with`` block runs."""

    def __init__(self, path: str, wait: bool = True) -> None:
        self.path = path
        self.wait = wait
        self.fd = -1
        self.held = False

    def __enter__(self) -> "_FileLock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.held = True
        except BlockingIOError:
            self.held = False
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.held:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


class Spool:
    """A spool directory. Methods block on file IO; the asyncio producer runs them in a thread.
    Safe to share between threads, and between processes (flock)."""

    def __init__(self, directory: Union[str, "os.PathLike[str]"]) -> None:
        """Opens (creating it if needed) the spool and cuts a torn tail off its newest segment;
        :attr:`torn_bytes_at_open` says how many bytes were cut."""
        self.dir = os.fspath(directory)
        self._mu = threading.Lock()
        os.makedirs(self.dir, exist_ok=True)
        with self._mu, _FileLock(self._path("LOCK")):
            segs = self._segments()
            self.torn_bytes_at_open = self._cut_torn_tail(segs[-1]) if segs else 0

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _seg_path(self, n: int) -> str:
        return self._path(_seg_name(n))

    def _pos_path(self, n: int) -> str:
        return self._path(f"{n:016d}.pos")

    def _segments(self) -> List[int]:
        out = []
        for name in os.listdir(self.dir):
            m = _SEGMENT.match(name)
            if m:
                out.append(int(m.group(1)))
        return sorted(out)

    def _read_pos(self, n: int) -> int:
        try:
            with open(self._pos_path(n), "r", encoding="ascii") as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return 0

    def _write_pos(self, n: int, pos: int) -> None:
        tmp = self._path(f"{n:016d}.pos.tmp")
        with open(tmp, "w", encoding="ascii") as f:
            f.write(str(pos))
        os.replace(tmp, self._pos_path(n))

    def _cut_torn_tail(self, n: int) -> int:
        """Cuts a torn tail off segment n (the caller holds the append locks)."""
        path = self._seg_path(n)
        buf = _read(path) or b""
        items = scan(buf)
        if items and items[-1][0] == "torn":
            start = items[-1][1]
            fd = os.open(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, start)
                os.fsync(fd)
            finally:
                os.close(fd)
            cut = len(buf) - start
            log.warning("rmq spool: cut a torn tail left by a crash (%s, %d bytes)", path, cut)
            return cut
        return 0

    def append(self, records: Sequence[SpoolRecord]) -> None:
        """Appends the records and fsyncs them: when this returns they are on disk. Either all
        are appended or an OSError is raised (a partial write is cut off again)."""
        if not records:
            return
        chunks = []
        for r in records:
            payload = r.encode()
            if len(payload) > MAX_PAYLOAD:
                raise OSError("message too large for the spool")
            chunks.append(frame(payload))
        data = b"".join(chunks)
        with self._mu, _FileLock(self._path("LOCK")):
            segs = self._segments()
            n = segs[-1] if segs else 0
            created = False
            if n == 0:
                n, created = 1, True
            else:
                try:
                    if os.path.getsize(self._seg_path(n)) >= SEGMENT_ROLL_BYTES:
                        n, created = n + 1, True
                except FileNotFoundError:
                    pass
            fd = os.open(self._seg_path(n), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                before = os.fstat(fd).st_size
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fdatasync(fd)
                except OSError:
                    # Do not leave half a batch behind: the caller is told it failed.
                    try:
                        os.ftruncate(fd, before)
                        os.fsync(fd)
                    except OSError:
                        pass
                    raise
            finally:
                os.close(fd)
            if created:
                _fsync_dir(self.dir)

    def has_data(self) -> bool:
        """True when some segment holds bytes past its drain position (sizes only)."""
        for n in self._segments():
            try:
                if os.path.getsize(self._seg_path(n)) > self._read_pos(n):
                    return True
            except FileNotFoundError:
                pass
        return False

    def status(self) -> SpoolStatus:
        st = SpoolStatus()
        for n in self._segments():
            st.segments += 1
            buf = _read(self._seg_path(n))
            if buf is None:
                continue
            for item in scan(buf, min(self._read_pos(n), len(buf))):
                if item[0] == "frame":
                    st.records += 1
                    st.bytes += item[2] - item[1]
                elif item[0] == "corrupt":
                    st.corrupt += 1
        q = _read(self._path("quarantine"))
        if q is not None:
            st.quarantine_bytes = len(q)
            st.quarantined = sum(1 for i in scan(q) if i[0] == "frame")
        return st

    def quarantine(self) -> List[QuarantineEntry]:
        """The quarantine's entries, oldest first."""
        buf = _read(self._path("quarantine"))
        out = []
        for item in scan(buf or b""):
            if item[0] == "frame":
                try:
                    out.append(QuarantineEntry.decode(buf[item[1] + HEADER : item[2]]))
                except ValueError:
                    pass
        return out

    def _append_quarantine(self, entries: Sequence[QuarantineEntry]) -> None:
        if not entries:
            return
        path = self._path("quarantine")
        existed = os.path.exists(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            data = memoryview(b"".join(frame(e.encode()) for e in entries))
            while data:
                data = data[os.write(fd, data) :]
            os.fdatasync(fd)
        finally:
            os.close(fd)
        if not existed:
            _fsync_dir(self.dir)
        for e in entries:
            log.error(
                "rmq spool: a record was moved to the quarantine (%s at %d: %s)",
                e.segment,
                e.offset,
                e.reason,
            )

    def _seal(self, report: DrainReport) -> List[int]:
        """Starts a new segment when the newest holds anything, so what exists now can be
        drained while new appends go elsewhere. Returns the sealed segments, oldest first."""
        with self._mu, _FileLock(self._path("LOCK")):
            segs = self._segments()
            if not segs:
                return []
            last = segs[-1]
            if os.path.getsize(self._seg_path(last)) == 0:
                return segs[:-1]
            report.torn_bytes += self._cut_torn_tail(last)
            fd = os.open(self._seg_path(last + 1), os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(self.dir)
            return segs

    def drain(
        self,
        send: Callable[[List[SpoolRecord]], List[Outcome]],
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> DrainReport:
        """Re-sends the spool, oldest first, through ``send``: it gets batches of records and
        answers per record (None: taken; a string: refused for good, with that reason), or
        raises :class:`SendStopped` when Redis is unavailable, which stops the drain (what was
        not sent stays, in order). ``progress(done, total)`` is told after each batch."""
        report = DrainReport()
        with _FileLock(self._path("DRAIN"), wait=False) as lock:
            if not lock.held:
                report.busy = True
                return report
            sealed = self._seal(report)
            total = 0
            for n in sealed:
                buf = _read(self._seg_path(n))
                if buf is not None:
                    start = min(self._read_pos(n), len(buf))
                    total += sum(1 for i in scan(buf, start) if i[0] == "frame")
            if progress:
                progress(0, total)
            handled = 0
            for n in sealed:
                if report.stopped is not None:
                    break
                handled = self._drain_segment(n, send, report, handled, total, progress)
            report.remaining = 0 if report.stopped is None else max(total - handled, 0)
            return report

    def _drain_segment(
        self,
        n: int,
        send: Callable[[List[SpoolRecord]], List[Outcome]],
        report: DrainReport,
        handled: int,
        total: int,
        progress: Optional[Callable[[int, int], None]],
    ) -> int:
        path = self._seg_path(n)
        buf = _read(path)
        if buf is None:
            return handled
        pos = min(self._read_pos(n), len(buf))
        seg = _seg_name(n)
        batch: List[Tuple[SpoolRecord, int, int]] = []

        def flush() -> bool:
            nonlocal pos, handled
            if not batch:
                return True
            try:
                outcomes = send([r for r, _, _ in batch])
            except SendStopped as e:
                report.stopped = str(e) or "redis unavailable"
                return False
            if len(outcomes) < len(batch):
                report.stopped = "sender answered for fewer records than sent"
                return False
            refused = []
            for (rec, start, _), out in zip(batch, outcomes):
                if out is None:
                    report.sent += 1
                else:
                    report.refused += 1
                    refused.append(
                        QuarantineEntry(
                            seg, start, f"refused by Redis: {out}", _now_ms(), rec.encode()
                        )
                    )
            self._append_quarantine(refused)
            pos = batch[-1][2]
            handled += len(batch)
            batch.clear()
            self._write_pos(n, pos)
            if progress:
                progress(handled, total)
            return True

        for item in scan(buf, pos):
            if item[0] == "frame":
                _, start, end = item
                try:
                    rec = SpoolRecord.decode(buf[start + HEADER : end])
                except ValueError as e:
                    # CRC right, record unreadable (a newer format, or a bug): send what came
                    # before it, then keep it aside, never drop it.
                    if not flush():
                        return handled
                    self._append_quarantine(
                        [QuarantineEntry(seg, start, str(e), _now_ms(), buf[start:end])]
                    )
                    report.corrupt += 1
                    handled += 1
                    pos = end
                    self._write_pos(n, pos)
                    continue
                batch.append((rec, start, end))
                if len(batch) >= DRAIN_BATCH and not flush():
                    return handled
            elif item[0] == "corrupt":
                _, start, end, reason = item
                if not flush():
                    return handled
                self._append_quarantine(
                    [QuarantineEntry(seg, start, reason, _now_ms(), buf[start:end])]
                )
                report.corrupt += 1
                pos = end
                self._write_pos(n, pos)
            else:
                if not flush():
                    return handled
                cut = len(buf) - item[1]
                report.torn_bytes += cut
                log.warning("rmq spool: cut a torn tail left by a crash (%s, %d bytes)", seg, cut)
                pos = len(buf)
        if not flush():
            return handled
        if pos >= len(buf):
            # All of it handled: the segment goes (then its .pos; a crash in between leaves a
            # segment that is sent again whole, which the ids make harmless).
            os.remove(path)
            try:
                os.remove(self._pos_path(n))
            except FileNotFoundError:
                pass
            _fsync_dir(self.dir)
        return handled


def iter_frames(buf: bytes) -> Iterator[bytes]:
    """The payloads of the good frames of a buffer (for tools and tests)."""
    for item in scan(buf):
        if item[0] == "frame":
            yield buf[item[1] + HEADER : item[2]]
