"use strict";
var __createBinding = (this && this.__createBinding) || (Object.create ? (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    var desc = Object.getOwnPropertyDescriptor(m, k);
    if (!desc || ("get" in desc ? !m.__esModule : desc.writable || desc.configurable)) {
      desc = { enumerable: true, get: function() { return m[k]; } };
    }
    Object.defineProperty(o, k2, desc);
}) : (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    o[k2] = m[k];
}));
var __setModuleDefault = (this && this.__setModuleDefault) || (Object.create ? (function(o, v) {
    Object.defineProperty(o, "default", { enumerable: true, value: v });
}) : function(o, v) {
    o["default"] = v;
});
var __importStar = (this && this.__importStar) || (function () {
    var ownKeys = function(o) {
        ownKeys = Object.getOwnPropertyNames || function (o) {
            var ar = [];
            for (var k in o) if (Object.prototype.hasOwnProperty.call(o, k)) ar[ar.length] = k;
            return ar;
        };
        return ownKeys(o);
    };
    return function (mod) {
        if (mod && mod.__esModule) return mod;
        var result = {};
        if (mod != null) for (var k = ownKeys(mod), i = 0; i < k.length; i++) if (k[i] !== "default") __createBinding(result, mod, k[i]);
        __setModuleDefault(result, mod);
        return result;
    };
})();
Object.defineProperty(exports, "__esModule", { value: true });
exports.Client = exports.Rotation = exports.QUEUE_KEY_PREFIXES = exports.READERS = exports.classify = void 0;
exports.confirmOf = confirmOf;
exports.shortfall = shortfall;
exports.luaLibrary = luaLibrary;
/**
 * The client: one server or a Redis Cluster, the two editions (RMQ.* commands of the module, or
 * FCALL of the Lua library), error sorting, typed wrappers of every command, and partitioned queues.
 */
const fs = __importStar(require("node:fs"));
const path = __importStar(require("node:path"));
const promises_1 = require("node:timers/promises");
const cluster_1 = require("./cluster");
const errors_1 = require("./errors");
const node_1 = require("./node");
const partition_1 = require("./partition");
const types_1 = require("./types");
var node_2 = require("./node");
Object.defineProperty(exports, "classify", { enumerable: true, get: function () { return node_2.classify; } });
/** Commands of the Lua edition that only read: sent with FCALL_RO, and never load the library. */
exports.READERS = new Set(["stats", "peek", "get", "queues", "log"]);
/**
 * The keys of a queue, in the order the Lua edition takes them when a cluster client declares
 * them all (`FCALL rmq_x 11 q msg:{q} dly:{q} ... log:{q} ...`), so that Redis itself refuses
 * (ASK, TRYAGAIN) while the queue's slot migrates.
 */
exports.QUEUE_KEY_PREFIXES = ["msg", "dly", "bak", "inf", "fai", "err", "cfg", "st", "dup", "log"];
/** A confirm with its defaults filled in, checked. */
function confirmOf(c) {
    const o = c === true ? {} : c;
    const replicas = o.replicas ?? 1;
    const timeoutMs = o.timeoutMs ?? 1000;
    if (!Number.isInteger(replicas) || replicas < 1)
        throw new errors_1.ConfigError("confirm replicas must be at least 1");
    if (typeof timeoutMs !== "number" || !Number.isFinite(timeoutMs) || timeoutMs <= 0)
        throw new errors_1.ConfigError("confirm timeoutMs must be a positive number of ms");
    return { replicas, timeoutMs };
}
function waitCmd(c) {
    return ["WAIT", c.replicas, Math.max(Math.round(c.timeoutMs), 1)];
}
/** Why a WAIT that counted `acked` replicas is not enough. */
function shortfall(c, acked) {
    return `not confirmed: ${acked} of ${c.replicas} replica(s) had the write within ${c.timeoutMs} ms (WAIT)`;
}
/** The Lua library's source: the copy shipped in this package, or the file named by RMQ_LUA. */
function luaLibrary() {
    const p = process.env.RMQ_LUA;
    try {
        return fs.readFileSync(p || path.join(__dirname, "..", "rmq.lua"), "utf8");
    }
    catch (e) {
        throw new errors_1.ConfigError(`${p ? `RMQ_LUA=${p}` : "rmq.lua"}: ${e.message}`);
    }
}
function positive(v, dflt, what) {
    const x = v ?? dflt;
    if (typeof x !== "number" || !Number.isFinite(x) || x <= 0)
        throw new errors_1.ConfigError(`${what} must be a positive number of ms`);
    return x;
}
/** One reply as a result: an error reply throws. */
function reply(v) {
    if (v instanceof Error)
        throw (0, node_1.classify)(v);
    return v;
}
/**
 * Fetches from several queues in turn, fairly: it starts at a random queue, and every call starts
 * one past where the previous one found messages, so a busy queue never starves the others and
 * an empty one costs one FETCH per round.
 */
class Rotation {
    queues;
    next;
    constructor(queues) {
        this.queues = [...queues];
        this.next = this.queues.length ? Math.floor(Math.random() * this.queues.length) : 0;
    }
    /**
     * One round: FETCHes (never blocking) from the queues in turn until `count` messages (default 1)
     * are in hand or every queue was asked once. A queue that fails (its master is down) is passed
     * over; the error is thrown only when every queue failed.
     */
    async fetchRound(client, o = {}) {
        const n = this.queues.length;
        if (n === 0)
            return [];
        const want = Math.max(o.count ?? 1, 1);
        const start = this.next;
        const out = [];
        let firstErr = null;
        let failed = 0;
        for (let k = 0; k < n; k++) {
            const i = (start + k) % n;
            try {
                out.push(...(await client.fetch(this.queues[i], { ...o, count: want - out.length })));
            }
            catch (e) {
                if (!(e instanceof errors_1.RmqError))
                    throw e;
                failed++;
                firstErr ??= e;
            }
            if (out.length >= want) {
                this.next = (i + 1) % n;
                return out;
            }
        }
        this.next = (start + 1) % n;
        if (firstErr && failed === n)
            throw firstErr;
        return out;
    }
    /**
     * Rounds until a message comes or `blockMs` has passed (0: forever; undefined: one round),
     * pausing between empty rounds as the Lua edition's polling does: FETCH cannot block on several queues.
     */
    async fetch(client, o = {}) {
        const { blockMs, ...round } = o;
        if (blockMs === undefined)
            return this.fetchRound(client, round);
        const forever = blockMs === 0;
        const until = Date.now() + blockMs;
        let pause = client.pollMinMs;
        for (;;) {
            const msgs = await this.fetchRound(client, round);
            const now = Date.now();
            if (msgs.length || (!forever && now >= until))
                return msgs;
            await (0, promises_1.setTimeout)(forever ? pause : Math.min(pause, until - now));
            pause = Math.min(pause * 2, client.pollMaxMs);
        }
    }
}
exports.Rotation = Rotation;
/**
 * A handle on one Redis server or one Redis Cluster. Commands share one connection per server
 * (ioredis pipelines them); a blocking FETCH and a confirmed PUSH take a connection of their own.
 *
 * Given the URL of any node of a cluster, it finds the cluster at its first request (`INFO
 * cluster`), reads the slot map, and sends every command to the master of its queue's slot,
 * following MOVED and ASK and waiting out TRYAGAIN and failovers within the command timeout.
 */
class Client {
    url;
    editionChoice;
    connectTimeoutMs;
    commandTimeoutMs;
    pollMinMs;
    pollMaxMs;
    ed;
    /**
     * FETCH asks for the COMPACT reply (half the server's reply work) until a server that
     * predates it refuses the word; then it asks for maps.
     */
    compact = true;
    seed;
    /** Found out at the first request: undefined (not yet), null (one server) or the cluster. */
    cluster = undefined;
    finding = null;
    rotations = new Map();
    closed = false;
    constructor(url = "redis://127.0.0.1:6379", opts = {}) {
        const edition = opts.edition ?? "auto";
        if (!["auto", "module", "lua"].includes(edition))
            throw new errors_1.ConfigError("edition must be auto, module or lua");
        if (!/^rediss?:\/\//.test(url))
            throw new errors_1.ConfigError(`bad Redis URL: ${url}`);
        this.url = url;
        this.editionChoice = edition;
        this.ed = edition === "auto" ? null : edition;
        this.connectTimeoutMs = positive(opts.connectTimeoutMs, 2000, "connectTimeoutMs");
        this.commandTimeoutMs = positive(opts.commandTimeoutMs, 5000, "commandTimeoutMs");
        this.pollMinMs = positive(opts.pollMinMs, 5, "pollMinMs");
        this.pollMaxMs = Math.max(positive(opts.pollMaxMs, 250, "pollMaxMs"), this.pollMinMs);
        this.seed = new node_1.Node(url, this.connectTimeoutMs, this.displayUrl());
    }
    /** The URL without its password. */
    displayUrl() {
        return this.url.replace(/\/\/[^@/]*@/, "//***@");
    }
    /** The options this client was made with (to make another one like it). */
    options() {
        return {
            url: this.url, edition: this.editionChoice, connectTimeoutMs: this.connectTimeoutMs,
            commandTimeoutMs: this.commandTimeoutMs, pollMinMs: this.pollMinMs, pollMaxMs: this.pollMaxMs,
        };
    }
    // --- one server or a cluster ---------------------------------------------------------------
    /** The cluster, or null for one server: asked once (`INFO cluster`, or `CLUSTER INFO` for a user whose ACL forbids INFO), at the first request. */
    async mode() {
        if (this.cluster !== undefined)
            return this.cluster;
        this.finding ??= (async () => {
            let info;
            let cinfo;
            try {
                [info, cinfo] = await this.seed.send([["INFO", "cluster"], ["CLUSTER", "INFO"]], this.commandTimeoutMs);
            }
            catch (e) {
                throw e instanceof node_1.SendError ? e.err : e;
            }
            const cluster = info instanceof Error ? !(cinfo instanceof Error) && text(cinfo).includes("cluster_state:") : text(info).includes("cluster_enabled:1");
            if (!cluster)
                return null;
            const c = new cluster_1.Cluster(this.url, this.connectTimeoutMs);
            await c.connect(this.commandTimeoutMs);
            return c;
        })();
        try {
            this.cluster = await this.finding;
        }
        finally {
            this.finding = null;
        }
        return this.cluster;
    }
    /** True when the URL names a node of a Redis Cluster. */
    async isCluster() {
        return (await this.mode()) !== null;
    }
    /** The masters (`host:port`): the cluster's, or the one server's URL. */
    async masters() {
        const c = await this.mode();
        return c ? c.masters() : [this.displayUrl()];
    }
    /**
     * Sends `cmds` in one pipeline where `to` says: a queue (the master of its slot), a key (the
     * master of its slot) or nothing (any master). Each error reply is its ReplyError in its place.
     */
    async exec(to, cmds, timeoutMs, resend, dedicated = false) {
        if (this.closed)
            throw new errors_1.Unavailable("the client is closed");
        const c = await this.mode();
        if (!c) {
            try {
                return await this.seed.send(cmds, timeoutMs, dedicated);
            }
            catch (e) {
                throw e instanceof node_1.SendError ? e.err : e;
            }
        }
        const target = to === null ? { any: true } : "queue" in to ? { slot: (0, partition_1.queueSlot)(to.queue) } : { slot: (0, partition_1.keySlot)(to.key) };
        return c.exec(target, cmds, timeoutMs, resend, dedicated);
    }
    /** Sends `cmd` to every master (one server: to it): each master's reply, an error reply or an RmqError in its place. */
    async onEveryMaster(cmd) {
        const c = await this.mode();
        if (!c) {
            try {
                const [v] = await this.seed.send([cmd], this.commandTimeoutMs);
                return [[this.displayUrl(), v]];
            }
            catch (e) {
                return [[this.displayUrl(), e instanceof node_1.SendError ? e.err : e]];
            }
        }
        const masters = c.masters();
        const replies = await Promise.all(masters.map((m) => c.exec({ node: m }, [cmd], this.commandTimeoutMs, false).then(([v]) => v, (e) => e)));
        return masters.map((m, i) => [m, replies[i]]);
    }
    /** A plain Redis command on `key` (not a queue's), sent to the server holding the key. */
    async keyCommand(key, args, resend = true) {
        return reply((await this.exec({ key }, [args], this.commandTimeoutMs, resend))[0]);
    }
    /** Runs one command with a time limit (the command timeout by default); bulk replies are Buffers. In a cluster it goes to the URL's node when that is a master, else to another master. */
    async raw(args, timeoutMs) {
        return reply((await this.exec(null, [args], timeoutMs ?? this.commandTimeoutMs, false))[0]);
    }
    async ping() {
        await this.raw(["PING"]);
    }
    /** `module` or `lua`: found out once, then again when a call shows a change. */
    async edition() {
        if (this.ed === null)
            this.ed = await this.detect();
        return this.ed;
    }
    async detect() {
        try {
            const v = await this.raw(["COMMAND", "INFO", "rmq.push"]);
            return Array.isArray(v) && v.length > 0 && v[0] !== null ? "module" : "lua";
        }
        catch (e) {
            if (!(e instanceof errors_1.Refused))
                throw e;
            // COMMAND may be forbidden by an ACL: ask the module itself.
            try {
                await this.raw(["RMQ.QUEUES"]);
                return "module";
            }
            catch (e2) {
                if (e2 instanceof errors_1.Refused && /unknown command/i.test(e2.message))
                    return "lua";
                throw e2;
            }
        }
    }
    /** Loads the Lua library unless the server has it (`replace`: load it anyway); in a cluster on every master (replicas get it from their master). */
    async loadLua(replace = false) {
        for (const [, v] of await this.onEveryMaster(["FUNCTION", "LOAD", ...(replace ? ["REPLACE"] : []), luaLibrary()])) {
            if (v instanceof Error) {
                const e = (0, node_1.classify)(v);
                if (!(e instanceof errors_1.Refused && e.message.includes("already exists")))
                    throw e;
            }
        }
    }
    /** The command `name` for queue `q` in `ed`; `allKeys` declares every key of the queue to the Lua edition (on a cluster). */
    static build(ed, name, q, args, allKeys = false) {
        if (ed === "module")
            return [`RMQ.${name.toUpperCase()}`, ...(q === null ? [] : [q]), ...args];
        const fcall = exports.READERS.has(name) ? "FCALL_RO" : "FCALL";
        let keys;
        if (q === null)
            keys = [0];
        else if (allKeys)
            keys = [1 + exports.QUEUE_KEY_PREFIXES.length, q, ...exports.QUEUE_KEY_PREFIXES.map((p) => `${p}:{${q}}`)];
        else
            keys = [1, q];
        return [fcall, `rmq_${name}`, ...keys, ...args];
    }
    /**
     * Runs an rmq command in the server's edition. A Lua library missing from the server (a restart
     * without persistence, a FUNCTION FLUSH) is loaded again by commands that write; a command that
     * only reads reports it instead (it never changes the server).
     */
    async call(name, q, args = [], timeoutMs, dedicated = false) {
        return reply((await this.callWith(name, q, args, null, timeoutMs ?? this.commandTimeoutMs, dedicated))[0]);
    }
    /** Runs an rmq command, followed on the same connection by `then` when given (WAIT), and gives every reply. */
    async callWith(name, q, args, then, timeoutMs, dedicated) {
        const cluster = await this.isCluster();
        for (let tries = 1;; tries++) {
            const ed = await this.edition();
            const cmds = [Client.build(ed, name, q, args, cluster), ...(then ? [then] : [])];
            const vals = await this.exec(q === null ? null : { queue: q }, cmds, timeoutMs, safeToRepeat(name, args), dedicated);
            const err = vals[0] instanceof Error ? (0, node_1.classify)(vals[0]) : null;
            if (err instanceof errors_1.Refused && tries < 3 && (await this.recoverable(ed, readsOnly(name, args), err.message)))
                continue;
            return vals;
        }
    }
    async recoverable(ed, reads, message) {
        const lower = message.toLowerCase();
        if (ed === "lua" && lower.includes("function not found")) {
            if (this.editionChoice === "auto") {
                this.ed = null; // maybe the module is there now
                if ((await this.edition()) === "module")
                    return true;
            }
            if (reads) {
                throw new errors_1.NotInstalled(`rmq is not installed on ${this.displayUrl()}: neither the RMQ module nor the rmq Lua library ` +
                    "is loaded (a command that writes, such as a push, loads the library)");
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
     * Runs several rmq commands: in one pipeline on one server; in a cluster, one pipeline per queue
     * slot (the order of one queue's commands is kept), sent at the same time. Each result is a
     * value or an RmqError; an unavailable Redis rejects. With `confirm`, each pipeline is followed
     * by `WAIT replicas timeout`, and the commands of a pipeline that fewer replicas confirmed come
     * back as Unavailable ("not confirmed").
     */
    async callMany(cmds, confirm) {
        if (!cmds.length)
            return [];
        const c = confirm ? confirmOf(confirm) : null;
        let groups;
        if (await this.isCluster()) {
            const bySlot = new Map();
            cmds.forEach(([, q], i) => {
                const s = (0, partition_1.queueSlot)(q);
                bySlot.set(s, [...(bySlot.get(s) ?? []), i]);
            });
            groups = [...bySlot.values()];
        }
        else
            groups = [cmds.map((_, i) => i)];
        const results = await Promise.all(groups.map((g) => this.callGroup(cmds, g, c)));
        const out = new Array(cmds.length);
        groups.forEach((g, gi) => g.forEach((i, k) => (out[i] = results[gi][k])));
        return out;
    }
    async callGroup(cmds, g, confirm) {
        const cluster = await this.isCluster();
        for (let tries = 1;; tries++) {
            const ed = await this.edition();
            const pipe = g.map((i) => Client.build(ed, cmds[i][0], cmds[i][1], cmds[i][2], cluster));
            if (confirm)
                pipe.push(waitCmd(confirm));
            const t = this.commandTimeoutMs + g.length / 10 + (confirm?.timeoutMs ?? 0);
            const resend = g.every((i) => safeToRepeat(cmds[i][0], cmds[i][2]));
            const vals = await this.exec({ queue: cmds[g[0]][1] }, pipe, t, resend, confirm !== null);
            const waited = confirm ? vals.pop() : undefined;
            let out = vals.map((v) => (v instanceof Error ? (0, node_1.classify)(v) : v));
            const first = out.find((r) => r instanceof errors_1.Refused);
            const reads = g.every((i) => readsOnly(cmds[i][0], cmds[i][2]));
            if (first && tries < 3 && (await this.recoverable(ed, reads, first.message)))
                continue;
            if (out.some((r) => r instanceof errors_1.Unavailable))
                throw out.find((r) => r instanceof errors_1.Unavailable);
            if (confirm) {
                const acked = Number(reply(waited));
                if (acked < confirm.replicas) {
                    const why = new errors_1.Unavailable(shortfall(confirm, acked));
                    out = out.map((r) => (r instanceof errors_1.RmqError ? r : why));
                }
            }
            return out;
        }
    }
    async close() {
        this.closed = true;
        this.seed.close();
        this.cluster?.close();
    }
    // --- the commands --------------------------------------------------------------------------
    /** RMQ.PUSH straight to Redis (no retries, no spool: see Producer). Returns the id. */
    async push(queue, body, options = {}) {
        return this.sendPush((0, types_1.buildPush)(queue, body, options));
    }
    /** RMQ.PUSH of a built (and checked) push. */
    async sendPush(p) {
        return text(await this.call("push", p.queue, (0, types_1.pushArgs)(p)));
    }
    /**
     * RMQ.PUSH (no retries, no spool: see Producer), then `WAIT replicas timeout` on the same
     * connection: the id, and how many replicas confirmed they have the write (the push, and
     * everything before it on that master). Fewer than asked means the message may be lost if its
     * master fails now.
     */
    async pushConfirmed(queue, body, options = {}, confirm = true) {
        return this.sendPushConfirmed((0, types_1.buildPush)(queue, body, options), confirm);
    }
    /** {@link pushConfirmed} of a built (and checked) push. */
    async sendPushConfirmed(p, confirm = true) {
        const c = confirmOf(confirm);
        const vals = await this.callWith("push", p.queue, (0, types_1.pushArgs)(p), waitCmd(c), this.commandTimeoutMs + c.timeoutMs, true);
        return { id: text(reply(vals[0])), replicas: Number(reply(vals[1])) };
    }
    /**
     * RMQ.FETCH. `blockMs` (0 = forever) waits for a message: on the server with the module (in
     * slices, so a dead connection is noticed), by polling with the Lua edition.
     */
    async fetch(queue, o = {}) {
        (0, types_1.validateQueue)(queue);
        const compact = this.compact;
        try {
            return await this.fetchAs(queue, o, compact);
        }
        catch (e) {
            if (!(compact && e instanceof errors_1.Refused && e.message.includes("near 'COMPACT'")))
                throw e;
            this.compact = false;
            return this.fetchAs(queue, o, false);
        }
    }
    async fetchAs(queue, o, compact) {
        const args = [];
        if (o.count !== undefined)
            args.push("COUNT", o.count);
        if (o.lockMs !== undefined)
            args.push("LOCK", Math.max(Math.round(o.lockMs), 1));
        if (o.consumer)
            args.push("CONSUMER", o.consumer);
        // Last: the Lua edition reads COUNT n COMPACT without walking the options.
        if (compact)
            args.push("COMPACT");
        if (o.blockMs === undefined)
            return (0, types_1.parseFetched)(queue, await this.call("fetch", queue, args), compact);
        const forever = o.blockMs === 0;
        const until = Date.now() + o.blockMs;
        if ((await this.edition()) === "module") {
            for (;;) {
                const slice = forever ? 10_000 : Math.max(until - Date.now(), 1);
                // On a connection of its own, so that it holds up no other command of this client.
                const v = await this.call("fetch", queue, [...args, "BLOCK", Math.round(slice)], slice + this.commandTimeoutMs, true);
                const msgs = (0, types_1.parseFetched)(queue, v, compact);
                if (msgs.length || (!forever && Date.now() >= until))
                    return msgs;
            }
        }
        let pause = this.pollMinMs;
        for (;;) {
            const msgs = (0, types_1.parseFetched)(queue, await this.call("fetch", queue, args), compact);
            const now = Date.now();
            if (msgs.length || (!forever && now >= until))
                return msgs;
            await (0, promises_1.setTimeout)(forever ? pause : Math.min(pause, until - now));
            pause = Math.min(pause * 2, this.pollMaxMs);
        }
    }
    /** RMQ.ACK. Returns how many were acked (stale receipts count 0). */
    async ack(queue, ...receipts) {
        return Number(await this.call("ack", queue, receipts));
    }
    /**
     * RMQ.NACK: `how` is `retry` (`delayMs`, else the queue's backoff), `fail` or `error`.
     * Returns false for a stale receipt.
     */
    async nack(queue, receipt, how = "retry", o = {}) {
        if (!["retry", "fail", "error"].includes(how))
            throw new RangeError("how must be retry, fail or error");
        const args = [receipt, how.toUpperCase()];
        if (o.delayMs !== undefined) {
            if (how !== "retry")
                throw new RangeError("delayMs goes with retry only");
            args.push("DELAY", Math.round(o.delayMs));
        }
        if (o.reason !== undefined)
            args.push("REASON", o.reason);
        return Number(await this.call("nack", queue, args)) === 1;
    }
    /** RMQ.TOUCH. Returns the new deadline (unix ms), or 0 for a stale receipt. */
    async touch(queue, receipt, lockMs) {
        const args = [receipt];
        if (lockMs !== undefined)
            args.push("LOCK", Math.max(Math.round(lockMs), 1));
        return Number(await this.call("touch", queue, args));
    }
    /** RMQ.RECOVER (none of the three asked for: all three). */
    async recover(queue, o = {}) {
        const parts = [];
        if (o.expired)
            parts.push("EXPIRED");
        if (o.failed)
            parts.push("FAILED");
        if (o.errors)
            parts.push("ERRORS");
        const v = await this.call("recover", queue, parts);
        if (!Array.isArray(v) || v.length !== 3)
            throw new errors_1.ProtocolError("RECOVER replied something else than 3 counts");
        return { expired: Number(v[0]), failed: Number(v[1]), errors: Number(v[2]) };
    }
    async stats(queue) {
        return (0, types_1.parseStats)(await this.call("stats", queue));
    }
    /** RMQ.PEEK: messages in `state` (ready, delayed, inflight, failed, errors). */
    async peek(queue, state = "ready", o = {}) {
        const args = [state.toUpperCase(), "START", o.start ?? 0, "COUNT", o.count ?? 10];
        return (0, types_1.parseMessages)(queue, await this.call("peek", queue, args));
    }
    async get(queue, id) {
        const v = await this.call("get", queue, [id]);
        return v === null ? null : (0, types_1.parseMessage)(queue, v);
    }
    /** RMQ.DEL: deletes messages in any state. Returns how many. */
    async delete(queue, ...ids) {
        return Number(await this.call("del", queue, ids));
    }
    /** RMQ.REQUEUE: failed, errored or delayed messages back to ready now. */
    async requeue(queue, ...ids) {
        return Number(await this.call("requeue", queue, ids));
    }
    /** RMQ.PURGE: deletes the messages of a state (or `all`); settings and counters stay. */
    async purge(queue, state) {
        return Number(await this.call("purge", queue, [state.toUpperCase()]));
    }
    async configGet(queue, name) {
        return (0, types_1.parseConfig)(await this.call("config", queue, ["GET", ...(name ? [name] : [])]));
    }
    /** RMQ.CONFIG SET: `configSet("q", { "lock-ms": 60000, "max-attempts": 3 })`. */
    async configSet(queue, settings) {
        const args = ["SET"];
        for (const [k, v] of Object.entries(settings))
            args.push(k, typeof v === "boolean" ? Number(v) : v);
        await this.call("config", queue, args);
    }
    /** RMQ.QUEUES: the queues of the server; in a cluster, of every master, merged (sorted, each name once: a queue whose slot is moving may show on two). */
    async queues() {
        if (!(await this.isCluster())) {
            const v = await this.call("queues", null);
            return Array.isArray(v) ? v.map(text) : [];
        }
        const ed = await this.edition();
        const names = new Set();
        for (const [, v] of await this.onEveryMaster(Client.build(ed, "queues", null, []))) {
            if (v instanceof Error) {
                const e = (0, node_1.classify)(v);
                if (/function not found/i.test(e.message))
                    continue; // a master without the Lua library holds no queue of the Lua edition
                throw e;
            }
            if (Array.isArray(v))
                for (const x of v)
                    names.add(text(x));
        }
        return [...names].sort();
    }
    async log(queue, o = {}) {
        return (0, types_1.parseLog)(await this.call("log", queue, ["FROM", o.from ?? 0, "COUNT", o.count ?? 100]));
    }
    async replay(queue, from, to) {
        return Number(await this.call("replay", queue, ["FROM", from, ...(to === undefined ? [] : ["TO", to])]));
    }
    // --- partitioned queues ----------------------------------------------------------------------
    /** The registry record of `name`, or null when `name` is an ordinary queue. */
    async partitioned(name) {
        const v = await this.keyCommand(partition_1.REGISTRY_KEY, ["HGET", partition_1.REGISTRY_KEY, name]);
        return v === null ? null : partition_1.Partitioned.decode(name, v);
    }
    /** {@link partitioned}, except that a user who may not read the registry (an ACL limited to some queues' keys) sees ordinary queues. */
    async partitionedOrPlain(name) {
        try {
            return await this.partitioned(name);
        }
        catch (e) {
            if (e instanceof errors_1.Refused && e.message.startsWith("NOPERM"))
                return null;
            throw e;
        }
    }
    /** Every partitioned queue, by name. */
    async partitionList() {
        const v = await this.keyCommand(partition_1.REGISTRY_KEY, ["HGETALL", partition_1.REGISTRY_KEY]);
        return (0, types_1.pairs)(v)
            .map(([k, rec]) => partition_1.Partitioned.decode(k, rec))
            .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    }
    /**
     * Creates partitioned queue `name` with `count` partitions (`ordered`: every partition is an
     * ordered queue, set before the record is written, so no client ever pushes to a partition that
     * is not ordered yet). Resolves to the record and whether it is new: creating again with the
     * same count and order changes nothing; with others it is refused (Refused).
     *
     * Refused when `name` is an ordinary queue that holds messages, when a partition name is a queue
     * that holds messages, or when `name` collides with the partitions of another partitioned queue.
     */
    async partitionCreate(name, count, o = {}) {
        const ordered = o.ordered ?? false;
        const names = (0, partition_1.partitionNames)(name, count);
        const existing = await this.partitioned(name);
        if (existing) {
            if (existing.count === count && existing.ordered === ordered)
                return { partitioned: existing, created: false };
            throw new errors_1.Refused(`partitioned queue '${name}' exists with ${existing.count} partitions${existing.ordered ? ", ordered" : ""}; a partition count is fixed at creation`);
        }
        for (const other of await this.partitionList()) {
            if (other.partitions.includes(name) || names.some((q) => other.partitions.includes(q))) {
                throw new errors_1.Refused(`'${name}' collides with the partitions of partitioned queue '${other.name}'`);
            }
        }
        for (const q of [name, ...names]) {
            let st;
            try {
                st = await this.stats(q);
            }
            catch (e) {
                if (e instanceof errors_1.NotInstalled)
                    continue; // no rmq on the server yet (a write loads the Lua library): nothing held
                throw e;
            }
            const held = st.ready + st.delayed + st.inflight + st.failed + st.errors;
            if (held)
                throw new errors_1.Refused(`queue '${q}' holds ${held} message(s): choose another name, or empty it first`);
        }
        if (ordered)
            for (const q of names)
                await this.configSet(q, { ordered: 1 });
        const p = new partition_1.Partitioned(name, ordered, names, Date.now());
        if (Number(await this.keyCommand(partition_1.REGISTRY_KEY, ["HSETNX", partition_1.REGISTRY_KEY, name, p.encode()])) === 1)
            return { partitioned: p, created: true };
        // Someone created it at the same moment: theirs stands if it is the same.
        const theirs = await this.partitioned(name);
        if (theirs && theirs.count === count && theirs.ordered === ordered)
            return { partitioned: theirs, created: false };
        throw new errors_1.Refused(`partitioned queue '${name}' was just created with other settings`);
    }
    async partitionsOf(name) {
        if (name instanceof partition_1.Partitioned)
            return name;
        const p = await this.partitioned(name);
        if (!p)
            throw new errors_1.Refused(`'${name}' is not a partitioned queue`);
        return p;
    }
    /** STATS of every partition, and their sum. */
    async partitionStats(name) {
        const p = await this.partitionsOf(name);
        const partitions = {};
        for (const q of p.partitions)
            partitions[q] = await this.stats(q);
        return { total: (0, partition_1.totalStats)(Object.values(partitions)), partitions };
    }
    /** PEEK on every partition, in partition order (each message's `queue` is its partition): up to `count` from each. */
    async partitionPeek(name, state = "ready", o = {}) {
        const p = await this.partitionsOf(name);
        const out = [];
        for (const q of p.partitions)
            out.push(...(await this.peek(q, state, o)));
        return out;
    }
    /** RECOVER on every partition, and the sum. */
    async partitionRecover(name, o = {}) {
        const p = await this.partitionsOf(name);
        const partitions = {};
        const total = { expired: 0, failed: 0, errors: 0 };
        for (const q of p.partitions) {
            const r = (partitions[q] = await this.recover(q, o));
            total.expired += r.expired;
            total.failed += r.failed;
            total.errors += r.errors;
        }
        return { total, partitions };
    }
    /**
     * FETCH over every partition, fairly (see {@link Rotation}; one rotation per name is kept by this
     * client). `blockMs` waits by polling. Each message's `queue` is its partition: ack, nack and
     * touch it there.
     */
    async partitionFetch(name, o = {}) {
        const p = await this.partitionsOf(name);
        let r = this.rotations.get(p.name);
        if (!r || r.queues.join(",") !== p.partitions.join(",")) {
            r = new Rotation(p.partitions);
            this.rotations.set(p.name, r);
        }
        return r.fetch(this, o);
    }
}
exports.Client = Client;
/**
 * The commands that may be sent again when their answer was lost: the ones that change nothing, a
 * PUSH that carries its id (the dedup window drops a second copy), and CONFIG (setting a value
 * twice is setting it once). ACK, NACK, TOUCH, FETCH and the repair commands are never sent twice
 * by the client: a lost answer is reported as Unavailable, since the command may have been applied.
 */
function safeToRepeat(name, args) {
    if (["stats", "peek", "get", "queues", "log", "config"].includes(name))
        return true;
    // pushArgs puts ID right after the body.
    return name === "push" && args.length >= 3 && String(args[1]).toUpperCase() === "ID";
}
/** Commands that only read never load the Lua library (CONFIG GET too, though the library's rmq_config also writes). */
function readsOnly(name, args) {
    if (exports.READERS.has(name))
        return true;
    return name === "config" && args.length > 0 && String(args[0]).toUpperCase() === "GET";
}
function text(v) {
    return Buffer.isBuffer(v) ? v.toString("utf8") : String(v);
}
