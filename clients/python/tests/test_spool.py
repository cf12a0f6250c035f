"""The spool, without Redis: the shared vectors (docs/spool-format.md) byte for byte, and the
damage rules."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from rmq.spool import (
    DRAIN_BATCH,
    HEADER,
    QuarantineEntry,
    SendStopped,
    Spool,
    SpoolRecord,
    frame,
    scan,
)

from conftest import VECTORS

EXPECTED = json.loads((VECTORS / "expected.json").read_text())


def vector_record(v: dict) -> SpoolRecord:
    return SpoolRecord(
        queue=v["queue"],
        id=v["id"],
        body=bytes.fromhex(v["body_hex"]),
        tag=v["tag"],
        key=v["key"],
        headers=[(h[0], h[1]) for h in v["headers"]],
        at=v["at"],
        spooled_at=v["spooled_at"],
    )


RECORDS = [vector_record(v) for v in EXPECTED["records"]]


def drain_all(sp: Spool) -> Tuple[object, List[SpoolRecord]]:
    got: List[SpoolRecord] = []

    def send(batch: List[SpoolRecord]) -> List[Optional[str]]:
        got.extend(batch)
        return [None] * len(batch)

    return sp.drain(send), got


def rec(i: int) -> SpoolRecord:
    return SpoolRecord("q", f"id-{i}", f"body {i}".encode(), "even" if i % 2 == 0 else "", "", [("h", str(i))], None, 1)


def only_segment(d: Path) -> Path:
    segs = sorted(d.glob("*.seg"))
    assert len(segs) == 1, segs
    return segs[0]


def test_python_writes_exactly_the_bytes_of_the_good_vector(tmp_path: Path) -> None:
    good = (VECTORS / "good.seg").read_bytes()
    assert b"".join(frame(r.encode()) for r in RECORDS) == good
    sp = Spool(tmp_path)
    sp.append(RECORDS)
    assert (tmp_path / "0000000000000001.seg").read_bytes() == good


def test_every_vector_segment_drains_as_expected(tmp_path: Path) -> None:
    for name, want in EXPECTED["segments"].items():
        d = tmp_path / name
        d.mkdir()
        shutil.copy(VECTORS / name, d / "0000000000000001.seg")
        sp = Spool(d)
        report, got = drain_all(sp)
        assert got == [RECORDS[i] for i in want["delivered"]], name
        assert sp.torn_bytes_at_open + report.torn_bytes == want["torn_bytes"], name
        assert report.corrupt == len(want["corrupt"]), name
        raw = (VECTORS / name).read_bytes()
        q = sp.quarantine()
        assert len(q) == len(want["corrupt"])
        for e, c in zip(q, want["corrupt"]):
            assert (e.segment, e.offset, e.reason) == ("0000000000000001.seg", c["offset"], c["reason"])
            assert e.bytes == raw[c["offset"] : c["offset"] + c["length"]]
        assert sp.status().records == 0


def test_the_quarantine_vector_reads_back_entry_by_entry(tmp_path: Path) -> None:
    shutil.copy(VECTORS / "quarantine", tmp_path / "quarantine")
    sp = Spool(tmp_path)
    want = [
        QuarantineEntry(e["segment"], e["offset"], e["reason"], e["time"], bytes.fromhex(e["bytes_hex"]))
        for e in EXPECTED["quarantine"]
    ]
    assert sp.quarantine() == want
    assert b"".join(frame(e.encode()) for e in want) == (VECTORS / "quarantine").read_bytes()
    assert want[1].record() == RECORDS[0]
    assert sp.status().quarantined == 2


def test_records_decode_strictly() -> None:
    assert SpoolRecord.decode(RECORDS[3].encode()) == RECORDS[3]
    with pytest.raises(ValueError, match="unknown record format 9"):
        SpoolRecord.decode(b"\x09\x01")
    with pytest.raises(ValueError, match="empty record"):
        SpoolRecord.decode(b"")
    with pytest.raises(ValueError, match="undecodable"):
        SpoolRecord.decode(RECORDS[0].encode()[:-3])


def test_append_then_drain_in_order_in_batches_and_removes(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    recs = [rec(i) for i in range(1200)]
    sp.append(recs[:700])
    for r in recs[700:]:
        sp.append([r])
    assert sp.status().records == 1200
    sizes: List[int] = []
    got: List[SpoolRecord] = []

    def send(b: List[SpoolRecord]) -> List[Optional[str]]:
        sizes.append(len(b))
        got.extend(b)
        return [None] * len(b)

    r = sp.drain(send)
    assert (r.sent, r.remaining, got) == (1200, 0, recs)
    assert max(sizes) == DRAIN_BATCH
    assert sp.status().records == 0 and not sp.has_data()
    assert drain_all(sp)[1] == []


def test_a_stopped_drain_goes_on_where_it_stopped(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    recs = [rec(i) for i in range(1300)]
    sp.append(recs)
    calls = 0
    got: List[SpoolRecord] = []

    def send(b: List[SpoolRecord]) -> List[Optional[str]]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise SendStopped("redis down")
        got.extend(b)
        return [None] * len(b)

    r = sp.drain(send)
    assert (r.sent, r.stopped, r.remaining) == (DRAIN_BATCH, "redis down", 1300 - DRAIN_BATCH)
    sp.append([rec(5000)])  # appends meanwhile go after the sealed ones
    r2, rest = drain_all(sp)
    assert r2.sent == 1300 - DRAIN_BATCH + 1
    assert got + rest == recs + [rec(5000)]


def test_a_torn_tail_is_cut_at_open(tmp_path: Path) -> None:
    Spool(tmp_path).append([rec(i) for i in range(5)])
    seg = only_segment(tmp_path)
    good_len = seg.stat().st_size
    half = frame(rec(99).encode())
    half = half[: len(half) // 2]
    with open(seg, "ab") as f:
        f.write(half)
    sp = Spool(tmp_path)
    assert sp.torn_bytes_at_open == len(half)
    assert seg.stat().st_size == good_len
    sp.append([rec(6)])
    r, got = drain_all(sp)
    assert [g.id for g in got] == ["id-0", "id-1", "id-2", "id-3", "id-4", "id-6"]
    assert r.corrupt == 0 and sp.status().quarantined == 0


@pytest.mark.parametrize("victim", [0, 4, 9])
def test_a_flipped_byte_is_quarantined_and_the_rest_delivered(tmp_path: Path, victim: int) -> None:
    sp = Spool(tmp_path)
    recs = [rec(i) for i in range(10)]
    sp.append(recs)
    seg = only_segment(tmp_path)
    buf = bytearray(seg.read_bytes())
    starts = [i[1] for i in scan(bytes(buf))]
    buf[starts[victim] + HEADER + 3] ^= 0x40
    buf += frame(rec(77).encode())[:7]
    seg.write_bytes(bytes(buf))
    st = sp.status()
    assert (st.records, st.corrupt) == (9, 1)
    r, got = drain_all(sp)
    assert (r.sent, r.corrupt, r.torn_bytes) == (9, 1, 7)
    assert got == [x for i, x in enumerate(recs) if i != victim]
    q = sp.quarantine()
    assert [(e.offset, e.reason) for e in q] == [(starts[victim], "CRC mismatch")]
    st = sp.status()
    assert (st.records, st.quarantined, st.corrupt) == (0, 1, 0)


def test_an_undecodable_frame_never_skips_unsent_records(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    sp.append([rec(1), rec(2)])
    seg = only_segment(tmp_path)
    with open(seg, "ab") as f:
        f.write(frame(b"\x09\x01\x02\x03") + frame(rec(3).encode()))

    def down(b: List[SpoolRecord]) -> List[Optional[str]]:
        raise SendStopped("redis down")

    assert sp.drain(down).stopped == "redis down"
    r, got = drain_all(sp)
    assert [g.id for g in got] == ["id-1", "id-2", "id-3"]
    assert r.corrupt == 1
    assert sp.quarantine()[0].reason.startswith("unknown record format")


def test_refused_records_go_to_the_quarantine_with_the_reason(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    sp.append([rec(i) for i in range(4)])
    r = sp.drain(lambda b: ["ERR nope" if x.id == "id-2" else None for x in b])
    assert (r.sent, r.refused) == (3, 1)
    q = sp.quarantine()
    assert q[0].record() == rec(2)
    assert q[0].reason == "refused by Redis: ERR nope"


def test_a_second_drainer_is_told_busy(tmp_path: Path) -> None:
    sp, sp2 = Spool(tmp_path), Spool(tmp_path)
    sp.append([rec(1)])

    def send(b: List[SpoolRecord]) -> List[Optional[str]]:
        r2, got2 = drain_all(sp2)
        assert r2.busy and not got2
        return [None] * len(b)

    assert sp.drain(send).sent == 1


def test_an_unwritable_spool_fails_the_append(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    sp = Spool(d)
    shutil.rmtree(d)
    d.write_bytes(b"not a dir")  # every later write fails, even as root
    with pytest.raises(OSError):
        sp.append([rec(1)])
    with pytest.raises(OSError):
        Spool(d / "sub")
    assert os.path.isfile(d)
