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
export declare function nowMs(): number;
/** Queue names: 1-200 bytes of `A-Z a-z 0-9 _ . : - # /`. */
export declare function validateQueue(q: string): void;
/** Ids: 1-128 bytes of 0x21-0x7E. */
export declare function validateId(id: string): void;
/**
 * A new producer id: a UUID v7 (48 bits of unix ms, then 74 random bits), so ids sort by time
 * and two producers never make the same one; the same form the Rust client makes. Within one
 * process ids are strictly increasing: in the same ms the random part counts up.
 */
export declare function newId(): string;
/** Builds and checks a push: what the server would refuse is refused here, even while Redis is down. */
export declare function buildPush(queue: string, body: Body, o?: PushOptions): Push;
/** The PUSH arguments after the queue name. */
export declare function pushArgs(p: Push): Array<Buffer | string>;
/** The fields of a map reply (a flat RESP2 array). */
export declare function pairs(v: unknown): Array<[string, unknown]>;
export declare function parseMessage(queue: string, v: unknown): Message;
/** FETCH's reply: maps, or with COMPACT each message's values in the maps' order. */
export declare function parseFetched(queue: string, v: unknown, compact: boolean): Message[];
export declare function parseMessages(queue: string, v: unknown): Message[];
export declare function parseStats(v: unknown): Stats;
export declare function parseLog(v: unknown): LogEntry[];
/** CONFIG GET: name-value pairs; values are numbers (booleans are 0/1). */
export declare function parseConfig(v: unknown): Record<string, number | string>;
export declare function emptyReport(): WorkerReport;
