import { Arg } from "./node";
import { PartitionRecovered, Partitioned, PartitionStats } from "./partition";
import { Body, LogEntry, Message, Push, PushOptions, Recovered, Stats } from "./types";
export { classify } from "./node";
export type { Arg } from "./node";
export type Edition = "module" | "lua";
/** Commands of the Lua edition that only read: sent with FCALL_RO, and never load the library. */
export declare const READERS: Set<string>;
/**
 * The keys of a queue, in the order the Lua edition takes them when a cluster client declares
 * them all (`FCALL rmq_x 11 q msg:{q} dly:{q} ... log:{q} ...`), so that Redis itself refuses
 * (ASK, TRYAGAIN) while the queue's slot migrates.
 */
export declare const QUEUE_KEY_PREFIXES: readonly ["msg", "dly", "bak", "inf", "fai", "err", "cfg", "st", "dup", "log"];
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
/** A producer's confirm: after each PUSH, `WAIT replicas timeoutMs` on the same connection. */
export interface Confirm {
    /** How many replicas must have the write (default 1). */
    replicas?: number;
    /** How long WAIT may wait for them (default 1000 ms). */
    timeoutMs?: number;
}
/** A confirm with its defaults filled in, checked. */
export declare function confirmOf(c: Confirm | true): Required<Confirm>;
/** Why a WAIT that counted `acked` replicas is not enough. */
export declare function shortfall(c: Required<Confirm>, acked: number): string;
/** The Lua library's source: the copy shipped in this package, or the file named by RMQ_LUA. */
export declare function luaLibrary(): string;
/**
 * Fetches from several queues in turn, fairly: it starts at a random queue, and every call starts
 * one past where the previous one found messages, so a busy queue never starves the others and
 * an empty one costs one FETCH per round.
 */
export declare class Rotation {
    readonly queues: string[];
    private next;
    constructor(queues: string[]);
    /**
     * One round: FETCHes (never blocking) from the queues in turn until `count` messages (default 1)
     * are in hand or every queue was asked once. A queue that fails (its master is down) is passed
     * over; the error is thrown only when every queue failed.
     */
    fetchRound(client: Client, o?: {
        count?: number;
        lockMs?: number;
        consumer?: string;
    }): Promise<Message[]>;
    /**
     * Rounds until a message comes or `blockMs` has passed (0: forever; undefined: one round),
     * pausing between empty rounds as the Lua edition's polling does: FETCH cannot block on several queues.
     */
    fetch(client: Client, o?: {
        count?: number;
        lockMs?: number;
        blockMs?: number;
        consumer?: string;
    }): Promise<Message[]>;
}
/**
 * A handle on one Redis server or one Redis Cluster. Commands share one connection per server
 * (ioredis pipelines them); a blocking FETCH and a confirmed PUSH take a connection of their own.
 *
 * Given the URL of any node of a cluster, it finds the cluster at its first request (`INFO
 * cluster`), reads the slot map, and sends every command to the master of its queue's slot,
 * following MOVED and ASK and waiting out TRYAGAIN and failovers within the command timeout.
 */
export declare class Client {
    readonly url: string;
    readonly editionChoice: "auto" | Edition;
    readonly connectTimeoutMs: number;
    readonly commandTimeoutMs: number;
    readonly pollMinMs: number;
    readonly pollMaxMs: number;
    private ed;
    /**
     * FETCH asks for the COMPACT reply (half the server's reply work) until a server that
     * predates it refuses the word; then it asks for maps.
     */
    private compact;
    private seed;
    /** Found out at the first request: undefined (not yet), null (one server) or the cluster. */
    private cluster;
    private finding;
    private rotations;
    private closed;
    constructor(url?: string, opts?: ClientOptions);
    /** The URL without its password. */
    displayUrl(): string;
    /** The options this client was made with (to make another one like it). */
    options(): ClientOptions & {
        url: string;
    };
    /** The cluster, or null for one server: asked once (`INFO cluster`, or `CLUSTER INFO` for a user whose ACL forbids INFO), at the first request. */
    private mode;
    /** True when the URL names a node of a Redis Cluster. */
    isCluster(): Promise<boolean>;
    /** The masters (`host:port`): the cluster's, or the one server's URL. */
    masters(): Promise<string[]>;
    /**
     * Sends `cmds` in one pipeline where `to` says: a queue (the master of its slot), a key (the
     * master of its slot) or nothing (any master). Each error reply is its ReplyError in its place.
     */
    private exec;
    /** Sends `cmd` to every master (one server: to it): each master's reply, an error reply or an RmqError in its place. */
    private onEveryMaster;
    /** A plain Redis command on `key` (not a queue's), sent to the server holding the key. */
    keyCommand(key: string, args: Arg[], resend?: boolean): Promise<unknown>;
    /** Runs one command with a time limit (the command timeout by default); bulk replies are Buffers. In a cluster it goes to the URL's node when that is a master, else to another master. */
    raw(args: Arg[], timeoutMs?: number): Promise<unknown>;
    ping(): Promise<void>;
    /** `module` or `lua`: found out once, then again when a call shows a change. */
    edition(): Promise<Edition>;
    private detect;
    /** Loads the Lua library unless the server has it (`replace`: load it anyway); in a cluster on every master (replicas get it from their master). */
    loadLua(replace?: boolean): Promise<void>;
    /** The command `name` for queue `q` in `ed`; `allKeys` declares every key of the queue to the Lua edition (on a cluster). */
    private static build;
    /**
     * Runs an rmq command in the server's edition. A Lua library missing from the server (a restart
     * without persistence, a FUNCTION FLUSH) is loaded again by commands that write; a command that
     * only reads reports it instead (it never changes the server).
     */
    call(name: string, q: string | null, args?: Arg[], timeoutMs?: number, dedicated?: boolean): Promise<unknown>;
    /** Runs an rmq command, followed on the same connection by `then` when given (WAIT), and gives every reply. */
    private callWith;
    private recoverable;
    /**
     * Runs several rmq commands: in one pipeline on one server; in a cluster, one pipeline per queue
     * slot (the order of one queue's commands is kept), sent at the same time. Each result is a
     * value or an RmqError; an unavailable Redis rejects. With `confirm`, each pipeline is followed
     * by `WAIT replicas timeout`, and the commands of a pipeline that fewer replicas confirmed come
     * back as Unavailable ("not confirmed").
     */
    callMany(cmds: Array<[string, string, Arg[]]>, confirm?: Confirm | true | null): Promise<unknown[]>;
    private callGroup;
    close(): Promise<void>;
    /** RMQ.PUSH straight to Redis (no retries, no spool: see Producer). Returns the id. */
    push(queue: string, body: Body, options?: PushOptions): Promise<string>;
    /** RMQ.PUSH of a built (and checked) push. */
    sendPush(p: Push): Promise<string>;
    /**
     * RMQ.PUSH (no retries, no spool: see Producer), then `WAIT replicas timeout` on the same
     * connection: the id, and how many replicas confirmed they have the write (the push, and
     * everything before it on that master). Fewer than asked means the message may be lost if its
     * master fails now.
     */
    pushConfirmed(queue: string, body: Body, options?: PushOptions, confirm?: Confirm | true): Promise<{
        id: string;
        replicas: number;
    }>;
    /** {@link pushConfirmed} of a built (and checked) push. */
    sendPushConfirmed(p: Push, confirm?: Confirm | true): Promise<{
        id: string;
        replicas: number;
    }>;
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
    private fetchAs;
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
    /** RMQ.QUEUES: the queues of the server; in a cluster, of every master, merged (sorted, each name once: a queue whose slot is moving may show on two). */
    queues(): Promise<string[]>;
    log(queue: string, o?: {
        from?: number;
        count?: number;
    }): Promise<LogEntry[]>;
    replay(queue: string, from: number, to?: number): Promise<number>;
    /** The registry record of `name`, or null when `name` is an ordinary queue. */
    partitioned(name: string): Promise<Partitioned | null>;
    /** {@link partitioned}, except that a user who may not read the registry (an ACL limited to some queues' keys) sees ordinary queues. */
    partitionedOrPlain(name: string): Promise<Partitioned | null>;
    /** Every partitioned queue, by name. */
    partitionList(): Promise<Partitioned[]>;
    /**
     * Creates partitioned queue `name` with `count` partitions (`ordered`: every partition is an
     * ordered queue, set before the record is written, so no client ever pushes to a partition that
     * is not ordered yet). Resolves to the record and whether it is new: creating again with the
     * same count and order changes nothing; with others it is refused (Refused).
     *
     * Refused when `name` is an ordinary queue that holds messages, when a partition name is a queue
     * that holds messages, or when `name` collides with the partitions of another partitioned queue.
     */
    partitionCreate(name: string, count: number, o?: {
        ordered?: boolean;
    }): Promise<{
        partitioned: Partitioned;
        created: boolean;
    }>;
    private partitionsOf;
    /** STATS of every partition, and their sum. */
    partitionStats(name: string | Partitioned): Promise<PartitionStats>;
    /** PEEK on every partition, in partition order (each message's `queue` is its partition): up to `count` from each. */
    partitionPeek(name: string | Partitioned, state?: string, o?: {
        start?: number;
        count?: number;
    }): Promise<Message[]>;
    /** RECOVER on every partition, and the sum. */
    partitionRecover(name: string | Partitioned, o?: {
        expired?: boolean;
        failed?: boolean;
        errors?: boolean;
    }): Promise<PartitionRecovered>;
    /**
     * FETCH over every partition, fairly (see {@link Rotation}; one rotation per name is kept by this
     * client). `blockMs` waits by polling. Each message's `queue` is its partition: ack, nack and
     * touch it there.
     */
    partitionFetch(name: string | Partitioned, o?: {
        count?: number;
        lockMs?: number;
        blockMs?: number;
        consumer?: string;
    }): Promise<Message[]>;
}
