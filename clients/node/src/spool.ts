/**
 * The local spool: where the producer keeps messages that Redis could not take.
 *
 * The format is shared with the Rust and Python clients byte for byte (docs/spool-format.md):
 * a directory of append-only segments of CRC-framed records, a `quarantine` file in the same
 * framing, `<segment>.pos` files that say how far a drain got, and `flock` files `LOCK`
 * (appends, sealing) and `DRAIN` (one drain at a time). A record is a format byte (1) and the
 * postcard encoding of {@link SpoolRecord}.
 */
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { crc32 } from "node:zlib";

// fs-ext: flock(2), which Node's own fs lacks; the Rust and Python clients use flock too.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fsExt: { flock(fd: number, flags: string, cb: (err: NodeJS.ErrnoException | null) => void): void } = require("fs-ext");

export const MAGIC = Buffer.from("RMQs");
export const HEADER = 12;
export const MAX_PAYLOAD = 512 * 1024 * 1024 + 64 * 1024;
export const SEGMENT_ROLL_BYTES = 64 * 1024 * 1024;
export const DRAIN_BATCH = 500;
const RECORD_FORMAT = 1;
const QUARANTINE_FORMAT = 1;
const SEGMENT = /^(\d+)\.seg$/;

/** One spooled message: everything needed to PUSH it again. */
export interface SpoolRecord {
  queue: string;
  /** The producer's id; empty means "push without ID". */
  id: string;
  body: Buffer;
  tag: string;
  key: string;
  headers: Array<[string, string]>;
  /** Absolute due time (unix ms) of a delayed message. */
  at: number | null;
  /** When it was spooled (unix ms). */
  spooledAt: number;
}

/** A record, or a stretch of damaged bytes, moved aside for a person to look at. */
export interface QuarantineEntry {
  segment: string;
  offset: number;
  reason: string;
  time: number;
  /** The raw bytes of the damaged stretch, or the record payload that Redis refused. */
  bytes: Buffer;
}

// --- postcard: varints, strings, bytes, lists, options ---------------------------------------

class Writer {
  private parts: Buffer[] = [];
  byte(b: number): void {
    this.parts.push(Buffer.from([b]));
  }
  varint(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${v} is not a u64 this client can write`);
    const out: number[] = [];
    let n = BigInt(v);
    for (;;) {
      const b = Number(n & 0x7fn);
      n >>= 7n;
      if (n === 0n) {
        out.push(b);
        break;
      }
      out.push(b | 0x80);
    }
    this.parts.push(Buffer.from(out));
  }
  bytes(b: Buffer): void {
    this.varint(b.length);
    this.parts.push(b);
  }
  str(s: string): void {
    this.bytes(Buffer.from(s, "utf8"));
  }
  done(): Buffer {
    return Buffer.concat(this.parts);
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

class Reader {
  constructor(
    private buf: Buffer,
    private pos = 0,
  ) {}
  byte(): number {
    if (this.pos >= this.buf.length) throw new Error("unexpected end of record");
    return this.buf[this.pos++];
  }
  /** A u64 varint; above 2^53 - 1 it cannot be a JavaScript number exactly: an error. */
  varint(): number {
    let out = 0n;
    for (let i = 0; i < 10; i++) {
      const b = this.byte();
      out |= BigInt(b & 0x7f) << BigInt(7 * i);
      if ((b & 0x80) === 0) {
        if (i === 9 && b > 1) throw new Error("bad varint");
        if (out > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error("number above 2^53 - 1");
        return Number(out);
      }
    }
    throw new Error("bad varint");
  }
  bytes(): Buffer {
    const n = this.varint();
    if (n > this.buf.length - this.pos) throw new Error("unexpected end of record");
    const b = Buffer.from(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return b;
  }
  str(): string {
    try {
      return utf8.decode(this.bytes());
    } catch (e) {
      if (e instanceof TypeError) throw new Error("string is not UTF-8");
      throw e;
    }
  }
  optionU64(): number | null {
    const tag = this.byte();
    if (tag === 0) return null;
    if (tag === 1) return this.varint();
    throw new Error("bad option tag");
  }
}

export function encodeRecord(r: SpoolRecord): Buffer {
  const w = new Writer();
  w.byte(RECORD_FORMAT);
  w.str(r.queue);
  w.str(r.id);
  w.bytes(r.body);
  w.str(r.tag);
  w.str(r.key);
  w.varint(r.headers.length);
  for (const [k, v] of r.headers) {
    w.str(k);
    w.str(v);
  }
  if (r.at === null) w.byte(0);
  else {
    w.byte(1);
    w.varint(r.at);
  }
  w.varint(r.spooledAt);
  return w.done();
}

/** Throws an Error with the reason when the payload is not a record. */
export function decodeRecord(payload: Buffer): SpoolRecord {
  if (payload.length === 0) throw new Error("empty record");
  if (payload[0] !== RECORD_FORMAT) throw new Error(`unknown record format ${payload[0]}`);
  const r = new Reader(payload, 1);
  try {
    const queue = r.str();
    const id = r.str();
    const body = r.bytes();
    const tag = r.str();
    const key = r.str();
    const n = r.varint();
    const headers: Array<[string, string]> = [];
    for (let i = 0; i < n; i++) headers.push([r.str(), r.str()]);
    const at = r.optionU64();
    const spooledAt = r.varint();
    return { queue, id, body, tag, key, headers, at, spooledAt };
  } catch (e) {
    throw new Error(`undecodable record: ${(e as Error).message}`);
  }
}

export function encodeQuarantine(e: QuarantineEntry): Buffer {
  const w = new Writer();
  w.byte(QUARANTINE_FORMAT);
  w.str(e.segment);
  w.varint(e.offset);
  w.str(e.reason);
  w.varint(e.time);
  w.bytes(e.bytes);
  return w.done();
}

export function decodeQuarantine(payload: Buffer): QuarantineEntry {
  if (payload.length === 0) throw new Error("empty entry");
  if (payload[0] !== QUARANTINE_FORMAT) throw new Error(`unknown quarantine format ${payload[0]}`);
  const r = new Reader(payload, 1);
  return { segment: r.str(), offset: r.varint(), reason: r.str(), time: r.varint(), bytes: r.bytes() };
}

// --- frames: magic | len u32 LE | crc32(len bytes + payload) u32 LE | payload ----------------

export function frame(payload: Buffer): Buffer {
  const h = Buffer.alloc(HEADER);
  MAGIC.copy(h, 0);
  h.writeUInt32LE(payload.length, 4);
  h.writeUInt32LE(crc32(payload, crc32(h.subarray(4, 8))), 8);
  return Buffer.concat([h, payload]);
}

export type Item =
  | { kind: "frame"; start: number; end: number }
  | { kind: "corrupt"; start: number; end: number; reason: string }
  | { kind: "torn"; start: number };

interface Check {
  end?: number;
  fault: string;
  /** End of a complete frame whose magic is right and CRC wrong. */
  crcEnd?: number;
}

function checkFrame(buf: Buffer, pos: number): Check {
  if (buf.length - pos < HEADER) return { fault: "truncated frame" };
  const magicOk = buf.subarray(pos, pos + 4).equals(MAGIC);
  const n = buf.readUInt32LE(pos + 4);
  const crc = buf.readUInt32LE(pos + 8);
  if (n > MAX_PAYLOAD) return { fault: magicOk ? "bad frame length" : "bad frame header" };
  const end = pos + HEADER + n;
  if (end > buf.length) return { fault: magicOk ? "truncated frame" : "bad frame header" };
  const got = crc32(buf.subarray(pos + HEADER, end), crc32(buf.subarray(pos + 4, pos + 8)));
  if (got === crc) return { end, fault: "" };
  return magicOk ? { fault: "CRC mismatch", crcEnd: end } : { fault: "bad frame header" };
}

function nextGood(buf: Buffer, from: number): number | null {
  let p = from;
  while (p + HEADER <= buf.length) {
    const at = buf.indexOf(MAGIC, p);
    if (at < 0) return null;
    if (checkFrame(buf, at).end !== undefined) return at;
    p = at + 1;
  }
  return null;
}

/** Splits buf from `start` into good frames, corrupt stretches and a torn tail. */
export function scan(buf: Buffer, start = 0): Item[] {
  const items: Item[] = [];
  let pos = start;
  while (pos < buf.length) {
    const c = checkFrame(buf, pos);
    if (c.end !== undefined) {
      items.push({ kind: "frame", start: pos, end: c.end });
      pos = c.end;
      continue;
    }
    const next = nextGood(buf, pos + 1);
    if (next !== null) {
      // Good data follows: whatever lies between is damage, not a torn tail.
      items.push({ kind: "corrupt", start: pos, end: next, reason: c.fault });
      pos = next;
    } else if (c.crcEnd !== undefined) {
      // A complete frame, magic right, CRC wrong: damaged after it was written.
      items.push({ kind: "corrupt", start: pos, end: c.crcEnd, reason: c.fault });
      pos = c.crcEnd;
    } else {
      items.push({ kind: "torn", start: pos });
      break;
    }
  }
  return items;
}

// --- the directory ---------------------------------------------------------------------------

/** What the spool holds; reading it changes nothing. */
export interface SpoolStatus {
  /** Records waiting to be re-sent, and their bytes (frames included). */
  records: number;
  bytes: number;
  segments: number;
  /** Damaged stretches not yet quarantined (the next drain moves them). */
  corrupt: number;
  /** Entries in the quarantine file, and its size. */
  quarantined: number;
  quarantineBytes: number;
}

/** What a drain did. */
export interface DrainReport {
  sent: number;
  /** Records Redis refused for good (moved to the quarantine with Redis's error). */
  refused: number;
  /** Damaged stretches moved to the quarantine. */
  corrupt: number;
  tornBytes: number;
  /** Records still in the spool afterwards (when the drain stopped early). */
  remaining: number;
  /** Why the drain stopped early (Redis unavailable ...), if it did. */
  stopped: string | null;
  /** Another process was draining, so this one did nothing. */
  busy: boolean;
}

/** Thrown by a drain's sender when Redis cannot take the batch now: the drain stops there. */
export class SendStopped extends Error {}

/**
 * What a sender answers per record: null when Redis took it, else the reason it refused it for
 * good. Throwing {@link SendStopped} stops the drain.
 */
export type Sender = (records: SpoolRecord[]) => Promise<Array<string | null>>;

const segName = (n: number) => `${String(n).padStart(16, "0")}.seg`;

function flock(fd: number, flags: string): Promise<boolean> {
  return new Promise((resolve, reject) =>
    fsExt.flock(fd, flags, (err) => {
      if (!err) resolve(true);
      else if (err.code === "EAGAIN" || err.code === "EWOULDBLOCK") resolve(false);
      else reject(err);
    }),
  );
}

/** Runs fn holding an exclusive flock on a file; with `wait` false, returns null when it is held. */
async function withFileLock<T>(file: string, wait: boolean, fn: () => Promise<T>): Promise<T | null> {
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
  try {
    if (!(await flock(fd, wait ? "ex" : "exnb"))) return null;
    try {
      return await fn();
    } finally {
      await flock(fd, "un").catch(() => false);
    }
  } finally {
    fs.closeSync(fd);
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const h = await fsp.open(dir, "r");
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

async function readOrNull(file: string): Promise<Buffer | null> {
  try {
    return await fsp.readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

async function writeAll(h: fsp.FileHandle, data: Buffer): Promise<void> {
  let off = 0;
  while (off < data.length) {
    const { bytesWritten } = await h.write(data, off, data.length - off);
    off += bytesWritten;
  }
}

/** A spool directory. Safe to share inside a process (a mutex) and between processes (flock). */
export class Spool {
  /** Bytes of torn tail cut off the newest segment when the spool was opened. */
  tornBytesAtOpen = 0;
  private chain: Promise<unknown> = Promise.resolve();

  private constructor(readonly dir: string) {}

  /** Opens (creating it if needed) the spool and cuts a torn tail off its newest segment. */
  static async open(dir: string): Promise<Spool> {
    await fsp.mkdir(dir, { recursive: true });
    const sp = new Spool(dir);
    await sp.locked(async () => {
      const segs = await sp.segments();
      if (segs.length) sp.tornBytesAtOpen = await sp.cutTornTail(segs[segs.length - 1]);
    });
    return sp;
  }

  private file(name: string): string {
    return path.join(this.dir, name);
  }

  private segPath(n: number): string {
    return this.file(segName(n));
  }

  private posPath(n: number): string {
    return this.file(`${String(n).padStart(16, "0")}.pos`);
  }

  /** Runs fn under the process mutex and the LOCK flock (appends, sealing, repair). */
  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(() => withFileLock(this.file("LOCK"), true, fn)) as Promise<T>;
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async segments(): Promise<number[]> {
    const out: number[] = [];
    for (const name of await fsp.readdir(this.dir)) {
      const m = SEGMENT.exec(name);
      if (m) out.push(Number(m[1]));
    }
    return out.sort((a, b) => a - b);
  }

  private async readPos(n: number): Promise<number> {
    try {
      const v = Number((await fsp.readFile(this.posPath(n), "ascii")).trim());
      return Number.isSafeInteger(v) && v >= 0 ? v : 0;
    } catch {
      return 0;
    }
  }

  private async writePos(n: number, pos: number): Promise<void> {
    const tmp = this.file(`${String(n).padStart(16, "0")}.pos.tmp`);
    await fsp.writeFile(tmp, String(pos), "ascii");
    await fsp.rename(tmp, this.posPath(n));
  }

  private async cutTornTail(n: number): Promise<number> {
    const file = this.segPath(n);
    const buf = (await readOrNull(file)) ?? Buffer.alloc(0);
    const items = scan(buf);
    const last = items[items.length - 1];
    if (last && last.kind === "torn") {
      const h = await fsp.open(file, "r+");
      try {
        await h.truncate(last.start);
        await h.sync();
      } finally {
        await h.close();
      }
      const cut = buf.length - last.start;
      console.warn(`rmq spool: cut a torn tail left by a crash (${file}, ${cut} bytes)`);
      return cut;
    }
    return 0;
  }

  /**
   * Appends the records and fsyncs them: when the promise resolves they are on disk. Either all
   * are appended or it rejects (a partial write is cut off again).
   */
  async append(records: SpoolRecord[]): Promise<void> {
    if (!records.length) return;
    const frames = records.map((r) => {
      const p = encodeRecord(r);
      if (p.length > MAX_PAYLOAD) throw new Error("message too large for the spool");
      return frame(p);
    });
    const data = Buffer.concat(frames);
    await this.locked(async () => {
      const segs = await this.segments();
      let n = segs.length ? segs[segs.length - 1] : 0;
      let created = false;
      if (n === 0) {
        n = 1;
        created = true;
      } else {
        const st = await fsp.stat(this.segPath(n)).catch(() => null);
        if (st && st.size >= SEGMENT_ROLL_BYTES) {
          n += 1;
          created = true;
        }
      }
      const h = await fsp.open(this.segPath(n), "a");
      try {
        const before = (await h.stat()).size;
        try {
          await writeAll(h, data);
          await h.datasync();
        } catch (e) {
          // Do not leave half a batch behind: the caller is told it failed.
          await h.truncate(before).catch(() => undefined);
          await h.sync().catch(() => undefined);
          throw e;
        }
      } finally {
        await h.close();
      }
      if (created) await fsyncDir(this.dir);
    });
  }

  /** True when some segment holds bytes past its drain position (sizes only). */
  async hasData(): Promise<boolean> {
    for (const n of await this.segments()) {
      const st = await fsp.stat(this.segPath(n)).catch(() => null);
      if (st && st.size > (await this.readPos(n))) return true;
    }
    return false;
  }

  async status(): Promise<SpoolStatus> {
    const st: SpoolStatus = { records: 0, bytes: 0, segments: 0, corrupt: 0, quarantined: 0, quarantineBytes: 0 };
    for (const n of await this.segments()) {
      st.segments += 1;
      const buf = await readOrNull(this.segPath(n));
      if (!buf) continue;
      for (const item of scan(buf, Math.min(await this.readPos(n), buf.length))) {
        if (item.kind === "frame") {
          st.records += 1;
          st.bytes += item.end - item.start;
        } else if (item.kind === "corrupt") st.corrupt += 1;
      }
    }
    const q = await readOrNull(this.file("quarantine"));
    if (q) {
      st.quarantineBytes = q.length;
      st.quarantined = scan(q).filter((i) => i.kind === "frame").length;
    }
    return st;
  }

  /** The quarantine's entries, oldest first. */
  async quarantine(): Promise<QuarantineEntry[]> {
    const buf = await readOrNull(this.file("quarantine"));
    const out: QuarantineEntry[] = [];
    if (!buf) return out;
    for (const item of scan(buf)) {
      if (item.kind !== "frame") continue;
      try {
        out.push(decodeQuarantine(buf.subarray(item.start + HEADER, item.end)));
      } catch {
        // not an entry this version reads
      }
    }
    return out;
  }

  private async appendQuarantine(entries: QuarantineEntry[]): Promise<void> {
    if (!entries.length) return;
    const file = this.file("quarantine");
    const existed = fs.existsSync(file);
    const h = await fsp.open(file, "a");
    try {
      await writeAll(h, Buffer.concat(entries.map((e) => frame(encodeQuarantine(e)))));
      await h.datasync();
    } finally {
      await h.close();
    }
    if (!existed) await fsyncDir(this.dir);
    for (const e of entries) {
      console.error(`rmq spool: a record was moved to the quarantine (${e.segment} at ${e.offset}: ${e.reason})`);
    }
  }

  /** Starts a new segment when the newest holds anything; returns the sealed ones, oldest first. */
  private seal(report: DrainReport): Promise<number[]> {
    return this.locked(async () => {
      const segs = await this.segments();
      if (!segs.length) return [];
      const last = segs[segs.length - 1];
      if ((await fsp.stat(this.segPath(last))).size === 0) return segs.slice(0, -1);
      report.tornBytes += await this.cutTornTail(last);
      const h = await fsp.open(this.segPath(last + 1), "a");
      try {
        await h.sync();
      } finally {
        await h.close();
      }
      await fsyncDir(this.dir);
      return segs;
    });
  }

  /**
   * Re-sends the spool, oldest first, through `send`, in batches of up to 500 records. A record
   * Redis refuses for good goes to the quarantine; a {@link SendStopped} from the sender stops
   * the drain (what was not sent stays, in order). `progress(done, total)` is told after each batch.
   */
  async drain(send: Sender, progress?: (done: number, total: number) => void): Promise<DrainReport> {
    const report: DrainReport = { sent: 0, refused: 0, corrupt: 0, tornBytes: 0, remaining: 0, stopped: null, busy: false };
    const ran = await withFileLock(this.file("DRAIN"), false, async () => {
      const sealed = await this.seal(report);
      let total = 0;
      for (const n of sealed) {
        const buf = await readOrNull(this.segPath(n));
        if (buf) total += scan(buf, Math.min(await this.readPos(n), buf.length)).filter((i) => i.kind === "frame").length;
      }
      progress?.(0, total);
      const state = { handled: 0, total };
      for (const n of sealed) {
        if (report.stopped !== null) break;
        await this.drainSegment(n, send, report, state, progress);
      }
      report.remaining = report.stopped === null ? 0 : Math.max(total - state.handled, 0);
      return true;
    });
    if (ran === null) report.busy = true;
    return report;
  }

  private async drainSegment(
    n: number,
    send: Sender,
    report: DrainReport,
    state: { handled: number; total: number },
    progress?: (done: number, total: number) => void,
  ): Promise<void> {
    const file = this.segPath(n);
    const buf = await readOrNull(file);
    if (!buf) return;
    let pos = Math.min(await this.readPos(n), buf.length);
    const seg = segName(n);
    const batch: Array<{ rec: SpoolRecord; start: number; end: number }> = [];

    const flush = async (): Promise<boolean> => {
      if (!batch.length) return true;
      let outcomes: Array<string | null>;
      try {
        outcomes = await send(batch.map((b) => b.rec));
      } catch (e) {
        if (!(e instanceof SendStopped)) throw e;
        report.stopped = e.message || "redis unavailable";
        return false;
      }
      if (outcomes.length < batch.length) {
        report.stopped = "sender answered for fewer records than sent";
        return false;
      }
      const refused: QuarantineEntry[] = [];
      batch.forEach((b, i) => {
        const out = outcomes[i];
        if (out === null) report.sent += 1;
        else {
          report.refused += 1;
          refused.push({ segment: seg, offset: b.start, reason: `refused by Redis: ${out}`, time: Date.now(), bytes: encodeRecord(b.rec) });
        }
      });
      await this.appendQuarantine(refused);
      pos = batch[batch.length - 1].end;
      state.handled += batch.length;
      batch.length = 0;
      await this.writePos(n, pos);
      progress?.(state.handled, state.total);
      return true;
    };

    for (const item of scan(buf, pos)) {
      if (item.kind === "frame") {
        let rec: SpoolRecord;
        try {
          rec = decodeRecord(buf.subarray(item.start + HEADER, item.end));
        } catch (e) {
          // CRC right, record unreadable (a newer format, or a bug): send what came before it,
          // then keep it aside, never drop it.
          if (!(await flush())) return;
          await this.appendQuarantine([
            { segment: seg, offset: item.start, reason: (e as Error).message, time: Date.now(), bytes: Buffer.from(buf.subarray(item.start, item.end)) },
          ]);
          report.corrupt += 1;
          state.handled += 1;
          pos = item.end;
          await this.writePos(n, pos);
          continue;
        }
        batch.push({ rec, start: item.start, end: item.end });
        if (batch.length >= DRAIN_BATCH && !(await flush())) return;
      } else if (item.kind === "corrupt") {
        if (!(await flush())) return;
        await this.appendQuarantine([
          { segment: seg, offset: item.start, reason: item.reason, time: Date.now(), bytes: Buffer.from(buf.subarray(item.start, item.end)) },
        ]);
        report.corrupt += 1;
        pos = item.end;
        await this.writePos(n, pos);
      } else {
        if (!(await flush())) return;
        const cut = buf.length - item.start;
        report.tornBytes += cut;
        console.warn(`rmq spool: cut a torn tail left by a crash (${seg}, ${cut} bytes)`);
        pos = buf.length;
      }
    }
    if (!(await flush())) return;
    if (pos >= buf.length) {
      // All of it handled: the segment goes (then its .pos; a crash in between leaves a segment
      // that is sent again whole, which the ids make harmless).
      await fsp.unlink(file);
      await fsp.unlink(this.posPath(n)).catch(() => undefined);
      await fsyncDir(this.dir);
    }
  }
}
