/**
 * The worker: fetches, runs the handler of each message's tag, ACKs or NACKs by its outcome,
 * TOUCHes the lock while the handler runs, enforces a per-job timeout, and stops gracefully.
 */
import * as os from "node:os";

import { Client, ClientOptions, Rotation } from "./client";
import { ConfigError, RmqError, Unavailable } from "./errors";
import { emptyReport, Message, validateQueue, WorkerReport } from "./types";

type Kind = "ack" | "retry" | "fail" | "error";

/**
 * What to do with a message, returned or thrown by a handler:
 * - `Outcome.ack()` (or returning anything else, undefined included): ACK;
 * - `Outcome.retry(reason, { delayMs })`: NACK RETRY (the queue's backoff and max-attempts
 *   apply; `delayMs` overrides the backoff);
 * - `Outcome.fail(reason)`: NACK FAIL, to failed (dead) now;
 * - `Outcome.error(reason)`: NACK ERROR, to errors now.
 * Anything else a handler throws is `Outcome.error` with its name and message.
 */
export class Outcome extends Error {
  private constructor(
    readonly kind: Kind,
    readonly reason: string,
    readonly delayMs?: number,
  ) {
    super(reason ? `${kind}: ${reason}` : kind);
    this.name = "Outcome";
  }
  static ack(): Outcome {
    return new Outcome("ack", "");
  }
  static retry(reason = "", o: { delayMs?: number } = {}): Outcome {
    return new Outcome("retry", reason, o.delayMs);
  }
  static fail(reason = ""): Outcome {
    return new Outcome("fail", reason);
  }
  static error(reason = ""): Outcome {
    return new Outcome("error", reason);
  }
}

/** What a handler gets besides the message: `signal` aborts when the job is abandoned (timeout, or the grace period ended). */
export interface JobContext {
  signal: AbortSignal;
}

export type Handler = (m: Message, ctx: JobContext) => unknown;

export interface WorkerOptions {
  /** How long a fetched message stays invisible to others (default 30000 ms); it is TOUCHed every lockMs / 2 while its handler runs. */
  lockMs?: number;
  /** The longest a handler may run; past it the job is abandoned and the message NACKed RETRY with reason `timeout after N ms` (default: no limit). */
  timeoutMs?: number;
  /** Handlers running at once (default 8). */
  concurrency?: number;
  /** After a stop, how long running handlers may take to finish (default 30000 ms); the rest are abandoned and their messages come back when their lock runs out. */
  graceMs?: number;
  /** Longest wait of one blocking FETCH on the module edition (default and most 1000 ms). */
  blockMs?: number;
  /** CONSUMER name shown by PEEK INFLIGHT (default `host:pid`). */
  consumer?: string;
  /** A retry outcome goes to errors instead (default false). */
  retryIsError?: boolean;
  /** A tag with no handler goes to errors (default true); else it is ACKed and dropped. */
  noHandlerIsError?: boolean;
  /** SIGTERM and SIGINT stop the worker gracefully while it runs (default true). */
  handleSignals?: boolean;
}

type Settled = { ok: true; value: unknown } | { ok: false; error: unknown };

/** A timer that can be cleared, as a promise. */
function delay(ms: number): { promise: Promise<void>; cancel: () => void } {
  let timer: NodeJS.Timeout | undefined;
  const promise = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, Math.max(ms, 0));
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

/**
 * A worker for one queue, or for every partition of a partitioned queue (taken in turn, from a
 * random first one, so that workers spread over the partitions).
 */
export class Worker {
  readonly client: Client;
  readonly queue: string;
  readonly report: WorkerReport = emptyReport();
  private readonly ownClient: boolean;
  private readonly lockMs: number;
  private readonly timeoutMs?: number;
  private readonly concurrency: number;
  private readonly graceMs: number;
  private readonly blockMs: number;
  private readonly consumer: string;
  private readonly retryIsError: boolean;
  private readonly noHandlerIsError: boolean;
  private readonly handleSignals: boolean;
  private readonly handlers = new Map<string, Handler>();
  private fallback?: Handler;
  private stopping = false;
  private stopWaiters: Array<() => void> = [];
  private kickWaiters: Array<() => void> = [];

  /** `handler` (optional) handles every tag; {@link handle} registers one per tag. `client` is a Client or a URL. */
  constructor(client: Client | string, queue: string, handler?: Handler, opts: WorkerOptions = {}, clientOptions?: ClientOptions) {
    validateQueue(queue);
    this.ownClient = typeof client === "string";
    this.client = typeof client === "string" ? new Client(client, clientOptions) : client;
    this.queue = queue;
    this.fallback = handler;
    this.lockMs = Math.max(opts.lockMs ?? 30_000, 1);
    this.timeoutMs = opts.timeoutMs;
    this.concurrency = opts.concurrency ?? 8;
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1) throw new ConfigError("concurrency must be at least 1");
    this.graceMs = opts.graceMs ?? 30_000;
    this.blockMs = Math.min(Math.max(opts.blockMs ?? 1000, 1), 1000);
    this.consumer = opts.consumer ?? `${os.hostname() || "rmq"}:${process.pid}`;
    this.retryIsError = opts.retryIsError ?? false;
    this.noHandlerIsError = opts.noHandlerIsError ?? true;
    this.handleSignals = opts.handleSignals ?? true;
  }

  /** Registers the handler of messages tagged `tag` (`""`: messages without a tag); `null`: of every tag without one. */
  handle(tag: string | null, fn: Handler): this {
    if (tag === null) this.fallback = fn;
    else this.handlers.set(tag, fn);
    return this;
  }

  /** Asks the worker to stop gracefully. */
  stop(): void {
    this.stopping = true;
    for (const w of this.stopWaiters.splice(0)) w();
    this.kick();
  }

  private kick(): void {
    for (const w of this.kickWaiters.splice(0)) w();
  }

  private stopped(): Promise<void> {
    return this.stopping ? Promise.resolve() : new Promise((r) => this.stopWaiters.push(r));
  }

  /** Sleeps up to ms; true when a stop came meanwhile. */
  private async pause(ms: number): Promise<boolean> {
    const d = delay(ms);
    await Promise.race([d.promise, this.stopped()]);
    d.cancel();
    return this.stopping;
  }

  /**
   * Runs until {@link stop} (or SIGTERM/SIGINT), then stops fetching, gives running handlers up
   * to graceMs to finish, abandons the rest, and resolves to the report.
   */
  async run(): Promise<WorkerReport> {
    const onSignal = () => this.stop();
    if (this.handleSignals) {
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);
    }
    const running = new Map<Promise<void>, () => void>();
    try {
      const rotation = await this.partitions();
      if (rotation) await this.fetchLoop(running, rotation);
      // Stopping: no more fetches; running handlers get the grace period.
      if (running.size) {
        const g = delay(this.graceMs);
        const all = Promise.all(running.keys());
        await Promise.race([all, g.promise]);
        g.cancel();
        if (running.size) {
          console.warn(`rmq worker: grace period over; abandoning ${running.size} running handlers (their messages come back by lock expiry)`);
          this.report.abandoned += running.size;
          for (const abandon of running.values()) abandon();
          await Promise.all(running.keys());
        }
      }
    } finally {
      if (this.handleSignals) {
        process.off("SIGTERM", onSignal);
        process.off("SIGINT", onSignal);
      }
      if (this.ownClient) await this.client.close();
    }
    return this.report;
  }

  /**
   * The partitions of the queue when it is a partitioned queue (an empty rotation for an ordinary
   * queue), looked up once, until Redis answers; null when a stop came first.
   */
  private async partitions(): Promise<Rotation | null> {
    let pause = 50;
    while (!this.stopping) {
      try {
        const p = await this.client.partitionedOrPlain(this.queue);
        if (p) console.info(`rmq worker: ${this.queue} is a partitioned queue: working its ${p.count} partitions`);
        return new Rotation(p ? p.partitions : []);
      } catch (e) {
        if (!(e instanceof RmqError)) throw e;
        console.warn(`rmq worker: cannot look up ${this.queue} in the registry of partitioned queues: ${e.message}`);
        if (await this.pause(pause)) return null;
        pause = Math.min(pause * 2, 2000);
      }
    }
    return null;
  }

  private async fetchLoop(running: Map<Promise<void>, () => void>, rotation: Rotation): Promise<void> {
    let pause = 50;
    let poll = this.client.pollMinMs;
    while (!this.stopping) {
      const free = this.concurrency - running.size;
      if (free <= 0) {
        await new Promise<void>((r) => this.kickWaiters.push(r));
        continue;
      }
      // A FETCH is never abandoned half way (its messages would sit in flight until their lock
      // ran out): the module blocks on the server in slices of at most a second, and the Lua
      // edition, which cannot block, is polled here with pauses a stop cuts short.
      // A partitioned queue is fetched from in rounds that never block (a FETCH blocks on one queue
      // only), with pauses between empty rounds.
      let msgs: Message[];
      let module: boolean;
      try {
        module = (await this.client.edition()) === "module" && !rotation.queues.length;
        msgs = rotation.queues.length
          ? await rotation.fetchRound(this.client, { count: free, lockMs: this.lockMs, consumer: this.consumer })
          : await this.client.fetch(this.queue, {
              count: free,
              lockMs: this.lockMs,
              blockMs: module ? this.blockMs : undefined,
              consumer: this.consumer,
            });
      } catch (e) {
        if (!(e instanceof RmqError)) throw e;
        console.warn(`rmq worker: fetch from ${this.queue} failed: ${e.message}`);
        if (await this.pause(pause)) return;
        pause = Math.min(pause * 2, 2000);
        continue;
      }
      pause = 50;
      for (const m of msgs) {
        let abandon: () => void = () => undefined;
        const abandoned = new Promise<void>((r) => (abandon = r));
        const task: Promise<void> = this.process(m, abandoned)
          .catch((e) => console.error(`rmq worker: ${m.id}: ${(e as Error).message}`))
          .finally(() => {
            running.delete(task);
            this.kick();
          });
        running.set(task, abandon);
      }
      if (msgs.length) poll = this.client.pollMinMs;
      else if (!module) {
        if (await this.pause(poll)) return;
        poll = Math.min(poll * 2, this.client.pollMaxMs);
      }
    }
  }

  private async process(m: Message, abandoned: Promise<void>): Promise<void> {
    const fn = this.handlers.get(m.tag) ?? this.fallback;
    if (!fn) {
      if (this.noHandlerIsError) await this.finish(m, "error", `no handler for tag '${m.tag}'`, undefined, "errored");
      else await this.finish(m, "ack", "", undefined, "dropped");
      return;
    }
    const ac = new AbortController();
    const job: Promise<Settled> = (async () => fn(m, { signal: ac.signal }))().then(
      (value) => ({ ok: true, value }),
      (error) => ({ ok: false, error }),
    );
    const deadline = this.timeoutMs === undefined ? Infinity : Date.now() + this.timeoutMs;
    const half = Math.max(this.lockMs / 2, 1);
    let nextTouch = Date.now() + half;
    let gone = false;
    void abandoned.then(() => (gone = true));
    for (;;) {
      const d = delay(Math.min(nextTouch, deadline) - Date.now());
      const r = await Promise.race([job, d.promise.then(() => null), abandoned.then(() => null)]);
      d.cancel();
      if (gone) {
        ac.abort(new Error("abandoned: the grace period ended"));
        return; // the message comes back when its lock runs out
      }
      if (r !== null) {
        await this.settle(m, r);
        return;
      }
      const now = Date.now();
      if (now >= deadline) {
        ac.abort(new Error("timeout"));
        console.warn(`rmq worker: message ${m.id} ran past its timeout; NACK RETRY`);
        await this.finish(m, "retry", `timeout after ${this.timeoutMs} ms`, undefined, "timedOut", true);
        return;
      }
      if (now >= nextTouch) {
        nextTouch = now + half;
        try {
          if ((await this.client.touch(m.queue, m.receipt, this.lockMs)) === 0) {
            console.warn(`rmq worker: lock of ${m.id} lost (the message went back to the queue); the handler runs on`);
          }
        } catch (e) {
          console.warn(`rmq worker: TOUCH of ${m.id} failed: ${(e as Error).message}`);
        }
      }
    }
  }

  private async settle(m: Message, r: Settled): Promise<void> {
    let o: Outcome;
    if (r.ok) o = r.value instanceof Outcome ? r.value : Outcome.ack();
    else if (r.error instanceof Outcome) o = r.error;
    else {
      const e = r.error as Error;
      o = Outcome.error(e instanceof Error ? (e.message ? `${e.name}: ${e.message}` : e.name) : String(r.error));
    }
    await this.finish(m, o.kind, o.reason, o.delayMs, null);
  }

  /** ACK or NACK, tried again while Redis is unavailable, for at most one lock period. */
  private async finish(
    m: Message,
    kind: Kind,
    reason: string,
    delayMs: number | undefined,
    counter: keyof WorkerReport | null,
    forceRetry = false,
  ): Promise<void> {
    if (kind === "retry" && this.retryIsError && !forceRetry) {
      kind = "error";
      delayMs = undefined;
    }
    const c: keyof WorkerReport =
      counter ?? ({ ack: "acked", retry: "retried", fail: "failed", error: "errored" } as const)[kind];
    const text = reason.slice(0, 4000);
    const until = Date.now() + this.lockMs;
    let pause = 50;
    for (;;) {
      let ok: boolean | null;
      try {
        // m.queue: the message's partition, for a partitioned queue.
        ok =
          kind === "ack"
            ? (await this.client.ack(m.queue, m.receipt)) === 1
            : await this.client.nack(m.queue, m.receipt, kind, { delayMs, reason: text || undefined });
      } catch (e) {
        if (e instanceof Unavailable && Date.now() + pause < until) {
          await delay(pause).promise;
          pause = Math.min(pause * 2, 1000);
          continue;
        }
        console.error(`rmq worker: could not ACK/NACK ${m.id} (${(e as Error).message}); it comes back by lock expiry`);
        ok = null;
      }
      if (ok) this.report[c] += 1;
      else {
        if (ok === false) console.warn(`rmq worker: stale receipt for ${m.id} (the lock ran out and the message went back)`);
        this.report.stale += 1;
      }
      return;
    }
  }
}
