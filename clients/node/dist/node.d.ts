import { RmqError } from "./errors";
export type Arg = string | Buffer | number;
/** Sorts an error into Unavailable (retry later, spool) and Refused (the request or setup is wrong). */
export declare function classify(e: unknown): RmqError;
/** True for an error reply of the server (as opposed to a connection's failure). */
export declare function isReply(e: unknown): boolean;
/** A request without an answer: `err` says why, `sent` whether it may have reached the server. */
export declare class SendError extends Error {
    readonly err: RmqError;
    readonly sent: boolean;
    constructor(err: RmqError, sent: boolean);
}
export declare class TimedOut extends Error {
}
/** Rejects with `message` (or a TimedOut when null) when p takes longer than ms. */
export declare function withTimeout<T>(p: Promise<T>, ms: number, message: string | null): Promise<T>;
/** The connections to one server (`url`). Replies are raw (Buffers, numbers, arrays); an error reply is its ReplyError in its place. */
export declare class Node {
    readonly url: string;
    readonly connectTimeoutMs: number;
    private readonly display;
    private shared;
    private connecting;
    private idle;
    private lastError;
    private closed;
    constructor(url: string, connectTimeoutMs: number, display: string);
    private newConnection;
    private ensure;
    /**
     * Sends `cmds` as one pipeline on one connection (the shared one, or a dedicated one), within
     * `timeoutMs`, and gives each reply. Throws a {@link SendError} when there is no complete answer.
     */
    send(cmds: Arg[][], timeoutMs: number, dedicated?: boolean): Promise<unknown[]>;
    /** Keeps no connection from now on; requests in flight finish (the shared connection is quit after their replies). */
    retire(): void;
    close(): void;
}
