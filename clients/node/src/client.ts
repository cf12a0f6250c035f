/**
 * The client: connections (ioredis), the two editions (RMQ.* commands of the module, or FCALL of
 * the Lua library), error sorting, and typed wrappers of every command.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import Redis, { RedisOptions } from "ioredis";

import { ConfigError, NotInstalled, ProtocolError, Refused, RmqError, Unavailable } from "./errors";
import {
  Body,
  buildPush,
  LogEntry,
  Message,
  parseConfig,
  parseLog,
  parseMessage,
  parseMessages,
  parseStats,
  Push,
  pushArgs,
  PushOptions,
  Recovered,
  Stats,
  validateQueue,
} from "./types";

export type Edition = "module" | "lua";
export type Arg = string | Buffer | number;

/** Commands of the Lua edition that only read: sent with FCALL_RO, and never load the library. */
export const READERS = new Set(["stats", "peek", "get", "queues", "log"]);

/** Error codes that mean "Redis cannot take it now", not "the request is wrong". */
const UNAVAILABLE_CODES = new Set([
  "BUSY", "OOM", "MISCONF", "NOREPLICAS", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY",
]);

export interface ClientOptions {
  /** `auto` (default: the module when loaded, else the Lua library), `module` or `lua`. */
  edition?: "auto" | Edition;
  /** Time allowed to open a connection (default 2000 ms). */
  connectTimeoutMs?: number;
  /** Time allowed for one command's answer (default 5000 ms; a blocking FETCH gets its BLOCK on top). */
  commandTimeoutMs?: number;
  /** Pauses between empty FETCHes on the Lua edition, which cannot block (default 5 to 250 ms). */
  pollMinMs?: number;
  pollMaxMs?: number;
}

/** The Lua library's source: the copy shipped in this package, or the file named by RMQ_LUA. */
export function luaLibrary(): string {
  const p = process.env.RMQ_LUA;
  try {
    return fs.readFileSync(p || path.join(__dirname, "..", "rmq.lua"), "utf8");
  } catch (e) {
    throw new ConfigError(`${p ? `RMQ_LUA=${p}` : "rmq.lua"}: ${(e as Error).message}`);
  }
}

/** Sorts an error into Unavailable (retry later, spool) and Refused (the request or setup is wrong). */
export function classify(e: unknown): RmqError {
  if (e instanceof RmqError) return e;
  const err = e as Error;
  if (err && err.name === "ReplyError") {
    const code = /^[A-Z]+/.exec(err.message)?.[0] ?? "";
    return UNAVAILABLE_CODES.has(code) ? new Unavailable(err.message) : new Refused(err.message);
  }
  // Connection refused/reset/closed, not writeable, no answer: Redis could not take it.
  return new Unavailable(err?.message || String(e));
}

function positive(v: number | undefined, dflt: number, what: string): number {
  const x = v ?? dflt;
  if (typeof x !== "number" || !Number.isFinite(x) || x <= 0) throw new ConfigError(`${what} must be a positive number of ms`);
  return x;
}

/** A handle on one Redis server. Commands share one connection (ioredis pipelines them); a
 * blocking FETCH takes a connection of its own. */
export class Client {
  readonly url: string;
  readonly editionChoice: "auto" | Edition;
  readonly connectTimeoutMs: number;
  readonly commandTimeoutMs: number;
  readonly pollMinMs: number;
  readonly pollMaxMs: number;
  private ed: Edition | null;
  private shared: Redis;
  private connecting = new Map<Redis, Promise<void>>();
  private idleBlocking: Redis[] = [];
  private lastError = new WeakMap<Redis, Error>();
  private closed = false;

  constructor(url = "redis://127.0.0.1:6379", opts: ClientOptions = {}) {
    const edition = opts.edition ?? "auto";
    if (!["auto", "module", "lua"].includes(edition)) throw new ConfigError("edition must be auto, module or lua");
    if (!/^rediss?:\/\//.test(url)) throw new ConfigError(`bad Redis URL: ${url}`);
    this.url = url;
    this.editionChoice = edition;
    this.ed = edition === "auto" ? null : edition;
    this.connectTimeoutMs = positive(opts.connectTimeoutMs, 2000, "connectTimeoutMs");
    this.commandTimeoutMs = positive(opts.commandTimeoutMs, 5000, "commandTimeoutMs");
    this.pollMinMs = positive(opts.pollMinMs, 5, "pollMinMs");
    this.pollMaxMs = Math.max(positive(opts.pollMaxMs, 250, "pollMaxMs"), this.pollMinMs);
    this.shared = this.newConnection();
  }

  /** The URL without its password. */
  displayUrl(): string {
    return this.url.replace(/\/\/[^@/]*@/, "//***@");
  }

  /** The options this client was made with (to make another one like it). */
  options(): ClientOptions & { url: string } {
    return {
      url: this.url, edition: this.editionChoice, connectTimeoutMs: this.connectTimeoutMs,
      commandTimeoutMs: this.commandTimeoutMs, pollMinMs: this.pollMinMs, pollMaxMs: this.pollMaxMs,
    };
  }

  private newConnection(): Redis {
    const o: RedisOptions = {
      lazyConnect: true,
      connectTimeout: this.connectTimeoutMs,
      // Fail at once while disconnected (the producer then spools) and never re-send a command
      // by itself (a FETCH sent twice would hide messages until their lock ran out): retrying
      // is this client's job. A dead connection is opened again at its next use.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      retryStrategy: () => null,
      enableReadyCheck: false,
    };
    const r = new Redis(this.url, o);
    // Errors reach the callers through their commands; the last one explains a failed connect.
    r.on("error", (e: Error) => this.lastError.set(r, e));
    return r;
  }

  private async ensure(r: Redis): Promise<void> {
    if (this.closed) throw new Unavailable("the client is closed");
    if (r.status === "ready") return;
    let p = this.connecting.get(r);
    if (!p) {
      p = (async () => {
        try {
          if (r.status === "connecting" || r.status === "connect" || r.status === "reconnecting") {
            r.disconnect();
          }
          await withTimeout(r.connect(), this.connectTimeoutMs + 100, "connect timed out");
        } catch (e) {
          r.disconnect();
          const why = this.lastError.get(r)?.message ?? (e as Error).message;
          throw new Unavailable(`cannot connect to ${this.displayUrl()}: ${why}`);
        } finally {
          this.connecting.delete(r);
        }
      })();
      this.connecting.set(r, p);
    }
    await p;
  }

  /** Runs one command with a time limit (the command timeout by default); bulk replies are Buffers. */
  async raw(args: Arg[], timeoutMs?: number, conn?: Redis): Promise<unknown> {
    const r = conn ?? this.shared;
    await this.ensure(r);
    const [cmd, ...rest] = args;
    try {
      return await withTimeout(r.callBuffer(String(cmd), ...rest), timeoutMs ?? this.commandTimeoutMs, null);
    } catch (e) {
      if (e instanceof TimedOut) {
        r.disconnect(); // the connection may be dead without knowing it: a new one next time
        throw new Unavailable(`no answer within ${timeoutMs ?? this.commandTimeoutMs} ms`);
      }
      throw classify(e);
    }
  }

  async ping(): Promise<void> {
    await this.raw(["PING"]);
  }

  /** `module` or `lua`: found out once, then again when a call shows a change. */
  async edition(): Promise<Edition> {
    if (this.ed === null) this.ed = await this.detect();
    return this.ed;
  }

  private async detect(): Promise<Edition> {
    try {
      const v = await this.raw(["COMMAND", "INFO", "rmq.push"]);
      return Array.isArray(v) && v.length > 0 && v[0] !== null ? "module" : "lua";
    } catch (e) {
      if (!(e instanceof Refused)) throw e;
      // COMMAND may be forbidden by an ACL: ask the module itself.
      try {
        await this.raw(["RMQ.QUEUES"]);
        return "module";
      } catch (e2) {
        if (e2 instanceof Refused && /unknown command/i.test(e2.message)) return "lua";
        throw e2;
      }
    }
  }

  /** Loads the Lua library unless the server has it (`replace`: load it anyway). */
  async loadLua(replace = false): Promise<void> {
    try {
      await this.raw(["FUNCTION", "LOAD", ...(replace ? ["REPLACE"] : []), luaLibrary()]);
    } catch (e) {
      if (!(e instanceof Refused && e.message.includes("already exists"))) throw e;
    }
  }

  private static build(ed: Edition, name: string, q: string | null, args: Arg[]): Arg[] {
    if (ed === "module") return [`RMQ.${name.toUpperCase()}`, ...(q === null ? [] : [q]), ...args];
    const fcall = READERS.has(name) ? "FCALL_RO" : "FCALL";
    return [fcall, `rmq_${name}`, ...(q === null ? [0] : [1, q]), ...args];
  }

  /**
   * Runs an rmq command in the server's edition. A Lua library missing from the server (a restart
   * without persistence, a FUNCTION FLUSH) is loaded again by commands that write; a command that
   * only reads reports it instead (it never changes the server).
   */
  async call(name: string, q: string | null, args: Arg[] = [], timeoutMs?: number, conn?: Redis): Promise<unknown> {
    for (let tries = 1; ; tries++) {
      const ed = await this.edition();
      try {
        return await this.raw(Client.build(ed, name, q, args), timeoutMs, conn);
      } catch (e) {
        if (e instanceof Refused && tries < 3 && (await this.recoverable(ed, readsOnly(name, args), e.message))) continue;
        throw e;
      }
    }
  }

  private async recoverable(ed: Edition, reads: boolean, text: string): Promise<boolean> {
    const lower = text.toLowerCase();
    if (ed === "lua" && lower.includes("function not found")) {
      if (this.editionChoice === "auto") {
        this.ed = null; // maybe the module is there now
        if ((await this.edition()) === "module") return true;
      }
      if (reads) {
        throw new NotInstalled(
          `rmq is not installed on ${this.displayUrl()}: neither the RMQ module nor the rmq Lua library ` +
            "is loaded (a command that writes, such as a push, loads the library)",
        );
      }
      await this.loadLua();
      console.warn(`rmq: loaded the rmq Lua library on ${this.displayUrl()} (FUNCTION LOAD)`);
      return true;
    }
    if (ed === "module" && lower.includes("unknown command") && this.editionChoice === "auto") {
      this.ed = null;
      return true;
    }
    return false;
  }

  /**
   * Runs several rmq commands in one pipeline. Each result is a value or an RmqError; an
   * unavailable Redis rejects.
   */
  async callMany(cmds: Array<[string, string, Arg[]]>): Promise<unknown[]> {
    if (!cmds.length) return [];
    for (let tries = 1; ; tries++) {
      const ed = await this.edition();
      await this.ensure(this.shared);
      const pipe = this.shared.pipeline();
      for (const [name, q, args] of cmds) {
        const [cmd, ...rest] = Client.build(ed, name, q, args);
        pipe.callBuffer(String(cmd), ...rest);
      }
      const t = this.commandTimeoutMs + cmds.length / 10;
      let res: Array<[Error | null, unknown]> | null;
      try {
        res = await withTimeout(pipe.exec(), t, null);
      } catch (e) {
        if (e instanceof TimedOut) {
          this.shared.disconnect();
          throw new Unavailable(`no answer within ${t} ms`);
        }
        throw classify(e);
      }
      if (!res) throw new Unavailable("pipeline not sent");
      const out = res.map(([err, v]) => (err ? classify(err) : v));
      const first = out.find((r) => r instanceof Refused) as Refused | undefined;
      const reads = cmds.every(([n, , a]) => readsOnly(n, a));
      if (first && tries < 3 && (await this.recoverable(ed, reads, first.message))) continue;
      if (out.some((r) => r instanceof Unavailable)) throw out.find((r) => r instanceof Unavailable);
      return out;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const r of [this.shared, ...this.idleBlocking]) r.disconnect();
    this.idleBlocking = [];
  }

  // --- the commands --------------------------------------------------------------------------

  /** RMQ.PUSH straight to Redis (no retries, no spool: see Producer). Returns the id. */
  async push(queue: string, body: Body, options: PushOptions = {}): Promise<string> {
    return this.sendPush(buildPush(queue, body, options));
  }

  /** RMQ.PUSH of a built (and checked) push. */
  async sendPush(p: Push): Promise<string> {
    return text(await this.call("push", p.queue, pushArgs(p)));
  }

  /**
   * RMQ.FETCH. `blockMs` (0 = forever) waits for a message: on the server with the module (in
   * slices, so a dead connection is noticed), by polling with the Lua edition.
   */
  async fetch(
    queue: string,
    o: { count?: number; lockMs?: number; blockMs?: number; consumer?: string } = {},
  ): Promise<Message[]> {
    validateQueue(queue);
    const args: Arg[] = [];
    if (o.count !== undefined) args.push("COUNT", o.count);
    if (o.lockMs !== undefined) args.push("LOCK", Math.max(Math.round(o.lockMs), 1));
    if (o.consumer) args.push("CONSUMER", o.consumer);
    if (o.blockMs === undefined) return parseMessages(queue, await this.call("fetch", queue, args));
    const forever = o.blockMs === 0;
    const until = Date.now() + o.blockMs;
    if ((await this.edition()) === "module") {
      for (;;) {
        const slice = forever ? 10_000 : Math.max(until - Date.now(), 1);
        const msgs = parseMessages(queue, await this.blockingFetch(queue, [...args, "BLOCK", Math.round(slice)], slice));
        if (msgs.length || (!forever && Date.now() >= until)) return msgs;
      }
    }
    let pause = this.pollMinMs;
    for (;;) {
      const msgs = parseMessages(queue, await this.call("fetch", queue, args));
      const now = Date.now();
      if (msgs.length || (!forever && now >= until)) return msgs;
      await sleep(forever ? pause : Math.min(pause, until - now));
      pause = Math.min(pause * 2, this.pollMaxMs);
    }
  }

  private async blockingFetch(queue: string, args: Arg[], sliceMs: number): Promise<unknown> {
    const conn = this.idleBlocking.pop() ?? this.newConnection();
    try {
      const v = await this.call("fetch", queue, args, sliceMs + this.commandTimeoutMs, conn);
      if (!this.closed) this.idleBlocking.push(conn);
      else conn.disconnect();
      return v;
    } catch (e) {
      if (e instanceof Refused && !this.closed) this.idleBlocking.push(conn);
      else conn.disconnect();
      throw e;
    }
  }

  /** RMQ.ACK. Returns how many were acked (stale receipts count 0). */
  async ack(queue: string, ...receipts: string[]): Promise<number> {
    return Number(await this.call("ack", queue, receipts));
  }

  /**
   * RMQ.NACK: `how` is `retry` (`delayMs`, else the queue's backoff), `fail` or `error`.
   * Returns false for a stale receipt.
   */
  async nack(
    queue: string,
    receipt: string,
    how: "retry" | "fail" | "error" = "retry",
    o: { delayMs?: number; reason?: string } = {},
  ): Promise<boolean> {
    if (!["retry", "fail", "error"].includes(how)) throw new RangeError("how must be retry, fail or error");
    const args: Arg[] = [receipt, how.toUpperCase()];
    if (o.delayMs !== undefined) {
      if (how !== "retry") throw new RangeError("delayMs goes with retry only");
      args.push("DELAY", Math.round(o.delayMs));
    }
    if (o.reason !== undefined) args.push("REASON", o.reason);
    return Number(await this.call("nack", queue, args)) === 1;
  }

  /** RMQ.TOUCH. Returns the new deadline (unix ms), or 0 for a stale receipt. */
  async touch(queue: string, receipt: string, lockMs?: number): Promise<number> {
    const args: Arg[] = [receipt];
    if (lockMs !== undefined) args.push("LOCK", Math.max(Math.round(lockMs), 1));
    return Number(await this.call("touch", queue, args));
  }

  /** RMQ.RECOVER (none of the three asked for: all three). */
  async recover(queue: string, o: { expired?: boolean; failed?: boolean; errors?: boolean } = {}): Promise<Recovered> {
    const parts: string[] = [];
    if (o.expired) parts.push("EXPIRED");
    if (o.failed) parts.push("FAILED");
    if (o.errors) parts.push("ERRORS");
    const v = await this.call("recover", queue, parts);
    if (!Array.isArray(v) || v.length !== 3) throw new ProtocolError("RECOVER replied something else than 3 counts");
    return { expired: Number(v[0]), failed: Number(v[1]), errors: Number(v[2]) };
  }

  async stats(queue: string): Promise<Stats> {
    return parseStats(await this.call("stats", queue));
  }

  /** RMQ.PEEK: messages in `state` (ready, delayed, inflight, failed, errors). */
  async peek(queue: string, state = "ready", o: { start?: number; count?: number } = {}): Promise<Message[]> {
    const args = [state.toUpperCase(), "START", o.start ?? 0, "COUNT", o.count ?? 10];
    return parseMessages(queue, await this.call("peek", queue, args));
  }

  async get(queue: string, id: string): Promise<Message | null> {
    const v = await this.call("get", queue, [id]);
    return v === null ? null : parseMessage(queue, v);
  }

  /** RMQ.DEL: deletes messages in any state. Returns how many. */
  async delete(queue: string, ...ids: string[]): Promise<number> {
    return Number(await this.call("del", queue, ids));
  }

  /** RMQ.REQUEUE: failed, errored or delayed messages back to ready now. */
  async requeue(queue: string, ...ids: string[]): Promise<number> {
    return Number(await this.call("requeue", queue, ids));
  }

  /** RMQ.PURGE: deletes the messages of a state (or `all`); settings and counters stay. */
  async purge(queue: string, state: string): Promise<number> {
    return Number(await this.call("purge", queue, [state.toUpperCase()]));
  }

  async configGet(queue: string, name?: string): Promise<Record<string, number | string>> {
    return parseConfig(await this.call("config", queue, ["GET", ...(name ? [name] : [])]));
  }

  /** RMQ.CONFIG SET: `configSet("q", { "lock-ms": 60000, "max-attempts": 3 })`. */
  async configSet(queue: string, settings: Record<string, number | string | boolean>): Promise<void> {
    const args: Arg[] = ["SET"];
    for (const [k, v] of Object.entries(settings)) args.push(k, typeof v === "boolean" ? Number(v) : v);
    await this.call("config", queue, args);
  }

  async queues(): Promise<string[]> {
    const v = await this.call("queues", null);
    return Array.isArray(v) ? v.map(text) : [];
  }

  async log(queue: string, o: { from?: number; count?: number } = {}): Promise<LogEntry[]> {
    return parseLog(await this.call("log", queue, ["FROM", o.from ?? 0, "COUNT", o.count ?? 100]));
  }

  async replay(queue: string, from: number, to?: number): Promise<number> {
    return Number(await this.call("replay", queue, ["FROM", from, ...(to === undefined ? [] : ["TO", to])]));
  }
}

/** Commands that only read never load the Lua library (CONFIG GET too, though the library's rmq_config also writes). */
function readsOnly(name: string, args: Arg[]): boolean {
  if (READERS.has(name)) return true;
  return name === "config" && args.length > 0 && String(args[0]).toUpperCase() === "GET";
}

function text(v: unknown): string {
  return Buffer.isBuffer(v) ? v.toString("utf8") : String(v);
}

class TimedOut extends Error {}

/** Rejects with `message` (or a TimedOut when null) when p takes longer than ms. */
function withTimeout<T>(p: Promise<T>, ms: number, message: string | null): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(message === null ? new TimedOut() : new Unavailable(message)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
