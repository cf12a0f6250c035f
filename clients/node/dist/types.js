"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.nowMs = nowMs;
exports.validateQueue = validateQueue;
exports.validateId = validateId;
exports.newId = newId;
exports.buildPush = buildPush;
exports.pushArgs = pushArgs;
exports.pairs = pairs;
exports.parseMessage = parseMessage;
exports.parseFetched = parseFetched;
exports.parseMessages = parseMessages;
exports.parseStats = parseStats;
exports.parseLog = parseLog;
exports.parseConfig = parseConfig;
exports.emptyReport = emptyReport;
/** The values the client hands out and takes: messages, pushes, and typed command results. */
const node_crypto_1 = require("node:crypto");
const errors_1 = require("./errors");
function nowMs() {
    return Date.now();
}
const QUEUE_CHARS = /^[A-Za-z0-9_.:\-#/]{1,200}$/;
/** Queue names: 1-200 bytes of `A-Z a-z 0-9 _ . : - # /`. */
function validateQueue(q) {
    if (typeof q !== "string" || !QUEUE_CHARS.test(q))
        throw new errors_1.InvalidMessage("invalid queue name");
}
/** Ids: 1-128 bytes of 0x21-0x7E. */
function validateId(id) {
    if (typeof id !== "string" || !/^[\x21-\x7e]{1,128}$/.test(id)) {
        throw new errors_1.InvalidMessage("ID must be 1 to 128 printable ASCII characters without spaces");
    }
}
let lastMs = 0n;
let lastRand = 0n;
/**
 * A new producer id: a UUID v7 (48 bits of unix ms, then 74 random bits), so ids sort by time
 * and two producers never make the same one; the same form the Rust client makes. Within one
 * process ids are strictly increasing: in the same ms the random part counts up.
 */
function newId() {
    let t = BigInt(Date.now());
    if (t < lastMs)
        t = lastMs;
    let r;
    if (t === lastMs) {
        r = lastRand + 1n + BigInt((0, node_crypto_1.randomBytes)(4).readUInt32BE(0));
        if (r >= 1n << 74n) {
            t += 1n;
            r = BigInt("0x" + (0, node_crypto_1.randomBytes)(10).toString("hex")) >> 7n;
        }
    }
    else {
        r = BigInt("0x" + (0, node_crypto_1.randomBytes)(10).toString("hex")) >> 7n; // 73 bits: room to count up
    }
    lastMs = t;
    lastRand = r;
    const v = ((t & ((1n << 48n) - 1n)) << 80n) |
        (0x7n << 76n) |
        ((r >> 62n) << 64n) |
        (2n << 62n) |
        (r & ((1n << 62n) - 1n));
    const h = v.toString(16).padStart(32, "0");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
function bodyBytes(body) {
    if (typeof body === "string")
        return Buffer.from(body, "utf8");
    if (Buffer.isBuffer(body))
        return body;
    if (body instanceof Uint8Array)
        return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    throw new errors_1.InvalidMessage("body must be a Buffer, a Uint8Array or a string");
}
function nonNegative(v, what) {
    if (v === undefined)
        return undefined;
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
        throw new errors_1.InvalidMessage(`${what} must be a non-negative number of milliseconds`);
    }
    return Math.round(v);
}
/** Builds and checks a push: what the server would refuse is refused here, even while Redis is down. */
function buildPush(queue, body, o = {}) {
    validateQueue(queue);
    const headers = Array.isArray(o.headers)
        ? o.headers.map(([k, v]) => [String(k), String(v)])
        : Object.entries(o.headers ?? {}).map(([k, v]) => [k, String(v)]);
    const seen = new Set();
    for (const [name] of headers) {
        if (!name)
            throw new errors_1.InvalidMessage("HEADER name must not be empty");
        if (seen.has(name))
            throw new errors_1.InvalidMessage(`HEADER '${name}' given twice`);
        seen.add(name);
    }
    if (o.id !== undefined)
        validateId(o.id);
    const atMs = o.at instanceof Date ? o.at.getTime() : nonNegative(o.at, "at");
    const delayMs = nonNegative(o.delayMs, "delayMs");
    if (delayMs !== undefined && atMs !== undefined) {
        throw new errors_1.InvalidMessage("DELAY and AT cannot be used together");
    }
    return { queue, body: bodyBytes(body), id: o.id, tag: o.tag ?? "", key: o.key ?? "", headers, delayMs, atMs };
}
/** The PUSH arguments after the queue name. */
function pushArgs(p) {
    const a = [p.body];
    if (p.id)
        a.push("ID", p.id);
    if (p.tag)
        a.push("TAG", p.tag);
    if (p.key)
        a.push("KEY", p.key);
    for (const [k, v] of p.headers)
        a.push("HEADER", k, v);
    if (p.delayMs !== undefined)
        a.push("DELAY", String(p.delayMs));
    if (p.atMs !== undefined)
        a.push("AT", String(p.atMs));
    return a;
}
// --- reply parsing ---------------------------------------------------------------------------
function text(v) {
    if (v === null || v === undefined)
        return "";
    if (Buffer.isBuffer(v))
        return v.toString("utf8");
    return String(v);
}
function int(v) {
    if (v === null || v === undefined)
        return 0;
    if (typeof v === "number")
        return v;
    const n = Number(text(v));
    if (!Number.isFinite(n))
        throw new errors_1.ProtocolError(`expected an integer, got ${text(v)}`);
    return Math.trunc(n);
}
/** The fields of a map reply (a flat RESP2 array). */
function pairs(v) {
    if (v === null || v === undefined)
        return [];
    if (!Array.isArray(v) || v.length % 2)
        throw new errors_1.ProtocolError("expected a field-value array");
    const out = [];
    for (let i = 0; i < v.length; i += 2)
        out.push([text(v[i]), v[i + 1]]);
    return out;
}
function parseMessage(queue, v) {
    const m = {
        queue, id: "", body: Buffer.alloc(0), receipt: "", attempt: 0, tag: "", key: "", headers: {},
        created: 0, offset: 0, deadline: 0, state: "", due: 0, consumer: "", error: "",
    };
    for (const [k, x] of pairs(v)) {
        switch (k) {
            case "body":
                m.body = Buffer.isBuffer(x) ? x : Buffer.from(text(x));
                break;
            case "headers":
                for (const [n, val] of pairs(x))
                    m.headers[n] = text(val);
                break;
            case "attempt":
            case "created":
            case "offset":
            case "deadline":
            case "due":
                m[k] = int(x);
                break;
            case "id":
            case "receipt":
            case "tag":
            case "key":
            case "state":
            case "consumer":
            case "error":
                m[k] = text(x);
                break;
        }
    }
    return m;
}
/** The values of a FETCH … COMPACT message, in their order. */
const COMPACT_FIELDS = ["id", "body", "receipt", "attempt", "tag", "key", "headers", "created", "offset", "deadline"];
/** FETCH's reply: maps, or with COMPACT each message's values in the maps' order. */
function parseFetched(queue, v, compact) {
    if (!compact || v === null || v === undefined)
        return parseMessages(queue, v);
    if (!Array.isArray(v))
        throw new errors_1.ProtocolError("expected messages");
    return v.map((values) => {
        if (!Array.isArray(values) || values.length !== COMPACT_FIELDS.length) {
            throw new errors_1.ProtocolError("expected a COMPACT message of 10 values");
        }
        return parseMessage(queue, COMPACT_FIELDS.flatMap((name, i) => [name, values[i]]));
    });
}
function parseMessages(queue, v) {
    if (v === null || v === undefined)
        return [];
    if (!Array.isArray(v))
        throw new errors_1.ProtocolError("expected messages");
    return v.map((m) => parseMessage(queue, m));
}
const STATS_FIELDS = [
    "ready", "delayed", "inflight", "failed", "errors", "pushed", "acked", "retried", "dead",
    "errored", "dups", "offset", "oldest_ready_ms",
];
function parseStats(v) {
    const s = { extra: {} };
    for (const f of STATS_FIELDS)
        s[f] = 0;
    for (const [k, x] of pairs(v)) {
        if (STATS_FIELDS.includes(k))
            s[k] = int(x);
        else
            s.extra[k] = int(x);
    }
    return s;
}
function parseLog(v) {
    if (!Array.isArray(v))
        return [];
    return v.map((e) => {
        const entry = { offset: 0, event: "", id: "", time: 0, fields: {} };
        for (const [k, x] of pairs(e)) {
            if (k === "offset" || k === "time")
                entry[k] = int(x);
            else if (k === "event" || k === "id")
                entry[k] = text(x);
            else if (k === "body")
                entry.fields[k] = x;
            else if (k === "headers")
                entry.fields[k] = Object.fromEntries(pairs(x).map(([n, val]) => [n, text(val)]));
            else
                entry.fields[k] = typeof x === "number" ? x : text(x);
        }
        return entry;
    });
}
/** CONFIG GET: name-value pairs; values are numbers (booleans are 0/1). */
function parseConfig(v) {
    const out = {};
    for (const [k, x] of pairs(v)) {
        const t = text(x);
        out[k] = /^\d+$/.test(t) ? Number(t) : t;
    }
    return out;
}
function emptyReport() {
    return { acked: 0, retried: 0, errored: 0, failed: 0, dropped: 0, timedOut: 0, abandoned: 0, stale: 0 };
}
