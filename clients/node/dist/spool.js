"use strict";
var __createBinding = (this && this.__createBinding) || (Object.create ? (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    var desc = Object.getOwnPropertyDescriptor(m, k);
    if (!desc || ("get" in desc ? !m.__esModule : desc.writable || desc.configurable)) {
      desc = { enumerable: true, get: function() { return m[k]; } };
    }
    Object.defineProperty(o, k2, desc);
}) : (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    o[k2] = m[k];
}));
var __setModuleDefault = (this && this.__setModuleDefault) || (Object.create ? (function(o, v) {
    Object.defineProperty(o, "default", { enumerable: true, value: v });
}) : function(o, v) {
    o["default"] = v;
});
var __importStar = (this && this.__importStar) || (function () {
    var ownKeys = function(o) {
        ownKeys = Object.getOwnPropertyNames || function (o) {
            var ar = [];
            for (var k in o) if (Object.prototype.hasOwnProperty.call(o, k)) ar[ar.length] = k;
            return ar;
        };
        return ownKeys(o);
    };
    return function (mod) {
        if (mod && mod.__esModule) return mod;
        var result = {};
        if (mod != null) for (var k = ownKeys(mod), i = 0; i < k.length; i++) if (k[i] !== "default") __createBinding(result, mod, k[i]);
        __setModuleDefault(result, mod);
        return result;
    };
})();
Object.defineProperty(exports, "__esModule", { value: true });
exports.Spool = exports.SendStopped = exports.DRAIN_BATCH = exports.SEGMENT_ROLL_BYTES = exports.MAX_PAYLOAD = exports.HEADER = exports.MAGIC = void 0;
exports.encodeRecord = encodeRecord;
exports.decodeRecord = decodeRecord;
exports.encodeQuarantine = encodeQuarantine;
exports.decodeQuarantine = decodeQuarantine;
exports.frame = frame;
exports.scan = scan;
/**
 * The local spool: where the producer keeps messages that Redis could not take.
 *
 * The format is shared with the Rust and Python clients byte for byte (docs/spool-format.md):
 * a directory of append-only segments of CRC-framed records, a `quarantine` file in the same
 * framing, `<segment>.pos` files that say how far a drain got, and `flock` files `LOCK`
 * (appends, sealing) and `DRAIN` (one drain at a time). A record is a format byte (1) and the
 * postcard encoding of {@link SpoolRecord}.
 */
const fs = __importStar(require("node:fs"));
const fsp = __importStar(require("node:fs/promises"));
const path = __importStar(require("node:path"));
const node_zlib_1 = require("node:zlib");
// fs-ext: flock(2), which Node's own fs lacks; the Rust and Python clients use flock too.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fsExt = require("fs-ext");
exports.MAGIC = Buffer.from("RMQs");
exports.HEADER = 12;
exports.MAX_PAYLOAD = 512 * 1024 * 1024 + 64 * 1024;
exports.SEGMENT_ROLL_BYTES = 64 * 1024 * 1024;
exports.DRAIN_BATCH = 500;
const RECORD_FORMAT = 1;
const QUARANTINE_FORMAT = 1;
const SEGMENT = /^(\d+)\.seg$/;
// --- postcard: varints, strings, bytes, lists, options ---------------------------------------
class Writer {
    parts = [];
    byte(b) {
        this.parts.push(Buffer.from([b]));
    }
    varint(v) {
        if (!Number.isSafeInteger(v) || v < 0)
            throw new RangeError(`${v} is not a u64 this client can write`);
        const out = [];
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
    bytes(b) {
        this.varint(b.length);
        this.parts.push(b);
    }
    str(s) {
        this.bytes(Buffer.from(s, "utf8"));
    }
    done() {
        return Buffer.concat(this.parts);
    }
}
const utf8 = new TextDecoder("utf-8", { fatal: true });
class Reader {
    buf;
    pos;
    constructor(buf, pos = 0) {
        this.buf = buf;
        this.pos = pos;
    }
    byte() {
        if (this.pos >= this.buf.length)
            throw new Error("unexpected end of record");
        return this.buf[this.pos++];
    }
    /** A u64 varint; above 2^53 - 1 it cannot be a JavaScript number exactly: an error. */
    varint() {
        let out = 0n;
        for (let i = 0; i < 10; i++) {
            const b = this.byte();
            out |= BigInt(b & 0x7f) << BigInt(7 * i);
            if ((b & 0x80) === 0) {
                if (i === 9 && b > 1)
                    throw new Error("bad varint");
                if (out > BigInt(Number.MAX_SAFE_INTEGER))
                    throw new Error("number above 2^53 - 1");
                return Number(out);
            }
        }
        throw new Error("bad varint");
    }
    bytes() {
        const n = this.varint();
        if (n > this.buf.length - this.pos)
            throw new Error("unexpected end of record");
        const b = Buffer.from(this.buf.subarray(this.pos, this.pos + n));
        this.pos += n;
        return b;
    }
    str() {
        try {
            return utf8.decode(this.bytes());
        }
        catch (e) {
            if (e instanceof TypeError)
                throw new Error("string is not UTF-8");
            throw e;
        }
    }
    optionU64() {
        const tag = this.byte();
        if (tag === 0)
            return null;
        if (tag === 1)
            return this.varint();
        throw new Error("bad option tag");
    }
}
function encodeRecord(r) {
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
    if (r.at === null)
        w.byte(0);
    else {
        w.byte(1);
        w.varint(r.at);
    }
    w.varint(r.spooledAt);
    return w.done();
}
/** Throws an Error with the reason when the payload is not a record. */
function decodeRecord(payload) {
    if (payload.length === 0)
        throw new Error("empty record");
    if (payload[0] !== RECORD_FORMAT)
        throw new Error(`unknown record format ${payload[0]}`);
    const r = new Reader(payload, 1);
    try {
        const queue = r.str();
        const id = r.str();
        const body = r.bytes();
        const tag = r.str();
        const key = r.str();
        const n = r.varint();
        const headers = [];
        for (let i = 0; i < n; i++)
            headers.push([r.str(), r.str()]);
        const at = r.optionU64();
        const spooledAt = r.varint();
        return { queue, id, body, tag, key, headers, at, spooledAt };
    }
    catch (e) {
        throw new Error(`undecodable record: ${e.message}`);
    }
}
function encodeQuarantine(e) {
    const w = new Writer();
    w.byte(QUARANTINE_FORMAT);
    w.str(e.segment);
    w.varint(e.offset);
    w.str(e.reason);
    w.varint(e.time);
    w.bytes(e.bytes);
    return w.done();
}
function decodeQuarantine(payload) {
    if (payload.length === 0)
        throw new Error("empty entry");
    if (payload[0] !== QUARANTINE_FORMAT)
        throw new Error(`unknown quarantine format ${payload[0]}`);
    const r = new Reader(payload, 1);
    return { segment: r.str(), offset: r.varint(), reason: r.str(), time: r.varint(), bytes: r.bytes() };
}
// --- frames: magic | len u32 LE | crc32(len bytes + payload) u32 LE | payload ----------------
function frame(payload) {
    const h = Buffer.alloc(exports.HEADER);
    exports.MAGIC.copy(h, 0);
    h.writeUInt32LE(payload.length, 4);
    h.writeUInt32LE((0, node_zlib_1.crc32)(payload, (0, node_zlib_1.crc32)(h.subarray(4, 8))), 8);
    return Buffer.concat([h, payload]);
}
function checkFrame(buf, pos) {
    if (buf.length - pos < exports.HEADER)
        return { fault: "truncated frame" };
    const magicOk = buf.subarray(pos, pos + 4).equals(exports.MAGIC);
    const n = buf.readUInt32LE(pos + 4);
    const crc = buf.readUInt32LE(pos + 8);
    if (n > exports.MAX_PAYLOAD)
        return { fault: magicOk ? "bad frame length" : "bad frame header" };
    const end = pos + exports.HEADER + n;
    if (end > buf.length)
        return { fault: magicOk ? "truncated frame" : "bad frame header" };
    const got = (0, node_zlib_1.crc32)(buf.subarray(pos + exports.HEADER, end), (0, node_zlib_1.crc32)(buf.subarray(pos + 4, pos + 8)));
    if (got === crc)
        return { end, fault: "" };
    return magicOk ? { fault: "CRC mismatch", crcEnd: end } : { fault: "bad frame header" };
}
function nextGood(buf, from) {
    let p = from;
    while (p + exports.HEADER <= buf.length) {
        const at = buf.indexOf(exports.MAGIC, p);
        if (at < 0)
            return null;
        if (checkFrame(buf, at).end !== undefined)
            return at;
        p = at + 1;
    }
    return null;
}
/** Splits buf from `start` into good frames, corrupt stretches and a torn tail. */
function scan(buf, start = 0) {
    const items = [];
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
        }
        else if (c.crcEnd !== undefined) {
            // A complete frame, magic right, CRC wrong: damaged after it was written.
            items.push({ kind: "corrupt", start: pos, end: c.crcEnd, reason: c.fault });
            pos = c.crcEnd;
        }
        else {
            items.push({ kind: "torn", start: pos });
            break;
        }
    }
    return items;
}
/** Thrown by a drain's sender when Redis cannot take the batch now: the drain stops there. */
class SendStopped extends Error {
}
exports.SendStopped = SendStopped;
const segName = (n) => `${String(n).padStart(16, "0")}.seg`;
function flock(fd, flags) {
    return new Promise((resolve, reject) => fsExt.flock(fd, flags, (err) => {
        if (!err)
            resolve(true);
        else if (err.code === "EAGAIN" || err.code === "EWOULDBLOCK")
            resolve(false);
        else
            reject(err);
    }));
}
/** Runs fn holding an exclusive flock on a file; with `wait` false, returns null when it is held. */
async function withFileLock(file, wait, fn) {
    const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
    try {
        if (!(await flock(fd, wait ? "ex" : "exnb")))
            return null;
        try {
            return await fn();
        }
        finally {
            await flock(fd, "un").catch(() => false);
        }
    }
    finally {
        fs.closeSync(fd);
    }
}
async function fsyncDir(dir) {
    const h = await fsp.open(dir, "r");
    try {
        await h.sync();
    }
    finally {
        await h.close();
    }
}
async function readOrNull(file) {
    try {
        return await fsp.readFile(file);
    }
    catch (e) {
        if (e.code === "ENOENT")
            return null;
        throw e;
    }
}
async function writeAll(h, data) {
    let off = 0;
    while (off < data.length) {
        const { bytesWritten } = await h.write(data, off, data.length - off);
        off += bytesWritten;
    }
}
/** A spool directory. Safe to share inside a process (a mutex) and between processes (flock). */
class Spool {
    dir;
    /** Bytes of torn tail cut off the newest segment when the spool was opened. */
    tornBytesAtOpen = 0;
    chain = Promise.resolve();
    constructor(dir) {
        this.dir = dir;
    }
    /** Opens (creating it if needed) the spool and cuts a torn tail off its newest segment. */
    static async open(dir) {
        await fsp.mkdir(dir, { recursive: true });
        const sp = new Spool(dir);
        await sp.locked(async () => {
            const segs = await sp.segments();
            if (segs.length)
                sp.tornBytesAtOpen = await sp.cutTornTail(segs[segs.length - 1]);
        });
        return sp;
    }
    file(name) {
        return path.join(this.dir, name);
    }
    segPath(n) {
        return this.file(segName(n));
    }
    posPath(n) {
        return this.file(`${String(n).padStart(16, "0")}.pos`);
    }
    /** Runs fn under the process mutex and the LOCK flock (appends, sealing, repair). */
    locked(fn) {
        const run = this.chain.then(() => withFileLock(this.file("LOCK"), true, fn));
        this.chain = run.catch(() => undefined);
        return run;
    }
    async segments() {
        const out = [];
        for (const name of await fsp.readdir(this.dir)) {
            const m = SEGMENT.exec(name);
            if (m)
                out.push(Number(m[1]));
        }
        return out.sort((a, b) => a - b);
    }
    async readPos(n) {
        try {
            const v = Number((await fsp.readFile(this.posPath(n), "ascii")).trim());
            return Number.isSafeInteger(v) && v >= 0 ? v : 0;
        }
        catch {
            return 0;
        }
    }
    async writePos(n, pos) {
        const tmp = this.file(`${String(n).padStart(16, "0")}.pos.tmp`);
        await fsp.writeFile(tmp, String(pos), "ascii");
        await fsp.rename(tmp, this.posPath(n));
    }
    async cutTornTail(n) {
        const file = this.segPath(n);
        const buf = (await readOrNull(file)) ?? Buffer.alloc(0);
        const items = scan(buf);
        const last = items[items.length - 1];
        if (last && last.kind === "torn") {
            const h = await fsp.open(file, "r+");
            try {
                await h.truncate(last.start);
                await h.sync();
            }
            finally {
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
    async append(records) {
        if (!records.length)
            return;
        const frames = records.map((r) => {
            const p = encodeRecord(r);
            if (p.length > exports.MAX_PAYLOAD)
                throw new Error("message too large for the spool");
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
            }
            else {
                const st = await fsp.stat(this.segPath(n)).catch(() => null);
                if (st && st.size >= exports.SEGMENT_ROLL_BYTES) {
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
                }
                catch (e) {
                    // Do not leave half a batch behind: the caller is told it failed.
                    await h.truncate(before).catch(() => undefined);
                    await h.sync().catch(() => undefined);
                    throw e;
                }
            }
            finally {
                await h.close();
            }
            if (created)
                await fsyncDir(this.dir);
        });
    }
    /** True when some segment holds bytes past its drain position (sizes only). */
    async hasData() {
        for (const n of await this.segments()) {
            const st = await fsp.stat(this.segPath(n)).catch(() => null);
            if (st && st.size > (await this.readPos(n)))
                return true;
        }
        return false;
    }
    async status() {
        const st = { records: 0, bytes: 0, segments: 0, corrupt: 0, quarantined: 0, quarantineBytes: 0 };
        for (const n of await this.segments()) {
            st.segments += 1;
            const buf = await readOrNull(this.segPath(n));
            if (!buf)
                continue;
            for (const item of scan(buf, Math.min(await this.readPos(n), buf.length))) {
                if (item.kind === "frame") {
                    st.records += 1;
                    st.bytes += item.end - item.start;
                }
                else if (item.kind === "corrupt")
                    st.corrupt += 1;
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
    async quarantine() {
        const buf = await readOrNull(this.file("quarantine"));
        const out = [];
        if (!buf)
            return out;
        for (const item of scan(buf)) {
            if (item.kind !== "frame")
                continue;
            try {
                out.push(decodeQuarantine(buf.subarray(item.start + exports.HEADER, item.end)));
            }
            catch {
                // not an entry this version reads
            }
        }
        return out;
    }
    async appendQuarantine(entries) {
        if (!entries.length)
            return;
        const file = this.file("quarantine");
        const existed = fs.existsSync(file);
        const h = await fsp.open(file, "a");
        try {
            await writeAll(h, Buffer.concat(entries.map((e) => frame(encodeQuarantine(e)))));
            await h.datasync();
        }
        finally {
            await h.close();
        }
        if (!existed)
            await fsyncDir(this.dir);
        for (const e of entries) {
            console.error(`rmq spool: a record was moved to the quarantine (${e.segment} at ${e.offset}: ${e.reason})`);
        }
    }
    /** Starts a new segment when the newest holds anything; returns the sealed ones, oldest first. */
    seal(report) {
        return this.locked(async () => {
            const segs = await this.segments();
            if (!segs.length)
                return [];
            const last = segs[segs.length - 1];
            if ((await fsp.stat(this.segPath(last))).size === 0)
                return segs.slice(0, -1);
            report.tornBytes += await this.cutTornTail(last);
            const h = await fsp.open(this.segPath(last + 1), "a");
            try {
                await h.sync();
            }
            finally {
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
    async drain(send, progress) {
        const report = { sent: 0, refused: 0, corrupt: 0, tornBytes: 0, remaining: 0, stopped: null, busy: false };
        const ran = await withFileLock(this.file("DRAIN"), false, async () => {
            const sealed = await this.seal(report);
            let total = 0;
            for (const n of sealed) {
                const buf = await readOrNull(this.segPath(n));
                if (buf)
                    total += scan(buf, Math.min(await this.readPos(n), buf.length)).filter((i) => i.kind === "frame").length;
            }
            progress?.(0, total);
            const state = { handled: 0, total };
            for (const n of sealed) {
                if (report.stopped !== null)
                    break;
                await this.drainSegment(n, send, report, state, progress);
            }
            report.remaining = report.stopped === null ? 0 : Math.max(total - state.handled, 0);
            return true;
        });
        if (ran === null)
            report.busy = true;
        return report;
    }
    async drainSegment(n, send, report, state, progress) {
        const file = this.segPath(n);
        const buf = await readOrNull(file);
        if (!buf)
            return;
        let pos = Math.min(await this.readPos(n), buf.length);
        const seg = segName(n);
        const batch = [];
        const flush = async () => {
            if (!batch.length)
                return true;
            let outcomes;
            try {
                outcomes = await send(batch.map((b) => b.rec));
            }
            catch (e) {
                if (!(e instanceof SendStopped))
                    throw e;
                report.stopped = e.message || "redis unavailable";
                return false;
            }
            if (outcomes.length < batch.length) {
                report.stopped = "sender answered for fewer records than sent";
                return false;
            }
            const refused = [];
            batch.forEach((b, i) => {
                const out = outcomes[i];
                if (out === null)
                    report.sent += 1;
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
                let rec;
                try {
                    rec = decodeRecord(buf.subarray(item.start + exports.HEADER, item.end));
                }
                catch (e) {
                    // CRC right, record unreadable (a newer format, or a bug): send what came before it,
                    // then keep it aside, never drop it.
                    if (!(await flush()))
                        return;
                    await this.appendQuarantine([
                        { segment: seg, offset: item.start, reason: e.message, time: Date.now(), bytes: Buffer.from(buf.subarray(item.start, item.end)) },
                    ]);
                    report.corrupt += 1;
                    state.handled += 1;
                    pos = item.end;
                    await this.writePos(n, pos);
                    continue;
                }
                batch.push({ rec, start: item.start, end: item.end });
                if (batch.length >= exports.DRAIN_BATCH && !(await flush()))
                    return;
            }
            else if (item.kind === "corrupt") {
                if (!(await flush()))
                    return;
                await this.appendQuarantine([
                    { segment: seg, offset: item.start, reason: item.reason, time: Date.now(), bytes: Buffer.from(buf.subarray(item.start, item.end)) },
                ]);
                report.corrupt += 1;
                pos = item.end;
                await this.writePos(n, pos);
            }
            else {
                if (!(await flush()))
                    return;
                const cut = buf.length - item.start;
                report.tornBytes += cut;
                console.warn(`rmq spool: cut a torn tail left by a crash (${seg}, ${cut} bytes)`);
                pos = buf.length;
            }
        }
        if (!(await flush()))
            return;
        if (pos >= buf.length) {
            // All of it handled: the segment goes (then its .pos; a crash in between leaves a segment
            // that is sent again whole, which the ids make harmless).
            await fsp.unlink(file);
            await fsp.unlink(this.posPath(n)).catch(() => undefined);
            await fsyncDir(this.dir);
        }
    }
}
exports.Spool = Spool;
