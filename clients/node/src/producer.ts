/** The producer: PUSH with ids it makes itself, retries, and the disk spool for when Redis cannot take a message. */
import * as path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { Client, ClientOptions, Confirm, confirmOf, shortfall } from "./client";
import { ConfigError, NotStored, Refused, RmqError, SpoolError, Unavailable } from "./errors";
import { Partitioned } from "./partition";
import { DrainReport, SendStopped, Spool, SpoolRecord, SpoolStatus } from "./spool";
import { Body, buildPush, newId, Push, pushArgs, Pushed, PushOptions } from "./types";

/** How long "this name is an ordinary queue" is believed before the registry is read again (a partitioned queue's record is kept for good: its partitions never change). */
const PLAIN_FOR_MS = 10_000;

/**
 * The default spool, as in every rmq client: `$RMQ_SPOOL`, else `rmq/spool` in the user's state
 * directory (`$XDG_STATE_HOME`, or `~/.local/state`); never the working directory.
 */
export function defaultSpoolDir(): string {
  if (process.env.RMQ_SPOOL) return process.env.RMQ_SPOOL;
  let state = process.env.XDG_STATE_HOME;
  if (!state || !path.isAbsolute(state)) state = process.env.HOME ? path.join(process.env.HOME, ".local", "state") : undefined;
  return state ? path.join(state, "rmq", "spool") : "rmq-spool";
}

export interface ProducerOptions {
  /** The spool directory (default {@link defaultSpoolDir}; give each Redis server its own); null turns spooling off (a push Redis cannot take then rejects with Unavailable). */
  spoolDir?: string | null;
  /** Tries of a push Redis could not take before it is spooled (default 3). */
  retries?: number;
  /** First pause between those tries, doubling up to retryBackoffMaxMs (default 50 and 1000 ms). */
  retryBackoffMs?: number;
  retryBackoffMaxMs?: number;
  /** How often the background task looks at the spool (default 1000 ms). */
  drainIntervalMs?: number;
  /** Re-send the spool in the background, at once and then every drainIntervalMs (default true). */
  backgroundDrain?: boolean;
  /**
   * Confirms: `true` or `{ replicas, timeoutMs }` (default 1 replica, 1000 ms). After each PUSH,
   * `WAIT replicas timeoutMs` on the same connection; a push is taken only once that many replicas
   * have it (so it survives the loss of its master), an unconfirmed one is sent again with the
   * same id and then spooled, and the spool is re-sent with the same WAIT. Default: off.
   */
  confirm?: Confirm | boolean | null;
}

/** The spool's copy: a delay becomes an absolute due time, so a message re-sent later is due when it was meant to be. */
function toRecord(p: Push): SpoolRecord {
  const now = Date.now();
  const at = p.atMs ?? (p.delayMs !== undefined ? now + p.delayMs : null);
  return { queue: p.queue, id: p.id ?? "", body: p.body, tag: p.tag, key: p.key, headers: [...p.headers], at, spooledAt: now };
}

function fromRecord(r: SpoolRecord): Push {
  return { queue: r.queue, body: r.body, id: r.id || undefined, tag: r.tag, key: r.key, headers: r.headers, atMs: r.at ?? undefined };
}

/**
 * Pushes messages; when Redis cannot take one, it goes to the spool on disk (fsynced before
 * `push` resolves) and is re-sent, in order, by a background task and at every start.
 */
export class Producer {
  readonly client: Client;
  private readonly ownClient: boolean;
  private readonly spoolDir: string | null;
  private readonly retries: number;
  private readonly backoff: number;
  private readonly backoffMax: number;
  private readonly interval: number;
  private readonly background: boolean;
  readonly confirm: Required<Confirm> | null;
  /** Partitioned queues looked up: name → the record (null: an ordinary queue) and when. */
  private lookups = new Map<string, { part: Partitioned | null; at: number }>();
  private spool: Promise<Spool> | null = null;
  /** Set when Redis was found unavailable, cleared by a success: then a push tries once and spools. */
  private down = false;
  private started = false;
  private closed = false;
  private timer: NodeJS.Timeout | null = null;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private draining: Promise<DrainReport> | null = null;
  /** Group commit: pushes that arrive while an append runs share the next fsync. */
  private pending: Array<{ rec: SpoolRecord; done: (e?: Error) => void }> = [];
  private writing = false;

  /** `client` is a Client, or a URL (with `clientOptions`). */
  constructor(client: Client | string, opts: ProducerOptions = {}, clientOptions?: ClientOptions) {
    this.ownClient = typeof client === "string";
    this.client = typeof client === "string" ? new Client(client, clientOptions) : client;
    this.spoolDir = opts.spoolDir === undefined ? defaultSpoolDir() : opts.spoolDir;
    this.retries = opts.retries ?? 3;
    if (!Number.isInteger(this.retries) || this.retries < 0) throw new ConfigError("retries must be an integer >= 0");
    this.backoff = opts.retryBackoffMs ?? 50;
    this.backoffMax = opts.retryBackoffMaxMs ?? 1000;
    this.interval = opts.drainIntervalMs ?? 1000;
    this.background = opts.backgroundDrain ?? true;
    this.confirm = opts.confirm ? confirmOf(opts.confirm) : null;
  }

  /**
   * Opens the spool (a failure is logged and tried again when the spool is needed) and, with
   * backgroundDrain, starts re-sending what it holds. `push` calls it when it was not called.
   */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    if (this.spoolDir === null) return;
    try {
      await this.getSpool();
    } catch (e) {
      console.warn(`rmq producer: the spool cannot be opened now (${(e as Error).message}); tried again when needed`);
    }
    if (this.background) this.loop = this.backgroundLoop();
  }

  /** Stops the background task (the spool stays on disk for the next start). */
  async close(): Promise<void> {
    this.closed = true;
    this.wake?.();
    await this.loop;
    await this.draining?.catch(() => undefined);
    if (this.ownClient) await this.client.close();
  }

  private getSpool(): Promise<Spool> {
    if (this.spoolDir === null) return Promise.reject(new ConfigError("spooling is off"));
    if (!this.spool) {
      const dir = this.spoolDir;
      this.spool = Spool.open(dir).then(
        (sp) => {
          if (sp.tornBytesAtOpen) console.warn(`rmq producer: cut a torn tail off the spool (${sp.tornBytesAtOpen} bytes)`);
          return sp;
        },
        (e) => {
          this.spool = null; // tried again when needed
          throw new SpoolError(`${dir}: ${(e as Error).message}`);
        },
      );
    }
    return this.spool;
  }

  /**
   * Pushes a message. For a partitioned queue, it goes to the partition of its `key` (a random one
   * without a key): see `Pushed.queue`. Resolves to {@link Pushed}: Redis has it, or the spool has
   * it on disk (`spooled`). Rejects with InvalidMessage (breaks a rule; checked even while Redis is
   * down), Refused (Redis refused it, e.g. `queue full`: not spooled, sending it again would not
   * help), NotStored (neither Redis nor the spool took it) or Unavailable (spooling is off). With
   * `confirm`, "Redis has it" means its master and the replicas asked for; a push they did not
   * confirm in time counts as one Redis could not take.
   */
  async push(queue: string, body: Body, options: PushOptions = {}): Promise<Pushed> {
    const p = buildPush(queue, body, options);
    if (p.id === undefined) p.id = newId();
    if (!this.started) await this.start();
    const tries = this.down ? 1 : this.retries + 1;
    let pause = this.backoff;
    let last = "";
    // A partitioned queue's name is looked up first and the message routed once: every retry goes
    // to the same partition, whose dedup window drops a second copy. If the registry cannot be
    // read, the message is spooled under the logical name and routed when the spool is sent.
    let routed: Push | null = null;
    for (let attempt = 1; attempt <= tries; attempt++) {
      try {
        routed ??= await this.route(p);
        const id = await this.send(routed);
        this.down = false;
        return { id, spooled: false, queue: routed.queue };
      } catch (e) {
        if (!(e instanceof Unavailable)) throw e;
        last = e.message;
        if (attempt < tries) {
          await sleep(pause);
          pause = Math.min(pause * 2, this.backoffMax);
        }
      }
    }
    this.down = true;
    if (this.spoolDir === null) throw new Unavailable(last);
    const target = routed ?? p;
    try {
      await this.spoolOne(toRecord(target));
    } catch (e) {
      console.error(`rmq producer: message ${p.id} NOT stored: redis ${last}; spool ${(e as Error).message}`);
      throw new NotStored(last, (e as Error).message);
    }
    return { id: p.id, spooled: true, queue: target.queue };
  }

  /**
   * `p` addressed to the partition of its key when its queue is a partitioned queue, else as it
   * is. Lookups are remembered: a partitioned queue's record for good (its partitions never
   * change), an ordinary queue for 10 s.
   */
  async route(p: Push): Promise<Push> {
    const known = this.lookups.get(p.queue);
    let part: Partitioned | null;
    if (known && (known.part || Date.now() - known.at < PLAIN_FOR_MS)) part = known.part;
    else {
      part = await this.client.partitionedOrPlain(p.queue);
      this.lookups.set(p.queue, { part, at: Date.now() });
    }
    return part ? { ...p, queue: part.route(p.key) } : p;
  }

  /** One PUSH, confirmed when confirms are on. */
  private async send(p: Push): Promise<string> {
    if (!this.confirm) return this.client.sendPush(p);
    const { id, replicas } = await this.client.sendPushConfirmed(p, this.confirm);
    if (replicas < this.confirm.replicas) throw new Unavailable(shortfall(this.confirm, replicas));
    return id;
  }

  private async spoolOne(rec: SpoolRecord): Promise<void> {
    const sp = await this.getSpool();
    const done = new Promise<void>((resolve, reject) =>
      this.pending.push({ rec, done: (e) => (e ? reject(e) : resolve()) }),
    );
    if (!this.writing) {
      this.writing = true;
      try {
        while (this.pending.length) {
          const batch = this.pending.splice(0, 4096);
          let err: Error | undefined;
          try {
            await sp.append(batch.map((b) => b.rec));
          } catch (e) {
            err = new SpoolError((e as Error).message);
          }
          for (const b of batch) b.done(err);
        }
      } finally {
        this.writing = false;
      }
    }
    await done;
  }

  /** Re-sends the spool now (what the background task does). Records Redis refuses for good go to the quarantine. */
  async drain(): Promise<DrainReport> {
    const sp = await this.getSpool();
    const r = await this.drainOnce(sp);
    if (r.sent && r.stopped === null) this.down = false;
    return r;
  }

  async spoolStatus(): Promise<SpoolStatus> {
    return (await this.getSpool()).status();
  }

  /** One drain at a time per producer (the spool's DRAIN lock keeps other processes out). */
  private async drainOnce(sp: Spool): Promise<DrainReport> {
    while (this.draining) await this.draining.catch(() => undefined);
    const run = drainSpool(this.client, sp, () => this.closed, this.confirm);
    this.draining = run;
    try {
      return await run;
    } finally {
      this.draining = null;
    }
  }

  private async backgroundLoop(): Promise<void> {
    while (!this.closed) {
      try {
        const sp = await this.getSpool();
        if (await sp.hasData()) {
          await this.client.ping();
          const r = await this.drainOnce(sp);
          if (r.sent) console.info(`rmq producer: re-sent ${r.sent} spooled messages (${r.remaining} remain)`);
          if (r.stopped === null) this.down = false;
        }
      } catch {
        // Redis still down, or a disk fault: try again later.
      }
      if (this.closed) return;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        this.timer = setTimeout(resolve, this.interval);
      });
      if (this.timer) clearTimeout(this.timer);
      this.wake = null;
    }
  }
}

/**
 * Sends the spool's records in pipelines of PUSH (confirmed by WAIT with `confirm`); a refusal goes
 * to the quarantine, an unavailable Redis or `queue full` stops the drain. A record spooled under a
 * partitioned queue's logical name (its registry could not be read at push time) goes to the
 * partition of its key.
 */
export async function drainSpool(
  client: Client,
  sp: Spool,
  closing: () => boolean = () => false,
  confirm: Confirm | null = null,
): Promise<DrainReport> {
  const report = await sp.drain(async (recs) => {
    if (closing()) throw new SendStopped("the producer is closing");
    let res: unknown[];
    try {
      const parts = new Map<string, Partitioned | null>();
      for (const r of recs) if (!parts.has(r.queue)) parts.set(r.queue, await client.partitionedOrPlain(r.queue));
      const pushes = recs.map((r) => {
        const p = fromRecord(r);
        const part = parts.get(r.queue);
        return part ? { ...p, queue: part.route(p.key) } : p;
      });
      res = await client.callMany(pushes.map((p) => ["push", p.queue, pushArgs(p)]), confirm);
    } catch (e) {
      throw new SendStopped((e as Error).message);
    }
    return res.map((r) => {
      if (r instanceof Refused) {
        // Back-pressure, not a fault of the record: keep it, in order, for later.
        if (r.message.includes("queue full")) throw new SendStopped(`Redis refused: ${r.message}`);
        return r.message;
      }
      if (r instanceof RmqError) throw new SendStopped(r.message);
      return null;
    });
  });
  if (report.refused || report.corrupt) {
    console.error(`rmq producer: spooled records were moved to the quarantine (refused ${report.refused}, corrupt ${report.corrupt})`);
  }
  return report;
}
