import { Client, ClientOptions } from "./client";
import { Message, WorkerReport } from "./types";
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
export declare class Outcome extends Error {
    readonly kind: Kind;
    readonly reason: string;
    readonly delayMs?: number | undefined;
    private constructor();
    static ack(): Outcome;
    static retry(reason?: string, o?: {
        delayMs?: number;
    }): Outcome;
    static fail(reason?: string): Outcome;
    static error(reason?: string): Outcome;
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
/**
 * A worker for one queue, or for every partition of a partitioned queue (taken in turn, from a
 * random first one, so that workers spread over the partitions).
 */
export declare class Worker {
    readonly client: Client;
    readonly queue: string;
    readonly report: WorkerReport;
    private readonly ownClient;
    private readonly lockMs;
    private readonly timeoutMs?;
    private readonly concurrency;
    private readonly graceMs;
    private readonly blockMs;
    private readonly consumer;
    private readonly retryIsError;
    private readonly noHandlerIsError;
    private readonly handleSignals;
    private readonly handlers;
    private fallback?;
    private stopping;
    private stopWaiters;
    private kickWaiters;
    /** `handler` (optional) handles every tag; {@link handle} registers one per tag. `client` is a Client or a URL. */
    constructor(client: Client | string, queue: string, handler?: Handler, opts?: WorkerOptions, clientOptions?: ClientOptions);
    /** Registers the handler of messages tagged `tag` (`""`: messages without a tag); `null`: of every tag without one. */
    handle(tag: string | null, fn: Handler): this;
    /** Asks the worker to stop gracefully. */
    stop(): void;
    private kick;
    private stopped;
    /** Sleeps up to ms; true when a stop came meanwhile. */
    private pause;
    /**
     * Runs until {@link stop} (or SIGTERM/SIGINT), then stops fetching, gives running handlers up
     * to graceMs to finish, abandons the rest, and resolves to the report.
     */
    run(): Promise<WorkerReport>;
    /**
     * The partitions of the queue when it is a partitioned queue (an empty rotation for an ordinary
     * queue), looked up once, until Redis answers; null when a stop came first.
     */
    private partitions;
    private fetchLoop;
    private process;
    private settle;
    /** ACK or NACK, tried again while Redis is unavailable, for at most one lock period. */
    private finish;
}
export {};
