// The spool, without Redis: the shared vectors (docs/spool-format.md) byte for byte, and the damage rules.
"use strict";
const { test } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");

const { Spool, SendStopped, frame, scan, encodeRecord, decodeRecord, encodeQuarantine } = require("../dist/spool");
const { VECTORS, tmpDir } = require("./helpers");

const EXPECTED = JSON.parse(fs.readFileSync(path.join(VECTORS, "expected.json"), "utf8"));
const RECORDS = EXPECTED.records.map((v) => ({
  queue: v.queue,
  id: v.id,
  body: Buffer.from(v.body_hex, "hex"),
  tag: v.tag,
  key: v.key,
  headers: v.headers.map((h) => [h[0], h[1]]),
  at: v.at,
  spooledAt: v.spooled_at,
}));

async function drainAll(sp) {
  const got = [];
  const report = await sp.drain(async (batch) => {
    got.push(...batch);
    return batch.map(() => null);
  });
  return { report, got };
}

const rec = (i) => ({ queue: "q", id: `id-${i}`, body: Buffer.from(`body ${i}`), tag: i % 2 === 0 ? "even" : "", key: "", headers: [["h", String(i)]], at: null, spooledAt: 1 });

function onlySegment(dir) {
  const segs = fs.readdirSync(dir).filter((f) => f.endsWith(".seg")).sort();
  assert.equal(segs.length, 1, String(segs));
  return path.join(dir, segs[0]);
}

test("node writes exactly the bytes of the good vector", async () => {
  const good = fs.readFileSync(path.join(VECTORS, "good.seg"));
  assert.deepEqual(Buffer.concat(RECORDS.map((r) => frame(encodeRecord(r)))), good);
  const d = tmpDir();
  const sp = await Spool.open(d);
  await sp.append(RECORDS);
  assert.deepEqual(fs.readFileSync(path.join(d, "0000000000000001.seg")), good);
});

test("every vector segment drains as expected", async () => {
  for (const [name, want] of Object.entries(EXPECTED.segments)) {
    const d = tmpDir();
    fs.copyFileSync(path.join(VECTORS, name), path.join(d, "0000000000000001.seg"));
    const sp = await Spool.open(d);
    const { report, got } = await drainAll(sp);
    assert.deepEqual(got, want.delivered.map((i) => RECORDS[i]), name);
    assert.equal(sp.tornBytesAtOpen + report.tornBytes, want.torn_bytes, name);
    assert.equal(report.corrupt, want.corrupt.length, name);
    const raw = fs.readFileSync(path.join(VECTORS, name));
    const q = await sp.quarantine();
    assert.equal(q.length, want.corrupt.length);
    q.forEach((e, i) => {
      const c = want.corrupt[i];
      assert.deepEqual([e.segment, e.offset, e.reason], ["0000000000000001.seg", c.offset, c.reason]);
      assert.deepEqual(e.bytes, raw.subarray(c.offset, c.offset + c.length));
    });
    assert.equal((await sp.status()).records, 0);
  }
});

test("the quarantine vector reads back entry by entry", async () => {
  const d = tmpDir();
  fs.copyFileSync(path.join(VECTORS, "quarantine"), path.join(d, "quarantine"));
  const sp = await Spool.open(d);
  const want = EXPECTED.quarantine.map((e) => ({ segment: e.segment, offset: e.offset, reason: e.reason, time: e.time, bytes: Buffer.from(e.bytes_hex, "hex") }));
  assert.deepEqual(await sp.quarantine(), want);
  assert.deepEqual(Buffer.concat(want.map((e) => frame(encodeQuarantine(e)))), fs.readFileSync(path.join(VECTORS, "quarantine")));
  assert.deepEqual(decodeRecord(want[1].bytes), RECORDS[0]);
  assert.equal((await sp.status()).quarantined, 2);
});

test("records decode strictly", () => {
  assert.deepEqual(decodeRecord(encodeRecord(RECORDS[3])), RECORDS[3]);
  assert.throws(() => decodeRecord(Buffer.from([9, 1])), /unknown record format 9/);
  assert.throws(() => decodeRecord(Buffer.alloc(0)), /empty record/);
  assert.throws(() => decodeRecord(encodeRecord(RECORDS[0]).subarray(0, -3)), /undecodable/);
});

test("append then drain in order, in batches, and the segments go", async () => {
  const sp = await Spool.open(tmpDir());
  const recs = Array.from({ length: 1200 }, (_, i) => rec(i));
  await sp.append(recs.slice(0, 700));
  for (const r of recs.slice(700)) await sp.append([r]);
  assert.equal((await sp.status()).records, 1200);
  const sizes = [];
  const got = [];
  const r = await sp.drain(async (b) => {
    sizes.push(b.length);
    got.push(...b);
    return b.map(() => null);
  });
  assert.deepEqual([r.sent, r.remaining], [1200, 0]);
  assert.deepEqual(got, recs);
  assert.equal(Math.max(...sizes), 500);
  assert.equal(await sp.hasData(), false);
});

test("a stopped drain goes on where it stopped", async () => {
  const sp = await Spool.open(tmpDir());
  const recs = Array.from({ length: 1300 }, (_, i) => rec(i));
  await sp.append(recs);
  let calls = 0;
  const got = [];
  const r = await sp.drain(async (b) => {
    if (++calls === 2) throw new SendStopped("redis down");
    got.push(...b);
    return b.map(() => null);
  });
  assert.deepEqual([r.sent, r.stopped, r.remaining], [500, "redis down", 800]);
  await sp.append([rec(5000)]);
  const { report, got: rest } = await drainAll(sp);
  assert.equal(report.sent, 801);
  assert.deepEqual([...got, ...rest], [...recs, rec(5000)]);
});

test("a torn tail is cut at open", async () => {
  const d = tmpDir();
  await (await Spool.open(d)).append([0, 1, 2, 3, 4].map(rec));
  const seg = onlySegment(d);
  const goodLen = fs.statSync(seg).size;
  const whole = frame(encodeRecord(rec(99)));
  const half = whole.subarray(0, whole.length >> 1);
  fs.appendFileSync(seg, half);
  const sp = await Spool.open(d);
  assert.equal(sp.tornBytesAtOpen, half.length);
  assert.equal(fs.statSync(seg).size, goodLen);
  await sp.append([rec(6)]);
  const { report, got } = await drainAll(sp);
  assert.deepEqual(got.map((g) => g.id), ["id-0", "id-1", "id-2", "id-3", "id-4", "id-6"]);
  assert.equal(report.corrupt, 0);
});

for (const victim of [0, 4, 9]) {
  test(`a flipped byte (record ${victim}) is quarantined and the rest delivered`, async () => {
    const d = tmpDir();
    const sp = await Spool.open(d);
    const recs = Array.from({ length: 10 }, (_, i) => rec(i));
    await sp.append(recs);
    const seg = onlySegment(d);
    let buf = fs.readFileSync(seg);
    const starts = scan(buf).map((i) => i.start);
    buf[starts[victim] + 12 + 3] ^= 0x40;
    buf = Buffer.concat([buf, frame(encodeRecord(rec(77))).subarray(0, 7)]);
    fs.writeFileSync(seg, buf);
    const st = await sp.status();
    assert.deepEqual([st.records, st.corrupt], [9, 1]);
    const { report, got } = await drainAll(sp);
    assert.deepEqual([report.sent, report.corrupt, report.tornBytes], [9, 1, 7]);
    assert.deepEqual(got, recs.filter((_, i) => i !== victim));
    assert.deepEqual((await sp.quarantine()).map((e) => [e.offset, e.reason]), [[starts[victim], "CRC mismatch"]]);
  });
}

test("an undecodable frame never skips unsent records", async () => {
  const d = tmpDir();
  const sp = await Spool.open(d);
  await sp.append([rec(1), rec(2)]);
  fs.appendFileSync(onlySegment(d), Buffer.concat([frame(Buffer.from([9, 1, 2, 3])), frame(encodeRecord(rec(3)))]));
  const r = await sp.drain(async () => {
    throw new SendStopped("redis down");
  });
  assert.equal(r.stopped, "redis down");
  const { report, got } = await drainAll(sp);
  assert.deepEqual(got.map((g) => g.id), ["id-1", "id-2", "id-3"]);
  assert.equal(report.corrupt, 1);
  assert.match((await sp.quarantine())[0].reason, /^unknown record format/);
});

test("refused records go to the quarantine with the reason", async () => {
  const sp = await Spool.open(tmpDir());
  await sp.append([0, 1, 2, 3].map(rec));
  const r = await sp.drain(async (b) => b.map((x) => (x.id === "id-2" ? "ERR nope" : null)));
  assert.deepEqual([r.sent, r.refused], [3, 1]);
  const q = await sp.quarantine();
  assert.deepEqual(decodeRecord(q[0].bytes), rec(2));
  assert.equal(q[0].reason, "refused by Redis: ERR nope");
});

test("a second drainer is told busy", async () => {
  const d = tmpDir();
  const sp = await Spool.open(d);
  const sp2 = await Spool.open(d);
  await sp.append([rec(1)]);
  const r = await sp.drain(async (b) => {
    const { report, got } = await drainAll(sp2);
    assert.equal(report.busy, true);
    assert.equal(got.length, 0);
    return b.map(() => null);
  });
  assert.equal(r.sent, 1);
});

test("an unwritable spool fails the append", async () => {
  const d = path.join(tmpDir(), "spool");
  const sp = await Spool.open(d);
  fs.rmSync(d, { recursive: true });
  fs.writeFileSync(d, "not a dir");
  await assert.rejects(sp.append([rec(1)]));
  await assert.rejects(Spool.open(path.join(d, "sub")));
});
