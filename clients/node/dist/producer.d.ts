import { Client, ClientOptions, Confirm } from "./client";
import { DrainReport, Spool, SpoolStatus } from "./spool";
import { Body, Push, Pushed, PushOptions } from "./types";
/**
 * The default spool, as in every rmq client: `$RMQ_SPOOL`, else `rmq/spool` in the user's state
 * directory (`$XDG_STATE_HOME`, or `~/.local/state`); never the working directory.
 */
export declare function defaultSpoolDir(): string;
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
/**
 * Pushes messages; when Redis cannot take one, it goes to the spool on disk (fsynced before
 * `push` resolves) and is re-sent, in order, by a background task and at every start.
 */
export declare class Producer {
    readonly client: Client;
    private readonly ownClient;
    private readonly spoolDir;
    private readonly retries;
    private readonly backoff;
    private readonly backoffMax;
    private readonly interval;
    private readonly background;
    readonly confirm: Required<Confirm> | null;
    /** Partitioned queues looked up: name → the record (null: an ordinary queue) and when. */
    private lookups;
    private spool;
    /** Set when Redis was found unavailable, cleared by a success: then a push tries once and spools. */
    private down;
    private started;
    private closed;
    private timer;
    private loop;
    private wake;
    private draining;
    /** Group commit: pushes that arrive while an append runs share the next fsync. */
    private pending;
    private writing;
    /** `client` is a Client, or a URL (with `clientOptions`). */
    constructor(client: Client | string, opts?: ProducerOptions, clientOptions?: ClientOptions);
    /**
     * Opens the spool (a failure is logged and tried again when the spool is needed) and, with
     * backgroundDrain, starts re-sending what it holds. `push` calls it when it was not called.
     */
    start(): Promise<void>;
    /** Stops the background task (the spool stays on disk for the next start). */
    close(): Promise<void>;
    private getSpool;
    /**
     * Pushes a message. For a partitioned queue, it goes to the partition of its `key` (a random one
     * without a key): see `Pushed.queue`. Resolves to {@link Pushed}: Redis has it, or the spool has
     * it on disk (`spooled`). Rejects with InvalidMessage (breaks a rule; checked even while Redis is
     * down), Refused (Redis refused it, e.g. `queue full`: not spooled, sending it again would not
     * help), NotStored (neither Redis nor the spool took it) or Unavailable (spooling is off). With
     * `confirm`, "Redis has it" means its master and the replicas asked for; a push they did not
     * confirm in time counts as one Redis could not take.
     */
    push(queue: string, body: Body, options?: PushOptions): Promise<Pushed>;
    /**
     * `p` addressed to the partition of its key when its queue is a partitioned queue, else as it
     * is. Lookups are remembered: a partitioned queue's record for good (its partitions never
     * change), an ordinary queue for 10 s.
     */
    route(p: Push): Promise<Push>;
    /** One PUSH, confirmed when confirms are on. */
    private send;
    private spoolOne;
    /** Re-sends the spool now (what the background task does). Records Redis refuses for good go to the quarantine. */
    drain(): Promise<DrainReport>;
    spoolStatus(): Promise<SpoolStatus>;
    /** One drain at a time per producer (the spool's DRAIN lock keeps other processes out). */
    private drainOnce;
    private backgroundLoop;
}
/**
 * Sends the spool's records in pipelines of PUSH (confirmed by WAIT with `confirm`); a refusal goes
 * to the quarantine, an unavailable Redis or `queue full` stops the drain. A record spooled under a
 * partitioned queue's logical name (its registry could not be read at push time) goes to the
 * partition of its key.
 */
export declare function drainSpool(client: Client, sp: Spool, closing?: () => boolean, confirm?: Confirm | null): Promise<DrainReport>;
