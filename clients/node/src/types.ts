/** The values the client hands out and takes: messages, pushes, and typed command results. */
import { randomBytes } from "node:crypto";

import { InvalidMessage, ProtocolError } from "./errors";

export type Body = Buffer | Uint8Array | string;

/** Options of a push. Durations and times are in milliseconds. */
export interface PushOptions {
  /** The producer's id (1-128 printable ASCII bytes, no spaces); the producer makes one. */
  id?: string;
  tag?: string;
  key?: string;
  /** Headers, in order: an object or name-value pairs. */
  headers?: Record<string, string> | Array<[string, string]>;
  /** Due in this many ms (DELAY). */
  delayMs?: number;
  /** Due at this unix time in ms, or this Date (AT). */
  at?: number | Date;
}

/** A message ready to push, checked. */
export interface Push {
  queue: string;
  body: Buffer;
  id?: string;
  tag: string;
  key: string;
  headers: Array<[string, string]>;
  delayMs?: number;
  atMs?: number;
}

/** What became of a pushed message. */
export interface Pushed {
  id: string;
  /** True when Redis could not take it and it is in the local spool (fsynced), to be re-sent. */
  spooled: boolean;
  /**
   * The queue it went to: the one asked for, or for a partitioned queue, the partition of its key.
   * A message spooled while the partitioned queue could not be looked up shows the logical name:
   * it goes to its partition when the spool is sent.
   */
  queue: string;
}

/** A message as FETCH, PEEK or GET hand it out. Fields a reply does not carry are empty. */
export interface Message {
  queue: string;
  id: string;
  body: Buffer;
  /** For ack, nack and touch (FETCH only). */
  receipt: string;
  attempt: number;
  tag: string;
  key: string;
  headers: Record<string, string>;
  created: number;
  offset: number;
  /** Lock deadline, unix ms (FETCH; PEEK of in-flight messages). */
  deadline: number;
  /** PEEK/GET: ready, delayed, inflight, failed, errors. */
  state: string;
  due: number;
  consumer: string;
  /** The last reason given (NACK REASON, "max attempts" ...). */
  error: string;
}

/** RMQ.STATS: the counters of a queue. */
export interface Stats {
  ready: number;
  delayed: number;
  inflight: number;
  failed: number;
  errors: number;
  pushed: number;
  acked: number;
  retried: number;
  dead: number;
  errored: number;
  dups: number;
  offset: number;
  oldest_ready_ms: number;
  /** Fields a newer server added. */
  extra: Record<string, number>;
}

/** RMQ.RECOVER: messages moved back to ready, by where they came from. */
export interface Recovered {
  expired: number;
  failed: number;
  errors: number;
}

/** An entry of RMQ.LOG. */
export interface LogEntry {
  offset: number;
  event: string;
  id: string;
  time: number;
  /** Every other field (body, tag, headers of a push; consumer, attempt ...). */
  fields: Record<string, unknown>;
}

/** What a worker did, counted when it stops. */
export interface WorkerReport {
  acked: number;
  retried: number;
  errored: number;
  failed: number;
  /** ACKed without a handler (noHandlerIsError off). */
  dropped: number;
  /** Handlers that ran past their timeout: abandoned, message NACKed RETRY "timeout". */
  timedOut: number;
  /** Handlers still running when the grace period ended (their messages come back by lock expiry). */
  abandoned: number;
  /** ACK/NACK that found the receipt stale, or could not reach Redis. */
  stale: number;
}

export function nowMs(): number {
  return Date.now();
}

const QUEUE_CHARS = /^[A-Za-z0-9_.:\-#/]{1,200}$/;

/** Queue names: 1-200 bytes of `A-Z a-z 0-9 _ . : - # /`. */
export function validateQueue(q: string): void {
  if (typeof q !== "string" || !QUEUE_CHARS.test(q)) throw new InvalidMessage("invalid queue name");
}

/** Ids: 1-128 bytes of 0x21-0x7E. */
export function validateId(id: string): void {
  if (typeof id !== "string" || !/^[\x21-\x7e]{1,128}$/.test(id)) {
    throw new InvalidMessage("ID must be 1 to 128 printable ASCII characters without spaces");
  }
}

let lastMs = 0n;
let lastRand = 0n;

/**
 * A new producer id: a UUID v7 (48 bits of unix ms, then 74 random bits), so ids sort by time
 * and two producers never make the same one; the same form the Rust client makes. Within one
 * process ids are strictly increasing: in the same ms the random part counts up.
 */
export function newId(): string {
  let t = BigInt(Date.now());
  if (t < lastMs) t = lastMs;
  let r: bigint;
  if (t === lastMs) {
    r = lastRand + 1n + BigInt(randomBytes(4).readUInt32BE(0));
    if (r >= 1n << 74n) {
      t += 1n;
      r = BigInt("0x" + randomBytes(10).toString("hex")) >> 7n;
    }
  } else {
    r = BigInt("0x" + randomBytes(10).toString("hex")) >> 7n; // 73 bits: room to count up
  }
  lastMs = t;
  lastRand = r;
  const v =
    ((t & ((1n << 48n) - 1n)) << 80n) |
    (0x7n << 76n) |
    ((r >> 62n) << 64n) |
    (0b10n << 62n) |
    (r & ((1n << 62n) - 1n));
  const h = v.toString(16).padStart(32, "0");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function bodyBytes(body: Body): Buffer {
  if (typeof body === "string") return Buffer.from(body, "utf8");
  if (Buffer.isBuffer(body)) return body;
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  throw new InvalidMessage("body must be a Buffer, a Uint8Array or a string");
}

function nonNegative(v: number | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
    throw new InvalidMessage(`${what} must be a non-negative number of milliseconds`);
  }
  return Math.round(v);
}

/** Builds and checks a push: what the server would refuse is refused here, even while Redis is down. */
export function buildPush(queue: string, body: Body, o: PushOptions = {}): Push {
  validateQueue(queue);
  const headers: Array<[string, string]> = Array.isArray(o.headers)
    ? o.headers.map(([k, v]) => [String(k), String(v)] as [string, string])
    : Object.entries(o.headers ?? {}).map(([k, v]) => [k, String(v)] as [string, string]);
  const seen = new Set<string>();
  for (const [name] of headers) {
    if (!name) throw new InvalidMessage("HEADER name must not be empty");
    if (seen.has(name)) throw new InvalidMessage(`HEADER '${name}' given twice`);
    seen.add(name);
  }
  if (o.id !== undefined) validateId(o.id);
  const atMs = o.at instanceof Date ? o.at.getTime() : nonNegative(o.at, "at");
  const delayMs = nonNegative(o.delayMs, "delayMs");
  if (delayMs !== undefined && atMs !== undefined) {
    throw new InvalidMessage("DELAY and AT cannot be used together");
  }
  return { queue, body: bodyBytes(body), id: o.id, tag: o.tag ?? "", key: o.key ?? "", headers, delayMs, atMs };
}

/** The PUSH arguments after the queue name. */
export function pushArgs(p: Push): Array<Buffer | string> {
  const a: Array<Buffer | string> = [p.body];
  if (p.id) a.push("ID", p.id);
  if (p.tag) a.push("TAG", p.tag);
  if (p.key) a.push("KEY", p.key);
  for (const [k, v] of p.headers) a.push("HEADER", k, v);
  if (p.delayMs !== undefined) a.push("DELAY", String(p.delayMs));
  if (p.atMs !== undefined) a.push("AT", String(p.atMs));
  return a;
}

// --- reply parsing ---------------------------------------------------------------------------

function text(v: unknown): string {
  if (v === null || v === undefined) return "";
  if (Buffer.isBuffer(v)) return v.toString("utf8");
  return String(v);
}

function int(v: unknown): number {
  if (v === null || v === undefined) return 0;
  if (typeof v === "number") return v;
  const n = Number(text(v));
  if (!Number.isFinite(n)) throw new ProtocolError(`expected an integer, got ${text(v)}`);
  return Math.trunc(n);
}

/** The fields of a map reply (a flat RESP2 array). */
export function pairs(v: unknown): Array<[string, unknown]> {
  if (v === null || v === undefined) return [];
  if (!Array.isArray(v) || v.length % 2) throw new ProtocolError("expected a field-value array");
  const out: Array<[string, unknown]> = [];
  for (let i = 0; i < v.length; i += 2) out.push([text(v[i]), v[i + 1]]);
  return out;
}

export function parseMessage(queue: string, v: unknown): Message {
  const m: Message = {
    queue, id: "", body: Buffer.alloc(0), receipt: "", attempt: 0, tag: "", key: "", headers: {},
    created: 0, offset: 0, deadline: 0, state: "", due: 0, consumer: "", error: "",
  };
  for (const [k, x] of pairs(v)) {
    switch (k) {
      case "body":
        m.body = Buffer.isBuffer(x) ? x : Buffer.from(text(x));
        break;
      case "headers":
        for (const [n, val] of pairs(x)) m.headers[n] = text(val);
        break;
      case "attempt": case "created": case "offset": case "deadline": case "due":
        m[k] = int(x);
        break;
      case "id": case "receipt": case "tag": case "key": case "state": case "consumer": case "error":
        m[k] = text(x);
        break;
    }
  }
  return m;
}

/** The values of a FETCH … COMPACT message, in their order. */
const COMPACT_FIELDS = ["id", "body", "receipt", "attempt", "tag", "key", "headers", "created", "offset", "deadline"];

/** FETCH's reply: maps, or with COMPACT each message's values in the maps' order. */
export function parseFetched(queue: string, v: unknown, compact: boolean): Message[] {
  if (!compact || v === null || v === undefined) return parseMessages(queue, v);
  if (!Array.isArray(v)) throw new ProtocolError("expected messages");
  return v.map((values) => {
    if (!Array.isArray(values) || values.length !== COMPACT_FIELDS.length) {
      throw new ProtocolError("expected a COMPACT message of 10 values");
    }
    return parseMessage(queue, COMPACT_FIELDS.flatMap((name, i) => [name, values[i]]));
  });
}

export function parseMessages(queue: string, v: unknown): Message[] {
  if (v === null || v === undefined) return [];
  if (!Array.isArray(v)) throw new ProtocolError("expected messages");
  return v.map((m) => parseMessage(queue, m));
}

const STATS_FIELDS = [
  "ready", "delayed", "inflight", "failed", "errors", "pushed", "acked", "retried", "dead",
  "errored", "dups", "offset", "oldest_ready_ms",
] as const;

export function parseStats(v: unknown): Stats {
  const s = { extra: {} } as Stats;
  for (const f of STATS_FIELDS) s[f] = 0;
  for (const [k, x] of pairs(v)) {
    if ((STATS_FIELDS as readonly string[]).includes(k)) s[k as (typeof STATS_FIELDS)[number]] = int(x);
    else s.extra[k] = int(x);
  }
  return s;
}

export function parseLog(v: unknown): LogEntry[] {
  if (!Array.isArray(v)) return [];
  return v.map((e) => {
    const entry: LogEntry = { offset: 0, event: "", id: "", time: 0, fields: {} };
    for (const [k, x] of pairs(e)) {
      if (k === "offset" || k === "time") entry[k] = int(x);
      else if (k === "event" || k === "id") entry[k] = text(x);
      else if (k === "body") entry.fields[k] = x;
      else if (k === "headers") entry.fields[k] = Object.fromEntries(pairs(x).map(([n, val]) => [n, text(val)]));
      else entry.fields[k] = typeof x === "number" ? x : text(x);
    }
    return entry;
  });
}

/** CONFIG GET: name-value pairs; values are numbers (booleans are 0/1). */
export function parseConfig(v: unknown): Record<string, number | string> {
  const out: Record<string, number | string> = {};
  for (const [k, x] of pairs(v)) {
    const t = text(x);
    out[k] = /^\d+$/.test(t) ? Number(t) : t;
  }
  return out;
}

export function emptyReport(): WorkerReport {
  return { acked: 0, retried: 0, errored: 0, failed: 0, dropped: 0, timedOut: 0, abandoned: 0, stale: 0 };
}
