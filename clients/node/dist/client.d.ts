import Redis from "ioredis";
import { RmqError } from "./errors";
import { Body, LogEntry, Message, Push, PushOptions, Recovered, Stats } from "./types";
export type Edition = "module" | "lua";
export type Arg = string | Buffer | number;
/** Commands of the Lua edition that only read: sent with FCALL_RO, and never load the library. */
export declare const READERS: Set<string>;
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
export declare function luaLibrary(): string;
/** Sorts an error into Unavailable (retry later, spool) and Refused (the request or setup is wrong). */
export declare function classify(e: unknown): RmqError;
/** A handle on one Redis server. Commands share one connection (ioredis pipelines them); a
 * blocking FETCH takes a connection of its own. */
export declare class Client {
    readonly url: string;
    readonly editionChoice: "auto" | Edition;
    readonly connectTimeoutMs: number;
    readonly commandTimeoutMs: number;
    readonly pollMinMs: number;
    readonly pollMaxMs: number;
    private ed;
    private shared;
    private connecting;
    private idleBlocking;
    private lastError;
    private closed;
    constructor(url?: string, opts?: ClientOptions);
    /** The URL without its password. */
    displayUrl(): string;
    /** The options this client was made with (to make another one like it). */
    options(): ClientOptions & {
        url: string;
    };
    private newConnection;
    private ensure;
    /** Runs one command with a time limit (the command timeout by default); bulk replies are Buffers. */
    raw(args: Arg[], timeoutMs?: number, conn?: Redis): Promise<unknown>;
    ping(): Promise<void>;
    /** `module` or `lua`: found out once, then again when a call shows a change. */
    edition(): Promise<Edition>;
    private detect;
    /** Loads the Lua library unless the server has it (`replace`: load it anyway). */
    loadLua(replace?: boolean): Promise<void>;
    private static build;
    /**
     * Runs an rmq command in the server's edition. A Lua library missing from the server (a restart
     * without persistence, a FUNCTION FLUSH) is loaded again by commands that write; a command that
     * only reads reports it instead (it never changes the server).
     */
    call(name: string, q: string | null, args?: Arg[], timeoutMs?: number, conn?: Redis): Promise<unknown>;
    private recoverable;
    /**
     * Runs several rmq commands in one pipeline. Each result is a value or an RmqError; an
     * unavailable Redis rejects.
     */
    callMany(cmds: Array<[string, string, Arg[]]>): Promise<unknown[]>;
    close(): Promise<void>;
    /** RMQ.PUSH straight to Redis (no retries, no spool: see Producer). Returns the id. */
    push(queue: string, body: Body, options?: PushOptions): Promise<string>;
    /** RMQ.PUSH of a built (and checked) push. */
    sendPush(p: Push): Promise<string>;
    /**
     * RMQ.FETCH. `blockMs` (0 = forever) waits for a message: on the server with the module (in
     * slices, so a dead connection is noticed), by polling with the Lua edition.
     */
    fetch(queue: string, o?: {
        count?: number;
        lockMs?: number;
        blockMs?: number;
        consumer?: string;
    }): Promise<Message[]>;
    private blockingFetch;
    /** RMQ.ACK. Returns how many were acked (stale receipts count 0). */
    ack(queue: string, ...receipts: string[]): Promise<number>;
    /**
     * RMQ.NACK: `how` is `retry` (`delayMs`, else the queue's backoff), `fail` or `error`.
     * Returns false for a stale receipt.
     */
    nack(queue: string, receipt: string, how?: "retry" | "fail" | "error", o?: {
        delayMs?: number;
        reason?: string;
    }): Promise<boolean>;
    /** RMQ.TOUCH. Returns the new deadline (unix ms), or 0 for a stale receipt. */
    touch(queue: string, receipt: string, lockMs?: number): Promise<number>;
    /** RMQ.RECOVER (none of the three asked for: all three). */
    recover(queue: string, o?: {
        expired?: boolean;
        failed?: boolean;
        errors?: boolean;
    }): Promise<Recovered>;
    stats(queue: string): Promise<Stats>;
    /** RMQ.PEEK: messages in `state` (ready, delayed, inflight, failed, errors). */
    peek(queue: string, state?: string, o?: {
        start?: number;
        count?: number;
    }): Promise<Message[]>;
    get(queue: string, id: string): Promise<Message | null>;
    /** RMQ.DEL: deletes messages in any state. Returns how many. */
    delete(queue: string, ...ids: string[]): Promise<number>;
    /** RMQ.REQUEUE: failed, errored or delayed messages back to ready now. */
    requeue(queue: string, ...ids: string[]): Promise<number>;
    /** RMQ.PURGE: deletes the messages of a state (or `all`); settings and counters stay. */
    purge(queue: string, state: string): Promise<number>;
    configGet(queue: string, name?: string): Promise<Record<string, number | string>>;
    /** RMQ.CONFIG SET: `configSet("q", { "lock-ms": 60000, "max-attempts": 3 })`. */
    configSet(queue: string, settings: Record<string, number | string | boolean>): Promise<void>;
    queues(): Promise<string[]>;
    log(queue: string, o?: {
        from?: number;
        count?: number;
    }): Promise<LogEntry[]>;
    replay(queue: string, from: number, to?: number): Promise<number>;
}
