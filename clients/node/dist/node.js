"use strict";
var __importDefault = (this && this.__importDefault) || function (mod) {
    return (mod && mod.__esModule) ? mod : { "default": mod };
};
Object.defineProperty(exports, "__esModule", { value: true });
exports.Node = exports.TimedOut = exports.SendError = void 0;
exports.classify = classify;
exports.isReply = isReply;
exports.withTimeout = withTimeout;
/**
 * One Redis server: a shared connection (ioredis pipelines the commands of every caller on it)
 * and a pool of dedicated ones, for what holds a connection (a blocking FETCH, a PUSH followed
 * by WAIT).
 *
 * It keeps apart what ioredis's own retries would blur: a request that was **not sent** (no
 * connection could be opened) is always safe to send again; a request that was **sent without
 * an answer** may have been applied, and only its caller knows whether sending it again is
 * safe (see cluster.ts).
 */
const ioredis_1 = __importDefault(require("ioredis"));
const errors_1 = require("./errors");
/** Error codes that mean "Redis cannot take it now", not "the request is wrong". */
const UNAVAILABLE_CODES = new Set([
    "BUSY", "OOM", "MISCONF", "NOREPLICAS", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "MOVED", "ASK",
]);
/** Idle dedicated connections kept per server. */
const IDLE_KEPT = 16;
/** Sorts an error into Unavailable (retry later, spool) and Refused (the request or setup is wrong). */
function classify(e) {
    if (e instanceof errors_1.RmqError)
        return e;
    const err = e;
    if (isReply(err)) {
        const code = /^[A-Z]+/.exec(err.message)?.[0] ?? "";
        return UNAVAILABLE_CODES.has(code) ? new errors_1.Unavailable(err.message) : new errors_1.Refused(err.message);
    }
    // Connection refused/reset/closed, not writeable, no answer: Redis could not take it.
    return new errors_1.Unavailable(err?.message || String(e));
}
/** True for an error reply of the server (as opposed to a connection's failure). */
function isReply(e) {
    return e instanceof Error && e.name === "ReplyError";
}
/** A request without an answer: `err` says why, `sent` whether it may have reached the server. */
class SendError extends Error {
    err;
    sent;
    constructor(err, sent) {
        super(err.message);
        this.err = err;
        this.sent = sent;
    }
}
exports.SendError = SendError;
class TimedOut extends Error {
}
exports.TimedOut = TimedOut;
/** Rejects with `message` (or a TimedOut when null) when p takes longer than ms. */
function withTimeout(p, ms, message) {
    let timer;
    const t = new Promise((_, reject) => {
        timer = setTimeout(() => reject(message === null ? new TimedOut() : new errors_1.Unavailable(message)), ms);
    });
    return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
/** The connections to one server (`url`). Replies are raw (Buffers, numbers, arrays); an error reply is its ReplyError in its place. */
class Node {
    url;
    connectTimeoutMs;
    display;
    shared;
    connecting = new Map();
    idle = [];
    lastError = new WeakMap();
    closed = false;
    constructor(url, connectTimeoutMs, display) {
        this.url = url;
        this.connectTimeoutMs = connectTimeoutMs;
        this.display = display;
        this.shared = this.newConnection();
    }
    newConnection() {
        const o = {
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
        const r = new ioredis_1.default(this.url, o);
        // Errors reach the callers through their commands; the last one explains a failed connect.
        r.on("error", (e) => this.lastError.set(r, e));
        return r;
    }
    async ensure(r) {
        if (this.closed)
            throw new errors_1.Unavailable("the client is closed");
        if (r.status === "ready")
            return;
        let p = this.connecting.get(r);
        if (!p) {
            p = (async () => {
                try {
                    if (r.status === "connecting" || r.status === "connect" || r.status === "reconnecting") {
                        r.disconnect();
                    }
                    await withTimeout(r.connect(), this.connectTimeoutMs + 100, "connect timed out");
                }
                catch (e) {
                    r.disconnect();
                    const why = this.lastError.get(r)?.message ?? e.message;
                    throw new errors_1.Unavailable(`cannot connect to ${this.display}: ${why}`);
                }
                finally {
                    this.connecting.delete(r);
                }
            })();
            this.connecting.set(r, p);
        }
        await p;
    }
    /**
     * Sends `cmds` as one pipeline on one connection (the shared one, or a dedicated one), within
     * `timeoutMs`, and gives each reply. Throws a {@link SendError} when there is no complete answer.
     */
    async send(cmds, timeoutMs, dedicated = false) {
        const conn = dedicated ? (this.idle.pop() ?? this.newConnection()) : this.shared;
        try {
            await this.ensure(conn);
        }
        catch (e) {
            if (dedicated)
                conn.disconnect();
            throw new SendError(classify(e), false);
        }
        const pipe = conn.pipeline();
        for (const [cmd, ...rest] of cmds)
            pipe.callBuffer(String(cmd), ...rest);
        let res;
        try {
            res = await withTimeout(pipe.exec(), timeoutMs, null);
        }
        catch (e) {
            // The connection may be dead without knowing it: a new one next time.
            conn.disconnect();
            if (e instanceof TimedOut)
                throw new SendError(new errors_1.Unavailable(`no answer within ${timeoutMs} ms`), true);
            throw new SendError(classify(e), true);
        }
        if (!res)
            throw new SendError(new errors_1.Unavailable("pipeline not sent"), false);
        // A connection's failure fails every command of the pipeline.
        const broken = res.find(([err]) => err && !isReply(err));
        if (broken) {
            const err = broken[0];
            conn.disconnect();
            // Refused before writing (the connection closed meanwhile): nothing left.
            throw new SendError(new errors_1.Unavailable(err.message), !/isn't writeable/.test(err.message));
        }
        if (dedicated) {
            if (!this.closed && this.idle.length < IDLE_KEPT)
                this.idle.push(conn);
            else
                conn.disconnect();
        }
        return res.map(([err, v]) => err ?? v);
    }
    /** Keeps no connection from now on; requests in flight finish (the shared connection is quit after their replies). */
    retire() {
        this.closed = true;
        if (this.shared.status === "ready")
            this.shared.quit().catch(() => this.shared.disconnect());
        else
            this.shared.disconnect();
        for (const r of this.idle)
            r.disconnect();
        this.idle = [];
    }
    close() {
        this.closed = true;
        for (const r of [this.shared, ...this.idle])
            r.disconnect();
        this.idle = [];
    }
}
exports.Node = Node;
